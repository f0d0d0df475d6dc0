"""The fake Claude model: deterministic answers, cut to max_tokens and stop sequences, as a JSON message or as
Anthropic's SSE events; input-token counting and a prompt cache for `usage`.

What it answers (the switches a test writes to change it: triggers.Triggers):

- "You said: " plus the last user turn's text, one output token per whitespace-separated word.
- A summary, when the latest user text (the last text block of the last user turn) asks for a summary of the
  conversation (it says "summary" / "summarise" / "summarize" and "conversation"), as a client compacting its
  history does: "Summary: N user message(s), M tool call(s); tool results: …" (what the tools returned; every
  `[[` written `[`, so no trigger survives into the summary, and it names no tool).
- Tool calls, when the request has tools and tool_choice is not `none`:
  - `[[call:NAME …]]` triggers in the latest user text: exactly those calls;
  - `auto` (or no tool_choice): the tools the latest user text names, in the order it names them, announced by
    a text block "I will call a, b."; none named: a text answer;
  - `any`: one call, to the first tool the latest user text names, else the first tool;
  - `tool`: one call, to that tool;
  - disable_parallel_tool_use: only the first of them.
  Inputs not dictated by a trigger are made from the tool's input_schema (schema_values.py).
- After tool results (the last user turn holds tool_result blocks):
  - under `auto`: "Tool results: " plus each result's text (errors as "error: …", images as "[image]");
  - under `any` / `tool` the model must call a tool, as Claude does: `tool` calls that tool again; `any` calls
    the first tool (by the order above) not called since the last user text, or the first one when every tool
    has been called — so a loop over several tools reaches the one it has not used yet (a final-answer tool,
    say) instead of repeating one. A client that forces a tool on every turn loops until its own step limit,
    as with Claude; clients that reset tool_choice after a call (openai-agents does by default) end with the
    "Tool results" answer.
- A signed thinking block first when thinking is enabled ("Thinking about: …").
- usage: input tokens are the words of the system prompt and of every message's text (tool results' text
  included; tools, images and tool inputs weigh nothing), minus the prefix the prompt cache wrote or read.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any

from .claude_models import first_party_id
from .messages import blocks, last_user, latest_text, own_texts, texts
from .rules import sign_thinking
from .schema_values import value_for_schema
from .triggers import STREAM_ERRORS, Call, Triggers, find_calls, find_triggers

UNICODE_SAMPLE = "héllo 世界 🎉 ünïcödé"
REFUSAL_TEXT = "I can't help with that."
FRAGMENT_SIZES = (5, 7, 2, 6, 3)  # tool JSON streams in pieces of these lengths, cut anywhere like the real API's
PROMPT_CACHE_SIZE = 1000


# composing the answer

@dataclass
class Reply:
    """The whole answer the fake model "wants" to give, before max_tokens and stop sequences cut it."""
    blocks: list[dict]  # content blocks as a JSON answer carries them
    stop_reason: str


def new_message_id() -> str:
    return "msg_vrtx_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))


def tool_use_id(message_id: str, index: int) -> str:
    """`toolu_` + 24 letters and digits, unique per message (derived from its id, to keep generate() pure)."""
    number = int.from_bytes(hashlib.sha256(f"{message_id}/{index}".encode()).digest(), "big")
    alphabet = string.ascii_letters + string.digits
    return "toolu_" + "".join(alphabet[number // len(alphabet) ** k % len(alphabet)] for k in range(24))


def tools_to_call(body: dict, said: str, after_results: bool = False) -> tuple[list[dict], bool]:
    """(the tools the fake model calls, whether it announces them first), by tool_choice (see the module's
    docstring); `said`: the latest user text; `after_results`: the last user turn holds tool results."""
    tools = body.get("tools", [])
    choice = body.get("tool_choice", {"type": "auto"})
    if not tools or choice["type"] == "none" or (after_results and choice["type"] == "auto"):
        return [], False
    if choice["type"] == "tool":
        chosen = [t for t in tools if t["name"] == choice["name"]]
    else:
        named = sorted((t for t in tools if t["name"] in said), key=lambda t: said.index(t["name"]))
        if choice["type"] == "auto":
            chosen = named
        else:  # any: exactly one call
            ranked = named + [t for t in tools if t not in named]
            if after_results:
                called = called_since_user_text(body)
                ranked = [t for t in ranked if t["name"] not in called] or ranked
            chosen = ranked[:1]
    if choice.get("disable_parallel_tool_use") is True:
        chosen = chosen[:1]
    return chosen, choice["type"] == "auto"


def called_since_user_text(body: dict) -> set[str]:
    """The tools the assistant called after the last user turn that has text of its own."""
    called: set[str] = set()
    for message in reversed(body["messages"]):
        if message["role"] == "user" and own_texts(message["content"]):
            break
        if message["role"] == "assistant":
            called.update(b["name"] for b in blocks(message["content"]) if b["type"] == "tool_use")
    return called


def _result_text(block: dict) -> str:
    content = block.get("content", "")
    parts = [content] if isinstance(content, str) else [
        inner["text"] if inner["type"] == "text" else f"[{inner['type']}]" for inner in content]
    text = " ".join(parts)
    return f"error: {text}" if block.get("is_error") is True else text


def _tool_use(tool: dict, message_id: str, index: int, dictated: dict[str, Any] | None = None) -> dict:
    if dictated is None:
        schema = tool.get("input_schema", {})
        made = value_for_schema(schema, schema)
        dictated = made if isinstance(made, dict) else {}
    return {"type": "tool_use", "id": tool_use_id(message_id, index), "name": tool["name"], "input": dictated}


def _calls_reply(body: dict, calls: list[Call], message_id: str, head: list[dict], tail: str) -> Reply:
    """The tool calls `[[call:…]]` triggers dictate, announced under auto as other calls are."""
    tools = {t["name"]: t for t in body["tools"]}
    uses = [_tool_use(tools[c.name], message_id, k, c.input) for k, c in enumerate(calls)]
    if body.get("tool_choice", {"type": "auto"})["type"] == "auto":
        head = head + [{"type": "text", "text": f"I will call {', '.join(c.name for c in calls)}.{tail}"}]
    return Reply(head + uses, "tool_use")


SUMMARY_ASKED = re.compile(r"(?is)(?=.*\bsummar(?:y|ies|ise|ize)\b)(?=.*\bconversation\b)")


def summary(body: dict) -> str:
    """The fake model's summary of the conversation before the latest user text (see the module's docstring)."""
    user_texts = calls = 0
    results: list[str] = []
    for message in body["messages"]:
        for block in blocks(message["content"]):
            if block["type"] == "text" and message["role"] == "user":
                user_texts += 1
            elif block["type"] == "tool_use":
                calls += 1
            elif block["type"] == "tool_result":
                results.append(_result_text(block))
    text = f"Summary: {user_texts - 1} user message(s), {calls} tool call(s)"  # less the request to summarise
    return (text + (f"; tool results: {' | '.join(results)}" if results else "") + ".").replace("[[", "[")


def compose_reply(body: dict, secret: bytes, message_id: str) -> Reply:
    """What the fake model answers (see the module's docstring): an optional thinking block, then a refusal, a
    summary when asked for one, the calls triggers dictate, the tool results it got (or, under a forced
    tool_choice, another call), tool calls for the tools named in the latest user text, or "You said: <the last
    user turn's text>"."""
    content = last_user(body)["content"]
    said = " ".join(own_texts(content))
    latest = latest_text(content)
    results = [b for b in blocks(content) if b["type"] == "tool_result"]
    triggers = find_triggers(body)
    calls = find_calls(body)
    head = []
    if body.get("thinking", {}).get("type") == "enabled":
        thought = " ".join(("Thinking about: " + ("the tool results" if results else said)).split())
        head.append({"type": "thinking", "thinking": thought, "signature": sign_thinking(secret, thought)})
    tail = " " + UNICODE_SAMPLE if triggers.unicode else ""
    finish = "pause_turn" if triggers.pause else "end_turn"
    if triggers.refusal:
        return Reply(head + [{"type": "text", "text": REFUSAL_TEXT + tail}], "refusal")
    if SUMMARY_ASKED.match(latest):
        return Reply(head + [{"type": "text", "text": summary(body) + tail}], finish)
    if calls and not triggers.pause:
        return _calls_reply(body, calls, message_id, head, tail)
    tools, announce = ([], False) if triggers.pause else tools_to_call(body, latest, after_results=bool(results))
    if results and not tools:
        text = "Tool results: " + " | ".join(_result_text(r) for r in results)
        return Reply(head + [{"type": "text", "text": text + tail}], finish)
    if tools:
        if announce:
            head.append({"type": "text", "text": f"I will call {', '.join(t['name'] for t in tools)}.{tail}"})
        return Reply(head + [_tool_use(t, message_id, k) for k, t in enumerate(tools)], "tool_use")
    return Reply(head + [{"type": "text", "text": " ".join(("You said: " + said).split()) + tail}], finish)


# cutting and framing

@dataclass
class OutputBlock:
    """One content block as the two answer forms carry it: whole (JSON) or as SSE start + deltas."""
    start: dict
    deltas: list[dict]
    final: dict
    tokens: int  # output tokens: one per delta, the signature aside


@dataclass(frozen=True)
class CacheUse:
    """Input tokens the prompt cache wrote or read for one request."""
    created: int = 0
    read: int = 0


@dataclass
class Generation:
    id: str
    blocks: list[OutputBlock]
    stop_reason: str
    stop_sequence: str | None
    input_tokens: int  # beyond the cached prefix
    output_tokens: int
    cache: CacheUse
    triggers: Triggers


def _input_units(body: dict) -> list[tuple[Any, int, bool]]:
    """(cache key part, words, carries cache_control) of each tool, system block and message block, in the order
    the prompt cache reads them. Only text counts as input words, so tools weigh nothing."""
    units = [(tool, 0, tool.get("cache_control") is not None) for tool in body.get("tools", [])]
    system = body.get("system", [])
    for block in blocks(system) if system else []:
        units.append((block, len(block["text"].split()), block.get("cache_control") is not None))
    for message in body["messages"]:
        for block in blocks(message["content"]):
            words = sum(len(text.split()) for text in texts([block]))
            units.append(([message["role"], block], words, _marked(block)))
    return units


def _marked(block: dict) -> bool:
    inner = block.get("content") if block["type"] == "tool_result" else None
    return block.get("cache_control") is not None or (isinstance(inner, list) and any(map(_marked, inner)))


def count_input_tokens(body: dict) -> int:
    """All input tokens of a request, cached or not: what count-tokens answers and usage adds up to."""
    return sum(words for _, words, _ in _input_units(body))


def cache_prefix(body: dict, model: str) -> tuple[str, int] | None:
    """(key, words) of the cacheable prefix: everything up to the last block with cache_control; None without."""
    units = _input_units(body)
    marked = [i for i, (_, _, has_mark) in enumerate(units) if has_mark]
    if not marked:
        return None
    covered = units[:marked[-1] + 1]
    canonical = json.dumps([model, [part for part, _, _ in covered]], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest(), sum(words for _, words, _ in covered)


class PromptCache:
    """The prefixes seen lately: the first sighting writes the cache, later ones read it. Least recently used
    prefixes are forgotten first."""

    def __init__(self, size: int = PROMPT_CACHE_SIZE):
        self._size = size
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    def use(self, prefix: tuple[str, int] | None) -> CacheUse:
        if prefix is None:
            return CacheUse()
        key, words = prefix
        if key in self._seen:
            self._seen.move_to_end(key)
            return CacheUse(read=words)
        self._seen[key] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return CacheUse(created=words)


def _first_stop(text: str, stops: list[str]) -> tuple[str, int] | None:
    found = [(text.find(s), s) for s in stops if s in text]
    if not found:
        return None
    at, stop = min(found)
    return stop, at


def _fragments(text: str) -> list[str]:
    """Tool JSON in pieces of at most 7 characters, cut anywhere (inside strings too), as the API streams it;
    an empty input is one empty piece."""
    pieces: list[str] = []
    at = 0
    while at < len(text):
        size = FRAGMENT_SIZES[len(pieces) % len(FRAGMENT_SIZES)]
        pieces.append(text[at:at + size])
        at += size
    return pieces or [""]


def _pieces(block: dict) -> list[str]:
    """A block's output tokens: words (with the whitespace after them) or tool JSON fragments."""
    if block["type"] == "tool_use":
        return _fragments(json.dumps(block["input"], ensure_ascii=False) if block["input"] else "")
    return re.findall(r"\s*\S+\s*", block["thinking"] if block["type"] == "thinking" else block["text"])


def _output_block(whole: dict, pieces: list[str], complete: bool, secret: bytes) -> OutputBlock:
    """The block as far as `pieces` go (all of them when `complete`)."""
    text = "".join(pieces)
    if whole["type"] == "text":
        return OutputBlock({"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in pieces],
                           {"type": "text", "text": text}, len(pieces))
    if whole["type"] == "thinking":
        signature = whole["signature"] if complete else sign_thinking(secret, text)  # a cut thought, as sent
        deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces]
        return OutputBlock({"type": "thinking", "thinking": ""},
                           deltas + [{"type": "signature_delta", "signature": signature}],
                           {"type": "thinking", "thinking": text, "signature": signature}, len(pieces))
    start = {**whole, "input": {}}
    return OutputBlock(start, [{"type": "input_json_delta", "partial_json": p} for p in pieces],
                       whole if complete else start, len(pieces))  # cut JSON does not parse: input stays {}


def generate(body: dict, secret: bytes, message_id: str, cache: CacheUse = CacheUse()) -> Generation:
    """Cut compose_reply()'s answer to max_tokens (one token per delta) or before the first stop sequence (in
    text blocks)."""
    reply = compose_reply(body, secret, message_id)
    budget = body["max_tokens"]
    stops = body.get("stop_sequences", [])
    out: list[OutputBlock] = []
    stop_reason, stop_sequence = reply.stop_reason, None
    for whole in reply.blocks:
        hit = _first_stop(whole["text"], stops) if whole["type"] == "text" else None
        if hit:
            stop_sequence, cut = hit
            whole, stop_reason = {**whole, "text": whole["text"][:cut]}, "stop_sequence"
        pieces = _pieces(whole)
        if len(pieces) > budget:
            stop_reason, stop_sequence = "max_tokens", None
            if budget:
                out.append(_output_block(whole, pieces[:budget], False, secret))
            break
        out.append(_output_block(whole, pieces, True, secret))
        budget -= len(pieces)
        if hit:
            break
    input_tokens = count_input_tokens(body) - cache.created - cache.read
    return Generation(message_id, out, stop_reason, stop_sequence, input_tokens,
                      sum(b.tokens for b in out), cache, find_triggers(body))


def _usage(gen: Generation, output_tokens: int) -> dict[str, int]:
    return {"input_tokens": gen.input_tokens, "output_tokens": output_tokens,
            "cache_creation_input_tokens": gen.cache.created, "cache_read_input_tokens": gen.cache.read}


def message_json(gen: Generation, model: str) -> dict:
    return {"id": gen.id, "type": "message", "role": "assistant", "model": first_party_id(model),
            "content": [b.final for b in gen.blocks], "stop_reason": gen.stop_reason,
            "stop_sequence": gen.stop_sequence, "usage": _usage(gen, gen.output_tokens)}


def _after_deltas(events: list[tuple[str, dict]], count: int) -> int:
    """The position just after the count-th content delta, or before message_delta when there are fewer."""
    seen = 0
    for i, (name, _) in enumerate(events):
        if name == "message_delta":
            return i
        if name == "content_block_delta":
            seen += 1
            if seen == count:
                return i + 1
    return len(events)


def sse_events(gen: Generation, model: str) -> list[tuple[str, dict]]:
    """(event name, data) pairs in Anthropic's streaming order, with the triggered stream faults."""
    start = {**message_json(gen, model), "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": _usage(gen, 1)}
    events = [("message_start", {"type": "message_start", "message": start}), ("ping", {"type": "ping"})]
    for index, block in enumerate(gen.blocks):
        events.append(("content_block_start",
                       {"type": "content_block_start", "index": index, "content_block": block.start}))
        events.extend(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
                      for d in block.deltas)
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": gen.stop_reason, "stop_sequence": gen.stop_sequence},
                                     "usage": {"output_tokens": gen.output_tokens}}))
    events.append(("message_stop", {"type": "message_stop"}))
    triggers = gen.triggers
    if triggers.vertex_event:  # Vertex's own events appear among Anthropic's; clients must skip them
        events.insert(_after_deltas(events, 1), ("vertex_event", {"type": "vertex_event", "foo": 1}))
    if triggers.stream_error:
        _, kind, message = STREAM_ERRORS[triggers.stream_error]
        events = events[:_after_deltas(events, 2)] + [
            ("error", {"type": "error", "error": {"type": kind, "message": message}})]
    elif triggers.cut:  # the upstream drops: the body ends with no message_stop
        events = events[:_after_deltas(events, 2)]
    return events
