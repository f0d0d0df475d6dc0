"""Undoing an HTTP content coding (gzip, deflate, br, zstd) without ever holding much more than the caller allows.

Why: a compressed body is counted in wire bytes, and a few kB of gzip inflate to gigabytes (a bomb). Here output
is produced a step (`STEP` bytes) at a time and `feed` stops as soon as more than the room it was given came out,
so a bomb is found having produced at most room + STEP bytes. Used for client request bodies (request_body.py)
and image fetches (images.py).
"""

from __future__ import annotations

import zlib

import brotli

try:
    from compression import zstd  # Python 3.14+
except ImportError:  # pragma: no cover - before 3.14: the backport (a mitmproxy dependency)
    from backports import zstd

STEP = 256 * 1024  # bytes of output per decompressor call
CODINGS = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd"})
_MEMBERS = frozenset({"gzip", "x-gzip", "zstd"})  # a body may be several members / frames one after the other
_ERRORS = (zlib.error, brotli.error, zstd.ZstdError, EOFError)


class Undecodable(ValueError):
    """Not a body of the coding it claims (corrupt, truncated, trailing bytes), or a coding not supported."""


class _Zlib:
    def __init__(self, wbits: int):
        self._d = zlib.decompressobj(wbits)

    def step(self, data: bytes) -> bytes:
        d = self._d
        return d.decompress(d.unconsumed_tail + data if d.unconsumed_tail else data, STEP)

    @property
    def pending(self) -> bool:
        return bool(self._d.unconsumed_tail)

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused(self) -> bytes:
        return self._d.unused_data


class _Brotli:
    def __init__(self):
        self._d = brotli.Decompressor()

    def step(self, data: bytes) -> bytes:
        # brotli's buffer grows in blocks past its limit (up to about twice it): half a step keeps a call within one
        return self._d.process(data, output_buffer_limit=STEP // 2)

    @property
    def pending(self) -> bool:
        return not self._d.can_accept_more_data()

    @property
    def eof(self) -> bool:
        return self._d.is_finished()

    unused = b""  # bytes after the end of a brotli stream are an error of process()


class _Zstd:
    def __init__(self):
        self._d = zstd.ZstdDecompressor()

    def step(self, data: bytes) -> bytes:
        return self._d.decompress(data, STEP)

    @property
    def pending(self) -> bool:
        return not self._d.needs_input and not self._d.eof

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused(self) -> bytes:
        return self._d.unused_data


class Decoder:
    """One body's content coding undone piece by piece. `feed(data, room)` returns the output of `data`, or stops
    once more than `room` bytes came out (the caller refuses the body then: the rest is never decoded);
    `finish()` raises Undecodable when the body ended mid-stream. Any corrupt input raises Undecodable."""

    def __init__(self, coding: str):
        coding = coding.strip().lower()
        if coding not in CODINGS:
            raise Undecodable(f"content-encoding {coding[:40]!r} is not supported (gzip, deflate, br, zstd)")
        self.coding = coding
        self._engine: _Zlib | _Brotli | _Zstd | None = None
        self._head = b""  # deflate: the first bytes, until they tell zlib-wrapped from raw deflate

    def _new(self, first: bytes) -> _Zlib | _Brotli | _Zstd:
        if self.coding in ("gzip", "x-gzip"):
            return _Zlib(31)
        if self.coding == "br":
            return _Brotli()
        if self.coding == "zstd":
            return _Zstd()
        # deflate means zlib-wrapped (RFC 9110), but some senders send raw deflate: told apart by the zlib header
        b0, b1 = first[0], first[1]
        return _Zlib(15 if b0 & 0x0F == 8 and (b0 << 8 | b1) % 31 == 0 else -15)

    def feed(self, data: bytes, room: int) -> bytes:
        out = bytearray()
        self.feed_into(out, data, room)
        return bytes(out)

    def feed_into(self, out: bytearray, data: bytes, room: int) -> None:
        """`feed`, appending to `out` (a body being gathered: no copy of each piece's output)."""
        if self._engine is None:
            if not data:
                return
            if self.coding == "deflate" and len(self._head) + len(data) < 2:
                self._head += data
                return
            self._head, data = b"", self._head + data
            self._engine = self._new(data)
        start = len(out)
        engine = self._engine
        try:
            while True:
                if engine.eof:
                    if self.coding in ("gzip", "x-gzip") and not data.strip(b"\0"):
                        data = b""  # zero padding after the last member, as gzip tolerates
                    if not data:
                        break
                    if self.coding not in _MEMBERS:
                        raise Undecodable(f"{self.coding} body has bytes after its end")
                    engine = self._engine = self._new(data)
                chunk = engine.step(data)
                data = engine.unused if engine.eof else b""
                out += chunk
                if len(out) - start > room:
                    break
                if not (data or engine.pending or chunk):  # output may still be held inside: asked until none
                    break
        except _ERRORS as err:
            raise Undecodable(f"undecodable {self.coding} body ({type(err).__name__})") from None

    def finish(self) -> None:
        if self._head or self._engine is not None and not self._engine.eof:
            raise Undecodable(f"truncated {self.coding} body")


def codings(header: str) -> list[str]:
    """The codings of a content-encoding header in the order to undo them (the last applied first), identity
    left out."""
    return [c for c in (p.strip().lower() for p in reversed(header.split(","))) if c and c != "identity"]


def decode(content: bytes, header: str, limit: int) -> bytes | None:
    """A whole body decoded per its content-encoding header (several codings undone in turn), or None when it is
    over `limit` bytes at any stage; Undecodable when it is not what it claims."""
    for coding in codings(header):
        decoder = Decoder(coding)
        content = decoder.feed(content, limit)
        if len(content) > limit:
            return None
        decoder.finish()
    return content
