"""A client's request body to one of our APIs: its size bound (`bounds.max_request_bytes`) and its content-encoding.

The bound is enforced on the wire bytes as they arrive (connection_limits.py) and here once more on the decoded
body: a compressed body (`content-encoding: gzip`, `deflate`, `br`, `zstd` — Codex compresses large Responses
requests) is decoded a step at a time and refused with the same 413 as soon as it grows past the bound, so a
gzip bomb never inflates in memory. An uncompressed body is taken as it is, at no cost.
"""

from __future__ import annotations

from mitmproxy import http

from .decoding import Undecodable, decode
from .translate.errors import OpenAIError, invalid_request


def too_large(limit: int, decoded: bool = False) -> OpenAIError:
    """The 413 of a body over `bounds.max_request_bytes` (as sent, or once decompressed)."""
    return OpenAIError(
        413, f"Request too large: the body is over {limit} bytes{' once decompressed' if decoded else ''} "
             "(bounds.max_request_bytes; Vertex AI accepts at most 30 MB per request).", "invalid_request_error",
        None, "request_too_large")


def decoded(request: http.Request, limit: int) -> bytes:
    """The request's body, decoded per its content-encoding, at most `limit` bytes: OpenAIError 413 past it, 400
    when the body is not what its content-encoding says (or names a coding not supported)."""
    raw = request.raw_content or b""
    header = request.headers.get("content-encoding")
    if not header:
        return raw
    try:
        body = decode(raw, header, limit)
    except Undecodable as err:
        raise invalid_request(f"The request body cannot be decoded: {err}.", code="invalid_content_encoding") \
            from None
    if body is None:
        raise too_large(limit, decoded=True)
    return body
