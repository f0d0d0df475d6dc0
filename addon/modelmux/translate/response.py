"""Anthropic Messages response → OpenAI chat.completion. Pure: no I/O."""

from __future__ import annotations

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


def finish_reason(stop_reason: str | None) -> str:
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


def to_openai_response(msg: dict[str, Any], *, model: str, created: int, fallback_id: str) -> dict[str, Any]:
    texts = [b.get("text", "") for b in msg.get("content") or [] if b.get("type") == "text"]
    text = "".join(texts)
    stop_reason = msg.get("stop_reason")
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None, "annotations": []}
    if stop_reason == "refusal":  # OpenAI puts a refusal in `refusal`, never in `content`
        message["content"], message["refusal"] = None, text or "The model declined to answer."
    return {
        "id": completion_id(msg.get("id"), fallback_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(stop_reason)}],
        "usage": usage(msg.get("usage")),
    }
