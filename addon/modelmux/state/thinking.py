"""Claude's thinking blocks for tool loops, in the shared store (replaces thinking_cache.ThinkingCache when wired).

The same contract as ThinkingCache — `put(tool_call_id, blocks)`, `get(tool_call_id)` — but async, shared by
every process on `state.url`, expiring after `state.thinking_ttl_hours` and bounded to `state.thinking_max_entries`
(oldest first). A continuation on another replica finds the block its first process kept. `get_many` fetches
several in one round trip, so a request's translation (which is synchronous) can be given a plain dict lookup.
Errors are StateUnavailable: the caller treats it as "not found" (thinking off for that continuation, as today).
"""

from __future__ import annotations

import json
from typing import Any

from .base import Store

NAMESPACE = "thinking"


class SharedThinkingCache:
    def __init__(self, store: Store, max_bytes: int = 1024 * 1024):
        self.store = store
        self.max_bytes = max_bytes  # one entry; a larger one is not kept (as ThinkingCache does)

    async def put(self, tool_call_id: str, blocks: list[dict[str, Any]]) -> bool:
        if len(json.dumps(blocks)) > self.max_bytes:
            return False
        s = self.store.settings
        await self.store.kv_put(NAMESPACE, tool_call_id, blocks, s.thinking_ttl, s.thinking_max_entries)
        return True

    async def get(self, tool_call_id: str) -> list[dict[str, Any]] | None:
        return await self.store.kv_get(NAMESPACE, tool_call_id)

    async def get_many(self, tool_call_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        return await self.store.kv_get_many(NAMESPACE, tool_call_ids)
