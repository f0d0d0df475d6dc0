"""Vertex's rules for a Claude request body (rawPredict, streamRawPredict, count-tokens), each broken rule an
InvalidRequest carrying the Anthropic API's message."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Iterator
from typing import Any

from .claude_models import CLAUDE_MODELS, first_party_id
from .errors import InvalidRequest
from .jsontypes import is_int, is_number
from .messages import blocks, ids

ALLOWED_KEYS = ("anthropic_version", "messages", "system", "max_tokens", "temperature", "top_p", "top_k",
                "stop_sequences", "stream", "metadata", "tools", "tool_choice", "thinking")
COUNT_TOKENS_KEYS = ("anthropic_version", "model", "messages", "system", "tools", "tool_choice", "thinking")
VERSIONS = ("vertex-2023-10-16", "2026-10-21")
NO_SAMPLING_VERSION = "2026-10-21"
SAMPLING_KEYS = ("temperature", "top_p", "top_k")
BLOCK_TYPES = ("text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking", "document")
TOOL_RESULT_BLOCK_TYPES = ("text", "image", "document")
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
TOOL_CHOICE_TYPES = ("auto", "any", "tool", "none")
ROLE_OF_BLOCK = {"tool_use": "assistant", "thinking": "assistant", "redacted_thinking": "assistant",
                 "tool_result": "user"}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PHONE = re.compile(r"^\+?[\d\s().-]+$")
MIN_THINKING_BUDGET = 1024
MAX_CACHE_BREAKPOINTS = 4


def sign_thinking(secret: bytes, thinking: str) -> str:
    """The signature this emulator gives a thinking block, and checks when the block comes back."""
    return base64.b64encode(hmac.new(secret, thinking.encode(), hashlib.sha256).digest()).decode()


def validate_body(body: object, model: str, streaming: bool, secret: bytes) -> dict:
    """Apply Vertex's rules for a rawPredict / streamRawPredict body to a model of CLAUDE_MODELS; raise
    InvalidRequest with the API's message. `secret` signs this emulator's thinking blocks."""
    body = _check_keys(body, ALLOWED_KEYS)
    _check_version(body)
    _check_max_tokens(body, model)
    _check_messages(body)
    _check_system(body)
    _check_sampling(body, model)
    _check_stop_sequences(body)
    _check_stream(body, streaming)
    _check_metadata(body)
    _check_tools(body)
    _check_thinking(body)
    _check_cache_control(body)
    _check_signatures(body["messages"], secret)
    return body


def validate_count_tokens_body(body: object) -> dict:
    """Apply the rules for a count-tokens body: Anthropic's count_tokens fields, `model` among them (looked up
    by the caller), and the message, system, tool, thinking and cache rules of validate_body."""
    body = _check_keys(body, COUNT_TOKENS_KEYS)
    _check_version(body)
    _check_string(_require(body, "model", ""), "model")
    _check_messages(body)
    _check_system(body)
    _check_tools(body)
    _check_thinking(body)
    _check_cache_control(body)
    return body


def _check_keys(body: object, allowed: tuple[str, ...]) -> dict:
    if not isinstance(body, dict):
        raise InvalidRequest("Input should be a valid dictionary or object to extract fields from")
    for key in body:
        if key not in allowed:
            raise InvalidRequest(f"{key}: Extra inputs are not permitted")
    return body


def _options(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _require(obj: dict, key: str, path: str) -> Any:
    if key not in obj:
        raise InvalidRequest(f"{path}{key}: Field required")
    return obj[key]


def _check_string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{path}: Input should be a valid string")
    return value


def _check_dict(value: object, path: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{path}: Input should be a valid dictionary")
    return value


def _check_list(value: object, path: str) -> list:
    if not isinstance(value, list):
        raise InvalidRequest(f"{path}: Input should be a valid list")
    return value


def _check_text(text: str, owner: str) -> None:
    if not text:
        raise InvalidRequest(f"{owner}: text content blocks must be non-empty")
    if not text.strip():
        raise InvalidRequest(f"{owner}: text content blocks must contain non-whitespace text")


def _check_version(body: dict) -> None:
    if _require(body, "anthropic_version", "") not in VERSIONS:
        raise InvalidRequest(f"anthropic_version: Input should be {_options(VERSIONS)}")


def _check_max_tokens(body: dict, model: str) -> None:
    value = _require(body, "max_tokens", "")
    if not is_int(value):
        raise InvalidRequest("max_tokens: Input should be a valid integer")
    if value < 1:
        raise InvalidRequest("max_tokens: Input should be greater than or equal to 1")
    cap = CLAUDE_MODELS[model].output_cap
    if value > cap:
        raise InvalidRequest(f"max_tokens: {value} > {cap}, which is the maximum allowed number of output tokens "
                             f"for {first_party_id(model)}")


def _check_messages(body: dict) -> None:
    messages = _check_list(_require(body, "messages", ""), "messages")
    if not messages:
        raise InvalidRequest("messages: at least one message is required")
    for i, message in enumerate(messages):
        path = f"messages.{i}"
        _check_dict(message, path)
        for key in message:
            if key not in ("role", "content"):
                raise InvalidRequest(f"{path}.{key}: Extra inputs are not permitted")
        role = _require(message, "role", f"{path}.")
        if role not in ("user", "assistant"):
            raise InvalidRequest(f"{path}.role: Input should be 'user' or 'assistant'")
        content = _require(message, "content", f"{path}.")
        if not isinstance(content, (str, list)):
            raise InvalidRequest(f"{path}.content: Input should be a valid string or list")
        if content == []:
            raise InvalidRequest(f"{path}.content: List should have at least 1 item after validation, not 0")
        for j, block in enumerate(blocks(content)):
            _check_block(block, f"{path}.content.{j}", role, BLOCK_TYPES)
    _check_tool_pairing(messages)


def _check_block(block: object, path: str, role: str, allowed: tuple[str, ...]) -> None:
    kind = _check_dict(block, path).get("type")
    if kind not in allowed:
        raise InvalidRequest(f"{path}: Input tag '{kind}' found using 'type' does not match any of the expected "
                             f"tags: {', '.join(repr(t) for t in allowed)}")
    if ROLE_OF_BLOCK.get(kind, role) != role:
        raise InvalidRequest(f"{path}.type: `{kind}` blocks are only allowed in {ROLE_OF_BLOCK[kind]} messages")
    _BLOCK_CHECKS[kind](block, path, role)


def _check_text_block(block: dict, path: str, role: str) -> None:
    _check_text(_check_string(_require(block, "text", f"{path}."), f"{path}.text"), "messages")


def _check_source(block: dict, path: str, kinds: tuple[str, ...], media_types: tuple[str, ...]) -> dict:
    source = _check_dict(_require(block, "source", f"{path}."), f"{path}.source")
    kind = source.get("type")
    if kind == "url":
        raise InvalidRequest(f"{path}.source: URL sources are not supported on Vertex AI; "
                             f"send the data base64-encoded")
    if kind not in kinds:
        raise InvalidRequest(f"{path}.source.type: Input should be {_options(kinds)}")
    if kind == "base64":
        if source.get("media_type") not in media_types:
            raise InvalidRequest(f"{path}.source.media_type: Input should be {_options(media_types)}")
        data = _check_string(_require(source, "data", f"{path}.source."), f"{path}.source.data")
        try:
            base64.b64decode(data, validate=True)
        except binascii.Error:
            raise InvalidRequest(f"{path}.source.data: Input should be valid base64") from None
    return source


def _check_image_block(block: dict, path: str, role: str) -> None:
    _check_source(block, path, ("base64",), IMAGE_MEDIA_TYPES)


def _check_document_block(block: dict, path: str, role: str) -> None:
    source = _check_source(block, path, ("base64", "text", "content"), ("application/pdf",))
    if source["type"] == "text":
        _check_string(_require(source, "data", f"{path}.source."), f"{path}.source.data")


def _check_tool_use_block(block: dict, path: str, role: str) -> None:
    tool_id = _check_string(_require(block, "id", f"{path}."), f"{path}.id")
    if not TOOL_ID.fullmatch(tool_id):
        raise InvalidRequest(f"{path}.id: String should match pattern '{TOOL_ID.pattern}'")
    name = _check_string(_require(block, "name", f"{path}."), f"{path}.name")
    if not TOOL_NAME.fullmatch(name):
        raise InvalidRequest(f"{path}.name: String should match pattern '{TOOL_NAME.pattern}'")
    _check_dict(_require(block, "input", f"{path}."), f"{path}.input")


def _check_tool_result_block(block: dict, path: str, role: str) -> None:
    tool_id = _check_string(_require(block, "tool_use_id", f"{path}."), f"{path}.tool_use_id")
    if not TOOL_ID.fullmatch(tool_id):
        raise InvalidRequest(f"{path}.tool_use_id: String should match pattern '{TOOL_ID.pattern}'")
    content = block.get("content", "")
    if isinstance(content, list):
        for k, inner in enumerate(content):
            _check_block(inner, f"{path}.content.{k}", role, TOOL_RESULT_BLOCK_TYPES)
    elif not isinstance(content, str):
        raise InvalidRequest(f"{path}.content: Input should be a valid string or list")


def _check_thinking_block(block: dict, path: str, role: str) -> None:
    _check_string(_require(block, "thinking", f"{path}."), f"{path}.thinking")
    _check_string(_require(block, "signature", f"{path}."), f"{path}.signature")


def _check_redacted_thinking_block(block: dict, path: str, role: str) -> None:
    _check_string(_require(block, "data", f"{path}."), f"{path}.data")


_BLOCK_CHECKS: dict[str, Callable[[dict, str, str], None]] = {
    "text": _check_text_block,
    "image": _check_image_block,
    "document": _check_document_block,
    "tool_use": _check_tool_use_block,
    "tool_result": _check_tool_result_block,
    "thinking": _check_thinking_block,
    "redacted_thinking": _check_redacted_thinking_block,
}


def _check_tool_pairing(messages: list[dict]) -> None:
    """Every tool_result answers a tool_use of the turn just before; every tool_use is answered in the next."""
    for i, message in enumerate(messages):
        if message["role"] == "user":
            previous = messages[i - 1] if i > 0 and messages[i - 1]["role"] == "assistant" else None
            asked = set(ids(previous, "tool_use", "id")) if previous else set()
            for j, block in enumerate(blocks(message["content"])):
                if block["type"] == "tool_result" and block["tool_use_id"] not in asked:
                    raise InvalidRequest(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block['tool_use_id']}. Each `tool_result` block must have a corresponding `tool_use` "
                        f"block in the previous message.")
        elif i + 1 < len(messages):
            follower = messages[i + 1]
            answered = set(ids(follower, "tool_result", "tool_use_id")) if follower["role"] == "user" else set()
            missing = [t for t in ids(message, "tool_use", "id") if t not in answered]
            if missing:
                raise InvalidRequest(
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block "
                    f"in the next message.")


def _check_system(body: dict) -> None:
    if "system" not in body or isinstance(body["system"], str):
        return
    for j, block in enumerate(_check_list(body["system"], "system")):
        if _check_dict(block, f"system.{j}").get("type") != "text":
            raise InvalidRequest(f"system.{j}.type: Input should be 'text'")
        _check_text(_check_string(_require(block, "text", f"system.{j}."), f"system.{j}.text"), "system")


def _check_sampling(body: dict, model: str) -> None:
    present = [key for key in SAMPLING_KEYS if key in body]
    if present and body["anthropic_version"] == NO_SAMPLING_VERSION:
        raise InvalidRequest(f"{present[0]}: Extra inputs are not permitted "
                             f"(anthropic_version {NO_SAMPLING_VERSION} has no sampling parameters)")
    for key in ("temperature", "top_p"):
        if key in body:
            value = body[key]
            if not is_number(value):
                raise InvalidRequest(f"{key}: Input should be a valid number")
            if value < 0:
                raise InvalidRequest(f"{key}: Input should be greater than or equal to 0")
            if value > 1:
                raise InvalidRequest(f"{key}: Input should be less than or equal to 1")
    if "top_k" in body and (not is_int(body["top_k"]) or body["top_k"] < 0):
        raise InvalidRequest("top_k: Input should be a valid integer greater than or equal to 0")
    if "temperature" in body and "top_p" in body and CLAUDE_MODELS[model].sampling_exclusive:
        raise InvalidRequest("`temperature` and `top_p` cannot both be specified for this model. "
                             "Please use only one.")


def _check_stop_sequences(body: dict) -> None:
    for k, stop in enumerate(_check_list(body.get("stop_sequences", []), "stop_sequences")):
        if not _check_string(stop, f"stop_sequences.{k}").strip():
            raise InvalidRequest("stop_sequences: each stop sequence must contain non-whitespace characters")


def _check_stream(body: dict, streaming: bool) -> None:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: Input should be a valid boolean")
    if streaming and not stream:
        raise InvalidRequest("stream: streamRawPredict requires `\"stream\": true`")
    if stream and not streaming:
        raise InvalidRequest("stream: `\"stream\": true` requires streamRawPredict, not rawPredict")


def _looks_personal(user_id: str) -> bool:
    digits = sum(c.isdigit() for c in user_id)
    return bool(EMAIL.search(user_id)) or (PHONE.match(user_id) is not None and 7 <= digits <= 15)


def _check_metadata(body: dict) -> None:
    if "metadata" not in body:
        return
    metadata = _check_dict(body["metadata"], "metadata")
    for key in metadata:
        if key != "user_id":
            raise InvalidRequest(f"metadata.{key}: Extra inputs are not permitted")
    user_id = metadata.get("user_id")
    if user_id is None:
        return
    if _looks_personal(_check_string(user_id, "metadata.user_id")):
        raise InvalidRequest("metadata.user_id: user_id must not contain personally identifying information "
                             "such as an email address or phone number")


def _check_tools(body: dict) -> None:
    names: set[str] = set()
    for k, tool in enumerate(_check_list(body.get("tools", []), "tools")):
        path = f"tools.{k}"
        name = _check_string(_require(_check_dict(tool, path), "name", f"{path}."), f"{path}.name")
        if not TOOL_NAME.fullmatch(name):
            raise InvalidRequest(f"{path}.name: String should match pattern '{TOOL_NAME.pattern}'")
        if name in names:
            raise InvalidRequest("tools: Tool names must be unique.")
        names.add(name)
        if tool.get("type", "custom") == "custom":
            _check_dict(_require(tool, "input_schema", f"{path}."), f"{path}.input_schema")
    if "tool_choice" in body:
        choice = _check_dict(body["tool_choice"], "tool_choice")
        if choice.get("type") not in TOOL_CHOICE_TYPES:
            raise InvalidRequest(f"tool_choice.type: Input should be {_options(TOOL_CHOICE_TYPES)}")
        if choice["type"] == "tool":
            _check_string(_require(choice, "name", "tool_choice."), "tool_choice.name")
    if not body.get("tools") and any(isinstance(block, dict) and block.get("type") in ("tool_use", "tool_result")
                                     for message in body["messages"] if isinstance(message.get("content"), list)
                                     for block in message["content"]):
        raise InvalidRequest("Requests which include `tool_use` or `tool_result` blocks must define tools.")


def _check_thinking(body: dict) -> None:
    if "thinking" not in body:
        return
    thinking = _check_dict(body["thinking"], "thinking")
    if thinking.get("type") not in ("enabled", "disabled"):
        raise InvalidRequest("thinking.type: Input should be 'enabled' or 'disabled'")
    if thinking["type"] == "disabled":
        return
    budget = _require(thinking, "budget_tokens", "thinking.enabled.")
    if not is_int(budget) or budget < MIN_THINKING_BUDGET:
        raise InvalidRequest(f"thinking.enabled.budget_tokens: Input should be greater than or equal to "
                             f"{MIN_THINKING_BUDGET}")
    if "max_tokens" in body and body["max_tokens"] <= budget:  # count-tokens bodies have no max_tokens
        raise InvalidRequest("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                             "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
                             "#max-tokens-and-context-window-size")
    if body.get("tool_choice", {}).get("type") in ("any", "tool"):
        raise InvalidRequest("Thinking may not be enabled when tool_choice forces tool use.")
    _check_thinking_kept(body["messages"])


def _check_thinking_kept(messages: list[dict]) -> None:
    """In a tool loop with thinking on, the assistant turn that called the tools must start with its thinking."""
    last = messages[-1]
    if last["role"] != "user" or not ids(last, "tool_result", "tool_use_id"):
        return
    i = len(messages) - 2  # the tool-calling turn (tool pairing already checked it is an assistant turn)
    first = blocks(messages[i]["content"])[0]["type"]
    if first not in ("thinking", "redacted_thinking"):
        raise InvalidRequest(
            f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`. When "
            f"`thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the "
            f"lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from "
            f"previous turns. To avoid this requirement, disable `thinking`. Please consult our documentation at "
            f"https://docs.claude.com/en/docs/build-with-claude/extended-thinking")


def _cache_controls(body: dict) -> Iterator[tuple[str, object]]:
    """(path, cache_control) of every tool, system block, message block and tool-result block that has one."""
    def marks(items: list, path: str) -> Iterator[tuple[str, object]]:
        for j, block in enumerate(items):
            if block.get("cache_control") is not None:
                yield f"{path}.{j}", block["cache_control"]
            if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
                yield from marks(block["content"], f"{path}.{j}.content")

    yield from marks(body.get("tools", []), "tools")
    if isinstance(body.get("system"), list):
        yield from marks(body["system"], "system")
    for i, message in enumerate(body["messages"]):
        yield from marks(blocks(message["content"]), f"messages.{i}.content")


def _check_cache_control(body: dict) -> None:
    found = list(_cache_controls(body))
    for path, control in found:
        if _check_dict(control, f"{path}.cache_control").get("type") != "ephemeral":
            raise InvalidRequest(f"{path}.cache_control.type: Input should be 'ephemeral'")
    if len(found) > MAX_CACHE_BREAKPOINTS:
        raise InvalidRequest(f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
                             f"Found {len(found)}.")


def _check_signatures(messages: list[dict], secret: bytes) -> None:
    """Thinking blocks come back exactly as this emulator signed them (redacted ones are opaque: taken as is)."""
    for i, message in enumerate(messages):
        for j, block in enumerate(blocks(message["content"])):
            if block["type"] == "thinking" and not hmac.compare_digest(
                    block["signature"].encode(), sign_thinking(secret, block["thinking"]).encode()):
                raise InvalidRequest(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")
