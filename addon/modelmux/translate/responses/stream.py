"""Anthropic SSE (Vertex `streamRawPredict`) → OpenAI Responses stream events, incrementally. Pure: no I/O.

The same interface as the chat translator (`translate/stream.py`): `feed(bytes)` takes whatever one socket
read delivered — events and UTF-8 characters may be split anywhere, CRLF framing included — and returns the
bytes to send now; `finish()` when the upstream body ended; `fail(err)` to end the stream with an error;
`done` / `failed` / `usage` / `kept_thinking`. Plus `keepalive()`, for the hook to call when Vertex has been
silent for a while, and `response` / `stored_response`, the final Response for the client and for the store.

Output, as OpenAI streams it (`event: TYPE\\ndata: JSON\\n\\n`, `sequence_number` from 0, no `[DONE]`):
- `response.created` + `response.in_progress` first (on the first upstream event, on `keepalive()` or
  `start()` if that comes sooner: they need nothing from Vertex);
- each output item is `output_item.added` … `output_item.done`, parts `content_part.added` … `.done`, every
  delta between them, items in output order (see response.py for which Claude blocks make which item);
- text: `output_text.delta` (`logprobs: []`) … `output_text.done`; web-search citations as
  `output_text.annotation.added` when their block ends; JSON-mode prose as `refusal.delta` / `.done`;
- web searches: Claude may begin several before their results come; each is paired with its result by tool id
  and done in the order they began (one without a result: `failed`, when anything else begins);
- tool calls: a call whose input is not a whole JSON object (cut off by max_tokens, a failed stream) is
  `incomplete`; `function_call_arguments.delta` … `.done` (with `name`), custom tools
  `custom_tool_call_input.delta` … `.done` (the string input is decoded out of Claude's partial JSON as it
  streams); a `tool_search_call` has no delta events (the spec defines none): its arguments come whole on
  `output_item.done`;
- thinking: a `reasoning` item, a summary part per thinking block with text (`reasoning_summary_part.added`,
  `reasoning_summary_text.delta` … `.done`, `reasoning_summary_part.done`) when `reasoning.summary` was asked;
  the sealed `encrypted_content` on its `output_item.done` when included;
- exactly one of `response.completed` / `response.incomplete` / `response.failed`, with the full Response
  (`output` = every item).
- An upstream `error` event, an unreadable event, or an upstream that ends before `message_stop` closes the
  open item (status incomplete), then sends `error` (the spec's top-level code/message/param, plus the nested
  `error` object OpenAI itself sends and openai-python raises on) and `response.failed` carrying the code
  clients act on (response.response_error). Thinking cut off before its signature is not sealed nor kept.
- A lone surrogate from upstream (a JSON "\\ud83c" escape) leaves as U+FFFD: the output is always UTF-8. After a
  feed that raised, `fail()` still ends the stream (error + response.failed).

`keepalive()` sends `response.in_progress` again (the initial snapshot, a fixed size). An SSE comment would be
cheaper but does not count: Codex's idle timer (300 s) restarts only on a parsed event, and openai-python and
the Vercel AI SDK drop comments before the application sees them; a repeated `response.in_progress` is a valid
event that every one of them passes over (openai-python's stream helper only snapshots `response.created`,
Vercel reads only its id/model, Codex ignores the type).

With `coalesce=True` (streaming mode `buffered`) consecutive deltas of one block within one `feed` leave as one
delta event, as in chat. Blocks that arrive out of order (a malformed stream) still give a valid stream: a new
item closes the one before it, and deltas for a closed item are dropped (text opens a new message).

Hot path: text, argument and thinking deltas are rendered from per-item prefixes with the C string encoder,
events parsed with the C JSON scanner; the full Response is rendered only at the start and the end.
"""

from __future__ import annotations

import json
import re
from json.encoder import encode_basestring_ascii as _enc
from typing import Any

from ..errors import OpenAIError, from_stream_error
from ..response import json_answer, usage as chat_usage
from ..sse import EventSplitter, event_data
from ..stream import AnthropicStream, _extend
from . import ids
from .response import (LONE_SURROGATE, ResponseShape, call_item, call_prefix, compaction_item, custom_input,
                       message_item, output_text, public_items, reasoning_item, response_error, response_object,
                       responses_usage, scrub, signed, stop_status, url_citations, web_search_item,
                       without_surrogates)

_dumps = json.dumps
_loads = json.loads
_scan = json.JSONDecoder().scan_once  # the C scanner: json.loads adds an encoding sniff and two regex passes


def _parse(data: bytes) -> Any:
    """One event's JSON (2-3x faster than json.loads on these small objects)."""
    text = data.decode()
    try:
        obj, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text) and text[end:].strip():
        raise ValueError("extra data after the JSON")
    return obj


def _compact(obj: Any) -> str:
    return _dumps(obj, ensure_ascii=False, separators=(",", ":"))


_UNREADABLE = (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError)

# what an upstream content block feeds
_TEXT, _THINKING, _TOOL, _JSON, _SEARCH, _SUMMARY, _OTHER = range(7)


class _Message:
    """The open message item: its parts are closed one at a time as the kind of part changes."""

    __slots__ = ("index", "id", "part", "content_index", "texts", "annotations", "head", "mid", "tail", "closed")

    def __init__(self, index: int, item_id: str):
        self.index, self.id = index, item_id
        self.part: str | None = None  # "output_text" | "refusal" — the open part
        self.content_index = -1
        self.texts: list[str] = []
        self.annotations: list[dict[str, Any]] = []
        self.closed: list[dict[str, Any]] = []  # finished parts
        self.head = self.mid = self.tail = ""


class _Reasoning:
    __slots__ = ("index", "id", "blocks", "summaries", "open_summary")

    def __init__(self, index: int, item_id: str):
        self.index, self.id = index, item_id
        self.blocks: list[dict[str, Any]] = []
        self.summaries = 0
        self.open_summary: tuple[int, dict[str, Any]] | None = None  # (summary_index, its thinking block)


class _Call:
    __slots__ = ("index", "id", "call_id", "name", "custom", "search", "fragments", "decoder", "streamed", "head",
                 "mid")

    def __init__(self, index: int, item_id: str, call_id: str, name: str, custom: bool, search: bool = False):
        self.index, self.id, self.call_id, self.name, self.custom = index, item_id, call_id, name, custom
        self.search = search  # a tool_search_call: its arguments are an object, sent whole when it is done
        self.fragments: list[str] = []
        self.decoder = _InputDecoder() if custom else None
        self.streamed: list[str] = []  # custom: the input text sent as deltas
        kind = "response.custom_tool_call_input.delta" if custom else "response.function_call_arguments.delta"
        self.head = f'event: {kind}\ndata: {{"type":"{kind}","sequence_number":'
        self.mid = f',"item_id":"{item_id}","output_index":{index},"delta":'


class _Search:
    __slots__ = ("index", "id", "tool_id", "fragments", "answered", "result")

    def __init__(self, index: int, item_id: str, tool_id: str):
        self.index, self.id, self.tool_id = index, item_id, tool_id
        self.fragments: list[str] = []
        self.answered = False  # its web_search_tool_result came
        self.result: Any = None


class ResponsesStreamTranslator(AnthropicStream):
    def __init__(self, shape: ResponseShape, coalesce: bool = False):
        self.shape = shape
        self.coalesce = coalesce  # streaming mode `buffered`: a feed's consecutive deltas of a block → one event
        self._events = EventSplitter()
        self._seq = 0
        self._started = False
        self.done = False
        self.failed: OpenAIError | None = None
        self._stop_reason: str | None = None
        self._usage: dict[str, Any] = {}
        self._output: list[dict[str, Any]] = []  # finished items, stored form, in output order
        self._open: _Message | _Reasoning | _Call | None = None  # the one item not yet done (but searches)
        # web searches begun and not done, in output order: Claude may start several before their results come;
        # each is done, in order, once its result (paired by tool id) came, or failed when anything else begins
        self._searches: list[_Search] = []
        self._broken = False  # the last feed raised: what it rendered never went out (see fail)
        self._parts: list[str] = []  # what the feed running now has rendered
        self._blocks: dict[int, list[Any]] = {}  # upstream index → [kind, state, …]
        self._thinking: list[dict[str, Any]] = []  # kept for the tool loop (see kept_thinking)
        self._first_tool_id: str | None = None
        self._summary: list[str] = []  # compaction mode: Claude's text
        self._final: dict[str, Any] | None = None
        self._snapshot = _compact(response_object(shape, "in_progress", []))
        self.events_in = 0
        self.chunks_out = 0

    # --- what the hook reads --------------------------------------------------------------------------------

    @property
    def usage(self) -> dict[str, Any]:
        """Chat-shaped usage (prompt_tokens…) of what has streamed so far, as the chat translator reports it."""
        return chat_usage(self._usage)

    @property
    def upstream_usage(self) -> dict[str, Any]:
        return dict(self._usage)

    @property
    def kept_thinking(self) -> tuple[str, list[dict[str, Any]]] | None:
        """(first tool call id, thinking blocks) to send back upstream when the client continues the loop."""
        if self._thinking and self._first_tool_id:
            return self._first_tool_id, self._thinking
        return None

    @property
    def stored_response(self) -> dict[str, Any] | None:
        """The final Response with reasoning sealed (for the store); None until the stream ended."""
        return self._final

    @property
    def response(self) -> dict[str, Any] | None:
        """The final Response as the client got it."""
        if self._final is None:
            return None
        return {**self._final, "output": public_items(self._final["output"], self.shape.include_encrypted)}

    # --- public ---------------------------------------------------------------------------------------------

    def start(self) -> bytes:
        if self._started or self.done or self.failed:
            return b""
        parts: list[str] = []
        self._start(parts)
        return self._out(parts)

    def keepalive(self) -> bytes:
        """Bytes that keep clients' idle timers from firing while Vertex is silent (long thinking)."""
        if self.done or self.failed:
            return b""
        parts: list[str] = []
        if not self._started:
            self._start(parts)
        else:
            parts.append(self._snapshot_event("response.in_progress"))
        return self._out(parts)

    def feed(self, data: bytes) -> bytes:
        try:
            return super().feed(data)
        except BaseException:
            self._broken = True  # see fail()
            raise

    def finish(self) -> bytes:
        try:
            return super().finish()
        except BaseException:
            self._broken = True
            raise

    def fail(self, err: OpenAIError) -> bytes:
        """End the stream with `err`: the open item closed, then `error` and `response.failed`. After a feed that
        raised (a bug), the events it rendered before it raised go out first, and then these — even if that feed
        had ended the stream (its terminal event is replaced: the client never got it)."""
        if self._broken:
            return self._crashed(err)
        if self.done or self.failed:
            return b""
        parts: list[str] = []
        self._fail(err, parts)
        return self._out(parts)

    def _crashed(self, err: OpenAIError) -> bytes:
        parts, self._parts, self._broken = self._parts, [], False
        if self.done:  # the terminal event is the last part _stop rendered (the last number too)
            parts.pop()
            self._seq -= 1
            self.done = False
        if self.failed is None:
            try:
                self._fail(err, parts)
            except Exception:  # failing again: an end from what cannot fail, the items done so far, ASCII JSON
                self._final = scrub(response_object(self.shape, "failed", self._output, responses_usage(self._usage),
                                                    response_error(err)))
                parts.append(self._event("response.failed", ',"response":' + _dumps(self.response)))
                self.failed = err
        return self._out(parts)

    # --- events ---------------------------------------------------------------------------------------------

    def _out(self, parts: list[str]) -> bytes:
        self.chunks_out += len(parts)
        if not parts:
            return b""
        text = "".join(parts)
        try:
            return text.encode()
        except UnicodeEncodeError:  # a lone surrogate from upstream (deltas are ASCII-escaped; items are not)
            return without_surrogates(text).encode()

    def _render(self, events: list[bytes]) -> bytes:
        parts: list[str] = []
        self._parts = parts
        held: dict[str, Any] | None = None  # coalescing: a delta that later ones of its block extend
        for raw in events:
            data = event_data(raw)
            if data is None:
                continue
            self.events_in += 1
            try:
                event = _parse(data)
                kind = event.get("type")
                if not self._started and kind in ("message_start", "content_block_start", "content_block_delta",
                                                  "message_delta", "message_stop"):
                    self._start(parts)
                if self.coalesce:
                    if kind == "content_block_delta" and _extend(held, event):
                        continue
                    if held is not None:
                        self._delta(held, parts)
                        held = None
                    if kind == "content_block_delta" and isinstance(event.get("delta"), dict):
                        held = event
                        continue
                if kind == "content_block_delta":
                    self._delta(event, parts)
                elif kind == "content_block_start":
                    self._block_start(event, parts)
                elif kind == "content_block_stop":
                    self._block_stop(event, parts)
                elif kind == "message_start":
                    self._usage.update((event.get("message") or {}).get("usage") or {})
                elif kind == "message_delta":
                    self._stop_reason = (event.get("delta") or {}).get("stop_reason") or self._stop_reason
                    self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
                elif kind == "message_stop":
                    self._stop(parts)
                    break
                elif kind == "error":
                    self._fail(from_stream_error(event), parts)
                    break
                elif kind == "ping" and event.get("modelmux_keepalive"):  # the relay's, in a silence of Vertex
                    if self._started:
                        parts.append(self._snapshot_event("response.in_progress"))
                    else:
                        self._start(parts)
            except _UNREADABLE as err:
                self._unreadable(err, parts)
                break
        if held is not None and not (self.done or self.failed):
            try:
                self._delta(held, parts)
            except _UNREADABLE as err:
                self._unreadable(err, parts)
        return self._out(parts)

    def _unreadable(self, err: Exception, parts: list[str]) -> None:
        self._fail(OpenAIError(502, f"Vertex AI sent an unreadable stream event: {type(err).__name__}",
                               "server_error", None, "bad_upstream_event"), parts)

    def _event(self, kind: str, body: str) -> str:
        """One SSE event; `body` is the JSON members after type and sequence_number, each led by a comma."""
        n = self._seq
        self._seq = n + 1
        return f'event: {kind}\ndata: {{"type":"{kind}","sequence_number":{n}{body}}}\n\n'

    def _snapshot_event(self, kind: str) -> str:
        return self._event(kind, ',"response":' + self._snapshot)

    def _start(self, parts: list[str]) -> None:
        if self._started:
            return
        self._started = True
        parts.append(self._snapshot_event("response.created"))
        parts.append(self._snapshot_event("response.in_progress"))

    # --- items ----------------------------------------------------------------------------------------------

    def _added(self, index: int, item: dict[str, Any], parts: list[str]) -> None:
        parts.append(self._event("response.output_item.added", f',"output_index":{index},"item":{_compact(item)}'))

    def _done(self, item: dict[str, Any], parts: list[str]) -> None:
        """Close an item: the client sees its public form, the store keeps the sealed one."""
        index = len(self._output)
        self._output.append(item)
        public = public_items([item], self.shape.include_encrypted)[0]
        parts.append(self._event("response.output_item.done", f',"output_index":{index},"item":{_compact(public)}'))

    def _close_open(self, parts: list[str], status: str = "completed") -> None:
        """Close the open item, and the searches still waiting for a result (failed): something else begins."""
        if self._searches:
            self._done_searches(parts, every=True)
        item = self._open
        if item is None:
            return
        self._open = None
        # blocks still feeding it (only a malformed stream interleaves blocks) no longer do
        self._blocks = {k: v for k, v in self._blocks.items() if len(v) < 2 or v[1] is not item}
        if isinstance(item, _Call):
            self._finish_call(item, parts, status)
        elif isinstance(item, _Message):
            self._close_part(item, parts)
            self._done(message_item(item.id, item.closed, status), parts)
        else:
            self._close_summary(item, parts)
            self._done(reasoning_item(item.id, item.blocks, self.shape, status), parts)

    def _done_searches(self, parts: list[str], every: bool = False) -> None:
        """Finish the searches at the head of the line whose result came (`every`: all, failed without one)."""
        while self._searches and (every or self._searches[0].answered):
            search = self._searches.pop(0)
            if search.answered:
                parts.append(self._event("response.web_search_call.completed",
                                         f',"output_index":{search.index},"item_id":"{search.id}"'))
            self._done(web_search_item(search.id, _search_query(search.fragments), search.result, self.shape),
                       parts)

    def _search(self, tool_id: str, parts: list[str]) -> _Search:
        """A web search begins: after the open item and the searches still waiting for their results."""
        if self._open is not None:
            self._close_open(parts)
        search = _Search(len(self._output) + len(self._searches), ids.new_id(ids.WEB_SEARCH_CALL), tool_id)
        self._searches.append(search)
        self._added(search.index, {"id": search.id, "type": "web_search_call", "status": "in_progress",
                                   "action": {"type": "search"}}, parts)
        where = f',"output_index":{search.index},"item_id":"{search.id}"'
        parts.append(self._event("response.web_search_call.in_progress", where))
        parts.append(self._event("response.web_search_call.searching", where))
        return search

    def _message(self, parts: list[str]) -> _Message:
        if isinstance(self._open, _Message):
            return self._open
        self._close_open(parts)
        msg = _Message(len(self._output), ids.new_id(ids.MESSAGE))
        self._open = msg
        self._added(msg.index, {"id": msg.id, "type": "message", "status": "in_progress", "content": [],
                                "role": "assistant"}, parts)
        return msg

    def _part(self, msg: _Message, kind: str, parts: list[str]) -> None:
        """Make `kind` ("output_text" or "refusal") the message's open part."""
        if msg.part == kind:
            return
        self._close_part(msg, parts)
        msg.part = kind
        msg.content_index += 1
        msg.texts, msg.annotations = [], []
        empty = output_text("") if kind == "output_text" else {"type": "refusal", "refusal": ""}
        parts.append(self._event("response.content_part.added", f',"item_id":"{msg.id}","output_index":{msg.index}'
                                 f',"content_index":{msg.content_index},"part":{_compact(empty)}'))
        delta = "response.output_text.delta" if kind == "output_text" else "response.refusal.delta"
        msg.head = f'event: {delta}\ndata: {{"type":"{delta}","sequence_number":'
        msg.mid = f',"item_id":"{msg.id}","output_index":{msg.index},"content_index":{msg.content_index},"delta":'
        msg.tail = ',"logprobs":[]}\n\n' if kind == "output_text" else "}\n\n"

    def _close_part(self, msg: _Message, parts: list[str]) -> None:
        if msg.part is None:
            return
        text = "".join(msg.texts)
        where = f',"item_id":"{msg.id}","output_index":{msg.index},"content_index":{msg.content_index}'
        if msg.part == "output_text":
            part = output_text(text, msg.annotations)
            parts.append(self._event("response.output_text.done", where + f',"text":{_enc(text)},"logprobs":[]'))
        else:
            part = {"type": "refusal", "refusal": text}
            parts.append(self._event("response.refusal.done", where + f',"refusal":{_enc(text)}'))
        parts.append(self._event("response.content_part.done", where + f',"part":{_compact(part)}'))
        msg.closed.append(part)
        msg.part = None

    def _text(self, msg: _Message, text: str, parts: list[str]) -> None:
        msg.texts.append(text)
        n = self._seq
        self._seq = n + 1
        parts.append(msg.head + str(n) + msg.mid + _enc(text) + msg.tail)

    def _reasoning(self, parts: list[str]) -> _Reasoning:
        if isinstance(self._open, _Reasoning):
            return self._open
        self._close_open(parts)
        item = _Reasoning(len(self._output), ids.new_id(ids.REASONING))
        self._open = item
        self._added(item.index, {"id": item.id, "type": "reasoning", "summary": []}, parts)
        return item

    def _close_summary(self, item: _Reasoning, parts: list[str]) -> None:
        if item.open_summary is None:
            return
        index, block = item.open_summary
        item.open_summary = None
        text = block["thinking"]
        parts.append(self._summary_event("response.reasoning_summary_text.done", item, index, ',"text":' + _enc(text)))
        parts.append(self._summary_event("response.reasoning_summary_part.done", item, index,
                                         ',"part":' + _compact({"type": "summary_text", "text": text})))

    def _open_summary(self, block: list[Any], text: str, parts: list[str]) -> None:
        item = block[1]
        self._close_summary(item, parts)
        block[3] = index = item.summaries
        item.summaries += 1
        item.open_summary = (index, block[2])
        parts.append(self._summary_event("response.reasoning_summary_part.added", item, index,
                                         ',"part":{"type":"summary_text","text":""}'))
        parts.append(self._summary_event("response.reasoning_summary_text.delta", item, index,
                                         ',"delta":' + _enc(text)))

    def _summary_event(self, kind: str, item: _Reasoning, index: int, body: str) -> str:
        return self._event(kind, f',"item_id":"{item.id}","output_index":{item.index},"summary_index":{index}{body}')

    # --- blocks ---------------------------------------------------------------------------------------------

    def _block_start(self, event: dict[str, Any], parts: list[str]) -> None:
        index = event.get("index", 0)
        cb = event.get("content_block") or {}
        btype = cb.get("type")
        shape = self.shape
        if shape.compaction:  # the summary is sealed whole at the end; nothing streams
            self._blocks[index] = [_SUMMARY] if btype == "text" else [_OTHER]
            if btype == "text" and cb.get("text"):
                self._summary.append(cb["text"])
            return
        if btype == "text":
            msg = self._message(parts)
            self._part(msg, "refusal" if shape.json_tool else "output_text", parts)
            self._blocks[index] = [_TEXT, msg, sum(map(len, msg.texts)), list(cb.get("citations") or [])]
            if cb.get("text"):
                self._text(msg, cb["text"], parts)
        elif btype == "thinking":
            item = self._reasoning(parts)
            kept = {"type": "thinking", "thinking": cb.get("thinking") or "", "signature": cb.get("signature") or ""}
            item.blocks.append(kept)
            self._thinking.append(kept)
            if shape.summary:
                self._close_summary(item, parts)  # one summary part open at a time
            block = [_THINKING, item, kept, None]  # its summary part opens with its first text (as the final
            self._blocks[index] = block            # summary has a part for each block with text, no empty one)
            if shape.summary and kept["thinking"]:
                self._open_summary(block, kept["thinking"], parts)
        elif btype == "redacted_thinking":
            kept = {"type": "redacted_thinking", "data": cb.get("data") or ""}
            self._reasoning(parts).blocks.append(kept)
            self._thinking.append(kept)
            self._blocks[index] = [_OTHER]
        elif btype == "tool_use":
            name = cb.get("name") or ""
            if self._first_tool_id is None:
                self._first_tool_id = cb.get("id")
            if name == shape.json_tool:
                msg = self._message(parts)
                self._part(msg, "output_text", parts)
                self._blocks[index] = [_JSON, msg, [], False]  # …, fragments (wrapped), streamed any (unwrapped)
                return
            self._close_open(parts)
            call = _Call(len(self._output), ids.new_id(call_prefix(name, shape)), cb.get("id") or "", name,
                         name in shape.custom_tools, name == shape.tool_search)
            self._added(call.index, call_item(call.id, call.call_id, name, None, shape, "in_progress",
                                              arguments=""), parts)
            self._open = call
            self._blocks[index] = [_TOOL, call]
        elif btype == "server_tool_use" and cb.get("name") == "web_search":
            search = self._search(cb.get("id") or "", parts)
            if cb.get("input"):  # a whole block (streaming mode `never`) carries its input at once
                search.fragments.append(_dumps(cb["input"]))
            self._blocks[index] = [_SEARCH, search]
        elif btype == "web_search_tool_result":
            tool_id = cb.get("tool_use_id")
            search = next((s for s in self._searches if s.tool_id == tool_id and not s.answered), None)
            if search is None:  # a result without its search (as the non-streamed answer shows it)
                search = self._search("", parts)
            search.answered, search.result = True, cb.get("content")
            self._done_searches(parts)
            self._blocks[index] = [_OTHER]
        else:  # a block type this version does not know: nothing the client can use
            self._blocks[index] = [_OTHER]

    def _delta(self, event: dict[str, Any], parts: list[str]) -> None:
        delta = event["delta"]
        dtype = delta.get("type")
        block = self._blocks.get(event.get("index", 0))
        if dtype == "text_delta":  # the hot path: one string concatenation per delta
            if block is None:  # a text delta without its block start: treat it as one
                self._block_start({"index": event.get("index", 0), "content_block": {"type": "text"}}, parts)
                block = self._blocks[event.get("index", 0)]
            text = delta.get("text")
            if not text:
                return
            if block[0] == _TEXT:
                msg = block[1]
                msg.texts.append(text)
                n = self._seq
                self._seq = n + 1
                parts.append(msg.head + str(n) + msg.mid + _enc(text) + msg.tail)
            elif block[0] == _SUMMARY:
                self._summary.append(text)
            return
        if block is None:
            return
        kind = block[0]
        if dtype == "input_json_delta":
            fragment = delta.get("partial_json") or ""
            if not fragment:
                return
            if kind == _TOOL:
                call = block[1]
                call.fragments.append(fragment)
                if call.search:  # the spec streams no deltas of a tool search's arguments
                    return
                if call.custom:
                    fragment = call.decoder.feed(fragment)
                    if not fragment:
                        return
                    call.streamed.append(fragment)
                n = self._seq
                self._seq = n + 1
                parts.append(call.head + str(n) + call.mid + _enc(fragment) + "}\n\n")
            elif kind == _JSON:
                if self.shape.json_wrapped:  # the wrapper is removed once the whole input is known
                    block[2].append(fragment)
                else:
                    block[3] = True
                    self._text(block[1], fragment, parts)
            elif kind == _SEARCH:
                block[1].fragments.append(fragment)
        elif dtype == "thinking_delta" and kind == _THINKING:
            text = delta.get("thinking") or ""
            block[2]["thinking"] += text
            item = block[1]
            if not text or not self.shape.summary:
                return
            if item.open_summary is not None and item.open_summary[1] is block[2]:
                parts.append(self._summary_event("response.reasoning_summary_text.delta", item, block[3],
                                                 ',"delta":' + _enc(text)))
            elif block[3] is None and self._open is item:
                self._open_summary(block, text, parts)
        elif dtype == "signature_delta" and kind == _THINKING:
            block[2]["signature"] += delta.get("signature") or ""
        elif dtype == "citations_delta" and kind == _TEXT:
            block[3].append(delta.get("citation"))

    def _block_stop(self, event: dict[str, Any], parts: list[str]) -> None:
        block = self._blocks.get(event.get("index", 0))
        if block is None:
            return
        kind = block[0]
        if kind == _THINKING and block[1].open_summary is not None and block[1].open_summary[1] is block[2]:
            self._close_summary(block[1], parts)
        elif kind == _TEXT and block[3]:
            msg = block[1]
            end = sum(map(len, msg.texts))
            for note in url_citations(block[3], block[2], end):
                parts.append(self._event("response.output_text.annotation.added",
                                         f',"item_id":"{msg.id}","output_index":{msg.index}'
                                         f',"content_index":{msg.content_index}'
                                         f',"annotation_index":{len(msg.annotations)},"annotation":{_compact(note)}'))
                msg.annotations.append(note)
        elif kind == _TOOL:
            self._close_open(parts)  # the call is the open item: its block is the only one feeding it
        elif kind == _JSON and self.shape.json_wrapped:
            text = "".join(block[2])
            block[2] = []
            self._text(block[1], json_answer(_loads(text) if text.strip() else {}, True), parts)
        elif kind == _JSON and not block[3]:  # no input streamed: the empty object, as the non-streamed answer
            block[3] = True
            self._text(block[1], "{}", parts)

    def _finish_call(self, call: _Call, parts: list[str], status: str) -> None:
        """A call whose input is not a whole JSON object was cut off (max_tokens, a failed stream): incomplete,
        whatever the stream's end says (a stored one is not replayed into a later prompt)."""
        where = f',"item_id":"{call.id}","output_index":{call.index}'
        raw = "".join(call.fragments)
        if raw.strip():
            try:
                whole = isinstance(_loads(raw), dict)
            except ValueError:
                whole = False
            if not whole:
                status = "incomplete"
        if call.search:
            text = raw
        elif call.custom:
            sent = "".join(call.streamed)
            try:
                text = custom_input(_loads(raw) if raw.strip() else {})
            except ValueError:  # cut off mid-input (a failed stream): what arrived
                text = sent
            if text != sent and text.startswith(sent):  # the decoder held some back, or fell behind
                self._call_delta(call, text[len(sent):], parts)
            parts.append(self._event("response.custom_tool_call_input.done", where + ',"input":' + _enc(text)))
        else:
            if not raw.strip():  # a call without arguments is still valid JSON for the client
                raw = "{}"
                self._call_delta(call, raw, parts)
            text = raw
            parts.append(self._event("response.function_call_arguments.done",
                                     where + ',"name":' + _enc(self.shape.tool_names.get(call.name, call.name))
                                     + ',"arguments":' + _enc(raw)))
        self._done(call_item(call.id, call.call_id, call.name, None, self.shape, status, arguments=text), parts)

    def _call_delta(self, call: _Call, text: str, parts: list[str]) -> None:
        n = self._seq
        self._seq = n + 1
        parts.append(call.head + str(n) + call.mid + _enc(text) + "}\n\n")

    # --- the end --------------------------------------------------------------------------------------------

    def _stop(self, parts: list[str]) -> None:
        status, incomplete = stop_status(self._stop_reason)
        if self.shape.compaction:
            if self.shape.key is None:
                raise ValueError("compaction needs a sealing key")
            item = compaction_item(ids.new_id(ids.COMPACTION), "".join(self._summary), self.shape.key)
            self._added(len(self._output), item, parts)
            self._done(item, parts)
        else:
            self._close_open(parts, "incomplete" if status == "incomplete" and isinstance(self._open, _Message)
                             else "completed")
        self._final = response_object(self.shape, status, self._output, responses_usage(self._usage), None,
                                      incomplete)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        parts.append(self._event(kind, ',"response":' + self._final_body()))
        self.done = True

    def _fail(self, err: OpenAIError, parts: list[str]) -> None:
        self._start(parts)
        self._close_open(parts, "incomplete")
        self._thinking = signed(self._thinking)  # a block cut off before its signature is nothing to send back
        error = response_error(err)
        code, message = _enc(error["code"]), _enc(error["message"])
        parts.append(self._event("error", f',"code":{code},"message":{message},"param":null,"error":'
                                          f'{{"type":{_enc(err.type)},"code":{code},"message":{message},'
                                          '"param":null}'))
        self._final = response_object(self.shape, "failed", self._output, responses_usage(self._usage), error)
        parts.append(self._event("response.failed", ',"response":' + self._final_body()))
        self.failed = err

    def _final_body(self) -> str:
        """The final Response as the client gets it. A lone surrogate in it (from an upstream JSON escape; the
        sealed blobs the client may not see are ASCII) → U+FFFD in the stored copy too, so the store can keep it."""
        body = _compact(self.response)
        if LONE_SURROGATE.search(body):
            self._final = scrub(self._final)
            body = _compact(self.response)
        return body


def _search_query(fragments: list[str]) -> str:
    try:
        query = _loads("".join(fragments)).get("query") if fragments else ""
    except (ValueError, AttributeError):
        return ""
    return query if isinstance(query, str) else ""


# --- custom tool input: the value of {"input": "…"} as Claude's partial JSON arrives ----------------------

_OPENING = re.compile(r'\s*\{\s*"input"\s*:\s*"')
_SAFE = re.compile(r'(?:[^"\\]+|\\u[0-9a-fA-F]{4}|\\[^u])*')  # whole characters and escapes only
_HIGH_SURROGATE = re.compile(r'\\u[dD][89abAB][0-9a-fA-F]{2}$')  # its low half may be in the next fragment


class _InputDecoder:
    """Decodes the string Claude writes for a custom tool's one property, fragment by fragment. Any other
    shape (more properties, another order) stops it; the `.done` event then carries the whole input."""

    __slots__ = ("raw", "cut", "state")

    def __init__(self) -> None:
        self.raw = ""
        self.cut = 0  # raw[:cut] is decoded
        self.state = 0  # 0 before the string, 1 inside it, 2 finished or given up

    def feed(self, fragment: str) -> str:
        if self.state == 2:
            return ""
        self.raw += fragment
        if self.state == 0:
            m = _OPENING.match(self.raw)
            if m is None:
                if not '{"input":"'.startswith("".join(self.raw.split())):
                    self.state = 2
                return ""
            self.state, self.cut = 1, m.end()
        m = _SAFE.match(self.raw, self.cut)
        end = m.end()
        closed = end < len(self.raw) and self.raw[end] == '"'
        segment = self.raw[self.cut:end]
        if not closed and _HIGH_SURROGATE.search(segment):
            end -= 6
            segment = segment[:-6]
        try:
            text = _loads('"' + segment + '"', strict=False)
        except ValueError:
            self.state = 2
            return ""
        self.cut = end
        if closed:
            self.state = 2
        return text
