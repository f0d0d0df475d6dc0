"""The relay's HTTP/1.1 client for its calls to Vertex AI: keep-alive connections per origin, h11 framing,
asyncio streams.

Why not httpx here: profiled at 16 concurrent streams, httpx took ~1.4 ms of CPU per call inside the relay — a
fifth of modelmux's CPU per stream — mostly in its pool, which tests every idle connection with select() on
each request (so the cost grows with concurrency). The relay needs much less: POST a body, read the status
and headers within a first-byte limit, then the body read by read within an idle limit. A connection goes back
to the pool only when its answer was read to the end; one the server closed while idle is replaced once.
A whole body read (`aread`) is capped, after decompression too (`max_body_bytes`, default 64 MiB): a bigger one
— or a gzip bomb — is `BodyTooLarge`, found while reading, never after holding it all.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import certifi
import h11

from .decoding import Decoder, Undecodable

_READ_SIZE = 65536
_MAX_IDLE_PER_ORIGIN = 256
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024  # config bounds.max_upstream_bytes
DECODED = frozenset({"gzip", "x-gzip", "deflate"})  # the codings an answer is decoded from (the relay asks for gzip)


class UpstreamError(Exception):
    """The call failed: no connection, or the answer broke off or was not HTTP."""


def _valid_header_value(value: str) -> bool:
    return value == value.strip() and not any(c in value for c in "\r\n\0")


class ConnectTimeout(UpstreamError):
    pass


class FirstByteTimeout(UpstreamError):
    pass


class IdleTimeout(UpstreamError):
    pass


class BodyTooLarge(UpstreamError):
    """The answer's body, as read or once decompressed, is over the cap: it was not read further."""

    def __init__(self, limit: int):
        super().__init__(f"Vertex AI's answer is larger than {limit} bytes (bounds.max_upstream_bytes)")
        self.limit = limit


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

    def __init__(self, client: UpstreamClient, conn: _Connection, status: int, headers: dict[str, str],
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.status_code = status
        self.headers = headers  # lower-case names
        self.idle_seconds: float | None = None  # the longest wait for the next piece of the body (post sets it)
        self.max_body_bytes = max_body_bytes  # what `aread` holds at most, decoded
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
        """The whole body, decoded when Vertex compressed it (gzip, deflate); BodyTooLarge past `max_body_bytes`,
        counted as it arrives and as it inflates (a small gzip body may inflate to gigabytes)."""
        if self._body is None:
            limit = self.max_body_bytes
            encoding = self.headers.get("content-encoding", "").strip().lower()
            decoder = Decoder(encoding) if encoding in DECODED else None
            body = bytearray()
            try:
                if decoder is None and _length(self.headers) > limit:
                    raise BodyTooLarge(limit)  # announced: not worth reading
                async for piece in self.aiter_raw():
                    # inflated a step at a time (decoding.py): never more than the cap plus one step held
                    if decoder is None:
                        body += piece
                    else:
                        decoder.feed_into(body, piece, limit - len(body))
                    if len(body) > limit:
                        raise BodyTooLarge(limit)
                if decoder is not None:
                    decoder.finish()  # an empty body stays empty, as gzip.decompress(b"") does
            except Undecodable as err:
                await self.aclose()
                raise UpstreamError(str(err)) from err
            except BodyTooLarge:
                await self.aclose()  # the rest is never read: the connection cannot be reused
                raise
            self._body = bytes(body)
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


def _length(headers: dict[str, str]) -> int:
    try:
        return int(headers.get("content-length") or 0)
    except ValueError:
        return 0


class UpstreamClient:
    # each answer's `aread` cap, unless the client or `post` is given another: the process's default, which
    # addons/runtime.py keeps to the configuration's bounds.max_upstream_bytes (a reload applies at once)
    max_body_bytes = DEFAULT_MAX_BODY_BYTES

    def __init__(self, cafile: str | None = None, *, max_body_bytes: int | None = None) -> None:
        # certifi by default: the same public roots httpx trusted before (the proxy's own trust settings are for
        # its clients)
        self._ssl = ssl.create_default_context(cafile=cafile or certifi.where())
        self._idle: dict[_Origin, list[_Connection]] = {}
        if max_body_bytes is not None:
            self.max_body_bytes = max_body_bytes

    async def post(self, url: str, headers: dict[str, str], body: bytes, *, connect_seconds: float,
                   first_byte_seconds: float, max_body_bytes: int | None = None) -> Response:
        """Send the request and wait for the answer's status and headers. `max_body_bytes`: the cap of this
        answer's `aread` (default: the client's)."""
        parts = urlsplit(url)
        scheme = parts.scheme
        origin = (scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            request = h11.Request(method="POST", target=target, headers=[("host", parts.netloc), *headers.items(),
                                                                         ("content-length", str(len(body)))])
        except h11.LocalProtocolError:  # its message quotes the header, the token maybe: never passed on
            names = [k for k, v in headers.items() if not _valid_header_value(v)]
            raise UpstreamError(f"the request to Vertex AI has an invalid header value ({', '.join(names) or '?'})"
                                ) from None
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
            resp = Response(self, conn, event.status_code, headers,
                            self.max_body_bytes if max_body_bytes is None else max_body_bytes)
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
