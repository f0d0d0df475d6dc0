"""Claude's thinking blocks, kept server-side for tool loops.

When Claude thinks and then calls tools, the next request (carrying the tool results) must send that thinking
block with its signature back, or Vertex answers 400. OpenAI clients drop it (they have no field for it), so
modelmux keeps it, keyed by the first tool-call id of that turn — the id the client does send back.
Bounded in entries and bytes, least recently used out first; losing an entry only turns thinking off for
that one continuation (see translate.request.thinking_budget).
"""

from __future__ import annotations

import hashlib
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


def scoped(tool_call_id: str, owner: str | None) -> str:
    """The key thinking is kept under: the tool-call id, within the client key that made the call — another key
    naming that id (tool-call ids travel in conversations, logs, shared transcripts) must not get its thinking
    into its own prompt. A digest of the key's name keeps the key short (the store's keys are at most 256
    characters) whatever the name; no key configured (owner None): the id alone, as before. Claude tool ids
    hold no ':' (claude_tool_id), so a scoped key is never a bare id."""
    if owner is None:
        return tool_call_id
    return hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()[:32] + ":" + tool_call_id


class Thinking:
    """Thinking for tool loops, kept in this process (ThinkingCache) and in the shared store (state.thinking), so
    a loop whose next turn reaches another worker or replica still finds the block with its signature.

    `put` keeps it at once in the process and schedules the shared write; `lookup(ids)` — before a request is
    translated — answers from the process where it can and fetches the rest from the store in one call (the store
    unreachable: not found, thinking off for that turn, as before there was a store). Both take the client key's
    name (`owner`): each key finds only the thinking of its own calls (see `scoped`)."""

    def __init__(self, local: ThinkingCache, shared: Any = None):
        self.local = local
        self.shared = shared  # state.thinking.SharedThinkingCache, or None (tests without a store)

    def put(self, tool_call_id: str, blocks: list[dict[str, Any]], owner: str | None = None) -> None:
        key = scoped(tool_call_id, owner)
        self.local.put(key, blocks)
        if self.shared is not None:
            self.shared.put_soon(key, blocks)

    def get(self, tool_call_id: str, owner: str | None = None) -> list[dict[str, Any]] | None:
        return self.local.get(scoped(tool_call_id, owner))

    async def lookup(self, tool_call_ids: list[str], owner: str | None = None):
        """A `thinking_for` for the translators: a lookup of these ids (of this owner's calls) that needs no more
        I/O; what it answers is keyed by the bare tool-call id."""
        keys = {scoped(i, owner): i for i in tool_call_ids}
        found = {i: b for k, i in keys.items() if (b := self.local.get(k)) is not None}
        missing = [k for k, i in keys.items() if i not in found]
        if missing and self.shared is not None:
            from .state import StateUnavailable

            try:
                found.update((keys[k], b) for k, b in (await self.shared.get_many(missing)).items() if k in keys)
            except StateUnavailable:
                pass
        return found.get

    def __len__(self) -> int:
        return len(self.local)
