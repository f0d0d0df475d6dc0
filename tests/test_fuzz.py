"""Fuzzing the request path: at least 10,000 generated chat bodies through the addon chain's request hooks.

The chain is `make_addons` inside mitmproxy's `taddons.context` (with the Proxyserver addon), configured with a
static access token and a `vertex.base_url` on 127.0.0.1, where a fake Vertex records each call and answers a
small Claude message: nothing leaves the machine. After every addon's `request` hook ran on a body:

- either the flow was answered locally with a 4xx whose JSON is OpenAI's `ErrorResponse` with a non-empty
  message, still pointed where it was, and nothing reached Vertex;
- or the body went to Vertex (non-streamed calls are made from the hook itself: the fake received it) or goes
  out with the rewritten flow (streamed: to modelmux's loopback relay, or to Vertex), and it is strict JSON that
  Claude-on-Vertex's rules accept (`vertex_body_problems` spells them out, after ../shared/notes/
  vertex-claude.md), with the static token and none of the client's headers; a non-streamed answer, through the
  response hooks, is a spec-valid chat.completion.

Never a 5xx, never an exception escaping a hook (mitmproxy would log it and pass the request on untouched: to
api.openai.com, with the client's OpenAI key), never a flow left pointing at OpenAI without an answer.

Bodies are plausible OpenAI chat requests (unicode, empty and whitespace text, MCP tool names, foreign tool-call
ids, tool loops answered out of order or not at all, JSON-mode schemas, every field at and beyond its limits), the
same with one to three mutations anywhere (wrong types, unknown roles and parts, junk, deep nesting), and bytes
that are no JSON object (truncated, NaN, invalid UTF-8, 100,000-deep arrays). Image URLs are data: URLs or http(s)
URLs to loopback/private literals, which must be refused with a 400 before any connection (those on port 9 are
pointed at the fake Vertex, so a fetch would show as a call); no DNS name but `localhost` is ever used.

A second, cheaper property runs the pure `parse_request` / `to_vertex_body` with both anthropic versions, every
known model and a thinking lookup. The last test checks the hook-path count and prints the tallies. Bodies that
Vertex would probably refuse for the client's own fault, with no rule in the shared notes (lone surrogates,
image data that is not base64, more than 4 cache breakpoints), are counted as notes, not failed.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import gzip
import inspect
import json
import math
import random
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow, tutils
import report
from openapi import validate_completion, validate_error

from modelmux import models
from modelmux.addons import ConfigLoader, Runtime, Translate, make_addons
from modelmux.translate.errors import OpenAIError
from modelmux.translate.request import parse_request, to_vertex_body

HOOK_EXAMPLES = 10_000  # the issue's requirement: at least this many bodies through the hook path
PURE_EXAMPLES = 1_000

TOKEN = "static-fuzz-token"
CLIENT_KEY = "sk-client-secret-fuzz"
CONFIG = """
vertex: {{project: proj, region: us-east5, base_url: "http://127.0.0.1:{port}"}}
auth: {{access_token: {token}}}
models:
  default: null
  map: {{gpt-4o: claude-sonnet-4-5@20250929, gpt-4o-mini: claude-haiku-4-5@20251001, o3: claude-opus-4-6}}
images: {{fetch: true, allow_private_networks: false}}
"""
VERTEX_PATH = "/v1/projects/proj/locations/us-east5/publishers/anthropic/models/"
VERSION = "vertex-2023-10-16"
VERSIONS = ("vertex-2023-10-16", "2026-10-21")

# Claude's thinking kept from an earlier answer, recalled when a tool call with this (Claude) id comes back.
KEPT_ID = "toolu_kept"
KEPT_THINKING = [{"type": "thinking", "thinking": "Let me call the tool.", "signature": "c2lnbmF0dXJl"}]

# Vertex's rules (shared notes): full matches, `$` would also accept a trailing newline.
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
SAMPLING_EXCLUSIVE = ("claude-sonnet-4-5", "claude-opus-4-1", "claude-opus-4-5", "claude-haiku-4-5",
                      "claude-sonnet-4-6", "claude-opus-4-6", "claude-opus-4-7", "claude-opus-4-8", "claude-opus-5",
                      "claude-sonnet-5")

COUNTS: Counter[str] = Counter()


# --- strategies ----------------------------------------------------------------------------------------------
# Plausible bodies (well-typed, with the odd values real clients send: unicode, empty text, MCP tool names, foreign
# tool-call ids, trimmed tool loops, JSON-mode schemas, …) that mostly reach Vertex; the same bodies with one to
# three mutations anywhere in them (a key dropped, a value replaced by junk or by a hostile value, an element
# inserted), which must mostly be refused; and bytes that are not a JSON object at all. Generation dominates the
# run time, so values mostly come from sampled lists (one draw each) rather than composed strategies.

def weighted(*pairs: tuple[int, st.SearchStrategy | None]) -> st.SearchStrategy:
    """One of the strategies, picked with the given integer weights (not st.one_of: it drops repeated
    strategies, and with them the weights)."""
    return st.sampled_from([s for w, s in pairs for _ in range(w) if s is not None]).flatmap(lambda s: s)


def pool(*pairs: tuple[int, list]) -> st.SearchStrategy:
    """One draw from a list in which each (weight, values) group has about `weight` shares."""
    out: list = []
    for w, values in pairs:
        if w and values:
            out += list(values) * max(1, round(w * 24 / len(values)))
    return st.sampled_from(out)


SURROGATES = ["\ud800", "a\udfff", "\ud83d"]
PLAIN_TEXT = ["hi", "Hello!", "What's the weather in Paris?", "héllo 世界 🎉", "ünïcödé", "😀😀😀",
              "a\n", "<system>x</system>", "null", "{}", "\u202eRTL", "tab\there", "line1\r\nline2"]
BLANK_TEXT = ["", " ", "\n", "\t \n", "\u00a0", "\u200b", "\u3000", "\r\n", "\x00", "\u2028"]
BIG_TEXT = ["a" * 6000, "é" * 3000, "🎉" * 2000, " " * 4000, "ab\n" * 3000, "\u200b" * 1000, "x" * 100_000]


def _unicode_samples(n: int) -> list[str]:
    """Short strings from all over Unicode (controls, combining marks, RTL, CJK, astral planes, private use),
    made once: drawing them character by character would cost a choice per character."""
    rng = random.Random(20260601)
    ranges = [(0, 0x1F), (0x20, 0x7E), (0x80, 0x24F), (0x300, 0x36F), (0x590, 0x6FF), (0x2000, 0x206F),
              (0x3000, 0x9FFF), (0xE000, 0xF8FF), (0xFE00, 0xFFFF), (0x1F300, 0x1FAFF), (0x10000, 0x10FFFF)]
    return ["".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(1, 12))) for _ in range(n)]


UNICODE_TEXT = _unicode_samples(64)
text = pool((10, PLAIN_TEXT), (3, BLANK_TEXT), (2, UNICODE_TEXT), (1, SURROGATES), (1, BIG_TEXT))
KEYS = ["type", "text", "name", "function", "tools", "mode", "url", "id", "content", "role", "schema", "arguments",
        "image_url", "file", "tool_calls", "tool_call_id", "properties", "required", "items", "allowed_tools", ""]


def _nest(depth: int, leaf: object = 0) -> object:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"a": leaf}
    return leaf


scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70),
                   st.floats(allow_nan=False, allow_infinity=False), text)
junk = weighted(
    (6, st.recursive(scalar, lambda c: st.lists(c, max_size=3)
                     | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), c, max_size=3), max_leaves=6)),
    (1, st.integers(1, 300).map(_nest)),
)
# what a mutation puts somewhere: values of the wrong type or meaning for almost any field
HOSTILE_VALUES = ["function", "bogus", "video", "input_audio", "image_url", "file", "refusal", "custom",
                  "allowed_tools", "", " ", "\ud800", "x" * 20_000, None, [], {}, [None], [[]], [{}], {"type": None},
                  0, -1, 1.5, 2 ** 64, True, False, {"type": "function", "function": "f"}, {"name": 5}, {"url": 1}]
mutation_value = weighted((3, st.sampled_from(HOSTILE_VALUES)), (2, junk)).map(copy.deepcopy)  # fresh: mutable

GOOD_IDS = ["call_1", "call_2", "call_3", KEPT_ID]
ODD_IDS = ["functions.x:0", "functions.search:0", "call.1", "é", "call 1", "a\n", "-", "_", "id/1", "x" * 300,
           "\ud800", "call_1\n", "mm_call_1_00000000", " "]
GOOD_NAMES = ["f", "g", "get_weather", "search"]
ODD_NAMES = ["a.b", "a_b", "a/b", "ns:fn", "server.tool", "server_tool", "json_response", "json_response_", "x" * 128,
             "x" * 129, "y" * 200, "é", "f\n", "f g", " ", "\ud800", "-", "mm_f", "ns:fn" * 40, ""]
GOOD_ARGS = ['{}', '{"a": 1}', '{"q": "héllo"}', '', '  ']
ODD_ARGS = ['{"a": [[[[]]]]}', '{"a": "\\ud800"}', '{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', 'not json',
            '[1]', '"s"', 'null', '1', '{"a":', '{"a": 1} trailing', '\ufeff{}']

VALID_DATA_URLS = ["data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==", "data:image/jpeg;base64,/9j/4AAQSkZJRg==",
                   "data:image/gif;base64,R0lGODlhAQABAAAAACw=", "data:image/webp;base64,UklGRhoAAABXRUJQ",
                   "data:IMAGE/PNG;base64,iVBORw0KGgo=", "data:image/png;name=a.png;base64,iVBORw0KGgo="]
INVALID_IMAGE_URLS = ["data:image/bmp;base64,Qk0=", "data:image/svg+xml;base64,PHN2Zz4=", "data:text/plain;base64,aGk=",
                      "data:image/png,iVBORw0KGgo=", "data:image/png;base64,", "data:image/png;base64,!!not base64!!",
                      "data:;base64,AAAA", "data:", "data:image/png;base64,\ud800", "ftp://127.0.0.1/x.png",
                      "file:///etc/passwd", "", " ", "javascript:alert(1)", "//127.0.0.1/x.png",
                      "HTTP://127.0.0.1/x.png", "127.0.0.1/x.png", "data:application/pdf;base64,JVBERi0="]
# Loopback / private / link-local literals (and localhost): refused before any connection. Never a DNS name.
PRIVATE_HTTP_URLS = ["http://127.0.0.1:9/x.png", "https://127.0.0.1:9/x.png", "http://localhost:9/x.png",
                     "http://[::1]:9/x.png", "http://10.0.0.1/x.png", "http://192.168.0.1/x.png",
                     "http://172.16.0.1/x.png", "http://169.254.169.254/latest/meta-data/", "http://0.0.0.0:9/x.png",
                     "http://127.1:9/x.png", "http://[::ffff:127.0.0.1]:9/x.png", "http://[fd00::1]/x.png",
                     "http:///x.png", "http://user:pw@127.0.0.1:9/x.png", "http://127.0.0.1:9/x.png?q=é#f",
                     "http://[::1/x.png", "http://127.0.0.1:abc/x.png", "http://127.0.0.1:99999/x.png",
                     "http://[127.0.0.1]/x.png"]
PDF_DATA = "data:application/pdf;base64,JVBERi0xLjQK"

ids = pool((8, GOOD_IDS), (2, ODD_IDS))
names = pool((8, GOOD_NAMES), (2, ODD_NAMES))
arguments = pool((12, GOOD_ARGS), (2, ODD_ARGS))
image_url = pool((12, VALID_DATA_URLS), (2, INVALID_IMAGE_URLS), (1, PRIVATE_HTTP_URLS))
breakpoint_ = pool((15, [{"mode": "explicit"}]), (1, [{}]))  # `mode` is required: {} is refused

text_part = st.fixed_dictionaries({"type": st.just("text"), "text": text},
                                  optional={"prompt_cache_breakpoint": breakpoint_})
refusal_part = st.fixed_dictionaries({"type": st.just("refusal"), "refusal": text})
image_part = st.fixed_dictionaries(
    {"type": st.just("image_url"),
     "image_url": st.fixed_dictionaries({"url": image_url}, optional={"detail": st.sampled_from(["auto", "low"])})},
    optional={"prompt_cache_breakpoint": breakpoint_})
file_part = st.fixed_dictionaries(
    {"type": st.just("file"),
     "file": weighted((6, st.fixed_dictionaries({"file_data": pool((6, [PDF_DATA, *VALID_DATA_URLS[:2]]),
                                                                   (2, INVALID_IMAGE_URLS))},
                                                optional={"filename": st.sampled_from(["a.pdf", "é.png"])})),
                      (1, st.sampled_from([{"file_id": "file-abc"}, {"filename": "a.pdf"}, {}])))},
    optional={"prompt_cache_breakpoint": breakpoint_})
audio_part = st.just({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}})


def parts(part: st.SearchStrategy) -> st.SearchStrategy:
    """A list of content parts; now and then the empty list OpenAI refuses."""
    return weighted((24, st.lists(part, min_size=1, max_size=3)), (1, st.just([])))


text_parts = parts(text_part)
assistant_parts = parts(weighted((8, text_part), (1, refusal_part)))
media_parts = parts(weighted((12, text_part), (4, image_part), (1, file_part), (1, audio_part), (1, refusal_part)))
# each role's parts as OpenAI allows them (media in user and tool messages, refusals in assistant ones, a refusal
# elsewhere now and then); mutations put anything anywhere
text_content = weighted((24, text), (12, text_parts), (1, st.none()))  # null content: refused but for assistants
assistant_content = weighted((12, text), (6, assistant_parts), (2, st.none()))
media_content = weighted((24, text), (16, media_parts), (1, st.none()))

tool_call = weighted(
    (24, st.fixed_dictionaries({"id": ids, "type": st.just("function"),
                                "function": st.fixed_dictionaries({"name": names, "arguments": arguments})})),
    (1, st.fixed_dictionaries({"id": ids, "function": st.fixed_dictionaries({"name": names})})),  # type, arguments
)
tool_calls = weighted((12, st.lists(tool_call, min_size=1, max_size=3)), (1, st.just([])))


@st.composite
def message(draw) -> dict:
    role = draw(pool((4, ["user"]), (4, ["assistant"]), (1, ["system"]), (1, ["developer"]), (1, ["tool"])))
    msg: dict = {"role": role}
    dice = draw(st.integers(0, 2 ** 20 - 1))  # one draw for the choices below
    # only an assistant message may go without content (a draw of its own: hypothesis favours a dice of 0)
    if draw(pool((7, [True]), (1, [False])) if role == "assistant" else pool((63, [True]), (1, [False]))):
        msg["content"] = draw(media_content if role in ("user", "tool") else
                              assistant_content if role == "assistant" else text_content)
    if role == "assistant" and dice // 8 % 3 == 0:
        msg["tool_calls"] = draw(tool_calls)
    if role == "assistant" and dice // 24 % 6 == 0:
        msg["refusal"] = draw(st.one_of(text, st.none()))
    if role == "tool" and dice // 144 % 16:
        msg["tool_call_id"] = draw(ids)
    if dice // 2304 % 10 == 0:
        msg["name"] = draw(names)
    return msg


@st.composite
def tool_loop(draw) -> list[dict]:
    """An assistant turn calling tools, then tool messages answering some or all of them in any order (or one
    twice, or ones it did not make), now and then with another message in between."""
    calls = draw(st.lists(tool_call, min_size=1, max_size=3))
    out = [{"role": "assistant", "content": draw(assistant_content), "tool_calls": calls}]
    call_ids = [c["id"] for c in calls]
    answered = draw(weighted((8, st.permutations(call_ids).flatmap(
        lambda order: st.integers(0, len(order)).map(lambda k: order[:k]))),
        (1, st.lists(st.sampled_from(call_ids + GOOD_IDS), max_size=4))))
    for ident in answered:
        if draw(st.integers(0, 9)) == 0:
            out.append(draw(message()))
        out.append({"role": "tool", "tool_call_id": ident, "content": draw(media_content)})
    return out


conversation = st.tuples(  # system prompt(s), a user message with something to say, then anything
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "developer"]), "content": text_content}),
             max_size=2),
    st.fixed_dictionaries({"role": st.just("user"),
                           "content": weighted((3, st.sampled_from(PLAIN_TEXT)), (1, media_parts.map(
                               lambda ps: [{"type": "text", "text": "look"}, *ps])))}),
    st.lists(weighted((3, message().map(lambda m: [m])), (1, tool_loop())), max_size=3),
).map(lambda t: [*t[0], t[1], *(m for seg in t[2] for m in seg)])

function_def = st.fixed_dictionaries(
    {"name": names},
    optional={"description": st.one_of(text, st.none()),
              "parameters": pool((8, [{"type": "object", "properties": {"q": {"type": "string"}}}, {},
                                      {"type": "object"}]),
                                 (1, [{"type": "string"}, {"type": "object", "properties": 1}])),
              "strict": st.sampled_from([True, False, None])})
tool = st.fixed_dictionaries({"type": pool((12, ["function"]), (1, ["custom", "web_search"])),
                              "function": function_def})
tools = weighted((12, st.lists(tool, min_size=1, max_size=3)), (1, st.just([])))
named_function = st.fixed_dictionaries({"type": st.just("function"),
                                        "function": st.fixed_dictionaries({"name": names})})
tool_choice = weighted(
    (6, st.sampled_from(["none", "auto", "required"])),
    (4, named_function),
    (3, st.fixed_dictionaries({"type": st.just("allowed_tools"), "allowed_tools": st.fixed_dictionaries(
        {"mode": st.sampled_from(["auto", "required", "bogus"]), "tools": st.lists(named_function, max_size=3)})})),
    # well-typed for pydantic (a string or an object), wrong for OpenAI: they reach the translator's own checks
    (2, st.sampled_from(["bogus", "", {}, {"type": "function"}, {"type": "function", "function": "f"},
                         {"type": "function", "function": {"name": 5}}, {"type": "function", "function": None},
                         {"type": "allowed_tools"}, {"type": "allowed_tools", "allowed_tools": "x"},
                         {"type": "allowed_tools", "allowed_tools": {"tools": "f"}},
                         {"type": "allowed_tools", "allowed_tools": {"tools": [1]}},
                         {"type": "allowed_tools", "allowed_tools": {"tools": [{"function": "f"}]}},
                         {"type": "allowed_tools", "allowed_tools": {"tools": [{"function": {"name": 5}}]}},
                         {"type": "allowed_tools", "allowed_tools": {"tools": [{"function": {"name": None}}]}},
                         {"type": "custom", "custom": {"name": "f"}}])),
)
schema = pool((8, [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                   {"type": "array", "items": {"type": "string"}}, {"type": "string"}, {}]),
              (2, [{"type": ["object", "null"]}, {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                   {"type": "object", "properties": 1}, {"$ref": "#/$defs/x"}, {"type": 5}]))
response_format = weighted(
    (4, st.sampled_from([{"type": "text"}, {"type": "json_object"}])),
    (4, st.fixed_dictionaries({"type": st.just("json_schema"), "json_schema": st.fixed_dictionaries(
        {"name": st.sampled_from(["answer", "é"]), "schema": schema},
        optional={"strict": st.booleans(), "description": text})})),
    (1, st.sampled_from([{"type": "json_schema", "json_schema": {"name": "x"}}, {"type": "json_schema"}])),
)


def field(good: st.SearchStrategy, odd: list) -> st.SearchStrategy:
    return weighted((8, good), (2, st.sampled_from(odd))) if odd else good


# each optional top-level field: mostly valid values, with the edge and out-of-range ones mixed in
FIELDS: dict[str, st.SearchStrategy] = {
    "temperature": field(st.floats(0, 2), [0, 1, 2, 1.0000001, -0.0, 1e-300, 2.0000001, -1, 3]),
    "top_p": field(st.floats(0, 1), [0, 1, 1.5, -0.1]),
    "max_tokens": field(st.integers(1, 200_000), [1, 1023, 1024, 1025, 2048, 10 ** 20, 1.0, 0, -1]),
    "max_completion_tokens": field(st.integers(1, 200_000), [1, 1024, 1025, 64_000, 64_001, 2 ** 63, 0]),
    "stop": field(st.one_of(text, st.lists(text, max_size=5)), [[], [""], [" ", "\n\t"], ["a"] * 5, "\u3000"]),
    "n": st.sampled_from([None, 1, 1, 1.0, 2, 0, -1, 128]),
    "logprobs": st.sampled_from([None, False, False, True]),
    "top_logprobs": st.sampled_from([None, 0, 0, 5]),
    "logit_bias": st.sampled_from([None, {}, {}, {"50256": -100}]),
    "reasoning_effort": field(st.sampled_from(["none", "minimal", "low", "medium", "high", "xhigh", "max"]),
                              [None, "bogus", "", "HIGH"]),
    "stream": st.sampled_from([True, True, True, False, None]),
    "stream_options": st.sampled_from([{"include_usage": True}, {"include_usage": False},
                                       {"include_obfuscation": False}, None]),
    "user": field(text, ["a@b.com", "+1 555 123 4567", "user-1", "\ud800"]),
    "safety_identifier": field(text, ["someone@example.com", "\ud83d"]),
    "tools": tools,
    "tool_choice": tool_choice,
    "parallel_tool_calls": st.sampled_from([True, False, None]),
    "response_format": response_format,
    "modalities": st.sampled_from([None, ["text"], ["text"], ["text", "audio"], []]),
    "audio": st.sampled_from([None, None, {"voice": "alloy", "format": "wav"}]),
    "functions": st.sampled_from([None, [], [{"name": "f"}]]),
    "function_call": st.sampled_from([None, None, "auto", {"name": "f"}]),
    "web_search_options": st.sampled_from([None, {}, {"search_context_size": "low"}]),
    "prompt_cache_options": st.sampled_from([{"ttl": "1h"}, {"ttl": "24h"}, {"ttl": "5m"}, {}, None]),
    "prompt_cache_key": text,
    "seed": st.integers(),
    "frequency_penalty": st.floats(-2, 2),
    "metadata": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
    "store": st.booleans(),
    "service_tier": st.sampled_from(["auto", "default", "flex"]),
    "verbosity": st.sampled_from(["low", "medium", "high"]),
    "prediction": st.just({"type": "content", "content": "x"}),
    "some_future_field": junk,
}
# the fields that drive the most code come up more often
MAIN_FIELDS = ["tools", "tool_choice", "stream", "response_format", "reasoning_effort", "max_tokens",
               "parallel_tool_calls"]
field_name = pool((6, ["tools"]), (4, ["tool_choice"]), (4, ["stream"]), (3, ["response_format"]),
                  (3, ["reasoning_effort"]), (3, ["max_tokens"]), (2, ["parallel_tool_calls"]),
                  (20, sorted(set(FIELDS) - set(MAIN_FIELDS))))
model = pool((20, ["gpt-4o", "gpt-4o-mini", "o3", "claude-sonnet-4-5@20250929", "claude-opus-4-6"]),
             (2, ["claude-x", "claude-3-5-haiku@20241022", "gpt-3.5-turbo", " ", "GPT-4O", "claude-\ud800",
                  "claude-a/b?c#d", "claude-" + "x" * 300, "gpt-4o\n"]))


@st.composite
def plausible_body(draw) -> dict:
    body: dict = {"model": draw(model), "messages": draw(conversation)}
    for _ in range(draw(st.integers(0, 6))):  # a few optional fields
        name = draw(field_name)
        body[name] = draw(FIELDS[name])
    return body


def _containers(node: object) -> list:
    """The non-empty dicts and lists directly inside `node`."""
    values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return [v for v in values if isinstance(v, (dict, list)) and v]


@st.composite
def mutated_body(draw) -> dict:
    """A plausible body with one to three mutations, each at a random depth: a key dropped or replaced, a list
    element dropped, replaced or inserted."""
    body = copy.deepcopy(draw(plausible_body()))  # sampled values are shared: never mutate them in place
    for _ in range(draw(st.integers(1, 3))):
        node: dict | list = body
        for _ in range(draw(pool((6, [3, 2, 1, 4, 5, 6, 7]), (1, [0])))):  # top-level fields now and then
            inner = _containers(node)
            if not inner:
                break
            node = inner[draw(st.integers(0, len(inner) - 1))]
        op = draw(st.integers(0, 2))
        if isinstance(node, dict):
            key = draw(st.sampled_from(sorted(node))) if node and op < 2 else draw(st.sampled_from(KEYS))
            if op == 0:
                node.pop(key, None)
            else:
                node[key] = draw(mutation_value)
        elif node:
            i = draw(st.integers(0, len(node) - 1))
            if op == 0:
                del node[i]
            elif op == 1:
                node[i] = draw(mutation_value)
            else:
                node.insert(i, draw(mutation_value))
    return body


RAW_BODIES = [b"", b"{", b"{nope", b"null", b"[]", b'"str"', b"1", b"true", b"\xff\xfe\x00", b"\x00" * 8,
              b'{"model": "gpt-4o"}', b'{"messages": []}', b'{"model": "gpt-4o", "messages": {}}',
              b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":NaN}',
              b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"top_p":-Infinity}',
              b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":1e400}',
              b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":1e3}',
              b'{"model":"gpt-4o","model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}',
              b'{"model":"gpt-4o","messages":[{"role":"user","content":"\\ud800"}]}',
              b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi\\u0000"}]}',
              b'\xef\xbb\xbf{"model":"gpt-4o","messages":[{"role":"user","content":"bom"}]}',
              '{"model":"gpt-4o","messages":[{"role":"user","content":"utf-16"}]}'.encode("utf-16"),
              b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]} trailing']


@st.composite
def raw_body(draw) -> bytes:
    """Bytes that are not a (well-formed) JSON object: fixed oddities, truncations, deep nesting."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.sampled_from(RAW_BODIES))
    if kind == 1:  # a plausible body cut anywhere
        whole = json.dumps(draw(plausible_body())).encode()
        return whole[:draw(st.integers(0, max(0, len(whole) - 1)))]
    if kind == 2:  # nesting deeper than a JSON parser's recursion
        depth = draw(st.sampled_from([50, 900, 5_000, 20_000, 100_000]))
        where = draw(st.sampled_from(["top", "metadata", "parameters"]))
        deep = b"[" * depth + b"]" * depth
        if where == "top":
            return deep
        if where == "metadata":
            return b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"metadata":' + deep + b"}"
        return (b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function",'
                b'"function":{"name":"f","parameters":{"x":' + deep + b"}}}]}")
    return draw(st.binary(max_size=40))


class Body(bytes):
    """A request body whose repr stays readable in failure reports (some are 200 KB)."""

    def __repr__(self) -> str:
        text = bytes.__repr__(self)
        return text if len(text) <= 3000 else f"{text[:3000]}... ({len(self)} bytes)"

    def _repr_pretty_(self, printer, cycle) -> None:  # how hypothesis prints a failing example
        printer.text(repr(self))


@st.composite
def request_bytes(draw) -> Body:
    kind = draw(st.integers(0, 19))
    if kind < 18:
        body = draw(plausible_body() if kind < 11 else mutated_body())
        if draw(st.integers(0, 9)) == 0:  # raw non-ASCII (and surrogates as CESU-8 bytes) instead of \u escapes
            return Body(json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        return Body(json.dumps(body).encode())
    if kind == 18:
        return Body(json.dumps(draw(junk)).encode())  # JSON, but rarely an object
    return Body(draw(raw_body()))


# How the request reaches the hook: the mode, target and path a client could use.
ROUTES = [
    {},  # regular proxy, api.openai.com over TLS
    {"path": "/chat/completions"},  # a base URL without /v1
    {"path": "/v1/chat/completions/"},
    {"path": "/v1/chat/completions?api-version=1"},
    {"mode": "reverse:https://api.openai.com"},
    {"host": "127.0.0.1", "port": 8080, "scheme": "http"},  # straight at the listener
]
ENCODINGS = [None, None, None, None, "gzip", "identity", "bogus", "gzip-bad"]


def make_flow(content: bytes, path="/v1/chat/completions", host="api.openai.com", port=443, scheme="https",
              mode="regular", encoding=None):
    headers = [(b"authorization", f"Bearer {CLIENT_KEY}".encode()), (b"openai-organization", b"org-1"),
               (b"x-stainless-os", b"Linux"), (b"content-type", b"application/json"), (b"cookie", b"c=1")]
    if encoding == "gzip":
        content = gzip.compress(content)
    if encoding:
        headers.append((b"content-encoding", b"gzip" if encoding == "gzip-bad" else encoding.encode()))
    f = tflow.tflow(req=tutils.treq(method=b"POST", host=host, port=port, scheme=scheme.encode(), path=path.encode(),
                                    content=content, headers=tuple(headers)))
    f.client_conn.proxy_mode = ProxyMode.parse(mode)
    f.client_conn.sockname = ("127.0.0.1", 8080)
    return f


# --- what Vertex accepts --------------------------------------------------------------------------------------

def _reject_constant(name: str):
    raise ValueError(f"not strict JSON: {name}")


def _text_problems(blocks: object, where: str) -> list[str]:
    out = []
    if isinstance(blocks, list):
        for j, b in enumerate(blocks):
            if isinstance(b, dict) and b.get("type") == "text":
                t = b.get("text")
                if not isinstance(t, str) or not t.strip():
                    out.append(f"{where}[{j}]: empty or whitespace-only text block {t!r}")
    return out


def _encodable(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode()
        return True
    except UnicodeEncodeError:
        return False


def vertex_body_notes(body: dict) -> list[str]:
    """What Vertex will probably refuse (its 400 then reaches the client as an OpenAI 400) but no rule in the
    shared notes covers, and the client caused: counted in the tallies, not failed."""
    notes = []
    if not _encodable(body):
        notes.append("note: sent with a lone surrogate (\\ud800 escape)")
    blocks = [b for m in body.get("messages") or [] for b in m.get("content") or []]
    blocks += [x for b in blocks if b.get("type") == "tool_result" and isinstance(b.get("content"), list)
               for x in b["content"]]
    for b in blocks:
        if b.get("type") in ("image", "document") and b.get("source", {}).get("type") == "base64":
            try:
                if not base64.b64decode(b["source"]["data"], validate=True):
                    raise ValueError("empty")
            except ValueError:
                notes.append("note: sent image/document data that is not base64")
                break
    marked = [b for b in [*blocks, *(body.get("system") or []), *(body.get("tools") or [])] if "cache_control" in b]
    if len(marked) > 4:
        notes.append("note: sent more than 4 cache_control breakpoints")
    return notes


def vertex_body_problems(body: object, vertex_model: str, version: str, *,
                         url_images: frozenset[str] = frozenset()) -> list[str]:
    """Every rule of Claude-on-Vertex's request body (shared notes) that `body` breaks; [] when it is valid."""
    if not isinstance(body, dict):
        return ["body is not an object"]
    p: list[str] = []
    allowed = {"anthropic_version", "messages", "system", "max_tokens", "temperature", "top_p", "top_k",
               "stop_sequences", "stream", "metadata", "tools", "tool_choice", "thinking"}
    p += [f"unexpected key {k!r}" for k in body if k not in allowed]  # includes `model`
    if body.get("anthropic_version") != version:
        p.append(f"anthropic_version {body.get('anthropic_version')!r}")
    mt = body.get("max_tokens")
    if type(mt) is not int or not 1 <= mt <= models.output_cap(vertex_model):
        p.append(f"max_tokens {mt!r} (cap {models.output_cap(vertex_model)})")

    p += _text_problems(body.get("system"), "system")
    if "system" in body and not (isinstance(body["system"], list) and body["system"]):
        p.append(f"system {body['system']!r}")

    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return p + [f"messages {msgs!r}"]
    seen_ids: set[str] = set()
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or set(m) != {"role", "content"} or m["role"] not in ("user", "assistant"):
            p.append(f"{where}: malformed turn {str(m)[:200]}")
            continue
        if i and isinstance(msgs[i - 1], dict) and msgs[i - 1].get("role") == m["role"]:
            p.append(f"{where}: two {m['role']} turns in a row")
        blocks = m["content"]
        if not isinstance(blocks, list) or not blocks:
            p.append(f"{where}: empty content")
            continue
        p += _text_problems(blocks, f"{where}.content")
        prev = msgs[i - 1] if i and isinstance(msgs[i - 1], dict) else {}
        asked = {b.get("id") for b in prev.get("content") or []
                 if isinstance(b, dict) and b.get("type") == "tool_use"} if prev.get("role") == "assistant" else set()
        results_done = False
        for j, b in enumerate(blocks):
            bw = f"{where}.content[{j}]"
            if not isinstance(b, dict) or "type" not in b:
                p.append(f"{bw}: not a block")
                continue
            kind = b["type"]
            if kind == "tool_use":
                if m["role"] != "assistant":
                    p.append(f"{bw}: tool_use in a user turn")
                ident, name = b.get("id"), b.get("name")
                if not isinstance(ident, str) or not TOOL_ID.fullmatch(ident):
                    p.append(f"{bw}: tool_use id {ident!r} does not match ^[a-zA-Z0-9_-]+$")
                elif ident in seen_ids:
                    p.append(f"{bw}: tool_use id {ident!r} is not unique")
                else:
                    seen_ids.add(ident)
                if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
                    p.append(f"{bw}: tool_use name {name!r} does not match ^[a-zA-Z0-9_-]{{1,128}}$")
                if not isinstance(b.get("input"), dict):
                    p.append(f"{bw}: tool_use input {b.get('input')!r}")
            elif kind == "tool_result":
                if m["role"] != "user":
                    p.append(f"{bw}: tool_result in an assistant turn")
                if results_done:
                    p.append(f"{bw}: tool_result after other content in its turn")
                ident = b.get("tool_use_id")
                if not isinstance(ident, str) or not TOOL_ID.fullmatch(ident):
                    p.append(f"{bw}: tool_use_id {ident!r} does not match ^[a-zA-Z0-9_-]+$")
                if ident not in asked:
                    p.append(f"{bw}: tool_result {ident!r} answers no tool_use of the preceding assistant turn")
                inner = b.get("content", "")
                if isinstance(inner, list):
                    p += _text_problems(inner, f"{bw}.content")
                    for k, x in enumerate(inner):
                        if not isinstance(x, dict) or x.get("type") not in ("text", "image", "document"):
                            p.append(f"{bw}.content[{k}]: {str(x)[:100]} not allowed in a tool_result")
                        elif x["type"] == "image":
                            p += _source_problems(x, f"{bw}.content[{k}]", url_images)
                elif not isinstance(inner, str):
                    p.append(f"{bw}: tool_result content {inner!r}")
            else:
                results_done = True
                if kind == "image":
                    p += _source_problems(b, bw, url_images)
                elif kind in ("thinking", "redacted_thinking"):
                    if m["role"] != "assistant":
                        p.append(f"{bw}: {kind} block in a user turn")
                elif kind not in ("text", "document"):
                    p.append(f"{bw}: unknown block type {kind!r}")
        # every tool_use is answered in the very next turn
        if m["role"] == "assistant":
            uses = [b.get("id") for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
            nxt = msgs[i + 1] if i + 1 < len(msgs) and isinstance(msgs[i + 1], dict) else None
            answered = {b.get("tool_use_id") for b in (nxt or {}).get("content") or []
                        if isinstance(b, dict) and b.get("type") == "tool_result"}
            if nxt is not None and any(u not in answered for u in uses):
                p.append(f"{where}: tool_use without a tool_result in the next turn")

    tool_names = []
    for k, t in enumerate(body.get("tools") or []):
        name = t.get("name") if isinstance(t, dict) else None
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            p.append(f"tools[{k}].name {name!r} does not match ^[a-zA-Z0-9_-]{{1,128}}$")
        if not isinstance(t, dict) or not isinstance(t.get("input_schema"), dict):
            p.append(f"tools[{k}]: input_schema is not an object")
        tool_names.append(name)
    if len(set(tool_names)) != len(tool_names):
        p.append(f"duplicate tool names {tool_names}")
    if "tools" in body and not body["tools"]:
        p.append("tools is empty")
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            p.append(f"tool_choice {choice!r}")
        elif choice["type"] == "tool" and choice.get("name") not in tool_names:
            p.append(f"tool_choice names {choice.get('name')!r}, not a tool")
        elif choice["type"] in ("auto", "any", "tool") and not tool_names:
            p.append(f"tool_choice {choice['type']} without tools")

    sampling = [k for k in ("temperature", "top_p", "top_k") if k in body]
    if sampling and version == "2026-10-21":
        p.append(f"{sampling} sent with anthropic_version 2026-10-21")
    for key in ("temperature", "top_p"):
        if key in body:
            v = body[key]
            if type(v) not in (int, float) or not math.isfinite(v) or not 0 <= v <= 1:
                p.append(f"{key} {v!r} outside 0..1")
    if "temperature" in body and "top_p" in body and models.base_id(vertex_model).startswith(SAMPLING_EXCLUSIVE):
        p.append("temperature and top_p together for a model that rejects the pair")

    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or any(not isinstance(s, str) or not s.strip() for s in stops):
        p.append(f"stop_sequences {stops!r}: empty or whitespace-only")

    if "thinking" in body:
        th = body["thinking"]
        budget = th.get("budget_tokens") if isinstance(th, dict) else None
        if not isinstance(th, dict) or th.get("type") != "enabled" or type(budget) is not int \
                or budget < 1024 or type(mt) is not int or budget >= mt:
            p.append(f"thinking {th!r} with max_tokens {mt!r}")
        if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
            p.append("thinking with a forced tool_choice")
        if sampling:
            p.append(f"{sampling} with thinking")
        last = msgs[-1]
        if isinstance(last, dict) and any(isinstance(b, dict) and b.get("type") == "tool_result"
                                          for b in last.get("content") or []):
            first = (msgs[-2].get("content") or [{}])[0] if len(msgs) > 1 and isinstance(msgs[-2], dict) else {}
            if first.get("type") not in ("thinking", "redacted_thinking"):
                p.append("thinking on in a tool loop whose assistant turn does not start with its thinking")

    if "metadata" in body:
        uid = body["metadata"].get("user_id") if isinstance(body["metadata"], dict) else None
        if not isinstance(uid, str) or EMAIL.search(uid) or re.fullmatch(r"\+?[\d\s().-]{7,}", uid):
            p.append(f"metadata {body['metadata']!r}")
    if "stream" in body and body["stream"] is not True:
        p.append(f"stream {body['stream']!r}")
    return p


def _source_problems(block: dict, where: str, url_images: frozenset[str]) -> list[str]:
    src = block.get("source")
    if not isinstance(src, dict):
        return [f"{where}: image without a source"]
    if src.get("type") == "url" and src.get("url") in url_images:
        return []  # pure translator only: the hook fetches and inlines these before sending
    if src.get("type") != "base64" or src.get("media_type") not in IMAGE_TYPES or not isinstance(src.get("data"), str):
        return [f"{where}: image source {str(src)[:120]} is not base64 png/jpeg/gif/webp"]
    return []


def error_problems(status: int, content: bytes) -> list[str]:
    if not 400 <= status < 500:
        return [f"status {status}: {content[:300]!r}"]
    try:
        err = json.loads(content)
        validate_error(err)
    except (ValueError, AssertionError) as e:
        return [f"error body is not an OpenAI ErrorResponse: {e}"]
    message = err["error"].get("message")
    if not isinstance(message, str) or not message.strip():
        return [f"empty error message: {err}"]
    return []


class FakeVertex:
    """Vertex AI on 127.0.0.1 (HTTP/1.1, keep-alive): records every call and answers 200 with a small Claude
    message (a call of the request's first tool when it has tools, so tool names are restored on the way back)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], bytes]] = []  # (path, headers, body)
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                self.calls.append((lines[0].split(" ")[1], headers, body))
                answer = json.dumps(self.answer(body)).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                             % len(answer) + answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @staticmethod
    def answer(raw: bytes) -> dict:
        content: list[dict] = [{"type": "text", "text": "ok"}]
        try:
            tools = json.loads(raw).get("tools") or []
        except (ValueError, AttributeError):
            tools = []
        if tools and isinstance(tools[0], dict):
            content.append({"type": "tool_use", "id": "toolu_fuzz", "name": tools[0].get("name"),
                            "input": {"value": "ok"}})
        return {"id": "msg_vrtx_fuzz", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
                "content": content, "stop_reason": "tool_use" if tools else "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 3, "output_tokens": 1}}


def _headers_problems(headers: dict[str, str], token_required: bool) -> list[str]:
    p = []
    if token_required and headers.get("authorization") != f"Bearer {TOKEN}":
        p.append(f"authorization {headers.get('authorization')!r} is not the static token")
    leaked = [k for k in headers if k.startswith(("openai-", "x-stainless", "cookie"))]
    if leaked or CLIENT_KEY in json.dumps(headers):
        p.append(f"the client's headers would reach Vertex: {leaked or 'its key'}")
    return p


def flow_problems(flow, origin: tuple[str, int], calls: list, translate: Translate, vertex_port: int) -> list[str]:
    """What is wrong with a flow after the request hooks ran (see the module docstring); [] when nothing.
    `calls`: what reached the fake Vertex while they ran."""
    ex = flow.metadata.get("modelmux")
    if ex is None:  # not sent to Vertex: it must be a local OpenAI 4xx
        if flow.response is None:
            return [f"neither answered nor sent to Vertex: the request still goes to {flow.request.url}"]
        p = error_problems(flow.response.status_code, flow.response.content or b"")
        if (flow.request.host, flow.request.port) != origin:
            p.append(f"answered locally but redirected to {flow.request.url}")
        if calls:
            p.append(f"answered locally after {len(calls)} call(s) to Vertex")
        if not p:
            COUNTS[f"answered {flow.response.status_code} locally"] += 1
        return p

    if flow.response is None:  # rewritten: the body goes out with the flow (to modelmux's relay, or to Vertex)
        if flow.request.host != "127.0.0.1" or flow.request.scheme != "http":
            return [f"a translated request goes to {flow.request.url}, not to the loopback relay / Vertex"]
        path, raw, how = flow.request.path, flow.request.content, "rewritten"
        headers = {k.lower(): v for k, v in flow.request.headers.items()}
        p = _headers_problems(headers, token_required=flow.request.port == vertex_port)
        if hasattr(translate, "error"):
            translate.error(flow)  # the flow goes no further here: let the relay drop its plan
    else:  # called from the hook itself: exactly one call reached Vertex
        if len(calls) != 1:
            return [f"answered {flow.response.status_code} after {len(calls)} calls to Vertex (expected 1)"]
        path, headers, raw = calls[0]
        how = "sent from the hook"
        p = _headers_problems(headers, token_required=True)
    if not path.startswith(VERTEX_PATH) or not path.endswith((":rawPredict", ":streamRawPredict")):
        p.append(f"Vertex path {path}")
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as e:
        return p + [f"the Vertex body is not strict JSON: {e}"]
    p += vertex_body_problems(body, ex["vertex_model"], VERSION)
    if not p:
        COUNTS.update(vertex_body_notes(body))
    if bool(body.get("stream")) != path.endswith(":streamRawPredict"):
        p.append(f"stream {body.get('stream')!r} sent to {path.rsplit(':', 1)[-1]}")
    if flow.response is not None and not p:  # the answer the client gets
        translate.responseheaders(flow)
        translate.response(flow)
        try:
            if flow.response.status_code != 200:
                raise AssertionError(flow.response.content[:500])
            validate_completion(json.loads(flow.response.content))
        except (ValueError, AssertionError) as e:
            p.append(f"the client's answer ({flow.response.status_code}) is not a chat.completion: {e}")
    if not p:
        COUNTS[f"{how} for Vertex"] += 1
    return p


# --- the tests ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    runtime = Runtime()
    runtime.thinking.put(KEPT_ID, KEPT_THINKING)
    addons = make_addons(runtime)
    fake = FakeVertex()
    with taddons.context(Proxyserver(), *addons) as tctx:
        loop = tctx.master.event_loop
        loop.run_until_complete(fake.start())
        path = tmp_path_factory.mktemp("fuzz") / "modelmux.yaml"
        path.write_text(CONFIG.format(port=fake.port, token=TOKEN))
        tctx.configure(next(a for a in addons if isinstance(a, ConfigLoader)), listen_host="127.0.0.1",
                       confdir=str(path.parent), modelmux_config=str(path))
        assert runtime.current is not None and runtime.current.config.images.allow_private_networks is False
        yield loop, addons, fake
        translate = next(a for a in addons if isinstance(a, Translate))
        if hasattr(translate, "done"):
            loop.run_until_complete(translate.done())
        loop.run_until_complete(runtime.close())  # what the proxy's shutdown does: settles the spend still pending
        fake.server.close()
        loop.run_until_complete(fake.server.wait_closed())


async def in_loop(fn, *args):
    """Runs a synchronous hook where mitmproxy runs it: on the event loop (end-of-exchange work schedules tasks)."""
    return fn(*args)


async def run_request_hooks(addons, flow) -> None:
    for a in addons:
        if hasattr(a, "request"):
            result = a.request(flow)
            if inspect.isawaitable(result):  # mitmproxy awaits async hooks too
                await result


FUZZ = settings(deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                       HealthCheck.large_base_example])


@settings(FUZZ, max_examples=HOOK_EXAMPLES)
@given(raw=request_bytes(), route=st.sampled_from(ROUTES), encoding=st.sampled_from(ENCODINGS))
def test_request_hooks_answer_4xx_or_send_a_valid_vertex_body(chain, raw, route, encoding):
    loop, addons, fake = chain
    COUNTS["bodies"] += 1
    # image URLs on port 9 of loopback addresses point at the fake Vertex instead: a fetch would show as a call
    flow = make_flow(raw.replace(b":9/", b":%d/" % fake.port), encoding=encoding, **route)
    origin = (flow.request.host, flow.request.port)
    fake.calls.clear()
    # an exception escaping a hook fails the example as it is: mitmproxy would log it and forward the request
    loop.run_until_complete(asyncio.wait_for(run_request_hooks(addons, flow), timeout=30))
    translate = next(a for a in addons if isinstance(a, Translate))
    problems = loop.run_until_complete(in_loop(flow_problems, flow, origin, list(fake.calls), translate, fake.port))
    assert not problems, "\n".join([f"body: {raw!r}", *problems])


def thinking_lookup(ident: str):
    return KEPT_THINKING if ident == KEPT_ID else None


@settings(FUZZ, max_examples=PURE_EXAMPLES)
@given(raw=request_bytes(), vertex_model=st.sampled_from(sorted(models.OUTPUT_CAPS) + ["claude-x"]),
       version=st.sampled_from(VERSIONS))
def test_translator_raises_4xx_or_builds_a_valid_vertex_body(raw, vertex_model, version):
    COUNTS["pure: bodies"] += 1
    try:
        vreq = to_vertex_body(parse_request(raw), vertex_model, version, thinking_for=thinking_lookup)
    except OpenAIError as err:
        problems = error_problems(err.status, err.body_bytes())
        COUNTS[f"pure: raised {err.status}"] += 1
    else:
        try:
            body = json.loads(json.dumps(vreq.body), parse_constant=_reject_constant)
        except ValueError as e:
            problems = [f"the Vertex body is not strict JSON: {e}"]
        else:
            problems = vertex_body_problems(body, vertex_model, version, url_images=frozenset(vreq.image_urls))
            if not problems:
                COUNTS.update(f"pure: {note}" for note in vertex_body_notes(body))
        if vreq.stream != bool(vreq.body.get("stream")):
            problems.append("VertexRequest.stream disagrees with the body")
        COUNTS["pure: built"] += 1
    assert not problems, "\n".join([f"body: {raw!r}", f"model {vertex_model}, version {version}", *problems])


# --- bad input parity (issue 10, point 7) --------------------------------------------------------------------
# Bodies that are served but for one value OpenAI refuses (a boolean as a number, a wrong type, out of range, an
# oversize metadata map, an unknown enum value, a mis-shaped tool or content part): each must be answered locally
# with a 400 naming that parameter, never sent to Vertex. And the same bodies with only values OpenAI accepts in
# those fields must be served: the checks refuse no more than OpenAI does.

PARITY_EXAMPLES = 1_000
SERVED_EXAMPLES = 400
PLAIN_ENCODINGS = [None, None, "gzip", "identity"]

short_text = st.text(max_size=12)
# every field a served body may carry, with values OpenAI accepts (null is "not given")
VALID_FIELDS: dict[str, st.SearchStrategy] = {
    "temperature": st.floats(0, 2), "top_p": st.floats(0, 1),
    "frequency_penalty": st.floats(-2, 2), "presence_penalty": st.floats(-2, 2),
    "seed": st.integers(-2 ** 63, 2 ** 63 - 1), "max_tokens": st.integers(1, 10 ** 6),
    "max_completion_tokens": st.integers(1, 10 ** 6) | st.integers(1, 1000).map(float),
    "n": st.just(1), "top_logprobs": st.just(0), "logprobs": st.just(False), "logit_bias": st.just({}),
    "metadata": st.dictionaries(short_text, short_text, max_size=4)
    | st.just({f"{i:0>64}": "v" * 512 for i in range(16)}),  # OpenAI's limits, exactly
    "store": st.booleans(), "stream": st.booleans(), "parallel_tool_calls": st.booleans(),
    "service_tier": st.sampled_from(["auto", "default", "flex", "scale", "priority", "fast"]),
    "verbosity": st.sampled_from(["low", "medium", "high"]),
    "reasoning_effort": st.sampled_from(["none", "minimal", "low", "medium", "high", "xhigh", "max"]),
    "prompt_cache_retention": st.sampled_from(["in_memory", "24h"]),
    "prompt_cache_options": st.fixed_dictionaries({}, optional={"ttl": st.just("30m"),
                                                                "mode": st.sampled_from(["implicit", "explicit"])}),
    "user": short_text, "prompt_cache_key": short_text, "safety_identifier": short_text | st.just("s" * 64),
    "stop": short_text | st.lists(short_text, min_size=1, max_size=4),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans(),
                                                          "include_obfuscation": st.booleans()}),
    "modalities": st.just(["text"]), "web_search_options": st.just({}),
    "prediction": st.fixed_dictionaries({"type": st.just("content"), "content": short_text}),
    "moderation": st.fixed_dictionaries({"model": short_text}),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
    "tools": st.just([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]),
}
valid_field_value = {name: weighted((9, strat), (1, st.none())) for name, strat in VALID_FIELDS.items()}

any_json = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
                     st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _not(*kinds: type) -> st.SearchStrategy:
    """A JSON value of none of these Python types (bool is not int here), never null (null is "not given")."""
    def other(v: object) -> bool:
        if v is None:
            return False
        if isinstance(v, bool):
            return bool not in kinds
        return not isinstance(v, kinds)
    return any_json.filter(other)


def cases_for(field: str, klass: str, values: st.SearchStrategy, param: str | None = None) -> st.SearchStrategy:
    """(class, field, value, param OpenAI names): `field` set to each value, on an otherwise served body."""
    return values.map(lambda v: (klass, field, v, param or field))


fractional = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
NUMBER_RANGES = {"temperature": (0, 2), "top_p": (0, 1), "frequency_penalty": (-2, 2), "presence_penalty": (-2, 2)}
INTEGER_RANGES = {"seed": (-2 ** 63, 2 ** 63 - 1), "n": (1, 128), "top_logprobs": (0, 20), "max_tokens": (None, None),
                  "max_completion_tokens": (None, None)}
ENUMS = {"service_tier": ["auto", "default", "flex", "scale", "priority", "fast"], "verbosity": ["low", "medium", "high"],
         "reasoning_effort": ["none", "minimal", "low", "medium", "high", "xhigh", "max"],
         "prompt_cache_retention": ["in_memory", "24h"]}
BAD: list[st.SearchStrategy] = []
for _f, (_lo, _hi) in NUMBER_RANGES.items():
    BAD += [cases_for(_f, "boolean as a number", st.booleans()),
            cases_for(_f, "wrong type", _not(int, float)),
            cases_for(_f, "out of range", st.floats(_hi, exclude_min=True, allow_infinity=False)
                      | st.floats(max_value=_lo, exclude_max=True, allow_infinity=False) | st.integers(_hi + 1))]
for _f, (_lo, _hi) in INTEGER_RANGES.items():
    BAD += [cases_for(_f, "boolean as a number", st.booleans()),
            cases_for(_f, "wrong type", _not(int, float) | fractional)]
    if _hi is not None:
        BAD.append(cases_for(_f, "out of range", st.integers(_hi + 1) | st.integers(max_value=_lo - 1)))
for _f in ("store", "stream", "logprobs", "parallel_tool_calls"):
    BAD += [cases_for(_f, "number as a boolean", st.integers(0, 1)), cases_for(_f, "wrong type", _not(bool))]
for _f in ("user", "prompt_cache_key", "safety_identifier"):
    BAD.append(cases_for(_f, "wrong type", _not(str)))
for _f, _choices in ENUMS.items():
    BAD += [cases_for(_f, "not in the enum", st.text(max_size=8).filter(lambda t, c=_choices: t not in c)),
            cases_for(_f, "wrong type", _not(str))]
BAD += [
    cases_for("safety_identifier", "too long", st.integers(65, 300).map(lambda n: "s" * n)),
    cases_for("metadata", "wrong type", _not(dict)),
    cases_for("metadata", "oversize metadata", st.integers(17, 40).map(lambda n: {f"k{i}": "v" for i in range(n)})),
    cases_for("metadata", "oversize metadata", st.integers(65, 200).map(lambda n: {"k" * n: "v"})),
    st.tuples(st.text(min_size=1, max_size=8), st.integers(513, 2000)).map(
        lambda kv: ("oversize metadata", "metadata", {kv[0]: "v" * kv[1]}, f"metadata.{kv[0]}")),
    st.tuples(st.text(min_size=1, max_size=8), _not(str)).map(
        lambda kv: ("wrong type", "metadata", {kv[0]: kv[1]}, f"metadata.{kv[0]}")),
    st.tuples(st.integers(0, 10 ** 6), st.integers(101) | st.integers(max_value=-101)).map(
        lambda kv: ("out of range", "logit_bias", {str(kv[0]): kv[1]}, f"logit_bias.{kv[0]}")),
    cases_for("logit_bias", "wrong type", _not(dict)),
    cases_for("stop", "wrong type", _not(str, list)),
    cases_for("stop", "too many stop sequences", st.lists(short_text, min_size=5, max_size=8)),
    st.tuples(st.lists(short_text, max_size=3), _not(str)).map(
        lambda t: ("wrong type", "stop", [*t[0], t[1]], f"stop[{len(t[0])}]")),
    cases_for("stream_options", "wrong type", _not(dict)),
    cases_for("stream_options", "wrong type", _not(bool).map(lambda v: {"include_usage": v}),
              "stream_options.include_usage"),
    cases_for("modalities", "not in the enum", st.just(["video"]), "modalities[0]"),
    cases_for("prediction", "wrong type", _not(str, list).map(lambda v: {"type": "content", "content": v}),
              "prediction.content"),
    cases_for("response_format", "not in the enum", st.text(max_size=8).filter(
        lambda t: t not in ("text", "json_object", "json_schema")).map(lambda t: {"type": t}), "response_format.type"),
    cases_for("web_search_options", "wrong type", _not(dict)),
    cases_for("tools", "tool shape", _not(list)),
    cases_for("tools", "tool shape", _not(dict).map(lambda v: [v]), "tools[0]"),
    cases_for("tools", "tool shape", st.just([{"type": "function"}]), "tools[0].function"),
    cases_for("tools", "tool shape", _not(str).map(lambda v: [{"type": "function", "function": {"name": v}}]),
              "tools[0].function.name"),
    cases_for("tool_choice", "tool shape", _not(str, dict)),
    cases_for("messages", "content part", _not(str).map(
        lambda v: [{"role": "user", "content": [{"type": "text", "text": v}]}]), "messages[0].content[0].text"),
    cases_for("messages", "content part", _not(dict).map(lambda v: [{"role": "user", "content": [v]}]),
              "messages[0].content[0]"),
    cases_for("messages", "content part", _not(str, list).map(lambda v: [{"role": "user", "content": v}]),
              "messages[0].content"),
    cases_for("messages", "content part", _not(str).map(
        lambda v: [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": v}}]}]),
              "messages[0].content[0].image_url.url"),
]
bad_case = st.sampled_from(BAD).flatmap(lambda s: s)


@st.composite
def served_body(draw, without: str | None = None) -> dict:
    body: dict = {"model": draw(st.sampled_from(["gpt-4o", "gpt-4o-mini", "o3", "claude-opus-4-6"])),
                  "messages": [{"role": "user", "content": draw(st.sampled_from(PLAIN_TEXT))}]}
    names = sorted(set(VALID_FIELDS) - {without})
    for name in draw(st.lists(st.sampled_from(names), max_size=6, unique=True)):
        body[name] = draw(valid_field_value[name])
    return body


def _hook_flow(chain, body: dict, route: dict, encoding: str | None):
    loop, addons, fake = chain
    flow = make_flow(json.dumps(body).encode(), encoding=encoding, **route)
    fake.calls.clear()
    loop.run_until_complete(asyncio.wait_for(run_request_hooks(addons, flow), timeout=30))
    return flow, list(fake.calls)


@st.composite
def refused_body(draw) -> tuple[str, str, dict]:
    """(class, the parameter OpenAI names, a served body but for that one value)."""
    klass, field, value, param = draw(bad_case)
    return klass, param, {**draw(served_body(without=field)), field: value}


@settings(FUZZ, max_examples=PARITY_EXAMPLES)
@given(case=refused_body(), route=st.sampled_from(ROUTES), encoding=st.sampled_from(PLAIN_ENCODINGS))
def test_a_value_openai_refuses_is_a_400_naming_it_never_sent(chain, case, route, encoding):
    klass, param, body = case
    flow, calls = _hook_flow(chain, body, route, encoding)
    assert flow.response is not None and flow.metadata.get("modelmux") is None and not calls, \
        f"served: {body!r} ({klass})"
    problems = error_problems(flow.response.status_code, flow.response.content or b"")
    err = json.loads(flow.response.content)["error"]
    assert not problems and flow.response.status_code == 400 and err["param"] == param, \
        (f"{klass}: {body!r}", flow.response.status_code, err, problems)
    COUNTS[f"parity: 400 for {klass}"] += 1


@settings(FUZZ, max_examples=SERVED_EXAMPLES)
@given(body=served_body(), route=st.sampled_from(ROUTES), encoding=st.sampled_from(PLAIN_ENCODINGS))
def test_values_openai_accepts_are_served(chain, body, route, encoding):
    loop, addons, fake = chain
    flow, calls = _hook_flow(chain, body, route, encoding)
    assert flow.metadata.get("modelmux") is not None, \
        (body, flow.response and flow.response.status_code, flow.response and flow.response.content)
    translate = next(a for a in addons if isinstance(a, Translate))
    origin = ("api.openai.com", 443)
    problems = loop.run_until_complete(in_loop(flow_problems, flow, origin, calls, translate, fake.port))
    assert not problems, "\n".join([f"body: {body!r}", *problems])
    COUNTS["parity: served"] += 1


def test_zz_fuzz_counts():
    """Runs last: the issue's 10,000 bodies went through the hook path; the tallies go to the run's summary."""
    if not COUNTS["bodies"]:
        pytest.skip("the hook-path fuzz test did not run")
    report.add("fuzz tallies: " + ", ".join(f"{k}: {v}" for k, v in sorted(COUNTS.items())))
    assert COUNTS["bodies"] >= HOOK_EXAMPLES, \
        f"only {COUNTS['bodies']} bodies went through the hook path: did its fuzz test stop at a failure?"
    parity = sum(v for k, v in COUNTS.items() if k.startswith("parity: 400"))
    assert parity >= PARITY_EXAMPLES, f"only {parity} refused-value bodies were checked"
    assert {k for k in COUNTS if k.startswith("parity: 400")} >= {
        f"parity: 400 for {k}" for k in ("boolean as a number", "wrong type", "out of range", "oversize metadata")}
