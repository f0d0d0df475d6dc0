"""Anthropic SSE (Vertex `streamRawPredict`) → OpenAI chat.completion.chunk SSE, incrementally. Pure: no I/O.

`feed(bytes)` takes whatever one socket read delivered — events and UTF-8 characters may be split anywhere —
and returns the OpenAI bytes ready to send now; `finish()` is called when the upstream body ended. Output,
as OpenAI produces it:

- one role chunk first (`delta: {"role": "assistant", "content": ""}`), one stable id, `created` in seconds;
- a content chunk per text delta, forwarded the moment its event is complete (no coalescing);
- `finish_reason` exactly once, on the last choice chunk; then, when `include_usage`, a chunk with
  `choices: []` and usage; then `data: [DONE]`;
- an upstream `error` event → `data: {"error": {...}}`, which the OpenAI SDKs raise; no `[DONE]` after it;
- an upstream that ends before `message_stop` → such an error too, never a clean finish;
- unknown event types (`vertex_event`, `ping`, future ones) are ignored.

The hot path builds chunks from pre-rendered prefixes with `json.dumps` of the delta only: it runs once per
upstream event inside mitmproxy's single thread.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import OpenAIError, from_stream_error
from .response import completion_id, finish_reason, usage

_dumps = json.dumps
_loads = json.loads


class StreamTranslator:
    def __init__(self, *, model: str, created: int, include_usage: bool, fallback_id: str):
        self.model = model
        self.created = created
        self.include_usage = include_usage
        self.fallback_id = fallback_id
        self._buf = b""
        self._prefix = ""  # rendered once the id is known (message_start)
        self._started = False
        self.done = False  # message_stop seen and final chunks sent
        self.failed: OpenAIError | None = None
        self._stop_reason: str | None = None
        self._usage: dict[str, Any] = {}
        self.events_in = 0
        self.chunks_out = 0

    # --- public -------------------------------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        if self.done or self.failed:
            return b""
        buf = self._buf + data
        cr_tail = b""
        if b"\r" in buf:  # CRLF framing is legal SSE; a trailing \r may be the first half of one
            if buf.endswith(b"\r"):
                buf, cr_tail = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n")
        events = buf.split(b"\n\n")
        self._buf = events.pop() + cr_tail
        return self._render(events) if events else b""

    def finish(self) -> bytes:
        """The upstream body ended. Anything but a completed message is an error the client must see."""
        if self.done or self.failed:
            return b""
        out = self.feed(b"\n\n") if self._buf.strip() else b""  # a last event without its blank line
        if self.done or self.failed:
            return out
        return out + self.fail(OpenAIError(502, "Vertex AI ended the stream before the message was complete "
                                                "(no message_stop); the answer is truncated.",
                                           "server_error", None, "stream_truncated"))

    def fail(self, err: OpenAIError) -> bytes:
        """Emit `err` as an SSE error the OpenAI SDKs raise, and stop translating."""
        if self.done or self.failed:
            return b""
        self.failed = err
        self.chunks_out += 1
        return f"data: {_dumps(err.body())}\n\n".encode()

    # --- events -------------------------------------------------------------------------------------------

    def _render(self, events: list[bytes]) -> bytes:
        parts: list[str] = []
        for raw in events:
            data = _event_data(raw)
            if data is None:
                continue
            self.events_in += 1
            try:
                event = _loads(data)
                kind = event.get("type")
                if kind == "content_block_delta":
                    delta = event["delta"]
                    if delta.get("type") == "text_delta" and delta.get("text"):
                        if not self._started:  # content before message_start: keep the stream well-formed
                            self._start({}, parts)
                        parts.append(self._chunk('{"content":' + _dumps(delta["text"]) + "}"))
                elif kind == "message_start":
                    self._start(event.get("message") or {}, parts)
                elif kind == "message_delta":
                    self._stop_reason = (event.get("delta") or {}).get("stop_reason") or self._stop_reason
                    self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
                elif kind == "message_stop":
                    if not self._started:
                        self._start({}, parts)
                    self._stop(parts)
                    break
                elif kind == "error":
                    self.failed = from_stream_error(event)
                    parts.append(f"data: {_dumps(self.failed.body())}\n\n")
                    break
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                self.failed = OpenAIError(502, f"Vertex AI sent an unreadable stream event: {type(err).__name__}",
                                          "server_error", None, "bad_upstream_event")
                parts.append(f"data: {_dumps(self.failed.body())}\n\n")
                break
        self.chunks_out += len(parts)
        return "".join(parts).encode() if parts else b""

    def _start(self, message: dict[str, Any], parts: list[str]) -> None:
        if self._started:
            return
        self._started = True
        self._usage.update(message.get("usage") or {})
        ident = completion_id(message.get("id"), self.fallback_id)
        head = {"id": ident, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        # '{"id":…,"model":…,"choices":[{"index":0,"delta":' — the delta and the tail are appended per chunk
        self._prefix = "data: " + _dumps(head)[:-1] + ', "choices": [{"index": 0, "delta": '
        parts.append(self._chunk('{"role": "assistant", "content": ""}'))

    def _chunk(self, delta_json: str, finish: str | None = None) -> str:
        tail = ', "logprobs": null, "finish_reason": ' + (f'"{finish}"' if finish else "null") + "}]}\n\n"
        return self._prefix + delta_json + tail

    def _stop(self, parts: list[str]) -> None:
        parts.append(self._chunk("{}", finish_reason(self._stop_reason)))
        if self.include_usage:
            parts.append(self._prefix.split(', "choices"', 1)[0] + ', "choices": [], "usage": '
                         + _dumps(usage(self._usage)) + "}\n\n")
        parts.append("data: [DONE]\n\n")
        self.done = True


def _event_data(raw: bytes) -> bytes | None:
    """The `data:` payload of one SSE event (multi-line data joined with \\n), or None (comments, empty)."""
    if raw.startswith(b"event: ") and raw.count(b"\n") == 1:  # the common shape: one event line, one data line
        _, line = raw.split(b"\n", 1)
        if line.startswith(b"data: "):
            return line[6:]
    lines = [ln[5:].removeprefix(b" ") for ln in raw.split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines) if lines else None
