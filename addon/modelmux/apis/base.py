"""What every API module gives the Translate addon: a `Prepared` request and the `Call` that shapes its answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mitmproxy import http

from ..exchange import Exchange, StreamTranslator


@dataclass(frozen=True)
class Client:
    """Who sent the request, as far as the API modules need to know."""

    user_agent: str
    key: str | None  # the client key's name (security.client_keys), when keys are configured


class Call(Protocol):
    """The API-specific half of one exchange, fixed when the request was translated."""

    def answer(self, ex: Exchange, message: dict[str, Any]) -> http.Response | Awaitable[http.Response]:
        """A complete Vertex (Anthropic) message → the client's non-streamed answer. (A Call whose Vertex answer is
        not a message has `answer_body(ex, content)` instead.)"""

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
    keepalive: float = 0.0  # a streamed answer silent this long gets a keep-alive the client sees (0: none)
