"""OpenAI chat-completions request → Anthropic Messages body for Vertex AI. Pure: no I/O.

`parse_request` validates the client's JSON (pydantic) and turns every problem into an OpenAI-shaped 400
naming the parameter; `to_vertex_body` builds the body Vertex accepts (no `model` key, `anthropic_version`,
`max_tokens` always set). Every field's treatment, and why, is in docs/mapping.md; the non-obvious ones:

- leading system/developer messages become `system`; later ones stay in place as a user-turn text block, so
  adding one never reshuffles the prefix before it (prompt caching keys on that prefix);
- tool results become `tool_result` blocks in ONE user turn right after their assistant turn; a user message
  that follows them joins that turn; an assistant tool call left without a result gets a synthesized error result;
- tool names and tool-call ids Anthropic rejects are mapped deterministically (and names restored in answers);
- http(s) image URLs are left as `url` sources for the caller to fetch and inline (`inline_images`): Vertex
  accepts base64 only, and fetching is I/O;
- `response_format` json_object / json_schema becomes a forced tool whose input is the answer (valid JSON that
  matches the schema); the response translators turn it back into plain `content`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .. import models
from .errors import OpenAIError, invalid_request
from .validation import (Boolean, Custom, Enum, Integer, Number, Object, String, check_array, check_enum,
                         check_integer, check_object, check_string, invalid, missing, openai_error, tagged,
                         too_many_properties, type_error)


class _Open(BaseModel):
    # OpenAI adds fields often; unknown ones are accepted and ignored unless handled below.
    model_config = ConfigDict(extra="allow")


# --- the request's shape: every field of OpenAI's CreateChatCompletionRequest (../shared/openai-openapi.yaml,
# allOf parts included), typed as the spec types it (validation.py); tests/test_request_parity.py walks the spec
# and proves each field is checked.

class CacheBreakpoint(_Open):
    mode: Enum("explicit")


class TextPart(_Open):
    type: Enum("text")
    text: String()
    prompt_cache_breakpoint: CacheBreakpoint | None = None


class ImageURL(_Open):
    url: String()
    detail: Enum("auto", "low", "high") | None = None


class ImagePart(_Open):
    type: Enum("image_url")
    image_url: ImageURL
    prompt_cache_breakpoint: CacheBreakpoint | None = None


class RefusalPart(_Open):
    type: Enum("refusal")
    refusal: String()


class FileData(_Open):
    filename: String() | None = None
    file_data: String() | None = None
    file_id: String() | None = None


class FilePart(_Open):
    type: Enum("file")
    file: FileData
    prompt_cache_breakpoint: CacheBreakpoint | None = None


class InputAudio(_Open):
    data: String()
    format: Enum("wav", "mp3")


class AudioPart(_Open):
    type: Enum("input_audio")
    input_audio: InputAudio
    prompt_cache_breakpoint: CacheBreakpoint | None = None


ContentPart = tagged({"text": TextPart, "image_url": ImagePart, "refusal": RefusalPart, "file": FilePart,
                      "input_audio": AudioPart})
Content = String() | Annotated[list[ContentPart], Field(min_length=1)]


class FunctionCall(_Open):
    name: String()
    arguments: String()


class ToolCall(_Open):
    id: String(min_length=1)
    type: Enum("function")
    function: FunctionCall


class AssistantAudio(_Open):
    id: String()


# content is required but for assistant messages (which may carry only tool calls)
_CONTENT_REQUIRED = frozenset({"system", "developer", "user", "tool", "function"})


class Message(_Open):
    role: Enum("system", "developer", "user", "assistant", "tool", "function")
    content: Content | None = None
    name: String() | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: String() | None = None
    refusal: String() | None = None
    audio: AssistantAudio | None = None  # ignored: an earlier audio answer, which Claude cannot have given
    function_call: FunctionCall | None = None  # deprecated; ignored, as `tool_calls` replace it

    @model_validator(mode="after")
    def _required_content(self) -> Message:
        if self.role in _CONTENT_REQUIRED and self.content is None:
            if "content" not in self.model_fields_set:
                raise missing(".content")
            if self.role != "function":  # the deprecated function message may say null
                raise type_error("one of a string or an array", None, ".content")
        return self


class FunctionDef(_Open):
    name: String(min_length=1)
    description: String() | None = None
    parameters: Object | None = None
    strict: Boolean | None = None


class CustomToolDef(_Open):
    name: String()
    description: String() | None = None
    format: Object | None = None


class Tool(_Open):
    type: Enum("function", "custom")
    function: FunctionDef | None = None
    custom: CustomToolDef | None = None

    @model_validator(mode="after")
    def _definition(self) -> Tool:
        if getattr(self, self.type) is None:
            raise missing("." + self.type)
        return self


class StreamOptions(_Open):
    include_usage: Boolean | None = None
    include_obfuscation: Boolean | None = None


class JsonSchemaFormat(_Open):
    name: String()
    description: String() | None = None
    schema_: Object | None = Field(default=None, alias="schema")
    strict: Boolean | None = None


class ResponseFormat(_Open):
    type: Enum("text", "json_object", "json_schema")
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise missing(".json_schema")
        return self


class CacheOptions(_Open):
    # the spec's ttl is "30m"; 5m / 1h / 24h are modelmux's (docs/mapping.md: Claude's cache lives 5 min or 1 h)
    ttl: Enum("30m", "5m", "1h", "24h") | None = None
    mode: Enum("implicit", "explicit") | None = None


class Prediction(_Open):
    type: Enum("content")
    content: String() | Annotated[list[TextPart], Field(min_length=1)]


class ApproximateLocation(_Open):
    country: String() | None = None
    region: String() | None = None
    city: String() | None = None
    timezone: String() | None = None


class UserLocation(_Open):
    type: Enum("approximate")
    approximate: ApproximateLocation


class WebSearchOptions(_Open):
    user_location: UserLocation | None = None
    search_context_size: Enum("low", "medium", "high") | None = None


class Voice(_Open):
    id: String()


class AudioOutput(_Open):
    voice: String() | Voice
    format: Enum("wav", "aac", "mp3", "flac", "opus", "pcm16")


class ModerationConfig(_Open):
    mode: Enum("score", "block")


class ModerationPolicy(_Open):
    input: ModerationConfig | None = None
    output: ModerationConfig | None = None


class Moderation(_Open):
    model: String()
    policy: ModerationPolicy | None = None


class FunctionSpec(_Open):  # the deprecated `functions`
    name: String()
    description: String() | None = None
    parameters: Object | None = None


METADATA_MAX_PAIRS, METADATA_KEY_MAX, METADATA_VALUE_MAX = 16, 64, 512  # OpenAI's Metadata limits


def _metadata(value: Any) -> dict[str, str]:
    check_object(value)
    if len(value) > METADATA_MAX_PAIRS:
        raise too_many_properties(METADATA_MAX_PAIRS, len(value))
    for key, item in value.items():
        if len(key) > METADATA_KEY_MAX:
            raise invalid(f"Invalid '{{param}}': key too long. Expected a key with maximum length {METADATA_KEY_MAX}, "
                          f"but got a key with length {len(key)} instead.", "string_above_max_length")
        check_string(item, max_length=METADATA_VALUE_MAX, at=f".{key}")
    return value


_TOKEN_ID = re.compile(r"[0-9]{1,10}")


def _logit_bias(value: Any) -> dict[str, int]:
    check_object(value)
    for key, bias in value.items():
        if not _TOKEN_ID.fullmatch(key):
            raise invalid(f"Invalid key in '{{param}}': {key[:40]!r} is not a token ID (a string of digits).")
        value[key] = check_integer(bias, -100, 100, at=f".{key}")
    return value


def _stop(value: Any) -> str | list[str]:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise type_error("one of a string or an array", value)
    check_array(value, 1, 4)
    for i, item in enumerate(value):
        check_string(item, at=f"[{i}]")
    return value


def _named(value: Any, key: str, at: str) -> None:
    """`{key: {"name": str}}` inside a tool_choice-like object."""
    if key not in value:
        raise missing(f"{at}.{key}")
    check_object(value[key], at=f"{at}.{key}")
    if "name" not in value[key]:
        raise missing(f"{at}.{key}.name")
    check_string(value[key]["name"], at=f"{at}.{key}.name")


def _tool_choice(value: Any) -> str | dict[str, Any]:
    """ChatCompletionToolChoiceOption: none/auto/required, or a named function / custom tool, or allowed_tools."""
    if isinstance(value, str):
        return check_enum(value, ("none", "auto", "required"))
    if not isinstance(value, dict):
        raise type_error("one of a string or an object", value)
    if "type" not in value:
        raise missing(".type")
    kind = check_enum(value["type"], ("function", "custom", "allowed_tools"), at=".type")
    if kind != "allowed_tools":
        _named(value, kind, "")
        return value
    if "allowed_tools" not in value:
        raise missing(".allowed_tools")
    allowed = check_object(value["allowed_tools"], at=".allowed_tools")
    for key in ("mode", "tools"):
        if key not in allowed:
            raise missing(f".allowed_tools.{key}")
    check_enum(allowed["mode"], ("auto", "required"), at=".allowed_tools.mode")
    for i, item in enumerate(check_array(allowed["tools"], at=".allowed_tools.tools")):
        check_object(item, at=f".allowed_tools.tools[{i}]")
    return value


def _function_call(value: Any) -> str | dict[str, Any]:
    """The deprecated `function_call`: none / auto / {"name": …}."""
    if isinstance(value, str):
        return check_enum(value, ("none", "auto"))
    if not isinstance(value, dict):
        raise type_error("one of a string or an object", value)
    if "name" not in value:
        raise missing(".name")
    check_string(value["name"], at=".name")
    return value


INT64 = (-2 ** 63, 2 ** 63 - 1)


def _model(value: Any) -> str:
    check_string(value, min_length=1)
    try:  # it may become part of the Vertex URL, and is logged: a lone surrogate (\ud800) cannot be either
        value.encode()
    except UnicodeEncodeError:
        raise invalid("Invalid '{param}': the model name is not valid Unicode (it holds a lone surrogate).") from None
    return value


class ChatRequest(_Open):
    model: Custom(str, _model)
    messages: Annotated[list[Message], Field(min_length=1)]
    stream: Boolean | None = None
    stream_options: StreamOptions | None = None
    max_tokens: Integer() | None = None
    max_completion_tokens: Integer() | None = None
    temperature: Number(0, 2) | None = None
    top_p: Number(0, 1) | None = None
    stop: Custom(str | list[str], _stop) | None = None
    n: Integer(1, 128) | None = None
    user: String() | None = None
    safety_identifier: String(max_length=64) | None = None
    tools: list[Tool] | None = None
    tool_choice: Custom(str | dict[str, Any], _tool_choice) | None = None
    parallel_tool_calls: Boolean | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: Enum("none", "minimal", "low", "medium", "high", "xhigh", "max") | None = None
    logprobs: Boolean | None = None
    top_logprobs: Integer(0, 20) | None = None
    logit_bias: Custom(dict[str, int], _logit_bias) | None = None
    modalities: list[Enum("text", "audio")] | None = None
    prompt_cache_options: CacheOptions | None = None
    # ignored (docs/mapping.md) but checked as OpenAI checks them
    seed: Integer(*INT64) | None = None
    frequency_penalty: Number(-2, 2) | None = None
    presence_penalty: Number(-2, 2) | None = None
    metadata: Custom(dict[str, str], _metadata) | None = None
    store: Boolean | None = None
    service_tier: Enum("auto", "default", "flex", "scale", "priority", "fast") | None = None
    verbosity: Enum("low", "medium", "high") | None = None
    prediction: Prediction | None = None
    prompt_cache_key: String() | None = None
    prompt_cache_retention: Enum("in_memory", "24h") | None = None
    moderation: Moderation | None = None
    # refused (_REJECTED) once their shape is right
    audio: AudioOutput | None = None
    web_search_options: WebSearchOptions | None = None
    functions: Annotated[list[FunctionSpec], Field(min_length=1, max_length=128)] | None = None
    function_call: Custom(str | dict[str, Any], _function_call) | None = None


# Fields whose meaning Claude cannot honour: a 400 beats an answer the client did not ask for.
_REJECTED: dict[str, str] = {
    "functions": "The deprecated `functions` parameter is not supported; use `tools`.",
    "function_call": "The deprecated `function_call` parameter is not supported; use `tool_choice`.",
    "audio": "Audio output is not supported by Claude.",
    "web_search_options": "Web search is not supported through modelmux.",
}

# reasoning_effort → thinking budget (tokens). OpenAI's max_completion_tokens includes reasoning, as
# Anthropic's max_tokens includes thinking, so the budget is taken out of the same allowance.
EFFORT_BUDGETS: dict[str, int] = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768,
                                  "max": 63999}
MIN_THINKING_BUDGET = 1024

JSON_TOOL = "json_response"
_NAME_OK = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_ID_OK = re.compile(r"^[a-zA-Z0-9_-]+$")
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(.*)$", re.S)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
MAX_CACHE_BREAKPOINTS = 4  # Anthropic's limit; OpenAI also keeps only the latest explicit ones
NO_RESULT_TEXT = "No result was provided for this tool call (it is missing from the conversation history)."


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def strict_json(text: str | bytes) -> Any:
    """json.loads without NaN / Infinity: Python accepts them, Vertex (and JSON) does not."""
    return json.loads(text, parse_constant=_no_constant)


def json_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object; anything else is OpenAI's 400 (every API's parser starts here)."""
    try:
        data = strict_json(raw)
    except RecursionError:
        raise invalid_request("The JSON body of your request is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise invalid_request(f"We could not parse the JSON body of your request: {err}") from None
    if not isinstance(data, dict):
        raise invalid_request("The request body must be a JSON object.")
    return data


def parse_request(raw: bytes) -> ChatRequest:
    """Validate the client's body. Raises OpenAIError (400) naming the offending parameter."""
    data = json_body(raw)
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as err:
        raise openai_error(err) from None
    for key, message in _REJECTED.items():
        if data.get(key) not in (None, False, [], {}):
            raise invalid_request(message, param=key, code="unsupported_parameter")
    if req.n not in (None, 1):
        raise invalid_request("Claude returns one choice per request: 'n' must be 1.", param="n",
                              code="unsupported_parameter")
    if req.logprobs or req.top_logprobs:
        name = "logprobs" if req.logprobs else "top_logprobs"
        raise invalid_request("Claude does not return log probabilities.", param=name, code="unsupported_parameter")
    if req.logit_bias:
        raise invalid_request("Claude does not support logit_bias.", param="logit_bias", code="unsupported_parameter")
    if req.modalities not in (None, ["text"]):
        raise invalid_request("Only text output is supported: 'modalities' must be [\"text\"].", param="modalities",
                              code="unsupported_parameter")
    return req


# --- names and ids ------------------------------------------------------------------------------------------

def _digest(text: str) -> str:
    return hashlib.sha256(_utf8(text)).hexdigest()[:8]


def _utf8(text: str) -> bytes:
    # surrogatepass: JSON can carry lone surrogates (\ud800); they must hash, not crash
    return text.encode("utf-8", "surrogatepass")


def claude_tool_name(name: str) -> str:
    """A name Anthropic accepts (`^[a-zA-Z0-9_-]{1,128}$`), the same every time for the same input: MCP-style
    `server.tool`, `a/b`, `ns:fn` → `server_tool_1a2b3c4d` (the hash keeps `a.b` and `a_b` apart)."""
    if _NAME_OK.fullmatch(name):  # fullmatch: `$` alone would let a trailing newline through
        return name
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:119] + "_" + _digest(name)


def claude_tool_id(ident: str) -> str:
    """A tool-use id Anthropic accepts, deterministic so a call and its result still pair up."""
    if _ID_OK.fullmatch(ident):
        return ident
    return "mm_" + re.sub(r"[^a-zA-Z0-9_-]", "_", ident)[:64] + "_" + _digest(ident)


# --- the translation ---------------------------------------------------------------------------------------

class ImageSource(str):
    """An http(s) image URL to fetch (a plain str to every reader) that remembers the parameter it came from, so a
    failed fetch names it (images.fetch_images)."""

    param: str

    def __new__(cls, url: str, param: str) -> ImageSource:
        source = super().__new__(cls, url)
        source.param = param
        return source


@dataclass
class VertexRequest:
    body: dict[str, Any]
    stream: bool
    include_usage: bool
    tool_names: dict[str, str] = field(default_factory=dict)  # Claude name → the client's name
    json_tool: str | None = None  # the synthetic structured-output tool, answered as `content`
    json_wrapped: bool = False  # a non-object schema was wrapped as {"value": …}
    image_urls: list[str] = field(default_factory=list)  # http(s) images to fetch and inline (ImageSource)
    thinking: bool = False


ThinkingLookup = Callable[[str], list[dict[str, Any]] | None]


class _Builder:
    """Accumulates Anthropic turns; merges same-role runs and keeps tool results first in their user turn."""

    def __init__(self) -> None:
        self.turns: list[dict[str, Any]] = []
        self.pending_calls: dict[str, str] = {}  # Claude id → param of the call, still waiting for its result
        self.used_ids: set[str] = set()  # Anthropic wants every tool_use id unique in the conversation
        self.round_ids: dict[str, str] = {}  # the client's id → Claude id, for the current round of calls

    def register_calls(self, calls: list[dict[str, Any]], client_ids: list[str], index: int) -> None:
        """Record an assistant turn's calls. An id the client reuses from an earlier turn (some frameworks
        number calls per turn) is made unique; the same id twice in one turn cannot be paired: 400."""
        self.round_ids = {}
        for j, (call, client_id) in enumerate(zip(calls, client_ids)):
            if client_id in self.round_ids:
                raise invalid_request("Two tool calls of one message share an id.",
                                      param=f"messages[{index}].tool_calls[{j}].id")
            ident, n = call["id"], 2
            while call["id"] in self.used_ids:
                call["id"] = f"{ident}_{n}"
                n += 1
            self.used_ids.add(call["id"])
            self.round_ids[client_id] = call["id"]
            self.pending_calls[call["id"]] = f"messages[{index}].tool_calls[{j}]"

    def result_id(self, client_id: str) -> str:
        return self.round_ids.get(client_id) or claude_tool_id(client_id)

    def add(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if role == "assistant":
            self.close_tool_round()
        if self.turns and self.turns[-1]["role"] == role:
            self.turns[-1]["content"].extend(blocks)
        else:
            self.turns.append({"role": role, "content": blocks})

    def add_tool_result(self, block: dict[str, Any], param: str) -> None:
        if block["tool_use_id"] not in self.pending_calls:
            raise invalid_request("A tool message must answer a tool call of the assistant message just before it "
                                  "(no such pending tool_call_id).", param=param)
        del self.pending_calls[block["tool_use_id"]]
        if self.turns and self.turns[-1]["role"] == "user":
            turn = self.turns[-1]["content"]
            # results go before any text of the same turn: Anthropic wants tool_result blocks first
            at = sum(1 for b in turn if b["type"] == "tool_result")
            turn.insert(at, block)
        else:
            self.turns.append({"role": "user", "content": [block]})

    def close_tool_round(self) -> None:
        """Calls the client left without results (trimmed history) get a synthesized error result, so the
        conversation stays valid for Vertex instead of failing with a 400 the client cannot fix."""
        for ident in list(self.pending_calls):
            self.add_tool_result({"type": "tool_result", "tool_use_id": ident, "is_error": True,
                                  "content": NO_RESULT_TEXT}, "")


def cache_control(part: Any, ttl: str | None) -> dict[str, Any] | None:
    if getattr(part, "prompt_cache_breakpoint", None) is None:
        return None
    return {"type": "ephemeral", "ttl": "1h"} if ttl in ("1h", "24h") else {"type": "ephemeral"}


def image_block(url: str, param: str, image_urls: list[str]) -> dict[str, Any]:
    m = _DATA_URL.match(url)
    if m:
        media = m.group(1).lower()
        if media not in IMAGE_TYPES:
            raise invalid_request(f"Unsupported image type {media}: use png, jpeg, gif or webp.", param=param)
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": _base64(m.group(2), param)}}
    if url.startswith(("http://", "https://")):
        try:
            parts = urlsplit(url)
            valid = bool(parts.hostname) and (parts.port is None or parts.port > 0)
        except ValueError:  # a bad port or IPv6 literal
            valid = False
        if not valid:
            raise invalid_request("The image URL is not a valid http(s) URL.", param=param)
        image_urls.append(ImageSource(url, param))
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise invalid_request("An image URL must be a data: URL (base64) or an http(s) URL.", param=param)


def _base64(data: str, param: str) -> str:
    compact = "".join(data.split())  # line-wrapped base64 is common; Vertex wants it unwrapped
    if not compact or len(compact) % 4 or not _BASE64.fullmatch(compact):
        raise invalid_request("The data URL does not hold valid base64 data.", param=param)
    return compact


def file_block(part: FilePart, param: str) -> dict[str, Any]:
    data = part.file.file_data or ""
    m = _DATA_URL.match(data)
    if part.file.file_id or not m:
        raise invalid_request("Files must be sent inline as file_data (a base64 data: URL); uploaded file ids "
                              "are not available to Claude.", param=param, code="unsupported_parameter")
    media = m.group(1).lower()
    if media == "application/pdf":
        source = {"type": "base64", "media_type": media, "data": _base64(m.group(2), param)}
        return {"type": "document", "source": source}
    if media in IMAGE_TYPES:
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": _base64(m.group(2), param)}}
    raise invalid_request(f"Unsupported file type {media}: Claude reads PDF documents and images.", param=param)


def _content_blocks(msg: Message, index: int, ttl: str | None, image_urls: list[str],
                    allow_media: bool) -> list[dict[str, Any]]:
    """A message's content as Anthropic blocks; empty text yields none."""
    content = msg.content
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content.strip() else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        param = f"messages[{index}].content[{j}]"
        if isinstance(part, TextPart):
            if not part.text.strip():
                continue
            block: dict[str, Any] = {"type": "text", "text": part.text}
        elif isinstance(part, RefusalPart):
            if msg.role != "assistant":
                raise invalid_request("refusal parts are only allowed in assistant messages.", param=param + ".type")
            if not part.refusal.strip():
                continue
            block = {"type": "text", "text": part.refusal}
        elif isinstance(part, AudioPart):
            raise invalid_request("Audio input is not supported by Claude.", param=param,
                                  code="unsupported_parameter")
        elif not allow_media:
            raise invalid_request(f"{part.type} parts are only allowed in user and tool messages.", param=param)
        elif isinstance(part, ImagePart):
            block = image_block(part.image_url.url, param + ".image_url.url", image_urls)
        else:
            block = file_block(part, param + ".file")
        if cc := cache_control(part, ttl):
            block["cache_control"] = cc
        blocks.append(block)
    return blocks


def _tool_use_blocks(msg: Message, index: int, thinking_for: ThinkingLookup | None
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(recalled thinking blocks, tool_use blocks) of an assistant message."""
    uses: list[dict[str, Any]] = []
    for j, call in enumerate(msg.tool_calls or []):
        param = f"messages[{index}].tool_calls[{j}].function.arguments"
        try:
            args = strict_json(call.function.arguments) if call.function.arguments.strip() else {}
        except (ValueError, RecursionError):
            raise invalid_request("Tool call arguments must be a JSON object.", param=param) from None
        if not isinstance(args, dict):
            raise invalid_request("Tool call arguments must be a JSON object.", param=param)
        uses.append({"type": "tool_use", "id": claude_tool_id(call.id), "name": claude_tool_name(call.function.name),
                     "input": args})
    # Claude's thinking (with its signature) must precede its tool calls when the loop continues; OpenAI
    # clients drop it, so it is recalled from what modelmux kept when the calls were made.
    kept = thinking_for(uses[0]["id"]) if uses and thinking_for is not None else None
    return list(kept or []), uses


def _tool_result_block(msg: Message, index: int, ttl: str | None, image_urls: list[str]) -> dict[str, Any]:
    if not msg.tool_call_id:
        raise invalid_request("A tool message needs its tool_call_id.", param=f"messages[{index}].tool_call_id")
    inner = _content_blocks(msg, index, ttl, image_urls, allow_media=True)
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": claude_tool_id(msg.tool_call_id)}
    if inner:
        block["content"] = inner
    return block


def _tools(req: ChatRequest) -> tuple[list[dict[str, Any]], dict[str, str]]:
    tools: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, tool in enumerate(req.tools or []):
        if tool.type != "function" or tool.function is None:
            raise invalid_request(f"Only function tools are supported (got '{tool.type}').", param=f"tools[{i}].type",
                                  code="unsupported_parameter")
        fn = tool.function
        name = claude_tool_name(fn.name)
        if name in names:
            raise invalid_request(f"Duplicate tool name '{fn.name}'.", param=f"tools[{i}].function.name")
        names[name] = fn.name
        schema = fn.parameters if fn.parameters else {"type": "object", "properties": {}}
        entry: dict[str, Any] = {"name": name, "input_schema": schema}
        if fn.description:
            entry["description"] = fn.description
        tools.append(entry)
    return tools, names


def tools_of_history(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tools a conversation's tool calls name, declared plainly, for a request that sends none: Anthropic
    refuses `tool_use` / `tool_result` blocks in a request without tools (OpenAI does not; a summary or a
    follow-up question after a tool loop often drops them). With tool_choice none, none is called."""
    names: dict[str, None] = {}
    has_blocks = False
    for turn in turns:
        content = turn.get("content")
        for block in content if isinstance(content, list) else ():
            kind = block.get("type")
            if kind == "tool_use":
                names[block["name"]] = None
                has_blocks = True
            elif kind == "tool_result":
                has_blocks = True
    if not has_blocks:
        return []
    return [{"name": name, "description": "Called earlier in this conversation; not available now.",
             "input_schema": {"type": "object"}} for name in (names or {"tool": None})]


def _function_name(obj: Any) -> str | None:
    """`{"function": {"name": N}}` → N, or None for any other shape."""
    fn = obj.get("function") if isinstance(obj, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    return name if isinstance(name, str) else None


def _tool_choice(req: ChatRequest, names: dict[str, str], tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    choice = req.tool_choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if choice is None:
        result = None
    elif choice in ("none", "auto", "required"):
        result = {"type": {"none": "none", "auto": "auto", "required": "any"}[choice]}
    elif kind == "function":
        name = _function_name(choice)
        if name is None or claude_tool_name(name) not in names:
            raise invalid_request(f"tool_choice names a function that is not in tools: {name!r}.",
                                  param="tool_choice.function.name")
        result = {"type": "tool", "name": claude_tool_name(name)}
    elif kind == "allowed_tools" and isinstance(choice.get("allowed_tools"), dict) \
            and isinstance(choice["allowed_tools"].get("tools"), list):
        allowed = choice["allowed_tools"]
        keep = {claude_tool_name(n) for n in map(_function_name, allowed["tools"]) if n is not None}
        tools[:] = [t for t in tools if t["name"] in keep]
        result = {"type": "any" if allowed.get("mode") == "required" else "auto"}
    else:
        raise invalid_request("tool_choice must be none, auto, required, a function or allowed_tools.",
                              param="tool_choice")
    if result is not None and result["type"] != "none" and not tools:
        raise invalid_request("tool_choice is only allowed when tools are specified.", param="tool_choice")
    if req.parallel_tool_calls is False and tools:
        result = result or {"type": "auto"}
        if result["type"] != "none":
            result["disable_parallel_tool_use"] = True
    return result


def json_answer_tool(schema: dict[str, Any] | None, format_note: str,
                     taken: Container[str]) -> tuple[dict[str, Any], bool]:
    """The tool whose input is the answer, for a JSON output format (chat's response_format, Responses'
    text.format): `schema` None is json_object. Its name is JSON_TOOL, made unique against `taken`. Returns
    (tool, wrapped?): a schema that is not an object is wrapped in `{"value": …}` (Claude's tool input must be an
    object)."""
    name = JSON_TOOL
    while name in taken:
        name += "_"
    if schema is None:
        return {"name": name, "description": "Give your final answer by calling this tool; its input is the "
                                             "answer, a JSON object.", "input_schema": {"type": "object"}}, False
    wrapped = schema.get("type") != "object"
    if wrapped:
        schema = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
    return {"name": name, "description": "Give your final answer by calling this tool; its input is the answer. "
                                         + format_note, "input_schema": schema}, wrapped


def _json_output(req: ChatRequest, tools: list[dict[str, Any]], names: dict[str, str]) -> tuple[str | None, bool]:
    """response_format json → a tool whose input is the answer. Returns (tool name, wrapped?)."""
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None, False
    if fmt.type == "json_object":
        tool, wrapped = json_answer_tool(None, "", names)
    else:
        js = fmt.json_schema
        if js is None or js.schema_ is None:
            raise invalid_request("response_format json_schema needs a schema.", param="response_format.json_schema")
        tool, wrapped = json_answer_tool(js.schema_, js.description or f"Format: {js.name}.", names)
    tools.append(tool)
    return tool["name"], wrapped


def _max_tokens(req: ChatRequest, vertex_model: str) -> tuple[int, bool]:
    """(max_tokens, chosen by the client?)"""
    cap = models.output_cap(vertex_model)
    requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    if requested is None:
        return models.default_max_tokens(vertex_model), False
    if requested < 1:
        name = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        raise invalid_request(f"'{name}' must be at least 1.", param=name)
    return min(requested, cap), True


def to_vertex_body(req: ChatRequest, vertex_model: str, anthropic_version: str, *,
                   thinking_for: ThinkingLookup | None = None) -> VertexRequest:
    ttl = req.prompt_cache_options.ttl if req.prompt_cache_options else None
    image_urls: list[str] = []
    system: list[dict[str, Any]] = []
    b = _Builder()
    for i, msg in enumerate(req.messages):
        role = msg.role
        if role in ("system", "developer"):
            blocks = _content_blocks(msg, i, ttl, image_urls, allow_media=False)
            if not b.turns:
                system.extend(blocks)
            else:  # in place, as the user's: the prefix before it stays byte-identical
                b.add("user", [{**x, "text": f"<{role}>\n{x['text']}\n</{role}>"} for x in blocks])
        elif role == "user":
            b.close_tool_round()
            b.add("user", _content_blocks(msg, i, ttl, image_urls, allow_media=True))
        elif role == "assistant":
            text = _content_blocks(msg, i, ttl, image_urls, allow_media=False)
            if not text and msg.refusal and msg.refusal.strip():
                text = [{"type": "text", "text": msg.refusal}]
            thought, calls = _tool_use_blocks(msg, i, thinking_for)
            b.add("assistant", thought + text + calls)  # thinking first, as Claude produced it
            b.register_calls(calls, [c.id for c in msg.tool_calls or []], i)
        elif role == "tool":
            block = _tool_result_block(msg, i, ttl, image_urls)
            block["tool_use_id"] = b.result_id(msg.tool_call_id or "")
            b.add_tool_result(block, f"messages[{i}].tool_call_id")
        else:
            raise invalid_request("The deprecated `function` role is not supported; use tool messages.",
                                  param=f"messages[{i}].role", code="unsupported_parameter")
    b.close_tool_round()
    if not b.turns:
        raise invalid_request("The conversation needs at least one user or assistant message with content.",
                              param="messages")

    keep_latest_breakpoints(system, b.turns)
    body: dict[str, Any] = {"anthropic_version": anthropic_version, "messages": b.turns}
    if system:
        body["system"] = system
    tools, names = _tools(req)
    choice = _tool_choice(req, names, tools)
    json_tool, wrapped = _json_output(req, tools, names)
    if json_tool:
        if choice is not None and choice["type"] == "none":
            tools[:] = [t for t in tools if t["name"] == json_tool]  # no client tool may be called
        if len(tools) == 1:
            choice = {"type": "tool", "name": json_tool}
        elif choice is None or choice["type"] == "auto":
            # the final answer must come through the JSON tool; client tools stay callable before it
            choice = {"type": "any", **{k: v for k, v in (choice or {}).items() if k == "disable_parallel_tool_use"}}
        names[json_tool] = json_tool
    if not tools and (tools := tools_of_history(b.turns)):
        choice = {"type": "none"}
    if tools:
        body["tools"] = tools
    if choice is not None:
        body["tool_choice"] = choice

    max_tokens, chosen = _max_tokens(req, vertex_model)
    thinking = thinking_budget(req, choice, b.turns, max_tokens, chosen, vertex_model, thinking_for)
    if thinking:
        budget, max_tokens = thinking
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    body["max_tokens"] = max_tokens

    add_sampling(body, req.temperature, req.top_p, vertex_model, anthropic_version, thinking=bool(thinking))

    stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    stops = [s for s in stops if s.strip()]
    if stops:
        body["stop_sequences"] = stops
    if req.user or req.safety_identifier:
        body["metadata"] = {"user_id": hash_user(req.safety_identifier or req.user or "")}
    stream = bool(req.stream)
    if stream:
        body["stream"] = True
    include_usage = bool(stream and req.stream_options and req.stream_options.include_usage)
    return VertexRequest(body=body, stream=stream, include_usage=include_usage, tool_names=names,
                         json_tool=json_tool, json_wrapped=wrapped, image_urls=image_urls, thinking=bool(thinking))


def add_sampling(body: dict[str, Any], temperature: float | None, top_p: float | None, vertex_model: str,
                 anthropic_version: str, *, thinking: bool) -> None:
    """The client's sampling parameters as Claude on Vertex takes them: temperature within 0..1; top_p only where
    the model accepts it beside temperature; none under the newer anthropic_version (it rejects them even at
    their defaults) or with thinking (which requires the default temperature)."""
    if anthropic_version != "vertex-2023-10-16" or thinking:
        return
    if temperature is not None:
        body["temperature"] = min(temperature, 1.0)
    if top_p is not None and not (temperature is not None and models.rejects_temperature_with_top_p(vertex_model)):
        body["top_p"] = top_p


def keep_latest_breakpoints(system: list[dict[str, Any]], turns: list[dict[str, Any]]) -> None:
    """Only the last MAX_CACHE_BREAKPOINTS `cache_control` marks stay: Vertex rejects more."""
    marked = [b for b in system if "cache_control" in b]
    for turn in turns:
        for block in turn["content"]:
            marked += [x for x in [block, *(block.get("content") or [] if block["type"] == "tool_result" else [])]
                       if isinstance(x, dict) and "cache_control" in x]
    for block in marked[:-MAX_CACHE_BREAKPOINTS]:
        del block["cache_control"]


def thinking_budget(req: ChatRequest, choice: dict[str, Any] | None, turns: list[dict[str, Any]], max_tokens: int,
                     chosen: bool, vertex_model: str, thinking_for: ThinkingLookup | None) -> tuple[int, int] | None:
    """(budget, max_tokens) when thinking is on, else None. Off: no effort asked, `none`, a forced tool
    (Anthropic rejects thinking with it), or a tool loop whose earlier thinking modelmux no longer has."""
    effort = req.reasoning_effort
    if effort is None or effort == "none":
        return None
    if choice is not None and choice["type"] in ("any", "tool"):
        return None
    last_assistant = next((t for t in reversed(turns) if t["role"] == "assistant"), None)
    if last_assistant and any(x["type"] == "tool_use" for x in last_assistant["content"]) \
            and last_assistant["content"][0]["type"] not in ("thinking", "redacted_thinking"):
        return None
    budget = EFFORT_BUDGETS[effort]
    cap = models.output_cap(vertex_model)
    if not chosen:  # no client limit: room for the thinking on top of the default answer length
        max_tokens = min(cap, max_tokens + budget)
    budget = min(budget, max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        return None  # the client's limit leaves no room for Claude's minimum thinking budget
    return budget, max_tokens


def hash_user(user: str) -> str:
    # Vertex rejects emails and phone numbers as user_id; a stable hash still groups one user's requests.
    return "user-" + hashlib.sha256(_utf8(user)).hexdigest()[:32]


VERTEX_MAX_REQUEST_BYTES = 30_000_000  # Vertex AI's cap on a request body ("30 MB", shared notes)


def vertex_body_bytes(body: dict[str, Any]) -> bytes:
    """The finished Vertex body (images inlined, nothing left to add) as the bytes to send. Over Vertex's cap it is
    an OpenAI 413 `request_too_large` instead: Vertex would refuse it after the whole upload."""
    data = json.dumps(body).encode()
    if len(data) > VERTEX_MAX_REQUEST_BYTES:
        raise OpenAIError(413, f"The request is too large for Vertex AI: {len(data)} bytes once translated (images "
                               f"inlined as base64), over its limit of {VERTEX_MAX_REQUEST_BYTES} bytes. Send fewer or "
                               f"smaller images or less text.", "invalid_request_error", "messages",
                          "request_too_large")
    return data


def inline_images(body: dict[str, Any], fetched: dict[str, tuple[str, str]]) -> None:
    """Replace `url` image sources with the fetched (media_type, base64 data), in place."""
    for turn in body["messages"]:
        for block in turn["content"]:
            for b in [block, *(block.get("content") or [] if block["type"] == "tool_result" else [])]:
                if isinstance(b, dict) and b.get("type") == "image" and b["source"].get("type") == "url":
                    media, data = fetched[b["source"]["url"]]
                    b["source"] = {"type": "base64", "media_type": media, "data": data}


__all__ = ["ChatRequest", "VertexRequest", "OpenAIError", "parse_request", "to_vertex_body", "inline_images",
           "vertex_body_bytes", "VERTEX_MAX_REQUEST_BYTES",
           "claude_tool_name", "claude_tool_id", "JSON_TOOL"]
