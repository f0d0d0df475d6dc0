"""Anthropic Messages answer → an OpenAI Responses `Response` object, and the pieces the stream reuses. Pure.

`ResponseShape` is fixed when the request is translated (request.py builds it): the ids, what is echoed, how
tool names map back, what the client asked to be included. `to_response` turns a whole Vertex message into
the `Response`; the stream translator builds the same items event by event with the helpers below, so both
paths give byte-identical items.

Output items, in Claude's block order:
- consecutive `thinking` / `redacted_thinking` blocks → ONE `reasoning` item; each thinking block's text is a
  summary part when `reasoning.summary` was asked (Claude's thinking is itself a summary on Claude 4+), and the
  blocks themselves — text and signature, or redacted data — are sealed into `encrypted_content`;
- consecutive `text` blocks → ONE `message` with one `output_text` part (`annotations`: web-search citations
  as `url_citation`, else []; `logprobs`: [] always);
- `tool_use` → `function_call` (name restored, `namespace` for namespace tools), `custom_tool_call` for a
  custom (free-form) tool, its `input` the one string property, or `tool_search_call` (arguments as an object)
  for the client-executed tool search; the JSON-answer tool (`text.format`) → the
  message's `output_text`; in JSON mode Claude's prose is a `refusal` part (it was told to answer through
  the tool), never `output_text` a client would parse as the JSON;
- `server_tool_use` web_search + its `web_search_tool_result` (paired by id) → `web_search_call`, where the
  search began; one without a result is a `failed` web_search_call;
- cut off by max_tokens: the last item, a message or a call, is `incomplete`;
- compaction mode (a `compaction_trigger` request): Claude's text → ONE `compaction` item, sealed.

The stored variant of a response always keeps the sealed reasoning (so `previous_response_id` can replay
thinking); the client's copy has `encrypted_content` only when `include` asked for it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import OpenAIError
from ..response import json_answer, usage as chat_usage
from . import ids
from .sealing import Keys, SealError, seal, unseal

REASONING_KIND = "reasoning"
COMPACTION_KIND = "compaction"
CUSTOM_INPUT = "input"  # the one string property of a custom tool's Claude schema
THINKING_TYPES = ("thinking", "redacted_thinking")
# the items the last block of an answer cut off by max_tokens may be: incomplete (a call's arguments may be
# partial; a stored one is not replayed, see request.py)
CUT_OFF = ("message", "function_call", "custom_tool_call", "tool_search_call")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # a code point UTF-8 cannot carry


@dataclass(frozen=True)
class ResponseShape:
    """What the answer must look like for this request."""

    response_id: str
    created_at: int
    model: str  # echoed: the name the client asked for
    echo: dict[str, Any] = field(default_factory=dict)  # the request's fields as `Response` repeats them
    tool_names: dict[str, str] = field(default_factory=dict)  # Claude name → the client's name
    namespaces: dict[str, str] = field(default_factory=dict)  # Claude name → namespace (namespace tools)
    custom_tools: frozenset[str] = frozenset()  # Claude names of custom (free-form) tools
    tool_search: str | None = None  # Claude name of the client-executed tool_search tool
    json_tool: str | None = None  # its input is the answer's output_text
    json_wrapped: bool = False  # that input is {"value": answer}
    summary: bool = False  # thinking text → reasoning summary parts (reasoning.summary asked)
    include_encrypted: bool = False  # include: reasoning.encrypted_content
    include_sources: bool = False  # include: web_search_call.action.sources
    key: Keys | None = field(default=None, repr=False)  # seals reasoning and compaction items; never logged
    compaction: bool = False  # the answer is a conversation summary → one compaction item


@dataclass
class Answer:
    response: dict[str, Any]  # what the client receives
    stored: dict[str, Any]  # what the store keeps: reasoning always sealed


# --- the Response object ----------------------------------------------------------------------------------

def response_object(shape: ResponseShape, status: str, output: list[dict[str, Any]],
                    usage: dict[str, Any] | None = None, error: dict[str, Any] | None = None,
                    incomplete: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"id": shape.response_id, "object": "response", "created_at": shape.created_at, "status": status,
            "background": False, "error": error, "incomplete_details": incomplete, **shape.echo,
            "model": shape.model, "output": output}
    if usage is not None:  # OpenAI sends null before the end; the spec's ResponseUsage is not nullable
        body["usage"] = usage
    return body


def responses_usage(u: dict[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage → ResponseUsage. input_tokens counts every input token, cached or not, as OpenAI does.
    Anthropic does not report thinking tokens apart from output tokens: reasoning_tokens stays 0."""
    c = chat_usage(u)
    return {"input_tokens": c["prompt_tokens"],
            "input_tokens_details": dict(c["prompt_tokens_details"]),
            "output_tokens": c["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": c["total_tokens"]}


def stop_status(stop_reason: str | None) -> tuple[str, dict[str, Any] | None]:
    """(status, incomplete_details) for Claude's stop_reason. pause_turn (a server tool paused a long turn) has
    no OpenAI equivalent; what came so far is complete, so it counts as completed."""
    if stop_reason in ("max_tokens", "model_context_window_exceeded"):
        return "incomplete", {"reason": "max_output_tokens"}
    if stop_reason == "refusal":  # Claude's streaming classifiers stopped the answer: OpenAI's content filter
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_error(err: OpenAIError) -> dict[str, Any]:
    """The `error` of a failed Response, with the codes clients act on (Codex: context_length_exceeded →
    compact, rate_limit_exceeded → retry after the "try again in Ns" of the message, anything else → retry).
    context_length_exceeded is outside the spec's ResponseErrorCode enum, but it is what OpenAI sends and
    what Codex reads."""
    message = err.message
    if err.status == 429 or err.code in ("rate_limit_exceeded", "overloaded", "rate_limit_error",
                                         "overloaded_error"):
        seconds = _retry_seconds(err)
        if "try again in" not in message.lower():
            message = f"{message} Please try again in {seconds}s."
        return {"code": "rate_limit_exceeded", "message": message}
    if "prompt is too long" in message.lower() or err.code == "context_length_exceeded":
        return {"code": "context_length_exceeded", "message": message}
    if 400 <= err.status < 500 and err.status not in (408, 409):
        return {"code": "invalid_prompt", "message": message}
    return {"code": "server_error", "message": message}


def _retry_seconds(err: OpenAIError) -> int:
    try:
        return max(1, round(float(err.headers.get("retry-after", "1"))))
    except ValueError:
        return 1


def compact_resource(answer: Answer) -> dict[str, Any]:
    """`POST /v1/responses/compact`'s answer (CompactResource) from the answer to a compaction request."""
    r = answer.response
    return {"id": r["id"], "object": "response.compaction", "output": r["output"], "created_at": r["created_at"],
            "usage": r.get("usage") or responses_usage(None)}


def without_encrypted(response: dict[str, Any]) -> dict[str, Any]:
    """A copy of a (stored) Response whose reasoning items carry no encrypted_content: the client's view when
    `include` did not ask for it (also for GET /v1/responses/{id})."""
    return {**response, "output": public_items(response.get("output") or [], False)}


def public_items(items: list[dict[str, Any]], include_encrypted: bool) -> list[dict[str, Any]]:
    if include_encrypted:
        return items
    return [{k: v for k, v in it.items() if k != "encrypted_content"} if it.get("type") == "reasoning" else it
            for it in items]


# --- sealed payloads ----------------------------------------------------------------------------------------

def seal_thinking(blocks: list[dict[str, Any]], key: Keys) -> str:
    return seal(REASONING_KIND, {"blocks": blocks}, key)


def unseal_thinking(blob: str, key: Keys) -> list[dict[str, Any]]:
    """The thinking blocks exactly as Claude produced them. Raises SealError (ForeignBlob / TamperedBlob)."""
    blocks = unseal(blob, key, REASONING_KIND).get("blocks")
    if not isinstance(blocks, list) or not all(_thinking_block_ok(b) for b in blocks):
        raise SealError("sealed reasoning holds no thinking blocks")
    return blocks


def _thinking_block_ok(b: Any) -> bool:
    if not isinstance(b, dict):
        return False
    if b.get("type") == "thinking":
        return isinstance(b.get("thinking"), str) and isinstance(b.get("signature"), str)
    return b.get("type") == "redacted_thinking" and isinstance(b.get("data"), str)


def seal_summary(summary: str, key: Keys) -> str:
    return seal(COMPACTION_KIND, {"summary": summary}, key)


def unseal_summary(blob: str, key: Keys) -> str:
    summary = unseal(blob, key, COMPACTION_KIND).get("summary")
    if not isinstance(summary, str):
        raise SealError("sealed compaction holds no summary")
    return summary


# --- output items -------------------------------------------------------------------------------------------

def reasoning_item(item_id: str, blocks: list[dict[str, Any]], shape: ResponseShape,
                   status: str = "completed") -> dict[str, Any]:
    """The stored form (sealed blocks when a key is configured); public_items strips the blob for clients.
    Not complete (a failed stream): a thinking block still without its signature is summarised, not sealed
    (Vertex rejects unsigned thinking)."""
    summary = ([{"type": "summary_text", "text": b["thinking"]} for b in blocks
                if b.get("type") == "thinking" and b.get("thinking")] if shape.summary else [])
    item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": summary}
    if status != "completed":
        blocks = signed(blocks)
    if shape.key is not None and blocks:
        item["encrypted_content"] = seal_thinking(blocks, shape.key)
    if status != "completed":
        item["status"] = status
    return item


def signed(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The blocks Vertex takes back: thinking with its signature, redacted thinking."""
    return [b for b in blocks if b.get("type") != "thinking" or b.get("signature")]


def output_text(text: str, annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations or [], "logprobs": []}


def message_item(item_id: str, content: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "content": content, "role": "assistant"}


def call_prefix(claude_name: str, shape: ResponseShape) -> str:
    """The id prefix of the item a call of this tool becomes."""
    if claude_name in shape.custom_tools:
        return ids.CUSTOM_TOOL_CALL
    return ids.TOOL_SEARCH_CALL if claude_name == shape.tool_search else ids.FUNCTION_CALL


def call_item(item_id: str, call_id: str, claude_name: str, tool_input: Any, shape: ResponseShape,
              status: str = "completed", *, arguments: str | None = None) -> dict[str, Any]:
    """function_call, custom_tool_call for a custom tool, tool_search_call for the client's tool search;
    `arguments` overrides the rendering of `tool_input` (the stream passes the exact text it streamed)."""
    name = shape.tool_names.get(claude_name, claude_name)
    if claude_name == shape.tool_search:
        if arguments is not None:
            tool_input = _json_object(arguments)
        return {"id": item_id, "type": "tool_search_call", "status": status, "call_id": call_id,
                "execution": "client", "arguments": tool_input if isinstance(tool_input, dict) else {}}
    if claude_name in shape.custom_tools:
        item = {"id": item_id, "type": "custom_tool_call", "status": status, "call_id": call_id, "name": name,
                "input": custom_input(tool_input) if arguments is None else arguments}
    else:
        if arguments is None:
            arguments = json.dumps(tool_input if tool_input is not None else {}, ensure_ascii=False)
        item = {"id": item_id, "type": "function_call", "status": status, "arguments": arguments,
                "call_id": call_id, "name": name}
    if claude_name in shape.namespaces:
        item["namespace"] = shape.namespaces[claude_name]
    return item


def _json_object(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:  # cut off mid-input (a failed stream)
        return {}


def custom_input(tool_input: Any) -> str:
    """A custom tool's free-form input: its one string property (anything else Claude sent, as JSON)."""
    if isinstance(tool_input, dict) and isinstance(tool_input.get(CUSTOM_INPUT), str) and len(tool_input) == 1:
        return tool_input[CUSTOM_INPUT]
    return json.dumps(tool_input, ensure_ascii=False)


def web_search_item(item_id: str, query: str, result: Any, shape: ResponseShape) -> dict[str, Any]:
    failed = not isinstance(result, list)  # an error result is an object: {type: web_search_tool_result_error}
    action: dict[str, Any] = {"type": "search", "query": query, "queries": [query] if query else []}
    if shape.include_sources and not failed:
        action["sources"] = [{"type": "url", "url": r["url"]} for r in result
                             if isinstance(r, dict) and isinstance(r.get("url"), str)]
    return {"id": item_id, "type": "web_search_call", "status": "failed" if failed else "completed",
            "action": action}


def compaction_item(item_id: str, summary: str, key: Keys) -> dict[str, Any]:
    return {"id": item_id, "type": "compaction", "encrypted_content": seal_summary(summary, key)}


def url_citations(citations: Any, start: int, end: int) -> list[dict[str, Any]]:
    """Claude's web-search citations of one text block → url_citation annotations over that block's span."""
    out = []
    for c in citations or []:
        if isinstance(c, dict) and c.get("type") == "web_search_result_location" and isinstance(c.get("url"), str):
            out.append({"type": "url_citation", "url": c["url"], "title": c.get("title") or c["url"],
                        "start_index": start, "end_index": end})
    return out


def has_lone_surrogate(obj: Any) -> bool:
    """A JSON "\\ud83c" escape from upstream decodes to a surrogate code point, which UTF-8 cannot carry."""
    return bool(LONE_SURROGATE.search(json.dumps(obj, ensure_ascii=False)))


def without_surrogates(text: str) -> str:
    """Adjacent halves joined into their character (a pair split across deltas), lone ones → U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def scrub(obj: Any) -> Any:
    """`obj` with every string passed through without_surrogates (sealed blobs are ASCII: unchanged)."""
    if isinstance(obj, str):
        return without_surrogates(obj) if LONE_SURROGATE.search(obj) else obj
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    return obj


# --- a whole message ----------------------------------------------------------------------------------------

def to_response(msg: dict[str, Any], shape: ResponseShape) -> Answer:
    blocks = msg.get("content") or []
    status, incomplete = stop_status(msg.get("stop_reason"))
    output = (_compaction_output(blocks, shape) if shape.compaction
              else _output_items(blocks, shape))
    if status == "incomplete" and output and output[-1]["type"] in CUT_OFF:  # the cut-off text or call
        output[-1]["status"] = "incomplete"
    if has_lone_surrogate(output):  # not encodable as UTF-8: neither the store nor a stream could send it
        output = scrub(output)
    usage = responses_usage(msg.get("usage"))
    stored = response_object(shape, status, output, usage, None, incomplete)
    client = {**stored, "output": public_items(output, shape.include_encrypted)}
    return Answer(response=client, stored=stored)


def _compaction_output(blocks: list[dict[str, Any]], shape: ResponseShape) -> list[dict[str, Any]]:
    if shape.key is None:
        raise ValueError("compaction needs a sealing key")
    summary = "".join(b.get("text") or "" for b in blocks if b.get("type") == "text")
    return [compaction_item(ids.new_id(ids.COMPACTION), summary, shape.key)]


def _output_items(blocks: list[dict[str, Any]], shape: ResponseShape) -> list[dict[str, Any]]:
    output: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []  # the current message's finished parts
    texts: list[str] = []  # the open part's text
    annotations: list[dict[str, Any]] = []
    open_part: list[str | None] = [None]  # "output_text" | "refusal"
    searches: dict[str, tuple[int, str, str]] = {}  # server tool id → (output index, item id, query)

    def close_part() -> None:
        if open_part[0] == "output_text":
            content.append(output_text("".join(texts), list(annotations)))
        elif open_part[0] == "refusal":
            content.append({"type": "refusal", "refusal": "".join(texts)})
        texts.clear()
        annotations.clear()
        open_part[0] = None

    def part(kind: str) -> None:
        if open_part[0] != kind:
            close_part()
            open_part[0] = kind

    def flush_message() -> None:
        close_part()
        if content:
            output.append(message_item(ids.new_id(ids.MESSAGE), list(content)))
            content.clear()

    def flush_thinking() -> None:
        if thinking:
            output.append(reasoning_item(ids.new_id(ids.REASONING), list(thinking), shape))
            thinking.clear()

    for block in blocks:
        kind = block.get("type")
        if kind in THINKING_TYPES:
            flush_message()
            thinking.append(_kept_thinking(block))
            continue
        flush_thinking()
        if kind == "text":
            # JSON mode: Claude was told to answer through the tool, so prose is a refusal, never output_text
            # (a client parsing output_text as JSON must not choke on it)
            part("refusal" if shape.json_tool else "output_text")
            start = sum(map(len, texts))
            text = block.get("text") or ""
            texts.append(text)
            annotations.extend(url_citations(block.get("citations"), start, start + len(text)))
        elif kind == "tool_use" and block.get("name") == shape.json_tool:
            part("output_text")
            texts.append(json_answer(block.get("input"), shape.json_wrapped))
        else:
            flush_message()
            if kind == "tool_use":
                prefix = call_prefix(block.get("name") or "", shape)
                output.append(call_item(ids.new_id(prefix), block.get("id") or "", block.get("name") or "",
                                        block.get("input"), shape))
            elif kind == "server_tool_use" and block.get("name") == "web_search":
                # in place, failed until its result comes (the stream's order: searches in the order they began)
                query = _search_query(block.get("input"))
                item_id = ids.new_id(ids.WEB_SEARCH_CALL)
                searches[block.get("id") or ""] = (len(output), item_id, query)
                output.append(web_search_item(item_id, query, None, shape))
            elif kind == "web_search_tool_result":
                found = searches.pop(block.get("tool_use_id") or "", None)
                if found is None:
                    output.append(web_search_item(ids.new_id(ids.WEB_SEARCH_CALL), "", block.get("content"), shape))
                else:
                    output[found[0]] = web_search_item(found[1], found[2], block.get("content"), shape)
    flush_thinking()
    flush_message()
    return output


def _search_query(tool_input: Any) -> str:
    query = tool_input.get("query") if isinstance(tool_input, dict) else None
    return query if isinstance(query, str) else ""


def _kept_thinking(block: dict[str, Any]) -> dict[str, Any]:
    """The block as Vertex must get it back: only the fields Anthropic defines for it."""
    if block.get("type") == "thinking":
        return {"type": "thinking", "thinking": block.get("thinking") or "", "signature": block.get("signature") or ""}
    return {"type": "redacted_thinking", "data": block.get("data") or ""}
