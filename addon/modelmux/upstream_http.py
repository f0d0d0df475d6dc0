"""The relay's HTTP/1.1 client for its calls to Vertex AI: keep-alive connections per origin, h11 framing,
asyncio streams.

Why not httpx here: profiled at 16 concurrent streams, httpx took ~1.4 ms of CPU per call inside the relay — a
fifth of modelmux's CPU per stream — mostly in its pool, which tests every idle connection with select() on
each request (so the cost grows with concurrency). The relay needs much less: POST a body, read the status
and headers within a first-byte limit, then the body read by read within an idle limit. A connection goes back
to the pool only when its answer was read to the end; one the server closed while idle is replaced once.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import certifi
import h11

_READ_SIZE = 65536
_MAX_IDLE_PER_ORIGIN = 256


class UpstreamError(Exception):
    """The call failed: no connection, or the answer broke off or was not HTTP."""


class ConnectTimeout(UpstreamError):
    pass


class FirstByteTimeout(UpstreamError):
    pass


class IdleTimeout(UpstreamError):
    pass


_Origin = tuple[str, str, int]  # scheme, host, port


class _Connection:
    __slots__ = ("origin", "reader", "writer", "h11")

    def __init__(self, origin: _Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.origin, self.reader, self.writer = origin, reader, writer
        self.h11 = h11.Connection(h11.CLIENT)

    async def next_event(self) -> h11.Event:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(await self.reader.read(_READ_SIZE))  # b"": the server closed

    @property
    def usable(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


class Response:
    """The status and headers of an answer, its body still to be read (`aiter_raw`) or read (`aread`)."""

    def __init__(self, client: UpstreamClient, conn: _Connection, status: int, headers: dict[str, str]):
        self.status_code = status
        self.headers = headers  # lower-case names
        self.idle_seconds: float | None = None  # the longest wait for the next piece of the body (post sets it)
        self._client: UpstreamClient | None = client
        self._conn: _Connection | None = conn
        self._body: bytes | None = None

    @property
    def is_stream_consumed(self) -> bool:
        return self._body is not None

    @property
    def content(self) -> bytes:
        if self._body is None:
            raise RuntimeError("the body has not been read (aread)")
        return self._body

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives, one piece per read (chunked framing removed, content-encoding kept)."""
        conn = self._conn
        if conn is None:
            raise UpstreamError("the answer was closed before its body was read")
        try:
            while True:
                async with asyncio.timeout(self.idle_seconds):
                    event = await conn.next_event()
                kind = type(event)
                if kind is h11.Data:
                    yield bytes(event.data)
                elif kind is h11.EndOfMessage:
                    self._release()
                    return
                else:
                    raise UpstreamError(f"unexpected {kind.__name__} in the answer")
        except TimeoutError:
            raise IdleTimeout(f"nothing for {self.idle_seconds:g} s") from None
        except (OSError, h11.ProtocolError) as err:
            raise UpstreamError(f"{type(err).__name__}: {err}") from err

    async def aread(self) -> bytes:
        """The whole body, decoded when Vertex compressed it."""
        if self._body is None:
            body = b"".join([piece async for piece in self.aiter_raw()])
            encoding = self.headers.get("content-encoding", "").strip().lower()
            try:
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
            except (OSError, zlib.error, EOFError) as err:
                raise UpstreamError(f"undecodable {encoding} body: {err}") from err
            self._body = body
        return self._body

    async def aclose(self) -> None:
        """Done with the answer: a connection whose body was not read to the end cannot be reused."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _release(self) -> None:
        conn, client, self._conn = self._conn, self._client, None
        if conn is None or client is None:
            return
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            client._release(conn)
        else:
            conn.close()


class UpstreamClient:
    def __init__(self, cafile: str | None = None) -> None:
        # certifi by default: the same public roots httpx trusted before (the proxy's own trust settings are for
        # its clients)
        self._ssl = ssl.create_default_context(cafile=cafile or certifi.where())
        self._idle: dict[_Origin, list[_Connection]] = {}

    async def post(self, url: str, headers: dict[str, str], body: bytes, *, connect_seconds: float,
                   first_byte_seconds: float) -> Response:
        """Send the request and wait for the answer's status and headers."""
        parts = urlsplit(url)
        scheme = parts.scheme
        origin = (scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = h11.Request(method="POST", target=target,
                              headers=[("host", parts.netloc), *headers.items(), ("content-length", str(len(body)))])
        conn = self._pop(origin)
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self._connect(origin, connect_seconds)
            try:
                async with asyncio.timeout(first_byte_seconds):
                    conn.writer.write(conn.h11.send(request) + conn.h11.send(h11.Data(data=body))
                                      + conn.h11.send(h11.EndOfMessage()))
                    await conn.writer.drain()
                    event = await conn.next_event()
                    while type(event) is h11.InformationalResponse:
                        event = await conn.next_event()
            except TimeoutError:
                conn.close()
                raise FirstByteTimeout(f"no answer within {first_byte_seconds:g} s") from None
            except (OSError, h11.ProtocolError) as err:
                conn.close()
                if reused:  # closed by the server while it sat in the pool: once more, on a new connection
                    conn, reused = None, False
                    continue
                raise UpstreamError(f"{type(err).__name__}: {err}") from err
            if type(event) is not h11.Response:
                conn.close()
                raise UpstreamError(f"unexpected {type(event).__name__} instead of an answer")
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}  # h11 lower-cases
            resp = Response(self, conn, event.status_code, headers)
            resp.idle_seconds = first_byte_seconds  # an error body must not hang either; a stream sets its own
            return resp

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def _pop(self, origin: _Origin) -> _Connection | None:
        conns = self._idle.get(origin)
        while conns:
            conn = conns.pop()  # the most recently used: the least likely to have been closed by the server
            if conn.usable:
                return conn
            conn.close()
        return None

    def _release(self, conn: _Connection) -> None:
        conns = self._idle.setdefault(conn.origin, [])
        if len(conns) < _MAX_IDLE_PER_ORIGIN and conn.usable:
            conns.append(conn)
        else:
            conn.close()

    async def _connect(self, origin: _Origin, timeout: float) -> _Connection:
        scheme, host, port = origin
        tls = self._ssl if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, ssl=tls, limit=_READ_SIZE,
                                                               server_hostname=host if tls else None)
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {host}:{port} within {timeout:g} s") from None
        except OSError as err:
            raise UpstreamError(f"{type(err).__name__}: {err}") from err
        return _Connection(origin, reader, writer)
