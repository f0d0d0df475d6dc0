"""Server-Sent Events, the one parser: incremental splitting for the stream translators, whole bodies for the dump
and the tests. Pure: no I/O.

SSE allows LF and CRLF line ends (a CRLF may be split across reads); an event ends at a blank line; its payload is
its `data:` lines joined with a newline (one optional space after the colon is not part of the value); comment
lines (`:`) and events without data carry nothing.
"""

from __future__ import annotations

import json
from typing import Any

# One event may not grow past this without its blank line: a stream that never ends an event must not eat memory.
MAX_EVENT_BYTES = 16 * 1024 * 1024


class EventTooLarge(ValueError):
    pass


class EventSplitter:
    """Raw events (without their blank line, LF line ends) from the pieces of a byte stream, split anywhere."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        cr_tail = b""
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # maybe the first half of a CRLF
                buf, cr_tail = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n")
        events = buf.split(b"\n\n")
        rest = events.pop() + cr_tail
        if len(rest) > MAX_EVENT_BYTES:
            self._buf = b""
            raise EventTooLarge(f"an event grew past {MAX_EVENT_BYTES} bytes without ending")
        self._buf = rest
        return events

    def flush(self) -> list[bytes]:
        """At the end of the stream: a last event that lacked its blank line."""
        rest, self._buf = self._buf, b""
        return [rest.replace(b"\r\n", b"\n").strip(b"\r\n")] if rest.strip() else []

    @property
    def pending(self) -> bool:
        return bool(self._buf.strip())


def event_data(raw: bytes) -> bytes | None:
    """The `data:` payload of one raw event (multi-line data joined with \\n), or None (comments, empty)."""
    if raw.startswith(b"event: ") and raw.count(b"\n") == 1:  # the common shape: one event line, one data line
        line = raw[raw.index(b"\n") + 1:]
        if line.startswith(b"data: "):
            return line[6:]
    lines = [ln[5:].removeprefix(b" ") for ln in raw.split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def event_name(raw: bytes) -> str | None:
    for line in raw.split(b"\n"):
        if line.startswith(b"event:"):
            return line[6:].strip().decode("utf-8", "replace")
    return None


def events(body: bytes) -> list[tuple[str | None, str]]:
    """A whole SSE body as (event name, data text) pairs, in order; events without data are left out."""
    splitter = EventSplitter()
    raws = splitter.feed(body) + splitter.flush()
    out = []
    for raw in raws:
        data = event_data(raw)
        if data is not None:
            out.append((event_name(raw), data.decode("utf-8", "replace")))
    return out


def payloads(body: bytes) -> list[Any]:
    """The data payloads of an SSE body, parsed where they are JSON (`[DONE]` and other text stay strings)."""
    out: list[Any] = []
    for _, text in events(body):
        try:
            out.append(json.loads(text))
        except ValueError:
            out.append(text)
    return out
