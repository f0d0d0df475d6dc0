"""Fuzzing the pure Responses request translator: generated bodies either get an OpenAI 400 naming a parameter,
or become a body that passes every Claude-on-Vertex rule of test_fuzz.vertex_body_problems (the oracle written
from the shared Vertex notes, independent of the translators), and the Response built for them is spec-valid.

Bodies are plausible Responses requests — every input item type (sealed, foreign and tampered reasoning,
compaction items, item references resolved or not, calls answered out of order or not at all), every tool
type, tool_choice form and text format, fields at and beyond their limits — and the same with one or two
mutations (a key dropped, a value swapped for junk of another type).
"""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, given, settings, strategies as st
from openapi import validate
from test_fuzz import vertex_body_problems

from modelmux import models
from modelmux.translate.errors import OpenAIError
from modelmux.translate.responses.request import parse_responses_request, references, to_vertex_body
from modelmux.translate.responses.response import seal_summary, seal_thinking, to_response

KEY = bytes(range(32))
EXAMPLES = 600
CALL_IDS = ["call_1", "call_2", "toolu_X", "functions.search:0", "c" * 70]
NAMES = ["lookup", "github.search", "apply_patch", "mcp__fs__read", "a/b", "x" * 130, "web_search"]
THOUGHT = {"type": "thinking", "thinking": "hmm", "signature": "SIG"}
SEALED = seal_thinking([THOUGHT], KEY)
TEXT = st.sampled_from(["hi", "", "  ", "héllo 世界 🎉", "\u2028", "a" * 300])
WORDS = st.sampled_from(["hi", "héllo 世界 🎉", "what now?"])
JUNK = st.sampled_from([None, 0, -1, 1.5, True, "", "x", [], {}, [1], {"a": 1}])


def part(role: str):
    user = st.one_of(
        st.builds(lambda t: {"type": "input_text", "text": t}, TEXT | WORDS),
        st.sampled_from([{"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
                         {"type": "input_image", "image_url": "https://img.example/a.png"},
                         {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "f"}]))
    if role == "assistant":
        return st.one_of(st.builds(lambda t: {"type": "output_text", "text": t, "annotations": []}, TEXT),
                         st.builds(lambda t: {"type": "refusal", "refusal": t}, TEXT))
    return user


@st.composite
def message(draw):
    role = draw(st.sampled_from(["user", "user", "assistant", "system", "developer"]))
    content = draw(st.one_of(TEXT, WORDS, WORDS, st.lists(part(role), max_size=3)))
    item = {"role": role, "content": content}
    if draw(st.booleans()):
        item["type"] = "message"
    return item


GOOD_ITEM = st.one_of(
    message(), message(),
    st.builds(lambda c, n, a: {"type": "function_call", "call_id": c, "name": n, "arguments": a},
              st.sampled_from(CALL_IDS), st.sampled_from(NAMES), st.sampled_from(['{"q": 1}', "", '{"p": "x"}'])),
    st.builds(lambda c, o: {"type": "function_call_output", "call_id": c, "output": o}, st.sampled_from(CALL_IDS),
              st.one_of(TEXT, st.just([{"type": "input_text", "text": "r"}]))),
    st.builds(lambda c, i: {"type": "custom_tool_call", "call_id": c, "name": "apply_patch", "input": i},
              st.sampled_from(CALL_IDS), TEXT),
    st.builds(lambda c: {"type": "custom_tool_call_output", "call_id": c, "output": "done"}, st.sampled_from(CALL_IDS)),
    st.sampled_from([
        {"type": "reasoning", "id": "rs_ours", "summary": [], "encrypted_content": SEALED},
        {"type": "reasoning", "id": "rs_stored", "summary": []},
        {"type": "reasoning", "id": "rs_x", "summary": [], "encrypted_content": "gAAAAABfoo"},
        {"type": "item_reference", "id": "msg_stored"}, {"id": "rs_stored"},
        {"type": "compaction", "encrypted_content": seal_summary("earlier: X", KEY)},
        {"type": "compaction_trigger"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}},
    ]))
ODD_ITEM = st.sampled_from([
    {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{bad"},
    {"type": "reasoning", "id": "rs_t", "summary": [], "encrypted_content": SEALED[:-6] + "AAAAAA"},
    {"id": "msg_missing"}, {"type": "compaction", "encrypted_content": "gAAAAA"}, {"type": "local_shell_call"},
    {"type": "mystery"}, {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]},
])
ITEM = st.one_of(GOOD_ITEM, GOOD_ITEM, GOOD_ITEM, GOOD_ITEM, GOOD_ITEM, GOOD_ITEM, ODD_ITEM).map(lambda i: [i])
# a whole tool round as clients send it: calls, then outputs in any order (some missing)
TURN = st.lists(st.sampled_from(CALL_IDS), min_size=1, max_size=3, unique=True).flatmap(
    lambda ids: st.tuples(st.just(ids), st.permutations(ids), st.integers(min_value=0, max_value=len(ids)))).map(
    lambda t: [{"type": "function_call", "call_id": c, "name": "lookup", "arguments": "{}"} for c in t[0]]
    + [{"type": "function_call_output", "call_id": c, "output": "r"} for c in t[1][:t[2]]])


def _flat(groups):
    return [item for group in groups for item in group]


TOOL = st.sampled_from([
    {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}},
    {"type": "function", "name": "github.search", "strict": True},
    {"type": "function", "name": "web_search"},
    {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark", "definition": "s: x"}},
    {"type": "custom", "name": "note"},
    {"type": "namespace", "name": "mcp__fs__", "description": "fs", "tools": [{"type": "function", "name": "read"}]},
    {"type": "web_search", "external_web_access": False}, {"type": "image_generation"}, {"type": "file_search"},
])
CHOICE = st.sampled_from(["auto", "none", "required", {"type": "function", "name": "lookup"},
                          {"type": "custom", "name": "apply_patch"},
                          {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "lookup"}]},
                          {"type": "web_search_preview"}])
FORMAT = st.sampled_from([{"type": "text"}, {"type": "json_object"},
                          {"type": "json_schema", "name": "n", "schema": {"type": "object"}, "strict": True},
                          {"type": "json_schema", "name": "n", "schema": {"type": "array"}}])


@st.composite
def plausible(draw) -> dict:
    body: dict = {"model": "gpt-5", "input": draw(st.one_of(WORDS, TEXT, st.lists(st.one_of(ITEM, TURN), min_size=1,
                                                                             max_size=8).map(_flat)))}
    optional = {
        "instructions": TEXT, "tools": st.lists(TOOL, max_size=4, unique_by=lambda t: t.get("name") or t["type"]), "tool_choice": CHOICE,
        "text": st.builds(lambda f: {"format": f}, FORMAT), "parallel_tool_calls": st.booleans(),
        "reasoning": st.builds(lambda e, s: {"effort": e, "summary": s},
                               st.sampled_from([None, "none", "minimal", "low", "medium", "high", "xhigh", "max"]),
                               st.sampled_from([None, "auto", "detailed"])),
        "max_output_tokens": st.sampled_from([16, 100, 1500, 20000, 10**6]),
        "temperature": st.sampled_from([0, 0.5, 1, 2]), "top_p": st.sampled_from([0, 0.9, 1]),
        "include": st.sampled_from([["reasoning.encrypted_content"], ["web_search_call.action.sources"]]),
        "stream": st.booleans(), "store": st.booleans(), "user": st.sampled_from(["u1", "a@b.example"]),
        "prompt_cache_key": st.just("thread"), "prompt_cache_retention": st.sampled_from(["in_memory", "24h"]),
        "metadata": st.just({"k": "v"}), "max_tool_calls": st.sampled_from([1, 5]),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return body


@st.composite
def mutated(draw) -> dict:
    body = copy.deepcopy(draw(plausible()))  # the strategies share their sample dicts
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        containers = [body] + [x for x in _walk(body) if isinstance(x, (dict, list)) and x]
        target = draw(st.sampled_from(containers))
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        key = draw(st.sampled_from(keys))
        if isinstance(target, dict) and draw(st.booleans()):
            del target[key]
        else:
            target[key] = copy.deepcopy(draw(JUNK))
    return body


def _walk(node):
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield child
        yield from _walk(child)


STORED = {"msg_stored": {"id": "msg_stored", "type": "message", "role": "user", "status": "completed",
                         "content": [{"type": "input_text", "text": "from the store"}]},
          "rs_stored": {"id": "rs_stored", "type": "reasoning", "summary": [], "encrypted_content": SEALED}}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(plausible(), mutated()), vertex_model=st.sampled_from(sorted(models.OUTPUT_CAPS) + ["claude-x"]),
       version=st.sampled_from(["vertex-2023-10-16", "2026-10-21"]), web_search=st.booleans(), drop=st.booleans())
def test_the_translator_answers_a_400_or_builds_a_valid_vertex_body(body, vertex_model, version, web_search, drop):
    raw = json.dumps(copy.deepcopy(body)).encode()
    try:
        req = parse_responses_request(raw)
        wanted = references(req)
        call = to_vertex_body(req, vertex_model, version, key=KEY, web_search=web_search, drop_builtin_tools=drop,
                              resolved={i: STORED[i] for i in wanted if i in STORED}, created_at=1)
    except OpenAIError as err:
        assert err.status == 400 and err.message and err.type == "invalid_request_error", err
        return
    body = dict(call.body)
    server = [t for t in body.get("tools", []) if "type" in t]  # Claude's server tools: no input_schema
    assert all(t["type"] == "web_search_20250305" and t["name"] == "web_search" for t in server) and (
        web_search or not server)
    body["tools"] = [t for t in body.get("tools", []) if "type" not in t] + [
        {"name": t["name"], "input_schema": {"type": "object"}} for t in server]
    if not body["tools"]:
        del body["tools"]
    problems = vertex_body_problems(body, vertex_model, version, url_images=frozenset(call.image_urls))
    assert not problems, (problems, body)
    answer = to_response({"content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                          "usage": {"input_tokens": 1, "output_tokens": 1}}, call.shape)
    validate(answer.response, "Response")
    for item in call.input_items:
        assert item.get("id"), item
