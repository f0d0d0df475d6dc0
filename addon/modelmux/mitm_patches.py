"""The three places where modelmux changes how mitmproxy itself handles a client connection, for limits that no
mitmproxy option or hook can set (docs/security.md). Verified on mitmproxy 12.x; each patch is installed once, at
class level, before the listeners start (`ConnectionLimits.load`), and does nothing until a policy is set in `HOOKS`.

1. Admission — `ServerInstance.handle_stream`, where mitmproxy turns an accepted TCP connection into a connection
   handler: past `HOOKS.gate`'s cap the socket is closed at once, before any handler, hook or log line exists
   (mitmproxy's own `client_connected` hook comes after its per-connection log lines and tasks).
2. Request bodies — `HttpStream.state_consume_request_body` / `state_stream_request_body`, which receive a
   request body piece by piece: `HOOKS.bodies` sees each piece's size (progress, for the idle limit) and may have
   the piece dropped instead of buffered (a request already refused: 413, 403) — mitmproxy would otherwise buffer
   the whole body of a request whose answer an addon set in `requestheaders` before it sends that answer.
3. HTTP/1 request heads — `Http1Server.read_headers` buffers an unfinished head without bound (mitmproxy's own
   "FIXME: protect against header size DoS"): past `HOOKS.max_header_bytes` it answers 431 and closes.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Verdict(enum.Enum):
    KEEP = "keep"  # buffer the piece, as mitmproxy does
    DROP = "drop"  # the request was refused: do not buffer it
    REFUSED = "refused"  # refused by this piece: drop what was buffered too


class BodyPolicy(Protocol):
    def on_body(self, flow, total: int, buffered: bool) -> Verdict:
        """A piece of `flow`'s request body arrived; `total` bytes so far. `buffered`: mitmproxy buffers the body
        (it is streamed otherwise, and only progress counts)."""


class Gate:
    """How many client connections the listeners hold, and a cap past which new ones are closed at accept."""

    def __init__(self, limit: int | None = None):
        self.limit = limit
        self.open = 0
        self.refused = 0  # since the last `take_refused`

    def admit(self) -> bool:
        if self.limit is not None and self.open >= self.limit:
            self.refused += 1
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def take_refused(self) -> int:
        n, self.refused = self.refused, 0
        return n


@dataclass
class Hooks:
    gate: Gate | None = None
    refuse_all: str | None = None  # a start that was refused: not one connection is served meanwhile
    bodies: BodyPolicy | None = None
    max_header_bytes: int | None = None
    on_header_overflow: Callable[[], None] | None = None  # counted by whoever logs it


HOOKS = Hooks()


def install() -> None:
    _admission()
    _bodies()
    _heads()


def _once(cls: type, name: str, make: Callable[[Callable], Callable]) -> None:
    original = getattr(cls, name)
    if getattr(original, "_modelmux", False):
        return
    patched = functools.wraps(original)(make(original))
    patched._modelmux = True  # type: ignore[attr-defined]
    setattr(cls, name, patched)


def _admission() -> None:
    from mitmproxy.proxy.mode_servers import ServerInstance

    def make(original):
        async def handle_stream(self, reader, writer=None):
            if HOOKS.refuse_all is not None:
                writer.close()
                return None
            gate = HOOKS.gate
            if gate is None or not isinstance(writer, asyncio.StreamWriter):  # UDP, WireGuard: mitmproxy_rs streams
                return await original(self, reader, writer)
            if not gate.admit():
                writer.transport.abort()
                return None
            try:
                return await original(self, reader, writer)
            finally:
                gate.release()
        return handle_stream

    _once(ServerInstance, "handle_stream", make)


def _bodies() -> None:
    from mitmproxy.proxy.layers.http import HttpStream
    from mitmproxy.proxy.layers.http._events import RequestData

    def make_consume(original):
        def state_consume_request_body(self, event):
            policy = HOOKS.bodies
            if policy is not None and isinstance(event, RequestData):
                verdict = policy.on_body(self.flow, len(self.request_body_buf) + len(event.data), True)
                if verdict is not Verdict.KEEP:
                    if verdict is Verdict.REFUSED:
                        self.request_body_buf.clear()
                    return
            yield from original(self, event)
        return state_consume_request_body

    def make_stream(original):
        def state_stream_request_body(self, event):
            policy = HOOKS.bodies
            if policy is not None and isinstance(event, RequestData):
                self._modelmux_streamed = getattr(self, "_modelmux_streamed", 0) + len(event.data)
                policy.on_body(self.flow, self._modelmux_streamed, False)
            yield from original(self, event)
        return state_stream_request_body

    _once(HttpStream, "state_consume_request_body", make_consume)
    _once(HttpStream, "state_stream_request_body", make_stream)


def _heads() -> None:
    from mitmproxy.proxy import commands, events
    from mitmproxy.proxy.layers.http._http1 import Http1Server

    def make(original):
        def read_headers(self, event):
            yield from original(self, event)
            limit = HOOKS.max_header_bytes
            if (limit is not None and isinstance(event, events.DataReceived) and self.state == self.read_headers
                    and len(self.buf) > limit):
                if HOOKS.on_header_overflow is not None:
                    HOOKS.on_header_overflow()
                yield commands.SendData(self.conn, header_overflow_response(limit))
                yield commands.CloseConnection(self.conn)
                self.state = self.done
        return read_headers

    _once(Http1Server, "read_headers", make)


def header_overflow_response(limit: int) -> bytes:
    """431 for a request head over the limit, in OpenAI's error shape (it may be an API call: it cannot be told)."""
    body = json.dumps({"error": {"message": f"The request's headers are over {limit} bytes "
                                            "(bounds.max_header_bytes).", "type": "invalid_request_error",
                                 "param": None, "code": "request_header_fields_too_large"}}).encode()
    return (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
