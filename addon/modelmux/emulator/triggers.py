"""Switches a test writes into the last user turn, so that it can drive the fake model through an unmodified
client: their syntax is in the Triggers docstring; what the model answers otherwise, in model.py."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import HttpError, anthropic_error, google_error
from .messages import last_user, latest_text, texts

STREAM_ERRORS = {"overloaded": (529, "overloaded_error", "Overloaded"),
                 "api": (500, "api_error", "Internal server error")}
INJECTED_STATUS = re.compile(r"\[\[status:(\d{3})\]\]")
INJECTED_STREAM_ERROR = re.compile(r"\[\[stream-error:([a-z]+)\]\]")
CALL_START = re.compile(r"\[\[call:([a-zA-Z0-9_-]{1,128})")
_JSON = json.JSONDecoder()


@dataclass(frozen=True)
class Triggers:
    """The switches found in a request. Every trigger a test can write:

    In the last user turn's text, its tool results included:

    - `[[refusal]]`: a refusal ("I can't help with that.", stop_reason `refusal`).
    - `[[pause]]`: stop_reason `pause_turn` and no tool call (it wins over every trigger below that calls one).
    - `[[unicode]]`: UNICODE_SAMPLE (multi-byte text) appended to the answer's text.
    - `[[vertex-event]]`: a `vertex_event` SSE event among the deltas (Vertex's own; clients must skip it).
    - `[[cut]]`: the stream ends after two deltas, without message_stop (a JSON answer is unaffected).
    - `[[stream-error:overloaded]]`, `[[stream-error:api]]`: an `error` event after two deltas; on rawPredict the
      matching HTTP error (529 overloaded_error, 500 api_error).
    - `[[status:N]]`, 400 ≤ N ≤ 599: that Google error instead of an answer (a 429 comes wrapped in an array and
      without retry-after, as Vertex's do). Token counting and embeddings obey it too (in any instance's content).

    In the latest user text only (the last text block of the last user turn: not its tool results, not the text
    blocks before it), so that a tool echoing the trigger does not repeat the call, and a loop ends: the turn after
    the tool results carries no text, and the model answers "Tool results: …"; after a compaction the user's
    message stays but a summary follows it, and the call is not made again:

    - `[[call:NAME]]`: call tool NAME, with an input made from its input_schema.
    - `[[call:NAME {JSON}]]`: call tool NAME with exactly this input, a JSON object, not checked against the
      tool's schema (nothing checks Claude's own inputs either), e.g. `[[call:shell {"command": ["echo", "hi"]}]]`
      or `[[call:apply_patch {"input": "*** Begin Patch\\n…"}]]`. Whitespace may surround the JSON; inside it
      `]]` needs no escaping (the JSON is parsed, not scanned).
    Several triggers: parallel calls, in order, announced ("I will call a, b.") under tool_choice auto as the
    model's own calls are. They replace the model's own pick under any tool_choice. NAME must be one of the
    request's tools and the call allowed by tool_choice (not `none`, not another tool than `tool` names, one call
    under disable_parallel_tool_use); otherwise, and for malformed JSON, the request is a 400
    `invalid_request_error` whose message starts with "emulator trigger" — a mistake in the test, never a silent
    fallback. Token counting ignores these triggers.
    """
    refusal: bool = False
    pause: bool = False
    unicode: bool = False
    vertex_event: bool = False
    cut: bool = False
    stream_error: str | None = None  # a STREAM_ERRORS key
    status: int | None = None


@dataclass(frozen=True)
class Call:
    """A `[[call:…]]` trigger: the tool, and the input it dictates (None: one made from the tool's schema)."""
    name: str
    input: dict[str, Any] | None


class TriggerError(ValueError):
    """A `[[call:…]]` trigger the request cannot honour; the message names it."""


def find_triggers(body: dict) -> Triggers:
    return text_triggers(" ".join(texts(last_user(body)["content"])))


def text_triggers(text: str) -> Triggers:
    """The switches in a text (anything but `[[call:…]]`)."""
    statuses = [int(code) for code in INJECTED_STATUS.findall(text) if 400 <= int(code) <= 599]
    errors = [kind for kind in INJECTED_STREAM_ERROR.findall(text) if kind in STREAM_ERRORS]
    return Triggers(refusal="[[refusal]]" in text, pause="[[pause]]" in text, unicode="[[unicode]]" in text,
                    vertex_event="[[vertex-event]]" in text, cut="[[cut]]" in text,
                    stream_error=errors[0] if errors else None, status=statuses[0] if statuses else None)


def injected_error(triggers: Triggers, streaming: bool) -> HttpError | None:
    """The error answer a trigger asks for instead of a Claude reply, if any."""
    if triggers.status is not None:
        return injected_status(triggers.status)
    if triggers.stream_error and not streaming:
        return anthropic_error(*STREAM_ERRORS[triggers.stream_error])
    return None


def injected_status(status: int) -> HttpError:
    """A `[[status:N]]` trigger's answer."""
    err = google_error(status, f"Injected error {status}")
    if status == 429:
        err.body = [err.body]  # real Vertex 429s come wrapped in an array, without retry-after
    return err


def find_calls(body: dict) -> list[Call]:
    """The `[[call:…]]` triggers of the latest user text, checked against the request's tools and tool_choice;
    TriggerError for one that cannot be honoured."""
    calls = parse_calls(latest_text(last_user(body)["content"]))
    if not calls:
        return []
    names = [tool["name"] for tool in body.get("tools", [])]
    choice = body.get("tool_choice", {"type": "auto"})
    for call in calls:
        if call.name not in names:
            raise TriggerError(f"emulator trigger [[call:{call.name}]]: the request has no tool {call.name!r} "
                               f"(its tools: {', '.join(names) or 'none'})")
        if choice["type"] == "none":
            raise TriggerError(f"emulator trigger [[call:{call.name}]]: tool_choice none allows no tool call")
        if choice["type"] == "tool" and call.name != choice["name"]:
            raise TriggerError(f"emulator trigger [[call:{call.name}]]: tool_choice forces tool "
                               f"{choice['name']!r}")
    if len(calls) > 1 and choice.get("disable_parallel_tool_use") is True:
        raise TriggerError(f"emulator trigger: {len(calls)} [[call:…]] triggers, but disable_parallel_tool_use "
                           f"allows one call")
    return calls


def parse_calls(text: str) -> list[Call]:
    """Every `[[call:NAME]]` and `[[call:NAME {JSON}]]` in the text, in order; TriggerError for a malformed one."""
    calls = []
    at = 0
    while match := CALL_START.search(text, at):
        name = match.group(1)
        at = _skip_space(text, match.end())
        if text.startswith("]]", at):
            calls.append(Call(name, None))
            at += 2
            continue
        if at == match.end():
            raise TriggerError(f"emulator trigger [[call:{name}: expected `]]`, or a space and a JSON object")
        try:
            value, at = _JSON.raw_decode(text, at)
        except ValueError as err:
            raise TriggerError(f"emulator trigger [[call:{name} …]]: the input is not JSON: {err}") from None
        if not isinstance(value, dict):
            raise TriggerError(f"emulator trigger [[call:{name} …]]: the input must be a JSON object, "
                               f"not {type(value).__name__}")
        at = _skip_space(text, at)
        if not text.startswith("]]", at):
            raise TriggerError(f"emulator trigger [[call:{name} …]]: expected `]]` after the JSON input")
        calls.append(Call(name, value))
        at += 2
    return calls


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at
