"""Anthropic Messages response → OpenAI chat.completion. Pure: no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Anthropic stop_reason → OpenAI finish_reason. pause_turn (a server tool paused a long turn) has no OpenAI
# equivalent; `stop` is what a client can act on (the content so far is complete text).
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}


@dataclass(frozen=True)
class AnswerShape:
    """What the answer must look like for this client, fixed when the request was translated."""

    model: str  # echoed: the name the client asked for
    created: int
    fallback_id: str
    tool_names: dict[str, str] = field(default_factory=dict)  # Claude name → the client's name
    json_tool: str | None = None  # its input is the answer's `content`
    json_wrapped: bool = False  # that input is {"value": answer}
    include_usage: bool = False
    expose_reasoning: bool = False  # thinking → `reasoning_content`


def finish_reason(stop_reason: str | None, tool_calls: int = 0) -> str:
    if stop_reason == "tool_use" and not tool_calls:  # only the JSON-answer tool was called
        return "stop"
    return FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def completion_id(upstream_id: str | None, fallback: str) -> str:
    """OpenAI-style id that still names the Vertex message (traceable in Vertex logs)."""
    return f"chatcmpl-{upstream_id}" if upstream_id else f"chatcmpl-{fallback}"


def usage(u: dict[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage → OpenAI usage. prompt_tokens counts every input token, cached or not."""
    u = u or {}
    fresh = int(u.get("input_tokens") or 0)
    cache_read = int(u.get("cache_read_input_tokens") or 0)
    cache_write = int(u.get("cache_creation_input_tokens") or 0)
    prompt = fresh + cache_read + cache_write
    completion = int(u.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read, "cache_write_tokens": cache_write},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def json_answer(tool_input: Any, wrapped: bool) -> str:
    value = tool_input.get("value") if wrapped and isinstance(tool_input, dict) else tool_input
    return json.dumps(value, ensure_ascii=False)


def thinking_to_keep(content: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]] | None:
    """(first tool_use id, the thinking blocks before it) — what must go back upstream with that call."""
    thinking = [b for b in content if b.get("type") in ("thinking", "redacted_thinking")]
    first_call = next((b for b in content if b.get("type") == "tool_use"), None)
    if not thinking or first_call is None:
        return None
    return first_call["id"], thinking


def to_openai_response(msg: dict[str, Any], shape: AnswerShape) -> dict[str, Any]:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    answer: str | None = None  # the JSON answer, when response_format asked for one and Claude gave it
    for block in msg.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use" and block.get("name") == shape.json_tool:
            answer = json_answer(block.get("input"), shape.json_wrapped)
        elif kind == "tool_use":
            name = block.get("name", "")
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": shape.tool_names.get(name, name),
                                       "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False)}})
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
    text = answer if answer is not None else "".join(texts)  # prose beside a JSON answer would break it
    stop_reason = msg.get("stop_reason")
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None, "annotations": []}
    if calls:
        message["tool_calls"] = calls
    if shape.expose_reasoning and reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if stop_reason == "refusal" or (shape.json_tool and answer is None and text):
        # OpenAI puts a refusal in `refusal`, never in `content`; in JSON mode prose instead of the answer is one
        message["content"], message["refusal"] = None, text or "The model declined to answer."
    return {
        "id": completion_id(msg.get("id"), shape.fallback_id),
        "object": "chat.completion",
        "created": shape.created,
        "model": shape.model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason(stop_reason, len(calls))}],
        "usage": usage(msg.get("usage")),
    }
