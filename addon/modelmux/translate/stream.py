"""Anthropic SSE (Vertex `streamRawPredict`) → OpenAI chat.completion.chunk SSE, incrementally. Pure: no I/O.

`feed(bytes)` takes whatever one socket read delivered — events and UTF-8 characters may be split anywhere —
and returns the OpenAI bytes ready to send now; `finish()` is called when the upstream body ended. Output,
as OpenAI produces it:

- one role chunk first (`delta: {"role": "assistant", "content": ""}`), one stable id, `created` in seconds;
- a content chunk per text delta, forwarded the moment its event is complete (no coalescing);
- tool calls: one index per call (0, 1, …); id, type and name only on its first chunk, then argument
  fragments; a call with no arguments still ends as `"{}"`; names restored to the client's;
- the JSON-answer tool (response_format) streams as `content`, and any prose beside it (a refusal) as
  `refusal`; thinking as `reasoning_content` when exposed;
- a plain-text refusal (stop_reason `refusal`) has streamed as `content` before Claude says it is one: it ends
  with `finish_reason: content_filter`, as OpenAI's own content filter does mid-stream;
- `finish_reason` exactly once, on the last choice chunk; then, when `include_usage`, a chunk with
  `choices: []` and usage; then `data: [DONE]`;
- an upstream `error` event → `data: {"error": {...}}`, which the OpenAI SDKs raise; no `[DONE]` after it;
- an upstream that ends before `message_stop` → such an error too, never a clean finish;
- unknown event types (`vertex_event`, `ping`, future ones) are ignored.

With `coalesce=True` (streaming mode `buffered`), consecutive deltas of one block that arrive in the same
`feed` leave as one chunk; the relay decides how long a feed gathers (the window). `message_as_events` turns a
non-streamed Vertex message into the events it would have streamed (streaming mode `never`).

The hot path builds chunks from pre-rendered prefixes with `json.dumps` of the delta only: it runs once per
upstream event inside mitmproxy's single thread.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import OpenAIError, from_stream_error
from .response import AnswerShape, completion_id, finish_reason, json_answer, usage
from .sse import EventSplitter, EventTooLarge, event_data

_dumps = json.dumps
_loads = json.loads

# content block kinds
_TEXT, _TOOL, _JSON, _THINKING, _OTHER = range(5)


class AnthropicStream:
    """What every translator of Vertex's Anthropic SSE shares: reads split anywhere become whole events for
    `_render`; the end of the body without `message_stop` is a truncation the client must see. Subclasses have
    `_events` (an EventSplitter), `done`, `failed`, `_render(events) -> bytes` and `fail(err) -> bytes`."""

    _events: EventSplitter
    done: bool
    failed: OpenAIError | None

    def feed(self, data: bytes) -> bytes:
        if self.done or self.failed:
            return b""
        try:
            events = self._events.feed(data)
        except EventTooLarge as err:
            return self.fail(OpenAIError(502, f"Vertex AI sent an unreadable stream: {err}", "server_error", None,
                                         "bad_upstream_event"))
        return self._render(events) if events else b""

    def finish(self) -> bytes:
        """The upstream body ended. Anything but a completed message is an error the client must see."""
        if self.done or self.failed:
            return b""
        out = self._render(self._events.flush())  # a last event without its blank line
        if self.done or self.failed:
            return out
        return out + self.fail(OpenAIError(502, "Vertex AI ended the stream before the message was complete "
                                                "(no message_stop); the answer is truncated.",
                                           "server_error", None, "stream_truncated"))



class StreamTranslator(AnthropicStream):
    def __init__(self, shape: AnswerShape, coalesce: bool = False):
        self.shape = shape
        self.coalesce = coalesce
        self._events = EventSplitter()
        self._prefix = ""  # rendered once the id is known (message_start)
        self._started = False
        self.done = False  # message_stop seen and final chunks sent
        self.failed: OpenAIError | None = None
        self._stop_reason: str | None = None
        self._usage: dict[str, Any] = {}
        self._blocks: dict[int, list[Any]] = {}  # upstream index → [kind, openai tool index, saw arguments?]
        self._tool_calls = 0
        self._json_parts: list[str] = []
        self._thinking: list[dict[str, Any]] = []  # kept for the tool loop (see kept_thinking)
        self._first_tool_id: str | None = None
        # With a JSON answer Claude is forced to call its tool and writes no prose; text then is a refusal, and
        # as `content` it would break clients that parse the content as JSON while it streams.
        self._text_open = '{"refusal": ' if shape.json_tool else '{"content": '
        self.events_in = 0
        self.chunks_out = 0

    @property
    def usage(self) -> dict[str, Any]:
        """OpenAI usage of what has streamed so far (final once `done`)."""
        return usage(self._usage)

    @property
    def upstream_usage(self) -> dict[str, Any]:
        """Vertex's (Anthropic) usage of what has streamed so far."""
        return self._usage

    @property
    def kept_thinking(self) -> tuple[str, list[dict[str, Any]]] | None:
        """(first tool call id, thinking blocks) to send back upstream when the client continues the loop."""
        if self._thinking and self._first_tool_id:
            return self._first_tool_id, self._thinking
        return None

    # --- public -------------------------------------------------------------------------------------------

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
        held: dict[str, Any] | None = None  # coalescing: a delta that later ones of its block extend
        for raw in events:
            data = event_data(raw)
            if data is None:
                continue
            self.events_in += 1
            try:
                event = _loads(data)
                kind = event.get("type")
                if self.coalesce:
                    if kind == "content_block_delta" and _extend(held, event):
                        continue
                    if held is not None:
                        self._delta(held, parts)
                        held = None
                    if kind == "content_block_delta" and self._started and isinstance(event.get("delta"), dict):
                        held = event  # well-formed only: it is rendered after the loop, outside this try
                        continue
                if not self._started and kind in ("content_block_start", "content_block_delta", "message_stop"):
                    self._start({}, parts)  # content before message_start: keep the stream well-formed
                if kind == "content_block_delta":
                    self._delta(event, parts)
                elif kind == "content_block_start":
                    self._block_start(event, parts)
                elif kind == "content_block_stop":
                    self._block_stop(event, parts)
                elif kind == "message_start":
                    self._start(event.get("message") or {}, parts)
                elif kind == "message_delta":
                    self._stop_reason = (event.get("delta") or {}).get("stop_reason") or self._stop_reason
                    self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
                elif kind == "message_stop":
                    self._stop(parts)
                    break
                elif kind == "error":
                    self.failed = from_stream_error(event)
                    parts.append(f"data: {_dumps(self.failed.body())}\n\n")
                    break
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
                self.failed = OpenAIError(502, f"Vertex AI sent an unreadable stream event: {type(err).__name__}",
                                          "server_error", None, "bad_upstream_event")
                parts.append(f"data: {_dumps(self.failed.body())}\n\n")
                break
        if held is not None and not self.failed:
            try:
                self._delta(held, parts)
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
                self.failed = OpenAIError(502, f"Vertex AI sent an unreadable stream event: {type(err).__name__}",
                                          "server_error", None, "bad_upstream_event")
                parts.append(f"data: {_dumps(self.failed.body())}\n\n")
        self.chunks_out += len(parts)
        return "".join(parts).encode() if parts else b""

    def _delta(self, event: dict[str, Any], parts: list[str]) -> None:
        delta = event["delta"]
        dtype = delta.get("type")
        if dtype == "text_delta":
            if delta.get("text"):
                parts.append(self._chunk(self._text_open + _dumps(delta["text"]) + "}"))
            return
        block = self._blocks.get(event.get("index", 0))
        if dtype == "input_json_delta" and block is not None:
            fragment = delta.get("partial_json") or ""
            if not fragment:
                return
            if block[0] == _TOOL:
                block[2] = True
                parts.append(self._chunk('{"tool_calls": [{"index": ' + str(block[1])
                                         + ', "function": {"arguments": ' + _dumps(fragment) + "}}]}"))
            elif block[0] == _JSON:
                if self.shape.json_wrapped:  # the wrapper is removed once the whole input is known
                    self._json_parts.append(fragment)
                else:
                    parts.append(self._chunk('{"content": ' + _dumps(fragment) + "}"))
        elif dtype == "thinking_delta" and block is not None:
            text = delta.get("thinking") or ""
            block[1]["thinking"] += text
            if text and self.shape.expose_reasoning:
                parts.append(self._chunk('{"reasoning_content": ' + _dumps(text) + "}"))
        elif dtype == "signature_delta" and block is not None:
            block[1]["signature"] = block[1].get("signature", "") + (delta.get("signature") or "")

    def _block_start(self, event: dict[str, Any], parts: list[str]) -> None:
        index = event.get("index", 0)
        cb = event.get("content_block") or {}
        btype = cb.get("type")
        if btype == "tool_use":
            name = cb.get("name", "")
            if self._first_tool_id is None:
                self._first_tool_id = cb.get("id")
            if name == self.shape.json_tool:
                self._blocks[index] = [_JSON, None, False]
                return
            k = self._tool_calls
            self._tool_calls += 1
            self._blocks[index] = [_TOOL, k, False]
            call = {"index": k, "id": cb.get("id"), "type": "function",
                    "function": {"name": self.shape.tool_names.get(name, name), "arguments": ""}}
            parts.append(self._chunk('{"tool_calls": [' + _dumps(call) + "]}"))
        elif btype == "thinking":
            kept = {"type": "thinking", "thinking": cb.get("thinking") or "", "signature": cb.get("signature") or ""}
            self._thinking.append(kept)
            self._blocks[index] = [_THINKING, kept, False]
        elif btype == "redacted_thinking":
            self._thinking.append(dict(cb))
            self._blocks[index] = [_OTHER, None, False]
        elif btype == "text":
            self._blocks[index] = [_TEXT, None, False]
            if cb.get("text"):
                parts.append(self._chunk(self._text_open + _dumps(cb["text"]) + "}"))
        else:
            self._blocks[index] = [_OTHER, None, False]

    def _block_stop(self, event: dict[str, Any], parts: list[str]) -> None:
        block = self._blocks.get(event.get("index", 0))
        if block is None:
            return
        if block[0] == _TOOL and not block[2]:  # a call without arguments is still valid JSON for the client
            parts.append(self._chunk('{"tool_calls": [{"index": ' + str(block[1])
                                     + ', "function": {"arguments": "{}"}}]}'))
        elif block[0] == _JSON and self.shape.json_wrapped:
            text = "".join(self._json_parts)
            self._json_parts = []
            answer = json_answer(_loads(text) if text.strip() else {}, True)
            parts.append(self._chunk('{"content": ' + _dumps(answer) + "}"))

    def _start(self, message: dict[str, Any], parts: list[str]) -> None:
        if self._started:
            return
        self._started = True
        self._usage.update(message.get("usage") or {})
        ident = completion_id(message.get("id"), self.shape.fallback_id)
        head = {"id": ident, "object": "chat.completion.chunk", "created": self.shape.created,
                "model": self.shape.model}
        # '{"id":…,"model":…, "choices": [{"index": 0, "delta": ' — the delta and the tail follow per chunk
        self._prefix = "data: " + _dumps(head)[:-1] + ', "choices": [{"index": 0, "delta": '
        parts.append(self._chunk('{"role": "assistant", "content": ""}'))

    def _chunk(self, delta_json: str, finish: str | None = None) -> str:
        tail = ', "logprobs": null, "finish_reason": ' + (f'"{finish}"' if finish else "null") + "}]}\n\n"
        return self._prefix + delta_json + tail

    def _stop(self, parts: list[str]) -> None:
        parts.append(self._chunk("{}", finish_reason(self._stop_reason, self._tool_calls)))
        if self.shape.include_usage:
            parts.append(self._prefix.split(', "choices"', 1)[0] + ', "choices": [], "usage": '
                         + _dumps(usage(self._usage)) + "}\n\n")
        parts.append("data: [DONE]\n\n")
        self.done = True


_MERGED = {"text_delta": "text", "input_json_delta": "partial_json", "thinking_delta": "thinking"}


def _extend(held: dict[str, Any] | None, event: dict[str, Any]) -> bool:
    """Append `event`'s delta to `held` when both are the same kind of delta of the same block."""
    if held is None or held.get("index") != event.get("index"):
        return False
    delta, into = event.get("delta") or {}, held["delta"]
    field = _MERGED.get(delta.get("type"))
    if field is None or delta.get("type") != into.get("type"):
        return False
    into[field] = (into.get(field) or "") + (delta.get(field) or "")
    return True


def message_as_events(message: dict[str, Any]) -> bytes:
    """A complete Vertex (Anthropic) message as the SSE events `streamRawPredict` would have sent for it."""
    def event(obj: dict[str, Any]) -> str:
        return f"event: {obj['type']}\ndata: {_dumps(obj)}\n\n"

    usage_in = dict(message.get("usage") or {})
    head = {k: v for k, v in message.items() if k not in ("content", "stop_reason", "stop_sequence")}
    out = [event({"type": "message_start", "message": {**head, "content": [], "usage": usage_in}})]
    for i, block in enumerate(message.get("content") or []):
        btype = block.get("type")
        if btype == "text":
            citations = block.get("citations") or []
            start = {"type": "text", "text": "", **({"citations": []} if citations else {})}
            out.append(event({"type": "content_block_start", "index": i, "content_block": start}))
            for citation in citations:  # as Anthropic streams them: before the text they cite
                out.append(event({"type": "content_block_delta", "index": i,
                                  "delta": {"type": "citations_delta", "citation": citation}}))
            out.append(event({"type": "content_block_delta", "index": i,
                              "delta": {"type": "text_delta", "text": block.get("text") or ""}}))
        elif btype == "tool_use":
            out.append(event({"type": "content_block_start", "index": i,
                              "content_block": {**block, "input": {}}}))
            if block.get("input"):
                out.append(event({"type": "content_block_delta", "index": i,
                                  "delta": {"type": "input_json_delta", "partial_json": _dumps(block["input"])}}))
        elif btype == "thinking":
            out.append(event({"type": "content_block_start", "index": i,
                              "content_block": {"type": "thinking", "thinking": "", "signature": ""}}))
            out.append(event({"type": "content_block_delta", "index": i,
                              "delta": {"type": "thinking_delta", "thinking": block.get("thinking") or ""}}))
            out.append(event({"type": "content_block_delta", "index": i,
                              "delta": {"type": "signature_delta", "signature": block.get("signature") or ""}}))
        else:  # redacted_thinking and other whole blocks arrive complete in their start event
            out.append(event({"type": "content_block_start", "index": i, "content_block": block}))
        out.append(event({"type": "content_block_stop", "index": i}))
    out.append(event({"type": "message_delta",
                      "delta": {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")},
                      "usage": {"output_tokens": usage_in.get("output_tokens", 0)}}))
    out.append(event({"type": "message_stop"}))
    return "".join(out).encode()
