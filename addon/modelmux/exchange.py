"""One typed record per translated request: what the hooks, the relay, the metrics, the dump and the log line need.

The Translate addon creates it when a request is translated and keeps it (by flow id) until the exchange ends;
the relay writes its `Outcome` into it; the API-specific `Call` (apis/) decides what the answer looks like.
Nothing of it goes into `flow.metadata` (which mitmproxy may serialise), except the rendered pair in mitmweb.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from .upstream import Outcome

MAX_CAPTURE = 4 * 1024 * 1024  # per direction of one stream: a runaway answer must not eat the memory


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts of one exchange, by kind (Vertex's view: `input` excludes cached input)."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @classmethod
    def from_anthropic(cls, usage: dict[str, Any] | None) -> Tokens:
        u = usage or {}
        return cls(int(u.get("input_tokens") or 0), int(u.get("output_tokens") or 0),
                   int(u.get("cache_read_input_tokens") or 0), int(u.get("cache_creation_input_tokens") or 0))

    @property
    def prompt(self) -> int:
        """Every input token, cached or not (OpenAI's prompt / input tokens)."""
        return self.input + self.cache_read + self.cache_write


@dataclass(eq=False, slots=True)
class Capture:
    """The bodies of one exchange, kept only when dumping or showing pairs (mitmweb)."""

    openai_request: Any
    vertex_request: dict[str, Any]
    upstream: bytearray = field(default_factory=bytearray)  # streamed: Vertex's SSE as it came
    out: bytearray = field(default_factory=bytearray)  # streamed: what the client received
    vertex_response: dict[str, Any] | None = None  # buffered: Vertex's answer

    def add(self, upstream: bytes, out: bytes) -> None:
        if len(self.upstream) < MAX_CAPTURE:
            self.upstream += upstream
        if len(self.out) < MAX_CAPTURE:
            self.out += out


class StreamTranslator(Protocol):
    """What every API's incremental translator offers (translate/stream.py is the chat one)."""

    done: bool
    failed: Any

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...

    def fail(self, err: Any) -> bytes: ...

    @property
    def upstream_usage(self) -> dict[str, Any]: ...


@dataclass(eq=False, slots=True)
class Exchange:
    api: str  # chat, responses, embeddings, …
    requested_model: str  # the name the client sent (echoed)
    model_label: str  # its metric label: a configured name, or "other"
    vertex_model: str
    region: str  # the configured region (the first the relay tries)
    vertex_url: str
    stream: bool  # the client asked for a stream
    delivery: str | None  # a streamed request's streaming mode: passthrough, buffered or never
    call: Any  # the API's answer logic (apis/*.Call)
    received: float = field(default_factory=time.time)
    outcome: Outcome = field(default_factory=Outcome)  # written by the relay
    plan_token: str | None = None  # a streamed request's relay plan, until the relay takes it
    upstream_headers: float | None = None
    first_chunk: float | None = None
    done: float | None = None
    tokens: Tokens | None = None
    stream_error: int | None = None  # the status of a failure after the stream started
    streaming: bool = False
    recorded: bool = False
    capture: Capture | None = None
    key_name: str | None = None  # the client key's name (security.client_keys), for limits and spend

    @property
    def served_region(self) -> str:
        return self.outcome.region or self.region

    @property
    def attempts(self) -> int:
        return self.outcome.attempts or 1

    def ms(self, at: float | None) -> float | None:
        return round((at - self.received) * 1000, 1) if at is not None else None
