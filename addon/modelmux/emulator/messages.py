"""Reading a Claude request's messages: content as blocks, the texts in it, the last user turn."""

from __future__ import annotations

from collections.abc import Iterator


def blocks(content: str | list) -> list:
    """A message's content as blocks: a string is shorthand for one text block."""
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def ids(message: dict, kind: str, key: str) -> list[str]:
    """`key` of the message's blocks of type `kind`: ids of its tool_use blocks, tool_use_ids of its results."""
    return [b[key] for b in blocks(message["content"]) if b["type"] == kind]


def texts(content: str | list) -> Iterator[str]:
    """The text of the text blocks, tool results' included."""
    for block in blocks(content):
        if block["type"] == "text":
            yield block["text"]
        elif block["type"] == "tool_result":
            yield from texts(block.get("content", ""))


def own_texts(content: str | list) -> list[str]:
    """The text of the text blocks the turn's author wrote: tool results' excluded."""
    return [b["text"] for b in blocks(content) if b["type"] == "text"]


def latest_text(content: str | list) -> str:
    """The last text block the turn's author wrote: what the user says now. The blocks before it in the same turn
    came before it — context, the messages a client keeps beside a conversation summary, the summary's source."""
    own = own_texts(content)
    return own[-1] if own else ""


def last_user(body: dict) -> dict:
    return next((m for m in reversed(body["messages"]) if m["role"] == "user"), {"content": []})
