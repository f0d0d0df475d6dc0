"""What every API module gives the Translate addon: a `Prepared` request and the `Call` that shapes its answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mitmproxy import http

from ..exchange import Exchange, StreamTranslator


class Call(Protocol):
    """The API-specific half of one exchange, fixed when the request was translated."""

    def answer(self, ex: Exchange, message: dict[str, Any]) -> http.Response:
        """A complete Vertex (Anthropic) message → the client's non-streamed answer."""

    def translator(self, ex: Exchange, coalesce: bool) -> StreamTranslator:
        """The incremental translator for a streamed answer."""

    def stream_done(self, ex: Exchange, translator: StreamTranslator) -> None:
        """The stream ended (completed or failed): keep what must outlive it."""


@dataclass
class Prepared:
    """A translated request, ready for the relay."""

    requested_model: str
    vertex_model: str
    body: dict[str, Any]  # the Vertex body; `stream: true` in it when the client asked for a stream
    stream: bool
    urls: Callable[[bool], dict[str, str]]  # streamed? → region → URL, in the order to try
    call: Call
    # several non-streamed calls instead of one (embeddings): their bodies, sent at most `max_concurrent` at a
    # time; the Call then has `batch_error(k, status, body, headers, region)` and `async assemble(ex, bodies)`
    batches: list[dict[str, Any]] | None = None
    max_concurrent: int = 1
