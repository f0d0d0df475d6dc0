"""Bad input parity with OpenAI (issue 10, point 7): every field of `CreateChatCompletionRequest` in OpenAI's spec
(../shared/openai-openapi.yaml, its allOf parts resolved) is checked as the spec types it.

The oracle is the spec itself, read here with jsonschema: starting from a body that both the spec and modelmux
accept, each field (and each field inside it, down through objects, arrays and maps) gets values of the wrong
type, out of its range, outside its enum, too long or too short, or is removed when required. Each such body
that the spec refuses must be refused by modelmux's pure translator with a 400 naming exactly that parameter.
A field the spec gains later and modelmux does not check fails `test_every_spec_field_is_a_checked_field` and
the walk (an unchecked field takes any value). Limits the spec states only in prose (metadata's 16 pairs, its key
and value lengths, logit_bias's −100..100) are listed by hand at the end.

Two deliberate readings (translate/validation.py): `null` for an optional field is "not given", so null is only
injected where a field is required; a number without a fraction (1.0) is an integer, as JSON Schema says.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from typing import Any

import jsonschema
import pytest
from openapi import _registry

from modelmux.translate.errors import OpenAIError
from modelmux.translate.request import (VERTEX_MAX_REQUEST_BYTES, ChatRequest, parse_request, to_vertex_body,
                                        vertex_body_bytes)

MODEL = "claude-sonnet-4-5@20250929"
PNG = "data:image/png;base64,iVBORw0KGgo="
PDF = "data:application/pdf;base64,JVBERi0xLjQK"
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "strict": True,
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
MESSAGES = [
    {"role": "system", "content": "be brief", "name": "rules"},
    {"role": "developer", "content": [{"type": "text", "text": "use metric"}], "name": "dev"},
    {"role": "user", "name": "ann", "content": [
        {"type": "text", "text": "what is this?", "prompt_cache_breakpoint": {"mode": "explicit"}},
        {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": PDF}}]},
    {"role": "assistant", "name": "bot", "content": [{"type": "text", "text": "Checking."}],
     "tool_calls": [{"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
    {"role": "assistant", "content": "It is sunny.", "refusal": "no", "audio": {"id": "audio_1"},
     "function_call": {"name": "get_weather", "arguments": "{}"}},
    {"role": "user", "content": "thanks"},
]
BASE = {"model": "gpt-4o", "messages": MESSAGES, "tools": [WEATHER]}

# A value the spec accepts for each field, to start from (several where the field has several shapes). Those
# modelmux refuses on purpose (`REFUSED`) are refused with `unsupported_parameter` as they stand; what is wrong
# inside them must still be named first, as OpenAI names it.
EXAMPLES: dict[str, list[Any]] = {
    "metadata": [{"team": "a", "run": "7"}],
    "top_logprobs": [0],
    "temperature": [0.5],
    "top_p": [0.9],
    "user": ["user-1"],
    "safety_identifier": ["sid-1"],
    "prompt_cache_key": ["key"],
    "prompt_cache_retention": ["24h"],
    "prompt_cache_options": [{"ttl": "30m", "mode": "explicit"}],
    "service_tier": ["flex"],
    "modalities": [["text"]],
    "verbosity": ["low"],
    "reasoning_effort": ["low"],
    "max_completion_tokens": [2000],
    "frequency_penalty": [0.5],
    "presence_penalty": [-0.5],
    "web_search_options": [{}, {"search_context_size": "low", "user_location": {
        "type": "approximate", "approximate": {"country": "FR", "region": "IDF", "city": "Paris",
                                               "timezone": "Europe/Paris"}}}],
    "response_format": [{"type": "text"}, {"type": "json_object"},
                        {"type": "json_schema", "json_schema": {"name": "answer", "description": "d", "strict": True,
                                                                "schema": {"type": "object"}}}],
    "audio": [{"voice": "alloy", "format": "mp3"}, {"voice": {"id": "voice_1"}, "format": "wav"}],
    "store": [False],
    "moderation": [{"model": "omni-moderation-latest",
                    "policy": {"input": {"mode": "score"}, "output": {"mode": "block"}}}],
    "stream": [True],
    "stop": ["END", ["END", "STOP"]],
    "logit_bias": [{"50256": -100}],
    "logprobs": [False],
    "max_tokens": [1000],
    "n": [1],
    "prediction": [{"type": "content", "content": "x"}, {"type": "content", "content": [{"type": "text", "text": "x"}]}],
    "seed": [42],
    "stream_options": [{"include_usage": True, "include_obfuscation": False}],
    "tool_choice": ["auto", {"type": "function", "function": {"name": "get_weather"}},
                    {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
                        {"type": "function", "function": {"name": "get_weather"}}]}}],
    "parallel_tool_calls": [False],
    "function_call": ["auto", {"name": "get_weather"}],
    "functions": [[{"name": "f", "description": "d", "parameters": {"type": "object"}}]],
}
REFUSED = {"logit_bias", "audio", "web_search_options", "function_call", "functions"}

class _Removed:
    def __repr__(self) -> str:
        return "<removed>"


REMOVED = _Removed()  # the injection that removes a required field
COUNTS: Counter[str] = Counter()  # checked cases per top-level field


def _schemas() -> dict[str, Any]:
    return _registry()[1]["components"]["schemas"]


def _resolve(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = _schemas()[node["$ref"].rsplit("/", 1)[1]]
    return node


def _properties(node: Any) -> tuple[dict[str, Any], set[str]]:
    """An object schema's properties and required names, through allOf."""
    node = _resolve(node)
    props, required = {}, set()
    for part in node.get("allOf", []):
        p, r = _properties(part)
        props.update(p)
        required |= r
    props.update(node.get("properties", {}))
    return props, required | set(node.get("required", []))


def request_properties() -> dict[str, Any]:
    return _properties({"$ref": "#/components/schemas/CreateChatCompletionRequest"})[0]


@pytest.fixture(scope="module")
def spec_validator():
    registry, _ = _registry()
    return jsonschema.Draft202012Validator({"$ref": "urn:openai#/components/schemas/CreateChatCompletionRequest"},
                                           registry=registry)


def _branches(node: Any) -> list[Any]:
    """The alternatives of a schema (anyOf / oneOf flattened), each resolved."""
    node = _resolve(node)
    alts = node.get("anyOf") or node.get("oneOf")
    if not alts:
        return [node]
    rest = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}
    out = []
    for alt in alts:
        for branch in _branches(alt):
            out.append({**rest, **branch} if rest else branch)
    return out


def _types(node: Any) -> set[str] | None:
    """The JSON types a schema allows; None when it says nothing (anything goes)."""
    out: set[str] = set()
    for b in _branches(node):
        if "type" in b:
            out |= set(b["type"]) if isinstance(b["type"], list) else {b["type"]}
        elif "enum" in b:
            out |= {"string"} if all(isinstance(v, str) for v in b["enum"]) else {"any"}
        elif "properties" in b or "allOf" in b:
            out.add("object")
        else:
            return None
    return None if "any" in out else out


def _kind(value: Any) -> set[str]:
    if value is None:
        return {"null"}
    if isinstance(value, bool):
        return {"boolean"}
    if isinstance(value, int):
        return {"integer", "number"}
    if isinstance(value, float):
        return {"number"}
    return {"string"} if isinstance(value, str) else {"array"} if isinstance(value, list) else {"object"}


def bad_values(node: Any, example: Any) -> list[Any]:
    """Values a schema may refuse: other JSON types, beyond its bounds, outside its enum, too long or short."""
    out: list[Any] = []
    types = _types(node)
    if types is not None:
        out += [v for v in (True, 7, 1.5, "x", [], {}) if not _kind(v) & types]
    for b in _branches(node):
        step = 1 if b.get("type") == "integer" else 0.5
        if "maximum" in b:
            out.append(int(b["maximum"]) + 1 if step == 1 else b["maximum"] + step)
        if "minimum" in b:
            out.append(int(b["minimum"]) - 1 if step == 1 else b["minimum"] - step)
        if "enum" in b and all(isinstance(v, str) for v in b["enum"]):
            out.append("not-a-choice")
        if "maxLength" in b:
            out.append("x" * (b["maxLength"] + 1))
        if b.get("minLength"):
            out.append("")
        item = example[0] if isinstance(example, list) and example else "x"
        if "maxItems" in b:
            out.append([item] * (b["maxItems"] + 1))
        if b.get("minItems"):
            out.append([])
    return out


def cases(node: Any, example: Any, path: tuple) -> list[tuple[tuple, Any]]:
    """(path, injected value) for the field at `path` and every field inside its example, recursively."""
    out = [(path, v) for v in bad_values(node, example)]
    if example is None:
        return out
    matching = [b for b in _branches(node) if _matches(b, example)]
    for b in matching[:1]:
        if isinstance(example, dict):
            props, required = _properties(b)
            for name, sub in props.items():
                out += cases(sub, example.get(name), (*path, name))
                if name in required and name in example:
                    out.append(((*path, name), REMOVED))
                    if "null" not in (_types(sub) or {"null"}):
                        out.append(((*path, name), None))  # null is "not given" only where that is allowed
            extra = b.get("additionalProperties")
            if isinstance(extra, dict) and not props:
                for key, sub in example.items():
                    out += cases(extra, sub, (*path, key))
        elif isinstance(example, list) and isinstance(b.get("items"), dict):
            for i, item in enumerate(example):
                out += cases(b["items"], item, (*path, i))
    return out


def _absolute(node: Any) -> Any:
    """A piece of the spec with its references made absolute, so it validates on its own."""
    if isinstance(node, dict):
        return {k: ("urn:openai" + v if k == "$ref" and v.startswith("#") else _absolute(v)) for k, v in node.items()}
    return [_absolute(v) for v in node] if isinstance(node, list) else node


def _matches(node: Any, value: Any) -> bool:
    return jsonschema.Draft202012Validator(_absolute(node), registry=_registry()[0]).is_valid(value)


def _param(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _inject(body: dict, path: tuple, value: Any) -> dict:
    body = copy.deepcopy(body)
    node = body
    for part in path[:-1]:
        node = node[part]
    if value is REMOVED:
        del node[path[-1]]
    else:
        node[path[-1]] = copy.deepcopy(value)
    return body


def translate(body: dict):
    return to_vertex_body(parse_request(json.dumps(body).encode()), MODEL, "vertex-2023-10-16")


def _bases(name: str) -> list[dict]:
    if name in BASE:
        return [BASE]
    return [{**BASE, name: value} for value in EXAMPLES.get(name, [])] or [BASE]


# --- the tests --------------------------------------------------------------------------------------------------

def test_every_spec_field_is_a_checked_field():
    spec = set(request_properties())
    assert spec, "no request properties found in the spec"
    assert spec - set(ChatRequest.model_fields) == set(), "fields of the spec that ChatRequest does not check"
    assert set(ChatRequest.model_fields) - spec == set(), "ChatRequest fields that are not in the spec"
    assert spec - set(BASE) - set(EXAMPLES) == set(), "a spec field without an example value to start from"


@pytest.mark.parametrize("name", sorted(request_properties()))
def test_each_field_refuses_what_the_spec_refuses_naming_it(name, spec_validator):
    """The walk, one top-level field at a time."""
    schema = request_properties()[name]
    checked, accepted = 0, []
    for base in _bases(name):
        assert spec_validator.is_valid(base), list(spec_validator.iter_errors(base))[:3]
        try:
            translate(base)
        except OpenAIError as err:  # the example itself: served, or refused on purpose
            assert name in REFUSED and (err.param, err.code) == (name, "unsupported_parameter"), err
        for path, value in cases(schema, base.get(name), (name,)):
            body = _inject(base, path, value)
            if spec_validator.is_valid(body):
                continue  # our guess was wrong: the spec takes this value
            checked += 1
            try:
                translate(body)
            except OpenAIError as err:
                if err.status != 400 or err.param != _param(path):
                    accepted.append(f"{_param(path)} = {value!r}: {err.status} naming {err.param!r}: {err.message}")
                assert err.message.strip() and err.type == "invalid_request_error"
            else:
                accepted.append(f"{_param(path)} = {str(value)[:80]!r}: accepted")
    COUNTS[name] += checked
    assert checked, f"no value the spec refuses was found for {name!r}: the walk proves nothing about it"
    assert not accepted, "\n".join(accepted)


@pytest.mark.parametrize("field, value, message", [
    ("seed", "abc", "Invalid type for 'seed': expected an integer, but got a string instead."),
    ("metadata", "x", "Invalid type for 'metadata': expected an object, but got a string instead."),
    ("frequency_penalty", [], "Invalid type for 'frequency_penalty': expected a decimal, but got an array instead."),
    ("presence_penalty", "x", "Invalid type for 'presence_penalty': expected a decimal, but got a string instead."),
    ("temperature", True, "Invalid type for 'temperature': expected a decimal, but got a boolean instead."),
    ("max_completion_tokens", True,
     "Invalid type for 'max_completion_tokens': expected an integer, but got a boolean instead."),
    ("temperature", 2.5, "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 2.5 "
                         "instead."),
    ("n", "1", "Invalid type for 'n': expected an integer, but got a string instead."),
    ("reasoning_effort", "HIGH", "Invalid value: 'HIGH'. Supported values are: 'none', 'minimal', 'low', 'medium', "
                                 "'high', 'xhigh', and 'max'."),
])
def test_the_issues_examples_are_a_400_in_openais_words(field, value, message):
    with pytest.raises(OpenAIError) as err:
        translate({**BASE, field: value})
    assert (err.value.status, err.value.param, err.value.message) == (400, field, message)
    assert err.value.code in ("invalid_type", "invalid_value", "decimal_above_max_value")


@pytest.mark.parametrize("field, value, param, code", [
    ("metadata", {f"k{i}": "v" for i in range(17)}, "metadata", "object_above_max_properties"),
    ("metadata", {"k" * 65: "v"}, "metadata", "string_above_max_length"),
    ("metadata", {"k": "v" * 513}, "metadata.k", "string_above_max_length"),
    ("logit_bias", {"50256": 101}, "logit_bias.50256", "integer_above_max_value"),
    ("logit_bias", {"50256": -101}, "logit_bias.50256", "integer_below_min_value"),
    ("logit_bias", {"not-a-token": 1}, "logit_bias", "invalid_value"),
])
def test_limits_the_spec_states_in_prose(field, value, param, code):
    with pytest.raises(OpenAIError) as err:
        translate({**BASE, field: value})
    assert (err.value.status, err.value.param, err.value.code) == (400, param, code)


def test_the_limits_themselves_are_accepted():
    metadata = {f"{i:0>64}": "v" * 512 for i in range(16)}
    v = translate({**BASE, "metadata": metadata, "logit_bias": {}, "seed": -2 ** 63, "temperature": 2, "top_p": 0,
                   "frequency_penalty": -2, "presence_penalty": 2, "top_logprobs": 0, "stop": ["a", "b", "c", "d"],
                   "safety_identifier": "s" * 64})
    assert v.body["stop_sequences"] == ["a", "b", "c", "d"] and v.body["temperature"] == 1.0


def test_null_for_an_optional_field_is_not_given_and_whole_numbers_are_integers():
    plain = translate(BASE).body
    nulls = {name: None for name in request_properties() if name not in BASE}
    assert translate({**BASE, **nulls}).body == plain
    v = translate({**BASE, "max_tokens": 100.0, "seed": 3.0})
    assert v.body["max_tokens"] == 100 and type(v.body["max_tokens"]) is int
    with pytest.raises(OpenAIError) as err:
        translate({**BASE, "messages": [{"role": "user", "content": None}]})
    assert err.value.param == "messages[0].content" and err.value.code == "invalid_type"


def test_refusal_parts_only_in_assistant_messages():
    with pytest.raises(OpenAIError) as err:
        translate({**BASE, "messages": [{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}]})
    assert err.value.param == "messages[0].content[0].type"


def test_zz_walk_counts():
    """Runs last: how many spec-refused values the walk tried per field (the run's summary)."""
    import report

    if COUNTS:
        report.add(f"request parity walk: {sum(COUNTS.values())} spec-refused values over {len(COUNTS)} fields, "
                   f"fewest {min(COUNTS.values())} ({min(COUNTS, key=COUNTS.get)})")


# --- the translated body's size (Vertex's 30 MB cap) ------------------------------------------------------------

def _with_image(size: int) -> dict[str, Any]:
    """A finished Vertex body carrying `size` characters of base64 image data."""
    return {"anthropic_version": "vertex-2023-10-16", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * size}}]}]}


def test_a_body_over_vertexs_cap_once_images_are_inlined_is_a_413():
    small = _with_image(VERTEX_MAX_REQUEST_BYTES - 1000)
    assert json.loads(vertex_body_bytes(small)) == small
    with pytest.raises(OpenAIError) as err:
        vertex_body_bytes(_with_image(VERTEX_MAX_REQUEST_BYTES))
    e = err.value
    assert (e.status, e.type, e.code) == (413, "invalid_request_error", "request_too_large")
    assert str(VERTEX_MAX_REQUEST_BYTES) in e.message and set(e.body()["error"]) == {"message", "type", "param", "code"}
