"""Claude's thinking blocks, kept server-side for tool loops.

When Claude thinks and then calls tools, the next request (carrying the tool results) must send that thinking
block with its signature back, or Vertex answers 400. OpenAI clients drop it (they have no field for it), so
modelmux keeps it, keyed by the first tool-call id of that turn — the id the client does send back.
Bounded in entries and bytes, least recently used out first; losing an entry only turns thinking off for
that one continuation (see translate.request.thinking_budget).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any


class ThinkingCache:
    def __init__(self, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[list[dict[str, Any]], int]] = OrderedDict()
        self.bytes = 0

    def put(self, tool_call_id: str, blocks: list[dict[str, Any]]) -> None:
        size = len(json.dumps(blocks))
        if size > self.max_bytes:
            return
        if tool_call_id in self._items:
            self.bytes -= self._items.pop(tool_call_id)[1]
        self._items[tool_call_id] = (blocks, size)
        self.bytes += size
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            self.bytes -= self._items.popitem(last=False)[1][1]

    def get(self, tool_call_id: str) -> list[dict[str, Any]] | None:
        item = self._items.get(tool_call_id)
        if item is None:
            return None
        self._items.move_to_end(tool_call_id)
        return item[0]

    def __len__(self) -> int:
        return len(self._items)


class Thinking:
    """Thinking for tool loops, kept in this process (ThinkingCache) and in the shared store (state.thinking), so
    a loop whose next turn reaches another worker or replica still finds the block with its signature.

    `put` keeps it at once in the process and schedules the shared write; `lookup(ids)` — before a request is
    translated — answers from the process where it can and fetches the rest from the store in one call (the store
    unreachable: not found, thinking off for that turn, as before there was a store)."""

    def __init__(self, local: ThinkingCache, shared: Any = None):
        self.local = local
        self.shared = shared  # state.thinking.SharedThinkingCache, or None (tests without a store)

    def put(self, tool_call_id: str, blocks: list[dict[str, Any]]) -> None:
        self.local.put(tool_call_id, blocks)
        if self.shared is not None:
            self.shared.put_soon(tool_call_id, blocks)

    def get(self, tool_call_id: str) -> list[dict[str, Any]] | None:
        return self.local.get(tool_call_id)

    async def lookup(self, tool_call_ids: list[str]):
        """A `thinking_for` for the translators: a lookup of these ids that needs no more I/O."""
        found = {i: b for i in tool_call_ids if (b := self.local.get(i)) is not None}
        missing = [i for i in tool_call_ids if i not in found]
        if missing and self.shared is not None:
            from .state import StateUnavailable

            try:
                found.update(await self.shared.get_many(missing))
            except StateUnavailable:
                pass
        return found.get

    def __len__(self) -> int:
        return len(self.local)
