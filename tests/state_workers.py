"""What test_state.py's child processes run (a module of its own: spawned children import it by name)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from modelmux.state.base import StoreSettings, StoredResponse

RACE_SETTINGS = StoreSettings(timeout=5.0, connect_timeout=2.0)  # a loaded 2-core machine: no spurious outage


def make_store(kind: str, target: str, settings: StoreSettings = RACE_SETTINGS) -> Any:
    if kind == "sqlite":
        from modelmux.state.sqlite import SQLiteStore
        return SQLiteStore(target, settings)
    from modelmux.state.redis_store import RedisStore
    return RedisStore(target, settings)


def race(kind: str, target: str, prefix: str, rounds: int, barrier: Any, out: Any) -> None:
    """Per round, wait for the other racer, then try to take the one token of bucket `prefix+round`."""
    async def main() -> list[int]:
        store = make_store(kind, target)
        wins = []
        try:
            for r in range(rounds):
                barrier.wait(timeout=20)
                bucket = await store.take(f"{prefix}{r}", 1, 0, 1, now=1000.0)
                if bucket.allowed:
                    wins.append(r)
        finally:
            await store.close()
        return wins
    out.put(asyncio.run(main()))


def drain(kind: str, target: str, key: str, attempts: int, barrier: Any, out: Any) -> None:
    """Take from one shared bucket as fast as possible; report how many takes were allowed."""
    async def main() -> int:
        store = make_store(kind, target)
        allowed = 0
        try:
            barrier.wait(timeout=20)
            for _ in range(attempts):
                if (await store.take(key, 50, 0, 1, now=1000.0)).allowed:
                    allowed += 1
        finally:
            await store.close()
        return allowed
    out.put(asyncio.run(main()))


def put_response(kind: str, target: str, response_id: str, out: Any) -> None:
    async def main() -> None:
        store = make_store(kind, target)
        try:
            await store.put_response(StoredResponse(
                id=response_id, owner="team-a", created_at=time.time(), response={"id": response_id, "object": "response"},
                input_items=[{"id": "msg_in", "type": "message"}], output_items=[{"id": "msg_out", "type": "message"}]))
        finally:
            await store.close()
    asyncio.run(main())
    out.put("done")
