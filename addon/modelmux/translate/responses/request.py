"""OpenAI Responses request (`POST /v1/responses`) → Anthropic Messages body for Vertex AI. Pure: no I/O.

The hook's steps, and what each needs from the store:

    req = parse_responses_request(raw)              # 400 for any bad field, naming it
    wanted = references(req)                        # ids the hook looks up in its store (may be [])
    history = <the conversation of req.previous_response_id>, from the store (400 if unknown)
    call = to_vertex_body(req, vertex_model, anthropic_version, key=…, history=history,
                          resolved={id: item for the ids found}, web_search=…, drop_builtin_tools=…)
    inline_images(call.body, fetched)               # when call.image_urls (translate/request.py)
    … then the stream or response translator with call.shape; store call.input_items and the final
    stored Response when call.store.

`history` is what `previous_response_id` stands for: for each response of the chain, oldest first, its
`input_items` followed by its stored output (`conversation_items`). `instructions` are not part of it, as
OpenAI specifies. `resolved` maps the ids `references` returned to stored items: an `item_reference` must be
resolved (else 400); a reasoning item sent without `encrypted_content` (openai-agents, LangChain and the
Vercel SDK replay items by value, with `store: true`) is replaced by its stored copy when there is one.

How the items become Claude turns — the non-obvious rules (docs/responses.md has every field):
- `instructions`, then leading system/developer messages → `system`; later ones stay in place as a
  `<system>` / `<developer>` text block in the user turn, so the prefix before them stays cache-identical;
- consecutive assistant output (message, function_call, custom_tool_call, reasoning) forms ONE assistant
  turn, the outputs that answer it ONE user turn, tool_result blocks first; a call left without an output
  gets a synthesized `is_error` result, as in chat;
- a reasoning item with our sealed `encrypted_content` becomes the exact Claude thinking blocks, in place
  (at the head of its assistant turn); one without content we can verify (none, or OpenAI's `gAAAA…`) is
  dropped — Claude cannot use another model's reasoning and Vertex rejects unsigned thinking — which only
  means thinking is off for a tool loop whose thinking is missing (Vertex's rule). A blob that looks like
  ours but does not authenticate → 400 naming the item;
- a compaction item (our sealed summary) → a `<conversation_summary>` user text block; a
  `compaction_trigger` makes the answer a compaction: Claude summarises, no tool may be called, and the
  answer is one sealed `compaction` item;
- custom (free-form) tools become Claude tools with one string property `input`; namespace tools are
  flattened to `namespace__name`; every name is sanitised with claude_tool_name and restored in answers;
- tools may also come in the input: an `additional_tools` item (Codex's code mode lists all its tools there)
  and a client-executed search's `tool_search_output` add Claude tools like those of `tools`, and are no turn;
  a `configuration_update` item sets the reasoning effort / summary from its position on (the latest wins).
"""

from __future__ import annotations

import copy
import types
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ... import models
from ..errors import OpenAIError, invalid_request
from ..request import (NO_RESULT_TEXT, FilePart, ThinkingLookup, add_sampling, cache_control, claude_tool_id,
                       claude_tool_name, file_block, hash_user, image_block, json_answer_tool, json_body,
                       keep_latest_breakpoints, strict_json, thinking_budget, tools_of_history)
from . import ids
from .response import CUSTOM_INPUT, ResponseShape, unseal_summary, unseal_thinking
from .sealing import Keys, SealError, is_ours

# --- the request --------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    # strict: `true` is not 1, "16" is not 16 — what OpenAI's validation says too. Unknown fields are
    # accepted and ignored unless handled below (OpenAI adds fields often; Codex sends client_metadata).
    model_config = ConfigDict(extra="allow", strict=True)


Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
Summary = Literal["auto", "concise", "detailed"]
INCLUDABLE = ("file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
              "message.input_image.image_url", "computer_call_output.output.image_url",
              "code_interpreter_call.outputs", "reasoning.encrypted_content", "message.output_text.logprobs")


class StreamOptions(_Strict):
    include_obfuscation: bool | None = None


class ReasoningParam(_Strict):
    effort: Effort | None = None
    summary: Summary | None = None
    generate_summary: Summary | None = None  # deprecated spelling of summary
    mode: str | None = None
    context: Literal["auto", "current_turn", "all_turns"] | None = None


class TextFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextParam(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class CacheOptions(_Strict):
    mode: Literal["implicit", "explicit"] | None = None
    ttl: Literal["30m"] | None = None


class ResponsesRequest(_Strict):
    model: str | None = Field(default=None, min_length=1)
    input: str | list[dict[str, Any]] | None = None  # items are validated one by one (translate_items)
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, min_length=1)
    conversation: Any = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    background: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=16)
    max_tool_calls: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    reasoning: ReasoningParam | None = None
    text: TextParam | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    include: list[Literal[INCLUDABLE]] | None = None  # type: ignore[valid-type]
    truncation: Literal["auto", "disabled"] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = Field(default=None, max_length=64)
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: CacheOptions | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast", "ultrafast"] | None = None
    context_management: list[Any] | None = None
    prompt: Any = None


# A client asks for these only when it means them: a 400 beats an answer that silently is not what it asked.
_REJECTED: dict[str, tuple[str, str]] = {
    "background": ("Background mode is not supported by modelmux: send the request without `background` "
                   "(streamed if it is long).", "unsupported_parameter"),
    "conversation": ("Conversations (`conversation`) are not supported by modelmux; chain responses with "
                     "`previous_response_id` instead.", "unsupported_parameter"),
    "prompt": ("Stored prompts (`prompt.id`) live on OpenAI's servers and are not available through modelmux; "
               "send the prompt as `instructions` and `input`.", "unsupported_parameter"),
    "context_management": ("Server-side compaction (`context_management`) is not supported by modelmux; "
                           "send a `compaction_trigger` item or call /v1/responses/compact.",
                           "unsupported_parameter"),
}
MAX_METADATA = 16


def parse_responses_request(raw: bytes) -> ResponsesRequest:
    """Validate the client's body. Raises OpenAIError (400) naming the offending parameter."""
    data = json_body(raw)
    req = _validate(ResponsesRequest, data, "")
    if req.model is None:
        raise invalid_request("Missing required parameter: 'model'.", param="model",
                              code="missing_required_parameter")
    for key, (message, code) in _REJECTED.items():
        if data.get(key) not in (None, False, [], {}):
            raise invalid_request(message, param=key, code=code)
    if req.top_logprobs:
        raise invalid_request("Claude does not return log probabilities: 'top_logprobs' must be 0.",
                              param="top_logprobs", code="unsupported_parameter")
    if req.include and "message.output_text.logprobs" in req.include:
        raise invalid_request("Claude does not return log probabilities: 'message.output_text.logprobs' cannot "
                              "be included.", param="include", code="unsupported_parameter")
    if req.metadata is not None:
        if len(req.metadata) > MAX_METADATA:
            raise invalid_request(f"'metadata' may hold at most {MAX_METADATA} pairs.", param="metadata")
        for k, v in req.metadata.items():
            if len(k) > 64 or len(v) > 512:
                raise invalid_request("'metadata' keys are at most 64 characters, values at most 512.",
                                      param=f"metadata.{k[:64]}")
    if req.text and req.text.format and req.text.format.type == "json_schema":
        if req.text.format.schema_ is None:
            raise invalid_request("Missing required parameter: 'text.format.schema'.", param="text.format.schema",
                                  code="missing_required_parameter")
        if not req.text.format.name:
            raise invalid_request("Missing required parameter: 'text.format.name'.", param="text.format.name",
                                  code="missing_required_parameter")
    return req


def _validate(model: type[BaseModel], data: Any, prefix: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        # for a union (string or items) the deepest location is the branch the client meant
        first = max(err.errors(), key=lambda e: len(e["loc"]))
        param = _param(prefix, first["loc"])
        if first["type"] == "missing":
            raise invalid_request(f"Missing required parameter: '{param}'.", param=param,
                                  code="missing_required_parameter") from None
        raise invalid_request(f"Invalid value for '{param}': {first['msg']}.", param=param or None) from None


def _param(prefix: str, loc: tuple[Any, ...]) -> str:
    """pydantic location → OpenAI's notation: ('content', 'list[…]', 0, 'text') → 'input[2].content[0].text'."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or part in ("str", "int", "float", "bool", "none") or part.startswith(
                ("function-", "literal", "tagged-union", "lax-")):
            continue  # union branch names, not fields
        else:
            out += ("." if out else "") + ("schema" if part == "schema_" else part)
    return out


# --- what the hook must look up -----------------------------------------------------------------------------

def references(req: ResponsesRequest) -> list[str]:
    """Ids of stored items the input refers to: item_reference ids (must resolve) and reasoning items sent
    without encrypted_content (used when stored). Duplicates removed, order kept."""
    wanted: list[str] = []
    for item in req.input if isinstance(req.input, list) else []:
        kind = _item_type(item)
        ident = item.get("id")
        if not isinstance(ident, str) or not ident:
            continue
        if kind == "item_reference" or (kind == "reasoning" and not item.get("encrypted_content")):
            if ident not in wanted:
                wanted.append(ident)
    return wanted


def conversation_items(chain: list[tuple[list[dict[str, Any]], dict[str, Any]]]) -> list[dict[str, Any]]:
    """`history` for previous_response_id: [(input_items, stored_response)] oldest first → the items."""
    out: list[dict[str, Any]] = []
    for input_items, stored in chain:
        out.extend(input_items)
        out.extend(stored.get("output") or [])
    return out


def as_compaction(req: ResponsesRequest) -> ResponsesRequest:
    """`POST /v1/responses/compact` as the request it stands for: the same input, then a compaction_trigger
    (Codex's remote compaction v2 sends exactly that to /v1/responses); not streamed."""
    items = [{"type": "message", "role": "user", "content": req.input}] if isinstance(req.input, str) else list(
        req.input or [])
    return req.model_copy(update={"input": [*items, {"type": "compaction_trigger"}], "stream": False})


def _item_type(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    kind = item.get("type")
    if kind is None:  # EasyInputMessage's type is optional; so is ItemReferenceParam's
        return "message" if "role" in item else ("item_reference" if "id" in item else None)
    return kind if isinstance(kind, str) else None


# --- the items ----------------------------------------------------------------------------------------------

class _CacheBreakpoint(_Strict):
    mode: Literal["explicit"] = "explicit"


class _InputText(_Strict):
    type: Literal["input_text"]
    text: str
    prompt_cache_breakpoint: _CacheBreakpoint | None = None


class _InputImage(_Strict):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto", "original"] | None = None
    prompt_cache_breakpoint: _CacheBreakpoint | None = None


class _InputFile(_Strict):
    type: Literal["input_file"]
    file_data: str | None = None
    file_id: str | None = None
    file_url: str | None = None
    filename: str | None = None
    prompt_cache_breakpoint: _CacheBreakpoint | None = None


class _OutputText(_Strict):
    type: Literal["output_text"]
    text: str


class _Refusal(_Strict):
    type: Literal["refusal"]
    refusal: str


_PARTS: dict[str, type[_Strict]] = {"input_text": _InputText, "input_image": _InputImage,
                                    "input_file": _InputFile, "output_text": _OutputText, "refusal": _Refusal}


class _MessageItem(_Strict):
    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[dict[str, Any]]
    id: str | None = None
    status: str | None = None
    phase: str | None = None  # the spec's commentary / final_answer; Codex also has partial_answer


class _FunctionCall(_Strict):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = None
    namespace: str | None = None


class _FunctionCallOutput(_Strict):
    type: Literal["function_call_output"]
    call_id: str | None = Field(default=None, min_length=1, max_length=64)
    output: str | list[dict[str, Any]]
    id: str | None = None


class _CustomToolCall(_Strict):
    type: Literal["custom_tool_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: str
    id: str | None = None
    namespace: str | None = None


class _CustomToolCallOutput(_Strict):
    type: Literal["custom_tool_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[dict[str, Any]]
    id: str | None = None


class _Reasoning(_Strict):
    type: Literal["reasoning"]
    summary: list[dict[str, Any]]
    id: str | None = None
    encrypted_content: str | None = None


class _ItemReference(_Strict):
    type: Literal["item_reference"] | None = None
    id: str = Field(min_length=1)


class _Compaction(_Strict):
    type: Literal["compaction"]
    encrypted_content: str = Field(max_length=20 * 2**20)
    id: str | None = None


class _AdditionalTools(_Strict):
    """Tools the client runs, listed in the input instead of `tools` (Codex's code mode puts its whole tool
    set there, so `tools` stays the same and the prompt cache holds)."""
    type: Literal["additional_tools"]
    tools: list[dict[str, Any]]
    role: str | None = None
    id: str | None = None


class _ConfigurationUpdate(_Strict):
    """A setting changed at this point of the conversation, in force until a later one changes it again (Codex
    changes the reasoning effort this way, leaving the request's `reasoning` and so the cached prefix alone)."""
    type: Literal["configuration_update"]
    reasoning: ReasoningParam | None = None
    id: str | None = None


class _ToolSearchCall(_Strict):
    type: Literal["tool_search_call"]
    arguments: dict[str, Any]
    call_id: str | None = Field(default=None, min_length=1, max_length=64)
    execution: Literal["server", "client"] | None = None
    id: str | None = None
    status: str | None = None


class _ToolSearchOutput(_Strict):
    type: Literal["tool_search_output"]
    tools: list[dict[str, Any]]
    call_id: str | None = Field(default=None, min_length=1, max_length=64)
    execution: Literal["server", "client"] | None = None
    id: str | None = None
    status: str | None = None


_ITEMS: dict[str, type[_Strict]] = {
    "message": _MessageItem, "function_call": _FunctionCall, "function_call_output": _FunctionCallOutput,
    "custom_tool_call": _CustomToolCall, "custom_tool_call_output": _CustomToolCallOutput,
    "reasoning": _Reasoning, "item_reference": _ItemReference, "compaction": _Compaction,
    "additional_tools": _AdditionalTools, "configuration_update": _ConfigurationUpdate,
    "tool_search_call": _ToolSearchCall, "tool_search_output": _ToolSearchOutput,
}
# The output items of OpenAI's built-in tools: there is nothing on Claude's side they could continue.
_BUILTIN_ITEMS = frozenset({
    "file_search_call", "computer_call", "computer_call_output", "image_generation_call", "code_interpreter_call",
    "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output", "apply_patch_call",
    "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "mcp_call",
    "program", "program_output",
})
_CALLS = ("function_call", "custom_tool_call", "tool_search_call")
HISTORY = "previous_response_id"  # the param of the items a previous_response_id chain replays
MAX_ITEM_ID = 64  # OpenAI's limit on an input item's id (string_above_max_length beyond it)
SUMMARY_TAG = "conversation_summary"
COMPACTION_PROMPT = (
    "Write a summary of the conversation above that will replace it: the next turns will see only your "
    "summary. Keep everything needed to continue the work without asking again: the user's goals, "
    "instructions and preferences; decisions made and why; the current state (files created or changed, "
    "commands run and what they showed, tool results that matter); open problems; the next steps. Be "
    "complete and specific (names, paths, values); leave out small talk. Answer with the summary only.")


@dataclass
class _Tools:
    """The client's tools as Claude sees them, and the way back."""

    claude: list[dict[str, Any]] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # Claude name → the client's name
    namespaces: dict[str, str] = field(default_factory=dict)  # Claude name → namespace
    custom: set[str] = field(default_factory=set)  # Claude names of custom tools
    by_client: dict[tuple[str, str], str] = field(default_factory=dict)  # (function|custom, name) → Claude name
    web_search: bool = False
    tool_search: str | None = None  # Claude name of the client-executed tool_search tool
    dropped: list[str] = field(default_factory=list)
    echo: list[dict[str, Any]] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)  # Claude names, in the order they were added
    kinds: dict[str, str] = field(default_factory=dict)  # Claude name → function | custom | tool_search
    positions: dict[str, int] = field(default_factory=dict)  # Claude name → its index in `claude`
    # the deployment's switches, for the tools the input loads (additional_tools, tool_search_output) too
    allow_web_search: bool = False
    drop_builtin: bool = False
    max_tool_calls: int | None = None

    def claude_name(self, name: str, namespace: str | None) -> str:
        """`namespace__name` (Codex's MCP namespaces already end in `__`: `mcp__fs__` + `read`)."""
        if not namespace:
            return claude_tool_name(name)
        return claude_tool_name(namespace + ("" if namespace.endswith("_") else "__") + name)

    def put(self, entry: dict[str, Any]) -> None:
        """Add a Claude tool; one of the same name (a tool loaded again) is replaced in place, so the tools
        before and after it, and the cached prefix up to it, stay as they were."""
        at = self.positions.get(entry["name"])
        if at is None:
            self.positions[entry["name"]] = len(self.claude)
            self.claude.append(entry)
        else:
            self.claude[at] = entry

    def forget(self, claude: str) -> None:
        """Unregister a tool's name before its new definition registers it again (put() replaces the entry)."""
        key = (self.kinds.pop(claude, ""), self.names.pop(claude, ""))
        if self.by_client.get(key) == claude:
            del self.by_client[key]
        self.namespaces.pop(claude, None)
        self.custom.discard(claude)
        if self.tool_search == claude:
            self.tool_search = None


class _Conversation:
    """Accumulates Anthropic turns: same-role runs merge, tool results lead their user turn, every call gets
    exactly one result."""

    def __init__(self, key: Keys | None, resolved: dict[str, dict[str, Any]], tools: _Tools):
        self.key = key
        self.resolved = resolved
        self.tools = tools
        self.system: list[dict[str, Any]] = []
        self.turns: list[dict[str, Any]] = []
        self.pending: dict[str, str] = {}  # Claude tool id → the call's param, awaiting its result
        self.calls: set[str] = set()  # every Claude tool id so far (Anthropic wants them unique)
        self.image_urls: list[str] = []
        self.compaction = False
        self.ttl: str | None = None
        self.reasoning: dict[str, str] = {}  # effort / summary set by configuration_update items, latest wins
        self.dropped_calls: set[str] = set()  # Claude tool ids of history calls that were cut short

    # turns

    def user(self, blocks: list[dict[str, Any]], closes_round: bool = True) -> None:
        """A user message closes the round of calls before it; a late system message does not (the outputs
        that follow it still answer their calls, and go first in the turn)."""
        if not blocks:
            return
        self._drop_bare_thinking()
        if closes_round:
            self.close_round()
        if self.turns and self.turns[-1]["role"] == "user":
            self.turns[-1]["content"].extend(blocks)
        else:
            self.turns.append({"role": "user", "content": blocks})

    def assistant(self, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if self.turns and self.turns[-1]["role"] == "assistant":
            self.turns[-1]["content"].extend(blocks)
            return
        self.close_round()
        self.turns.append({"role": "assistant", "content": blocks})

    def call(self, block: dict[str, Any], param: str) -> None:
        if block["id"] in self.calls:
            raise invalid_request(f"Duplicate call_id '{block['id']}': every tool call needs its own.",
                                  param=param + ".call_id")
        self.calls.add(block["id"])
        self.assistant([block])
        self.pending[block["id"]] = param

    def result(self, call_id: str, content: Any, param: str) -> None:
        ident = claude_tool_id(call_id)
        if ident in self.dropped_calls and ident not in self.pending:
            return  # answers a call dropped from the history (cut short): kept in the store, not sent to Claude
        if ident not in self.pending:
            raise invalid_request(f"No tool call found for function call output with call_id {call_id}.",
                                  param=param + ".call_id")
        del self.pending[ident]
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": ident}
        if content:
            block["content"] = content
        self._result(block)

    def _result(self, block: dict[str, Any]) -> None:
        if self.turns and self.turns[-1]["role"] == "user":
            turn = self.turns[-1]["content"]
            turn.insert(sum(1 for b in turn if b["type"] == "tool_result"), block)  # results lead the turn
        else:
            self.turns.append({"role": "user", "content": [block]})

    def close_round(self) -> None:
        """Calls the client left without outputs get a synthesized error result, so the conversation stays
        valid for Vertex instead of failing with a 400 the client cannot fix."""
        for ident in list(self.pending):
            del self.pending[ident]
            self._result({"type": "tool_result", "tool_use_id": ident, "is_error": True, "content": NO_RESULT_TEXT})

    def _drop_bare_thinking(self) -> None:
        """Reasoning followed by no assistant output (a cut-off answer) would be an assistant turn of thinking
        alone, which Vertex rejects; Claude ignores thinking of earlier turns anyway."""
        if self.turns and self.turns[-1]["role"] == "assistant" and all(
                b["type"] in ("thinking", "redacted_thinking") for b in self.turns[-1]["content"]):
            self.turns.pop()

    def finish(self) -> None:
        self._drop_bare_thinking()
        self.close_round()

    # items

    def item(self, item: dict[str, Any], param: str) -> dict[str, Any] | None:
        """Translate one input item; returns its stored form (None for what is not stored)."""
        kind = _item_type(item)
        if kind is None:
            if not isinstance(item, dict):
                raise invalid_request(f"Invalid value for '{param}': an input item must be an object.", param=param)
            raise invalid_request(f"Missing required parameter: '{param}.type'.", param=param + ".type",
                                  code="missing_required_parameter")
        if kind == "compaction_trigger":
            self.compaction = True
            return None
        _check_item_id(item, param)
        if param == HISTORY and kind in _CALLS and _cut_short(item):
            # stored from an answer that was cut off (max_output_tokens, a failed stream): nothing Claude could
            # continue; its output, if the client sent one anyway, goes with it
            self.dropped_calls.add(claude_tool_id(item["call_id"]) if isinstance(item.get("call_id"), str) else "")
            return None
        if kind == "web_search_call":  # a search already done; its findings are in the message that follows
            return {**item, "id": item.get("id") or ids.new_id(ids.WEB_SEARCH_CALL)}
        if kind in _BUILTIN_ITEMS:
            raise invalid_request(f"Input items of type '{kind}' come from OpenAI's built-in tools, which Claude "
                                  "on Vertex does not have.", param=param + ".type", code="unsupported_parameter")
        model = _ITEMS.get(kind)
        if model is None:
            raise invalid_request(f"Invalid value: '{kind}'. Supported input item types are: "
                                  f"{', '.join(sorted([*_ITEMS, 'compaction_trigger', 'web_search_call']))}.",
                                  param=param + ".type", code="invalid_value")
        parsed = _validate(model, item, param)
        return getattr(self, "_" + kind)(parsed, item, param)

    def _message(self, m: _MessageItem, raw: dict[str, Any], param: str) -> dict[str, Any]:
        parts = [{"type": "input_text", "text": m.content}] if isinstance(m.content, str) else m.content
        if m.role == "assistant":
            blocks, stored = self._assistant_parts(parts, param)
            self.assistant(blocks)
            out = {"id": m.id or ids.new_id(ids.MESSAGE), "type": "message", "role": "assistant",
                   "status": "completed", "content": stored}
            if m.phase:
                out["phase"] = m.phase
            return out
        blocks = self._content(parts, param + ".content", media=m.role == "user")
        if m.role == "user":
            self.user(blocks)
        elif not self.turns:
            self.system.extend(blocks)
        else:  # in place, as the user's: the prefix before it stays byte-identical for Claude's cache
            self.user([{**b, "text": f"<{m.role}>\n{b['text']}\n</{m.role}>"} for b in blocks], closes_round=False)
        return {"id": m.id or ids.new_id(ids.MESSAGE), "type": "message", "role": m.role, "status": "completed",
                "content": parts}

    def _assistant_parts(self, parts: list[dict[str, Any]], param: str
                         ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        blocks, stored = [], []
        for j, part in enumerate(parts):
            where = f"{param}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("output_text", "refusal", "input_text"):
                raise invalid_request(f"Assistant messages hold output_text and refusal parts, not '{kind}'.",
                                      param=where + ".type")
            p = _validate(_PARTS[kind], part, where)
            text = p.refusal if kind == "refusal" else p.text
            stored.append({"type": "refusal", "refusal": text} if kind == "refusal" else
                          {"type": "output_text", "text": text, "annotations": part.get("annotations") or [],
                           "logprobs": part.get("logprobs") or []})
            if text.strip():
                blocks.append({"type": "text", "text": text})
        return blocks, stored

    def _content(self, parts: list[Any], param: str, media: bool) -> list[dict[str, Any]]:
        """User-side content parts → Claude blocks (empty text dropped: Vertex rejects it)."""
        blocks: list[dict[str, Any]] = []
        for j, part in enumerate(parts):
            where = f"{param}[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            model = _PARTS.get(kind) if kind in ("input_text", "input_image", "input_file") else None
            if model is None:
                raise invalid_request(f"Invalid content part type '{kind}': use input_text, input_image or "
                                      "input_file.", param=where + ".type")
            p = _validate(model, part, where)
            if isinstance(p, _InputText):
                if not p.text.strip():
                    continue
                block: dict[str, Any] = {"type": "text", "text": p.text}
            elif not media:
                raise invalid_request(f"{kind} parts are only allowed in user messages and tool outputs.",
                                      param=where)
            elif isinstance(p, _InputImage):
                if p.file_id or not p.image_url:
                    raise invalid_request("Images must be sent as image_url (a data: URL or an http(s) URL); "
                                          "uploaded file ids are not available to Claude.", param=where,
                                          code="unsupported_parameter")
                block = image_block(p.image_url, where + ".image_url", self.image_urls)
            else:
                block = self._file(p, where)
            if cc := cache_control(p, self.ttl):
                block["cache_control"] = cc
            blocks.append(block)
        return blocks

    def _file(self, p: _InputFile, param: str) -> dict[str, Any]:
        if p.file_url and not p.file_data:
            raise invalid_request("Files must be sent inline as file_data (a base64 data: URL); file_url is not "
                                  "fetched.", param=param + ".file_url", code="unsupported_parameter")
        chat_part = FilePart.model_validate({"type": "file", "file": {"file_data": p.file_data,
                                                                      "file_id": p.file_id}})
        block = file_block(chat_part, param)
        if p.filename and block["type"] == "document":
            block["title"] = p.filename
        return block

    def _output(self, output: str | list[dict[str, Any]], param: str) -> Any:
        if isinstance(output, str):
            return output if output.strip() else None
        return self._content(output, param, media=True) or None

    def _function_call(self, c: _FunctionCall, raw: dict[str, Any], param: str) -> dict[str, Any]:
        try:
            args = strict_json(c.arguments) if c.arguments.strip() else {}
        except (ValueError, RecursionError):
            args = None
        if not isinstance(args, dict):
            raise invalid_request("Function call arguments must be a JSON object.", param=param + ".arguments")
        self.call({"type": "tool_use", "id": claude_tool_id(c.call_id),
                   "name": self.tools.claude_name(c.name, c.namespace), "input": args}, param)
        out = {"id": c.id or ids.new_id(ids.FUNCTION_CALL), "type": "function_call", "status": "completed",
               "call_id": c.call_id, "name": c.name, "arguments": c.arguments}
        if c.namespace:
            out["namespace"] = c.namespace
        return out

    def _function_call_output(self, o: _FunctionCallOutput, raw: dict[str, Any], param: str) -> dict[str, Any]:
        if not o.call_id:
            raise invalid_request("Missing required parameter: 'call_id' (the function call it answers).",
                                  param=param + ".call_id", code="missing_required_parameter")
        self.result(o.call_id, self._output(o.output, param + ".output"), param)
        return {"id": o.id or ids.new_id(ids.FUNCTION_CALL_OUTPUT), "type": "function_call_output",
                "status": "completed", "call_id": o.call_id, "output": o.output}

    def _custom_tool_call(self, c: _CustomToolCall, raw: dict[str, Any], param: str
                          ) -> dict[str, Any]:
        self.call({"type": "tool_use", "id": claude_tool_id(c.call_id),
                   "name": self.tools.claude_name(c.name, c.namespace), "input": {CUSTOM_INPUT: c.input}}, param)
        out = {"id": c.id or ids.new_id(ids.CUSTOM_TOOL_CALL), "type": "custom_tool_call", "call_id": c.call_id,
               "name": c.name, "input": c.input}
        if c.namespace:
            out["namespace"] = c.namespace
        return out

    def _custom_tool_call_output(self, o: _CustomToolCallOutput, raw: dict[str, Any], param: str) -> dict[str, Any]:
        self.result(o.call_id, self._output(o.output, param + ".output"), param)
        return {"id": o.id or ids.new_id(ids.CUSTOM_TOOL_CALL_OUTPUT), "type": "custom_tool_call_output",
                "status": "completed", "call_id": o.call_id, "output": o.output}

    def _reasoning(self, r: _Reasoning, raw: dict[str, Any], param: str) -> dict[str, Any]:
        stored = dict(raw)
        blob = r.encrypted_content
        if not blob and r.id and isinstance(self.resolved.get(r.id), dict):
            stored = copy.deepcopy(self.resolved[r.id])  # sent by value without its blob: the stored copy
            blob = stored.get("encrypted_content")
        stored["id"] = stored.get("id") or ids.new_id(ids.REASONING)
        if not is_ours(blob):
            return stored  # none, or another provider's: dropped for Claude (see the module docstring)
        if self.key is None:
            raise invalid_request("This reasoning item was sealed by modelmux, but no sealing key is configured "
                                  "to open it.", param=param + ".encrypted_content",
                                  code="invalid_encrypted_content")
        try:
            blocks = unseal_thinking(blob, self.key)
        except SealError:
            raise invalid_request(f"The encrypted content of reasoning item {r.id or param} could not be verified: "
                                  "it was altered, or sealed by another modelmux deployment.",
                                  param=param + ".encrypted_content", code="invalid_encrypted_content") from None
        # thinking cut off before its signature (sealed by an older version from a failed stream): Vertex
        # rejects it, and Claude ignores earlier turns' thinking anyway
        self.assistant([b for b in blocks if b["type"] != "thinking" or b["signature"]])
        return stored

    def _item_reference(self, ref: _ItemReference, raw: dict[str, Any], param: str
                        ) -> dict[str, Any] | None:
        item = self.resolved.get(ref.id)
        if not isinstance(item, dict) or _item_type(item) in (None, "item_reference"):
            raise invalid_request(f"Item with id '{ref.id}' not found.", param=param + ".id",
                                  code="item_not_found")
        return self.item(copy.deepcopy(item), param)

    def _compaction(self, c: _Compaction, raw: dict[str, Any], param: str) -> dict[str, Any]:
        if not is_ours(c.encrypted_content) or self.key is None:
            raise invalid_request("This compaction item was not produced by this modelmux deployment (its "
                                  "encrypted_content cannot be opened).", param=param + ".encrypted_content",
                                  code="invalid_encrypted_content")
        try:
            summary = unseal_summary(c.encrypted_content, self.key)
        except SealError:
            raise invalid_request("The encrypted content of this compaction item could not be verified: it was "
                                  "altered, or sealed by another modelmux deployment.",
                                  param=param + ".encrypted_content", code="invalid_encrypted_content") from None
        if summary.strip():
            self.user([{"type": "text", "text": f"<{SUMMARY_TAG}>\n{summary}\n</{SUMMARY_TAG}>"}])
        return {"id": c.id or ids.new_id(ids.COMPACTION), "type": "compaction",
                "encrypted_content": c.encrypted_content}

    def _additional_tools(self, a: _AdditionalTools, raw: dict[str, Any], param: str) -> dict[str, Any]:
        """Client tools listed in the input: Claude tools like those of `tools`; the item adds no turn."""
        self._load_tools(a.tools, param + ".tools")
        return {"id": a.id or ids.new_id(ids.ADDITIONAL_TOOLS), "type": "additional_tools",
                "role": a.role or "developer", "tools": a.tools}

    def _load_tools(self, tools: list[dict[str, Any]], param: str) -> list[str]:
        """Register tools the input brings; a name defined before is replaced (a tool loaded again). Returns the
        Claude names registered."""
        before = len(self.tools.registered)
        for j, tool in enumerate(tools):
            _add_tool(self.tools, tool, f"{param}[{j}]", loaded=True)
        return self.tools.registered[before:]

    def _configuration_update(self, u: _ConfigurationUpdate, raw: dict[str, Any], param: str) -> dict[str, Any]:
        """Settings from this point on: the reasoning effort and summary modelmux maps; the rest (fields this
        version does not know) is kept in the stored item and changes nothing."""
        if u.reasoning is not None:
            if u.reasoning.effort is not None:
                self.reasoning["effort"] = u.reasoning.effort
            summary = u.reasoning.summary or u.reasoning.generate_summary
            if summary is not None:
                self.reasoning["summary"] = summary
        return {"id": u.id or ids.new_id(ids.CONFIGURATION_UPDATE), "type": "configuration_update",
                "reasoning": raw.get("reasoning")}

    def _client_search(self, execution: str | None, call_id: str | None, param: str) -> str:
        if execution != "client":
            raise invalid_request("Only client-executed tool search (`execution: client`) is supported: OpenAI's "
                                  "hosted tool search is not available on Vertex.", param=param + ".execution",
                                  code="unsupported_parameter")
        if not call_id:
            raise invalid_request("Missing required parameter: 'call_id' (client-executed tool search pairs a call "
                                  "with its output).", param=param + ".call_id", code="missing_required_parameter")
        return call_id

    def _tool_search_call(self, c: _ToolSearchCall, raw: dict[str, Any], param: str) -> dict[str, Any]:
        call_id = self._client_search(c.execution, c.call_id, param)
        self.call({"type": "tool_use", "id": claude_tool_id(call_id),
                   "name": self.tools.tool_search or self.tools.claude_name(TOOL_SEARCH_NAME, None),
                   "input": c.arguments}, param)
        return {"id": c.id or ids.new_id(ids.TOOL_SEARCH_CALL), "type": "tool_search_call", "call_id": call_id,
                "execution": "client", "arguments": c.arguments, "status": "completed"}

    def _tool_search_output(self, o: _ToolSearchOutput, raw: dict[str, Any], param: str) -> dict[str, Any]:
        """The tools a search loaded: callable from here on, and named in the result Claude reads."""
        call_id = self._client_search(o.execution, o.call_id, param)
        loaded = self._load_tools(o.tools, param + ".tools")
        text = (f"Loaded {len(loaded)} tool(s), callable now: {', '.join(loaded)}." if loaded
                else "No tools matched the search.")
        self.result(call_id, text, param)
        return {"id": o.id or ids.new_id(ids.TOOL_SEARCH_OUTPUT), "type": "tool_search_output", "call_id": call_id,
                "execution": "client", "tools": o.tools, "status": "completed"}


def _check_item_id(item: dict[str, Any], param: str) -> None:
    """An item's id is what the store keeps it under: a string of at most MAX_ITEM_ID characters, as OpenAI
    requires (its errors, word for word). Items replayed from the store were checked when they were stored."""
    ident = item.get("id")
    if ident is None or param == HISTORY:
        return
    if not isinstance(ident, str):
        got = {bool: "a boolean", int: "an integer", float: "a number", list: "an array", dict: "an object"}.get(
            type(ident), "another type")
        raise invalid_request(f"Invalid type for '{param}.id': expected a string, but got {got} instead.",
                              param=param + ".id", code="invalid_type")
    if len(ident) > MAX_ITEM_ID:
        raise invalid_request(f"Invalid '{param}.id': string too long. Expected a string with maximum length "
                              f"{MAX_ITEM_ID}, but got a string with length {len(ident)} instead.",
                              param=param + ".id", code="string_above_max_length")


def _cut_short(item: dict[str, Any]) -> bool:
    """A stored call from an answer cut off mid-call: marked incomplete, or (stored before calls were marked)
    function-call arguments that are not a JSON object."""
    if item.get("status") == "incomplete":
        return True
    if item.get("type") != "function_call" or not isinstance(item.get("arguments"), str):
        return False
    try:
        args = strict_json(item["arguments"]) if item["arguments"].strip() else {}
    except (ValueError, RecursionError):
        return True
    return not isinstance(args, dict)


# --- tools --------------------------------------------------------------------------------------------------

class _FunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    defer_loading: bool | None = None


class _TextFormatParam(_Strict):
    type: Literal["text"]


class _GrammarFormatParam(_Strict):
    type: Literal["grammar"]
    syntax: Literal["lark", "regex"]
    definition: str


class _CustomTool(_Strict):
    type: Literal["custom"]
    name: str = Field(min_length=1)
    description: str | None = None
    format: dict[str, Any] | None = None
    defer_loading: bool | None = None


class _NamespaceTool(_Strict):
    type: Literal["namespace"]
    name: str = Field(min_length=1)
    description: str | None = None
    tools: list[dict[str, Any]] = Field(min_length=1)


class _Location(_Strict):
    type: Literal["approximate"] | None = None
    city: str | None = None
    region: str | None = None
    country: str | None = None
    timezone: str | None = None


class _WebSearchTool(_Strict):
    type: Literal["web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11"]
    filters: dict[str, Any] | None = None
    user_location: _Location | None = None
    external_web_access: bool = True  # false: Codex's "cached" mode; Claude's search is always live
    search_context_size: Literal["low", "medium", "high"] = "medium"


class _ToolSearchTool(_Strict):
    type: Literal["tool_search"]
    execution: Literal["server", "client"] | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None


WEB_SEARCH_TYPES = ("web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11")
BUILTIN_TOOLS = ("file_search", "code_interpreter", "image_generation", "computer", "computer_use",
                 "computer_use_preview", "local_shell", "shell", "mcp", "apply_patch", "programmatic_tool_calling")
WEB_SEARCH_NAME = "web_search"
TOOL_SEARCH_NAME = "tool_search"
TOOL_SEARCH_DESCRIPTION = "Search the tools that are not loaded yet; the ones found become callable."


def _tools(req: ResponsesRequest, web_search: bool, drop_builtin: bool) -> _Tools:
    out = _Tools(allow_web_search=web_search, drop_builtin=drop_builtin, max_tool_calls=req.max_tool_calls)
    for i, tool in enumerate(req.tools or []):
        echo = _add_tool(out, tool, f"tools[{i}]")
        if echo is not None:  # dropped built-ins are not echoed: the Response lists the tools in effect
            out.echo.append(echo)
    return out


def _add_tool(out: _Tools, tool: dict[str, Any], param: str, loaded: bool = False) -> dict[str, Any] | None:
    """One tool of `tools` (or, `loaded`, of an additional_tools / tool_search_output item, whose names replace
    earlier definitions) → Claude tools; returns its echo, None when it was dropped."""
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind == "function":
        _add_function(out, _validate(_FunctionTool, tool, param), None, param, loaded)
        return {"parameters": None, "strict": None, **_given(tool)}
    if kind == "custom":
        _add_custom(out, _validate(_CustomTool, tool, param), None, param, loaded)
        return _given(tool)
    if kind == "namespace":
        ns = _validate(_NamespaceTool, tool, param)
        for j, inner in enumerate(ns.tools):
            where = f"{param}.tools[{j}]"
            inner_kind = inner.get("type") if isinstance(inner, dict) else None
            if inner_kind == "function":
                _add_function(out, _validate(_FunctionTool, inner, where), ns, where, loaded)
            elif inner_kind == "custom":
                _add_custom(out, _validate(_CustomTool, inner, where), ns, where, loaded)
            else:
                raise invalid_request("A namespace holds function and custom tools only.", param=where + ".type")
        return {"description": "", **_given(tool)}
    ts = _validate(_ToolSearchTool, tool, param) if kind == "tool_search" else None
    if ts is not None and ts.execution == "client":
        claude = _register(out, "tool_search", TOOL_SEARCH_NAME, None, param, loaded)
        out.tool_search = claude
        out.put({"name": claude, "description": ts.description or TOOL_SEARCH_DESCRIPTION,
                 "input_schema": ts.parameters or {"type": "object", "properties": {}}})
        return _given(tool)
    if kind in WEB_SEARCH_TYPES:
        ws = _validate(_WebSearchTool, tool, param)
        if not out.allow_web_search:
            if not out.drop_builtin:
                raise invalid_request(f"The '{kind}' tool is not enabled on this modelmux deployment (Claude's "
                                      "web search on Vertex is switched on in its configuration).",
                                      param=param + ".type", code="unsupported_parameter")
            out.dropped.append(kind)
            return None
        if out.web_search:
            if loaded:  # loaded again: the one already there stays
                return None
            raise invalid_request("Only one web search tool may be given.", param=param + ".type")
        _add_web_search(out, ws, out.max_tool_calls, param)
        return _given(tool)
    if kind in BUILTIN_TOOLS or kind == "tool_search":  # tool_search without `execution: client` is hosted
        if not out.drop_builtin:
            raise invalid_request(f"The '{kind}' tool is one of OpenAI's built-in tools, which Claude on Vertex "
                                  "does not have.", param=param + ".type", code="unsupported_parameter")
        out.dropped.append(kind)
        return None
    raise invalid_request(f"Invalid value: '{kind}'. Supported tool types are function, custom, namespace, "
                          "tool_search (client-executed) and (when enabled) web_search.", param=param + ".type",
                          code="invalid_value")


def _given(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool as the Response echoes it: what the client set (nulls for "not set" left out)."""
    return {k: v for k, v in tool.items() if v is not None}


def _register(out: _Tools, kind: str, name: str, ns: _NamespaceTool | None, param: str, replace: bool = False
              ) -> str:
    claude = out.claude_name(name, ns.name if ns else None)
    if claude in out.names or (claude == WEB_SEARCH_NAME and out.web_search):
        if not replace or claude not in out.names:
            raise invalid_request(f"Duplicate tool name '{name}'.", param=param + ".name")
        out.forget(claude)
    out.registered.append(claude)
    out.kinds[claude] = kind
    out.names[claude] = name
    if ns is not None:
        out.namespaces[claude] = ns.name
    out.by_client.setdefault((kind, name), claude)
    return claude


def _describe(description: str | None, ns: _NamespaceTool | None) -> str | None:
    if ns is None or not ns.description:
        return description
    return f"[{ns.name}: {ns.description}] {description or ''}".strip()


def _add_function(out: _Tools, fn: _FunctionTool, ns: _NamespaceTool | None, param: str, replace: bool = False
                  ) -> None:
    entry: dict[str, Any] = {"name": _register(out, "function", fn.name, ns, param, replace),
                             "input_schema": fn.parameters if fn.parameters else {"type": "object", "properties": {}}}
    if description := _describe(fn.description, ns):
        entry["description"] = description
    out.put(entry)


def _add_custom(out: _Tools, tool: _CustomTool, ns: _NamespaceTool | None, param: str, replace: bool = False
                ) -> None:
    """A free-form tool → a Claude tool taking the text as its one string property; a grammar goes into the
    description, so Claude writes what the client's parser accepts (Codex's apply_patch is a Lark grammar)."""
    fmt = tool.format or {"type": "text"}
    how = "The text is passed to the tool as is."
    if fmt.get("type") == "grammar":
        g = _validate(_GrammarFormatParam, fmt, param + ".format")
        how = f"The text must match this {g.syntax} grammar:\n{g.definition}"
    elif fmt.get("type") != "text":
        raise invalid_request("Invalid value for the custom tool's format: use text or grammar.",
                              param=param + ".format.type")
    claude = _register(out, "custom", tool.name, ns, param, replace)
    out.custom.add(claude)
    description = _describe(tool.description, ns)
    out.put({
        "name": claude,
        "description": ((description + "\n\n") if description else "") + f"Free-form input in `{CUSTOM_INPUT}`. "
                       + how,
        "input_schema": {"type": "object", "properties": {CUSTOM_INPUT: {"type": "string", "description": how}},
                         "required": [CUSTOM_INPUT], "additionalProperties": False},
    })


def _add_web_search(out: _Tools, ws: _WebSearchTool, max_uses: int | None, param: str) -> None:
    if WEB_SEARCH_NAME in out.names:
        raise invalid_request(f"Duplicate tool name '{WEB_SEARCH_NAME}'.", param=param + ".type")
    entry: dict[str, Any] = {"type": "web_search_20250305", "name": WEB_SEARCH_NAME}
    domains = (ws.filters or {}).get("allowed_domains")
    if domains:
        if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
            raise invalid_request("allowed_domains must be a list of strings.", param=param + ".filters.allowed_domains")
        entry["allowed_domains"] = domains
    if ws.user_location is not None:
        loc = {k: v for k, v in ws.user_location.model_dump(exclude_none=True).items() if k != "type"}
        if loc:
            entry["user_location"] = {"type": "approximate", **loc}
    if max_uses:  # max_tool_calls limits the built-in tools' calls: here, the searches
        entry["max_uses"] = max_uses
    out.put(entry)
    out.web_search = True


def _choice_name(obj: dict[str, Any], param: str) -> str:
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise invalid_request("Missing required parameter: 'tool_choice.name'.", param=param + ".name",
                              code="missing_required_parameter")
    return name


def _tool_choice(req: ResponsesRequest, tools: _Tools) -> dict[str, Any] | None:
    choice = req.tool_choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if choice is None or choice == "auto":
        result = {"type": "auto"} if choice else None
    elif choice in ("none", "required"):
        result = {"type": "none" if choice == "none" else "any"}
    elif isinstance(choice, str):
        raise invalid_request(f"Invalid value: '{choice}'. tool_choice is none, auto, required or an object.",
                              param="tool_choice", code="invalid_value")
    elif kind in ("function", "custom"):
        name = _choice_name(choice, "tool_choice")
        claude = tools.by_client.get((kind, name))
        if claude is None:
            raise invalid_request(f"tool_choice names a {kind} tool that is not in tools: '{name}'.",
                                  param="tool_choice.name")
        result = {"type": "tool", "name": claude}
    elif kind == "allowed_tools":
        listed = choice.get("tools")
        if not isinstance(listed, list) or choice.get("mode") not in ("auto", "required"):
            raise invalid_request("allowed_tools needs mode (auto or required) and a list of tools.",
                                  param="tool_choice")
        keep: set[str] = set()
        for j, t in enumerate(listed):
            if not isinstance(t, dict) or not isinstance(t.get("type"), str):
                raise invalid_request("Each allowed tool is an object with a type.", param=f"tool_choice.tools[{j}]")
            if t.get("type") in ("function", "custom") and isinstance(t.get("name"), str):
                claude = tools.by_client.get((t["type"], t["name"]))
                keep.update([claude] if claude else [])
            elif t.get("type") in WEB_SEARCH_TYPES:
                keep.add(WEB_SEARCH_NAME)
        tools.claude[:] = [t for t in tools.claude if t["name"] in keep]
        result = {"type": "any" if choice["mode"] == "required" else "auto"}
    elif kind in WEB_SEARCH_TYPES:
        if not tools.web_search:
            raise invalid_request(f"tool_choice names '{kind}', which is not among the tools.", param="tool_choice")
        result = {"type": "tool", "name": WEB_SEARCH_NAME}
    else:
        raise invalid_request(f"tool_choice '{kind}' names one of OpenAI's built-in tools, which Claude on Vertex "
                              "does not have.", param="tool_choice.type", code="unsupported_parameter")
    if result is not None and not tools.claude:
        if result["type"] in ("any", "tool"):
            raise invalid_request("tool_choice requires a tool to call, and no tools are specified.",
                                  param="tool_choice")
        result = None  # auto / none with nothing to call (or only dropped built-ins): nothing to say
    if req.parallel_tool_calls is False and tools.claude:
        result = result or {"type": "auto"}
        if result["type"] != "none":
            result["disable_parallel_tool_use"] = True
    return result


def _json_output(fmt: TextFormat | None, tools: _Tools) -> tuple[str | None, bool]:
    """text.format json → a tool whose input is the answer (as chat's response_format). (name, wrapped?)"""
    if fmt is None or fmt.type == "text":
        return None, False
    if fmt.type == "json_object":
        tool, wrapped = json_answer_tool(None, "", tools.names)
    else:
        tool, wrapped = json_answer_tool(fmt.schema_ or {}, fmt.description or f"Format: {fmt.name}.", tools.names)
    tools.claude.append(tool)
    tools.names[tool["name"]] = tool["name"]
    return tool["name"], wrapped


# --- the translation ----------------------------------------------------------------------------------------

@dataclass
class ResponsesCall:
    body: dict[str, Any]  # the Anthropic body for Vertex
    stream: bool
    shape: ResponseShape  # for the response and stream translators
    image_urls: list[str] = field(default_factory=list)  # http(s) images to fetch and inline before sending
    thinking: bool = False
    input_items: list[dict[str, Any]] = field(default_factory=list)  # this request's input, ids assigned: store
    dropped_tools: list[str] = field(default_factory=list)  # built-in tool types dropped: log them
    store: bool = True  # store the response (store defaults to true)
    compaction: bool = False  # the answer is a compaction item


def to_vertex_body(req: ResponsesRequest, vertex_model: str, anthropic_version: str, *, key: Keys | None,
                   history: list[dict[str, Any]] = (), resolved: dict[str, dict[str, Any]] | None = None,
                   web_search: bool = False, drop_builtin_tools: bool = False,
                   thinking_for: ThinkingLookup | None = None, response_id: str | None = None,
                   created_at: int) -> ResponsesCall:
    """Translate a validated request. `key` seals and opens reasoning/compaction blobs (None: none are made,
    and ours cannot be opened); `web_search`: Claude's web search is enabled on this deployment;
    `drop_builtin_tools`: OpenAI built-in tools are dropped (listed in dropped_tools) instead of a 400;
    `thinking_for`: chat's thinking cache, for tool loops whose reasoning the client did not send back;
    `created_at`: when the request arrived (seconds); `response_id`: minted when not given."""
    tools = _tools(req, web_search, drop_builtin_tools)
    conv = _Conversation(key, resolved or {}, tools)
    conv.ttl = "1h" if req.prompt_cache_retention == "24h" else None
    if req.instructions and req.instructions.strip():
        conv.system.append({"type": "text", "text": req.instructions})
    for item in history:
        conv.item(item, HISTORY)
    stored: list[dict[str, Any]] = []
    items = [{"type": "message", "role": "user", "content": req.input}] if isinstance(req.input, str) else (
        req.input or [])
    for i, item in enumerate(items):
        kept = conv.item(item, f"input[{i}]" if isinstance(req.input, list) else "input")
        if kept is not None:
            stored.append(kept)
    conv.finish()
    if conv.compaction:
        if key is None:
            raise invalid_request("Compaction needs a sealing key, and none is configured.", param="input",
                                  code="unsupported_parameter")
        conv.user([{"type": "text", "text": COMPACTION_PROMPT}])
    if not conv.turns:
        raise invalid_request("The conversation needs at least one user or assistant message with content.",
                              param="input")
    if thinking_for is not None:
        _recall_thinking(conv.turns, thinking_for)

    if req.prompt_cache_key and not _has_breakpoints(conv.system, conv.turns):
        _auto_breakpoints(conv.system, conv.turns, conv.ttl)
    keep_latest_breakpoints(conv.system, conv.turns)
    body: dict[str, Any] = {"anthropic_version": anthropic_version, "messages": conv.turns}
    if conv.system:
        body["system"] = conv.system

    fmt = req.text.format if req.text else None
    choice = _tool_choice(req, tools)
    json_tool, wrapped = (None, False) if conv.compaction else _json_output(fmt, tools)
    if json_tool:
        if choice is not None and choice["type"] == "none":
            tools.claude[:] = [t for t in tools.claude if t["name"] == json_tool]  # no client tool may be called
        if len(tools.claude) == 1:
            choice = {"type": "tool", "name": json_tool}
        elif choice is None or choice["type"] == "auto":
            # the final answer must come through the JSON tool; client tools stay callable before it
            choice = {"type": "any", **{k: v for k, v in (choice or {}).items() if k == "disable_parallel_tool_use"}}
    if conv.compaction and tools.claude:
        choice = {"type": "none"}  # tools stay (the cached prefix stays the same), none may be called
    if not tools.claude and (declared := tools_of_history(conv.turns)):
        tools.claude[:] = declared
        choice = {"type": "none"}  # a history of tool calls, no tools now (Anthropic needs them declared)
    if tools.claude:
        body["tools"] = tools.claude
    if choice is not None:
        body["tool_choice"] = choice

    cap = models.output_cap(vertex_model)
    if req.max_output_tokens is None:
        max_tokens, chosen = models.default_max_tokens(vertex_model), False
    else:
        max_tokens, chosen = min(req.max_output_tokens, cap), True
    # a configuration_update in the conversation overrides the request's reasoning from its position on
    asked_effort = conv.reasoning.get("effort", req.reasoning.effort if req.reasoning else None)
    effort = None if conv.compaction else asked_effort
    thinking = thinking_budget(types.SimpleNamespace(reasoning_effort=effort), choice, conv.turns, max_tokens,
                                chosen, vertex_model, None)
    if thinking:
        budget, max_tokens = thinking
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    body["max_tokens"] = max_tokens
    add_sampling(body, req.temperature, req.top_p, vertex_model, anthropic_version, thinking=bool(thinking))
    if req.user or req.safety_identifier:
        body["metadata"] = {"user_id": hash_user(req.safety_identifier or req.user or "")}
    stream = bool(req.stream)
    if stream:
        body["stream"] = True

    summary = conv.reasoning.get("summary", req.reasoning.summary or req.reasoning.generate_summary
                                 if req.reasoning else None)
    include = set(req.include or [])
    shape = ResponseShape(
        response_id=response_id or ids.new_id(ids.RESPONSE), created_at=created_at, model=req.model or "",
        echo=_echo(req, tools, fmt, asked_effort, summary),
        tool_names={k: v for k, v in tools.names.items() if k != json_tool}, namespaces=dict(tools.namespaces),
        custom_tools=frozenset(tools.custom), tool_search=tools.tool_search, json_tool=json_tool,
        json_wrapped=wrapped,
        summary=summary is not None, include_encrypted="reasoning.encrypted_content" in include,
        include_sources="web_search_call.action.sources" in include, key=key, compaction=conv.compaction)
    return ResponsesCall(body=body, stream=stream, shape=shape, image_urls=conv.image_urls, thinking=bool(thinking),
                         input_items=stored, dropped_tools=tools.dropped,
                         store=req.store is not False, compaction=conv.compaction)


def _echo(req: ResponsesRequest, tools: _Tools, fmt: TextFormat | None, effort: str | None,
          summary: str | None) -> dict[str, Any]:
    """The request's fields as the Response repeats them, OpenAI's defaults filled in."""
    text_format: dict[str, Any] = {"type": "text"}
    if fmt is not None and fmt.type != "text":
        text_format = fmt.model_dump(by_alias=True, exclude_none=True)
    echo: dict[str, Any] = {
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
        "parallel_tool_calls": req.parallel_tool_calls is not False,
        "previous_response_id": req.previous_response_id,
        "prompt_cache_key": req.prompt_cache_key,
        "prompt_cache_retention": req.prompt_cache_retention,
        "reasoning": {"effort": effort, "summary": summary},
        "safety_identifier": req.safety_identifier,
        "service_tier": "default",  # the tier that served it: Vertex has one
        "store": req.store is not False,
        "temperature": req.temperature if req.temperature is not None else 1.0,
        "text": {"format": text_format, "verbosity": req.text.verbosity if req.text and req.text.verbosity
                 else "medium"},
        "tool_choice": req.tool_choice if req.tool_choice is not None else "auto",
        "tools": tools.echo,
        "top_logprobs": req.top_logprobs or 0,
        "top_p": req.top_p if req.top_p is not None else 1.0,
        "truncation": req.truncation or "disabled",
        "metadata": dict(req.metadata or {}),
    }
    if req.user is not None:  # the spec's `user` is a string, not nullable
        echo["user"] = req.user
    return echo


def _recall_thinking(turns: list[dict[str, Any]], thinking_for: ThinkingLookup) -> None:
    """Thinking the client did not send back (no encrypted_content), from the hook's cache, keyed by the
    turn's first tool call as in chat."""
    for turn in turns:
        content = turn["content"]
        if turn["role"] != "assistant" or content[0]["type"] in ("thinking", "redacted_thinking"):
            continue
        first = next((b for b in content if b["type"] == "tool_use"), None)
        kept = thinking_for(first["id"]) if first else None
        if kept:
            content[:0] = kept


def _has_breakpoints(system: list[dict[str, Any]], turns: list[dict[str, Any]]) -> bool:
    return any("cache_control" in b for b in system) or any(
        "cache_control" in b for t in turns for b in t["content"])


def _auto_breakpoints(system: list[dict[str, Any]], turns: list[dict[str, Any]], ttl: str | None) -> None:
    """prompt_cache_key says the client wants its prefix cached (Codex sends its thread id): Claude caches
    only at explicit breakpoints, so one goes on the system prompt and one on the conversation's last block —
    the next turn of the same conversation reads everything before it from the cache."""
    mark = {"type": "ephemeral", "ttl": ttl} if ttl else {"type": "ephemeral"}
    if system:
        system[-1]["cache_control"] = dict(mark)
    for block in reversed(turns[-1]["content"]):
        if block["type"] not in ("thinking", "redacted_thinking"):
            block["cache_control"] = dict(mark)
            break


__all__ = ["ResponsesRequest", "ResponsesCall", "parse_responses_request", "references", "to_vertex_body",
           "conversation_items", "as_compaction", "OpenAIError"]
