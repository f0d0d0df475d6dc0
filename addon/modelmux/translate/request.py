"""OpenAI chat-completions request → Anthropic Messages body for Vertex AI. Pure: no I/O.

`parse_request` validates the client's JSON (pydantic) and turns every problem into an OpenAI-shaped 400
naming the parameter; `to_vertex_body` builds the body Vertex accepts (no `model` key, `anthropic_version`,
`max_tokens` always set). Decisions, each documented in docs/mapping.md:

- system and developer messages, wherever they appear, become Anthropic `system` text blocks, in order;
- consecutive same-role turns merge into one turn; empty text never becomes an empty block;
- `max_completion_tokens` wins over `max_tokens`; either is clamped to the model's output cap; absent → a
  per-model default below the cap;
- `temperature` 0..1 passes unchanged, above 1 is clamped to 1 (Claude's range is 0..1);
- `top_p` is dropped beside `temperature` for models that reject the pair;
- `stop` → `stop_sequences`, whitespace-only ones dropped (Vertex rejects them);
- `user` → `metadata.user_id` as a hash: Vertex rejects emails and phone numbers there.
Features later issues translate (tools, non-data images, response_format, …) are rejected with a 400 naming
the parameter rather than silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import models
from .errors import OpenAIError, invalid_request


class _Open(BaseModel):
    # OpenAI adds fields often; unknown ones are ignored unless listed as unsupported below.
    model_config = ConfigDict(extra="allow")


class TextPart(_Open):
    type: Literal["text"]
    text: str


class ImageURL(_Open):
    url: str
    detail: str | None = None


class ImagePart(_Open):
    type: Literal["image_url"]
    image_url: ImageURL


class RefusalPart(_Open):
    type: Literal["refusal"]
    refusal: str


ContentPart = TextPart | ImagePart | RefusalPart


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatRequest(_Open):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    n: int | None = None
    user: str | None = None


# Parameters whose meaning cannot be honoured yet: a 400 beats an answer the client did not ask for.
_UNSUPPORTED = {
    "tools": "tool calling",
    "tool_choice": "tool calling",
    "functions": "function calling",
    "function_call": "function calling",
    "response_format": "response_format",
    "logprobs": "logprobs",
    "top_logprobs": "logprobs",
    "audio": "audio output",
    "prediction": "predicted outputs",
    "web_search_options": "web search",
}


def _param(loc: tuple[Any, ...]) -> str:
    """pydantic location → OpenAI's param notation: ('messages', 0, 'content') → 'messages[0].content'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[...]", "none") or "[" in str(part) or str(part).startswith(("function-", "tagged-union")):
            continue  # union branch names, not fields
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_request(raw: bytes) -> ChatRequest:
    """Validate the client's body. Raises OpenAIError (400) naming the offending parameter."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise invalid_request(f"We could not parse the JSON body of your request: {err}") from None
    if not isinstance(data, dict):
        raise invalid_request("The request body must be a JSON object.")
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = _param(first["loc"])
        raise invalid_request(f"Invalid value for '{param}': {first['msg']}.", param=param or None) from None
    for key in data:
        if key in _UNSUPPORTED and data[key] not in (None, False):
            raise invalid_request(f"'{key}' ({_UNSUPPORTED[key]}) is not supported by modelmux yet.", param=key,
                                  code="unsupported_parameter")
    if req.n not in (None, 1):
        raise invalid_request("Claude returns one choice per request: 'n' must be 1.", param="n",
                              code="unsupported_parameter")
    if data.get("modalities") not in (None, ["text"]):
        raise invalid_request("Only text output is supported: 'modalities' must be [\"text\"].", param="modalities",
                              code="unsupported_parameter")
    return req


@dataclass(frozen=True)
class VertexRequest:
    body: dict[str, Any]
    stream: bool
    include_usage: bool


_DATA_URL = re.compile(r"^data:(image/(?:png|jpeg|gif|webp));base64,(.+)$", re.S)


def _blocks(msg: Message, index: int) -> list[dict[str, Any]]:
    """A message's content as Anthropic blocks; empty text yields none."""
    content = msg.content
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content.strip() else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if isinstance(part, TextPart):
            if part.text.strip():
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, RefusalPart):
            if part.refusal.strip():
                blocks.append({"type": "text", "text": part.refusal})
        elif isinstance(part, ImagePart):
            param = f"messages[{index}].content[{j}].image_url"
            if msg.role != "user":
                raise invalid_request("Images are only allowed in user messages.", param=param)
            m = _DATA_URL.match(part.image_url.url)
            if not m:
                raise invalid_request("Only base64 data: URLs (png, jpeg, gif, webp) are supported for images yet.",
                                      param=param, code="unsupported_parameter")
            blocks.append({"type": "image", "source": {"type": "base64", "media_type": m.group(1), "data": m.group(2)}})
    return blocks


def _hash_user(user: str) -> str:
    # Vertex rejects emails and phone numbers as user_id; a stable hash still groups one user's requests.
    return "user-" + hashlib.sha256(user.encode()).hexdigest()[:32]


def to_vertex_body(req: ChatRequest, vertex_model: str, anthropic_version: str) -> VertexRequest:
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, msg in enumerate(req.messages):
        if msg.role in ("system", "developer"):
            system.extend(b for b in _blocks(msg, i) if b["type"] == "text")
            continue
        if msg.role in ("tool", "function"):
            raise invalid_request("Tool messages (tool calling) are not supported by modelmux yet.",
                                  param=f"messages[{i}].role", code="unsupported_parameter")
        if msg.role == "assistant" and getattr(msg, "tool_calls", None):
            raise invalid_request("Assistant tool_calls (tool calling) are not supported by modelmux yet.",
                                  param=f"messages[{i}].tool_calls", code="unsupported_parameter")
        blocks = _blocks(msg, i)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == msg.role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": msg.role, "content": blocks})
    if not turns:
        raise invalid_request("The conversation needs at least one user or assistant message with content.",
                              param="messages")

    body: dict[str, Any] = {"anthropic_version": anthropic_version, "messages": turns}
    if system:
        body["system"] = system

    cap = models.output_cap(vertex_model)
    requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    if requested is not None and requested < 1:
        name = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        raise invalid_request(f"'{name}' must be at least 1.", param=name)
    body["max_tokens"] = min(requested, cap) if requested is not None else models.default_max_tokens(vertex_model)

    # The newer anthropic_version rejects sampling parameters even at their defaults.
    if anthropic_version == "vertex-2023-10-16":
        if req.temperature is not None:
            body["temperature"] = min(req.temperature, 1.0)
        if req.top_p is not None and not (req.temperature is not None and models.rejects_temperature_with_top_p(vertex_model)):
            body["top_p"] = req.top_p

    stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    stops = [s for s in stops if s.strip()]
    if stops:
        body["stop_sequences"] = stops
    if req.user:
        body["metadata"] = {"user_id": _hash_user(req.user)}
    stream = bool(req.stream)
    if stream:
        body["stream"] = True
    include_usage = bool(stream and req.stream_options and req.stream_options.include_usage)
    return VertexRequest(body=body, stream=stream, include_usage=include_usage)


def translate_request(raw: bytes, vertex_model_for: Any, anthropic_version: str) -> tuple[ChatRequest, VertexRequest]:
    """parse + route + build; `vertex_model_for(requested_name) -> vertex id` may raise OpenAIError."""
    req = parse_request(raw)
    return req, to_vertex_body(req, vertex_model_for(req.model), anthropic_version)


__all__ = ["ChatRequest", "VertexRequest", "OpenAIError", "parse_request", "to_vertex_body", "translate_request"]
