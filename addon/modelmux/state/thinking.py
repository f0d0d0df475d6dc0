"""Claude's thinking blocks for tool loops, in the shared store (replaces thinking_cache.ThinkingCache when wired).

The same contract as ThinkingCache — `put(tool_call_id, blocks)`, `get(tool_call_id)` — but async, shared by
every process on `state.url`, expiring after `state.thinking_ttl_hours` and bounded to `state.thinking_max_entries`
(oldest first). A continuation on another replica finds the block its first process kept.

Wiring into the synchronous translators: before translating a chat request, `await get_many(tool_call_ids(
messages))` and hand the translator the dict's `.get` as its `thinking_for`; from a synchronous place (a stream
callable), `put_soon` schedules the write. A StateUnavailable on a read means "not found" (thinking off for that
continuation, as when a worker without the block gets it); a failed write is logged at most once a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from .base import StateUnavailable, Store
from .observe import RateLimitedLog

NAMESPACE = "thinking"
MAX_PENDING_PUTS = 256  # writes scheduled by put_soon and not finished yet, at most

log = logging.getLogger("modelmux.state")


def tool_call_ids(messages: list[dict[str, Any]]) -> list[str]:
    """The first tool-call id of each assistant message with tool calls: the keys the thinking is kept under."""
    ids = []
    for msg in messages:
        calls = msg.get("tool_calls") if isinstance(msg, dict) and msg.get("role") == "assistant" else None
        if isinstance(calls, list) and calls and isinstance(calls[0], dict) and isinstance(calls[0].get("id"), str):
            ids.append(calls[0]["id"])
    return ids


class SharedThinkingCache:
    def __init__(self, store: Store, max_bytes: int = 1024 * 1024):
        self.store = store
        self.max_bytes = max_bytes  # one entry; a larger one is not kept (as ThinkingCache does)
        self._pending: set[asyncio.Task[Any]] = set()
        self._log = RateLimitedLog(log)

    async def put(self, tool_call_id: str, blocks: list[dict[str, Any]]) -> bool:
        if len(json.dumps(blocks)) > self.max_bytes:
            return False
        s = self.store.settings
        await self.store.kv_put(NAMESPACE, tool_call_id, blocks, s.thinking_ttl, s.thinking_max_entries)
        return True

    def put_soon(self, tool_call_id: str, blocks: list[dict[str, Any]]) -> bool:
        """`put` from synchronous code on the event loop's thread; False if it could not be scheduled."""
        if len(self._pending) >= MAX_PENDING_PUTS:
            self._log.warning(f"thinking for {tool_call_id} not kept: {MAX_PENDING_PUTS} writes still pending")
            return False
        task = asyncio.get_running_loop().create_task(self._put_logged(tool_call_id, blocks))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    async def _put_logged(self, tool_call_id: str, blocks: list[dict[str, Any]]) -> None:
        try:
            await self.put(tool_call_id, blocks)
        except StateUnavailable as err:
            self._log.warning(f"{err}; thinking for a tool loop not kept")

    async def get(self, tool_call_id: str) -> list[dict[str, Any]] | None:
        return await self.store.kv_get(NAMESPACE, tool_call_id)

    async def get_many(self, tool_call_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        return await self.store.kv_get_many(NAMESPACE, tool_call_ids)

    async def drain(self) -> None:
        """Wait for the writes put_soon scheduled (at shutdown, in tests)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
