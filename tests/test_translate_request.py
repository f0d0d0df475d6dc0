"""The request translator, field by field (docs/mapping.md); `pain N` names the item of
../shared/notes/pain-points.md a test proves."""

import json

import pytest

from modelmux.translate.errors import OpenAIError
from modelmux.translate.request import (JSON_TOOL, NO_RESULT_TEXT, claude_tool_id, claude_tool_name, inline_images,
                                        parse_request, to_vertex_body)

MODEL = "claude-sonnet-4-5@20250929"
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}


def body(**kw):
    base = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    base.update(kw)
    return json.dumps(base).encode()


def vertex(raw: bytes, model=MODEL, version="vertex-2023-10-16", thinking_for=None):
    return to_vertex_body(parse_request(raw), model, version, thinking_for=thinking_for)


def call(ident, name="get_weather", args='{"city": "Paris"}'):
    return {"id": ident, "type": "function", "function": {"name": name, "arguments": args}}


# --- pain 1: system and developer messages --------------------------------------------------------------------

def test_pain1_leading_system_and_developer_become_system_blocks():
    v = vertex(body(messages=[
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": [{"type": "text", "text": "use metric"}]},
        {"role": "user", "content": "hello"},
    ]))
    assert v.body["system"] == [{"type": "text", "text": "be brief"}, {"type": "text", "text": "use metric"}]
    assert v.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert "model" not in v.body and v.body["anthropic_version"] == "vertex-2023-10-16"


def test_pain1_a_late_system_message_keeps_the_earlier_prefix_byte_identical():
    history = [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"},
               {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}]
    before = vertex(body(messages=history)).body
    after = vertex(body(messages=[*history, {"role": "assistant", "content": "a2"},
                                  {"role": "developer", "content": "new rule"}, {"role": "user", "content": "u3"}])).body
    assert after["system"] == before["system"]
    assert after["messages"][:3] == before["messages"]
    assert after["messages"][-1]["content"] == [{"type": "text", "text": "<developer>\nnew rule\n</developer>"},
                                                {"type": "text", "text": "u3"}]


# --- pain 2 and 3: tools, tool_choice, names and ids ----------------------------------------------------------

BARE = {"type": "function", "function": {"name": "ping"}}  # no description, no parameters: valid OpenAI
WEATHER_FOR_CLAUDE = {"name": "get_weather", "description": "Weather for a city",
                      "input_schema": WEATHER["function"]["parameters"]}
PING_FOR_CLAUDE = {"name": "ping", "input_schema": {"type": "object", "properties": {}}}
ALLOWED_PING = {"type": "allowed_tools", "allowed_tools": {
    "mode": "required", "tools": [{"type": "function", "function": {"name": "ping"}}]}}


@pytest.mark.parametrize("kw, want_tools, want_choice", [
    pytest.param({"tools": [WEATHER, BARE]}, [WEATHER_FOR_CLAUDE, PING_FOR_CLAUDE], None, id="tools-no-choice"),
    pytest.param({"tools": [WEATHER, BARE], "tool_choice": "auto"}, None, {"type": "auto"}, id="auto"),
    pytest.param({"tools": [WEATHER, BARE], "tool_choice": "none"}, None, {"type": "none"}, id="none"),
    pytest.param({"tools": [WEATHER, BARE], "tool_choice": "required"}, None, {"type": "any"}, id="required"),
    pytest.param({"tools": [WEATHER, BARE], "tool_choice": {"type": "function", "function": {"name": "ping"}}}, None,
                 {"type": "tool", "name": "ping"}, id="named-function"),
    pytest.param({"tools": [WEATHER], "parallel_tool_calls": False}, None,
                 {"type": "auto", "disable_parallel_tool_use": True}, id="parallel-tool-calls-off"),
    pytest.param({"tools": [WEATHER, BARE], "tool_choice": ALLOWED_PING}, ["ping"], {"type": "any"},
                 id="allowed-tools"),
    pytest.param({"tools": [{"type": "function", "function": {**WEATHER["function"], "strict": True}}]},
                 [WEATHER_FOR_CLAUDE], None, id="strict-not-sent"),
])
def test_pain2_tools_and_tool_choice(kw, want_tools, want_choice):
    v = vertex(body(**kw)).body
    if want_tools is not None:
        got = v["tools"] if isinstance(want_tools[0], dict) else [t["name"] for t in v["tools"]]
        assert got == want_tools
    if want_choice is None:
        assert "tool_choice" not in v
    else:
        assert v["tool_choice"] == want_choice


@pytest.mark.parametrize("kw, param", [
    ({"tool_choice": "required"}, "tool_choice"),  # no tools
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice.function.name"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
    ({"functions": [{"name": "f"}]}, "functions"),
])
def test_pain2_invalid_tool_requests(kw, param):
    with pytest.raises(OpenAIError) as err:
        vertex(body(**kw))
    assert err.value.status == 400 and err.value.param == param


def test_pain3_names_and_ids_anthropic_rejects_are_mapped_deterministically():
    mcp = {"type": "function", "function": {"name": "github.search/issues:v2", "parameters": {"type": "object"}}}
    v = vertex(body(tools=[mcp], messages=[
        {"role": "user", "content": "find"},
        {"role": "assistant", "tool_calls": [call("functions.search:0", "github.search/issues:v2", "{}")]},
        {"role": "tool", "tool_call_id": "functions.search:0", "content": "3 issues"},
    ]))
    name = v.body["tools"][0]["name"]
    assert name == claude_tool_name("github.search/issues:v2") and name.startswith("github_search_issues_v2_")
    assert v.tool_names[name] == "github.search/issues:v2"
    use = v.body["messages"][1]["content"][0]
    result = v.body["messages"][2]["content"][0]
    assert use["name"] == name and use["id"] == result["tool_use_id"] == claude_tool_id("functions.search:0")
    assert claude_tool_name("a.b") != claude_tool_name("a_b")  # sanitising cannot merge two tools
    assert claude_tool_id("toolu_01ABC") == "toolu_01ABC" and claude_tool_name("get_weather") == "get_weather"


# --- pain 4 and 5: empty content, same-role runs, tool results --------------------------------------------------

def test_pain4_empty_content_never_becomes_an_empty_block():
    v = vertex(body(tools=[WEATHER], messages=[
        {"role": "user", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": None},
        {"role": "assistant", "content": [{"type": "text", "text": " "}], "tool_calls": [call("c1")]},
        {"role": "tool", "tool_call_id": "c1", "content": ""},
        {"role": "user", "content": "   "},
    ]))
    for turn in v.body["messages"]:
        for block in turn["content"]:
            assert block["type"] != "text" or block["text"].strip()
    assert v.body["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}}]}
    assert v.body["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "c1"}]


def test_pain5_tool_results_grouped_in_one_user_turn_and_a_following_user_message_joins_it():
    v = vertex(body(tools=[WEATHER], messages=[
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [call("c1"), call("c2", args='{"city": "Rome"}')]},
        {"role": "tool", "tool_call_id": "c2", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "rain"}]},
        {"role": "user", "content": "thanks, and Oslo?"},
    ]))
    turns = v.body["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert [b["type"] for b in turns[1]["content"]] == ["text", "tool_use", "tool_use"]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c2", "content": [{"type": "text", "text": "sunny"}]},
        {"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "rain"}]},
        {"type": "text", "text": "thanks, and Oslo?"}]


def test_pain5_a_tool_message_must_answer_the_previous_assistant_turn():
    with pytest.raises(OpenAIError) as err:
        vertex(body(messages=[{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "zz", "content": "r"}]))
    assert err.value.param == "messages[1].tool_call_id"


def test_pain6_a_call_without_result_gets_a_synthesized_error_result():
    v = vertex(body(tools=[WEATHER], messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [call("c1"), call("c2")]},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
        {"role": "user", "content": "never mind"},
    ]))
    results = v.body["messages"][2]["content"]
    assert results[1] == {"type": "tool_result", "tool_use_id": "c2", "is_error": True, "content": NO_RESULT_TEXT}
    assert results[2] == {"type": "text", "text": "never mind"}
    # also at the very end of the history
    v = vertex(body(tools=[WEATHER], messages=[{"role": "user", "content": "w?"},
                                               {"role": "assistant", "tool_calls": [call("c9")]}]))
    assert v.body["messages"][-1]["content"][0]["tool_use_id"] == "c9"


# --- pain 7: images ------------------------------------------------------------------------------------------

def test_pain7_images_data_urls_urls_and_in_tool_results():
    png = "data:image/png;base64,iVBORw0KGgo="
    v = vertex(body(tools=[WEATHER], messages=[
        {"role": "user", "content": [{"type": "text", "text": "what is this"},
                                     {"type": "image_url", "image_url": {"url": png}},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]},
        {"role": "assistant", "tool_calls": [call("c1")]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/map.png"}}]},
    ]))
    blocks = v.body["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    assert blocks[2]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}
    assert v.image_urls == ["https://example.com/cat.jpg", "https://example.com/map.png"]
    inline_images(v.body, {"https://example.com/cat.jpg": ("image/jpeg", "AAA"), "https://example.com/map.png": ("image/png", "BBB")})
    assert blocks[2]["source"] == {"type": "base64", "media_type": "image/jpeg", "data": "AAA"}
    assert v.body["messages"][2]["content"][0]["content"][0]["source"]["data"] == "BBB"


def test_pdf_file_parts_become_documents():
    v = vertex(body(messages=[{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}]}]))
    assert v.body["messages"][0]["content"][0] == {
        "type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}


# --- pain 8 and 9: max tokens, sampling, stop ------------------------------------------------------------------

def test_pain8_max_tokens_default_cap_and_precedence():
    assert vertex(body()).body["max_tokens"] == 16384
    assert vertex(body(), model="claude-3-5-haiku@20241022").body["max_tokens"] == 8192
    assert vertex(body(max_tokens=100)).body["max_tokens"] == 100
    assert vertex(body(max_tokens=100, max_completion_tokens=50)).body["max_tokens"] == 50
    assert vertex(body(max_completion_tokens=10**6)).body["max_tokens"] == 64000
    with pytest.raises(OpenAIError) as err:
        vertex(body(max_tokens=0))
    assert err.value.param == "max_tokens"


def test_pain9_sampling_parameters_and_stop():
    assert vertex(body(temperature=0.3)).body["temperature"] == 0.3
    assert vertex(body(temperature=1.7)).body["temperature"] == 1.0
    v = vertex(body(temperature=0.2, top_p=0.9)).body  # Sonnet 4.5 rejects both together: temperature wins
    assert v["temperature"] == 0.2 and "top_p" not in v
    assert vertex(body(temperature=0.2, top_p=0.9), model="claude-3-7-sonnet@20250219").body["top_p"] == 0.9
    v = vertex(body(temperature=0.2, top_p=0.9), version="2026-10-21").body
    assert "temperature" not in v and "top_p" not in v
    with pytest.raises(OpenAIError) as err:
        vertex(body(temperature=3))
    assert err.value.param == "temperature" and err.value.status == 400
    assert vertex(body(stop=["END", "  ", "\n"])).body["stop_sequences"] == ["END"]
    assert vertex(body(stop="STOP")).body["stop_sequences"] == ["STOP"]
    assert "stop_sequences" not in vertex(body(stop=[" "])).body


def test_pain10_user_becomes_a_hashed_user_id():
    v = vertex(body(user="someone@example.com")).body
    assert v["metadata"]["user_id"].startswith("user-") and "@" not in v["metadata"]["user_id"]
    assert vertex(body(user="+1 555 0100")).body["metadata"]["user_id"] != v["metadata"]["user_id"]
    assert vertex(body(safety_identifier="abc")).body["metadata"]["user_id"].startswith("user-")


@pytest.mark.parametrize("kw, param", [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"web_search_options": {}}, None),  # an empty object asks for nothing
])
def test_pain11_unsupported_parameters_are_a_400_naming_them(kw, param):
    if param is None:
        vertex(body(**kw))
        return
    with pytest.raises(OpenAIError) as err:
        vertex(body(**kw))
    assert err.value.status == 400 and err.value.param == param and err.value.code == "unsupported_parameter"


def test_ignored_parameters_change_nothing():
    plain = vertex(body()).body
    for kw in ({"seed": 1}, {"frequency_penalty": 0.5}, {"presence_penalty": 0.5}, {"store": True},
               {"metadata": {"a": "b"}}, {"service_tier": "auto"}, {"prediction": {"type": "content", "content": "x"}},
               {"verbosity": "low"}, {"prompt_cache_key": "k"}, {"n": 1}, {"logprobs": False},
               {"prompt_cache_retention": "24h"}, {"moderation": None}, {"stream_options": {"include_obfuscation": False}}):
        assert vertex(body(**kw)).body == plain, kw


# --- pain 12: response_format --------------------------------------------------------------------------------

def test_pain12_json_schema_becomes_a_forced_tool():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    v = vertex(body(response_format={"type": "json_schema", "json_schema": {"name": "A", "schema": schema}}))
    assert v.body["tools"][-1]["name"] == JSON_TOOL and v.body["tools"][-1]["input_schema"] == schema
    assert v.body["tool_choice"] == {"type": "tool", "name": JSON_TOOL} and v.json_tool == JSON_TOOL
    v = vertex(body(response_format={"type": "json_schema", "json_schema": {"name": "L", "schema": {"type": "array"}}}))
    assert v.json_wrapped and v.body["tools"][-1]["input_schema"]["properties"]["value"] == {"type": "array"}
    v = vertex(body(response_format={"type": "json_object"}, tools=[WEATHER]))
    assert v.body["tool_choice"] == {"type": "any"} and [t["name"] for t in v.body["tools"]] == ["get_weather", JSON_TOOL]
    v = vertex(body(response_format={"type": "json_object"}, tools=[WEATHER], tool_choice="none"))
    assert [t["name"] for t in v.body["tools"]] == [JSON_TOOL]
    assert "tools" not in vertex(body(response_format={"type": "text"})).body


# --- pain 13: reasoning ----------------------------------------------------------------------------------------

def test_pain13_reasoning_effort_becomes_a_thinking_budget():
    v = vertex(body(reasoning_effort="medium", temperature=0.2))
    assert v.body["thinking"] == {"type": "enabled", "budget_tokens": 8192} and v.thinking
    assert v.body["max_tokens"] == 16384 + 8192 and "temperature" not in v.body
    assert vertex(body(reasoning_effort="high", max_completion_tokens=4000)).body["thinking"]["budget_tokens"] == 3999
    assert "thinking" not in vertex(body(reasoning_effort="low", max_completion_tokens=900)).body  # no room
    assert "thinking" not in vertex(body(reasoning_effort="none")).body
    forced = vertex(body(reasoning_effort="high", tools=[WEATHER], tool_choice="required")).body
    assert "thinking" not in forced  # Anthropic rejects thinking with a forced tool


def test_pain13_thinking_goes_back_upstream_in_a_tool_loop():
    kept = [{"type": "thinking", "thinking": "hmm", "signature": "sig"}]
    history = [{"role": "user", "content": "weather?"},
               {"role": "assistant", "content": "Let me check.", "tool_calls": [call("toolu_1")]},
               {"role": "tool", "tool_call_id": "toolu_1", "content": "rain"}]
    v = vertex(body(messages=history, tools=[WEATHER], reasoning_effort="low"), thinking_for={"toolu_1": kept}.get)
    assert v.body["messages"][1]["content"][0] == kept[0] and v.body["messages"][1]["content"][1]["type"] == "text"
    assert v.thinking
    # modelmux lost it (restart, eviction): thinking off for this continuation rather than a Vertex 400
    v = vertex(body(messages=history, tools=[WEATHER], reasoning_effort="low"), thinking_for={}.get)
    assert not v.thinking and "thinking" not in v.body


# --- validation ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, param", [
    (b"{not json", None),
    (b"[1]", None),
    (body(messages=[]), "messages"),
    (body(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    (body(messages=[{"role": "user", "content": [{"type": "video", "url": "x"}]}]), "messages[0].content[0].type"),
    (body(model=""), "model"),
    (body(messages=[{"role": "system", "content": "only system"}]), "messages"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]),
     "messages[0].content[0].image_url.url"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}}]}]),
     "messages[0].content[0].image_url.url"),
    (body(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]),
     "messages[0].content[0]"),
    (body(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call("c", args="{oops")]}]),
     "messages[1].tool_calls[0].function.arguments"),
    (body(messages=[{"role": "function", "name": "f", "content": "x"}]), "messages[0].role"),
])
def test_bad_input_is_an_openai_400_naming_the_param(raw, param):
    with pytest.raises(OpenAIError) as err:
        vertex(raw)
    e = err.value
    assert e.status == 400 and e.type == "invalid_request_error" and e.param == param
    assert set(e.body()["error"]) == {"message", "type", "param", "code"}


def test_prompt_cache_breakpoints_become_cache_control():
    v = vertex(body(prompt_cache_options={"ttl": "1h"}, messages=[{"role": "system", "content": [
        {"type": "text", "text": "long manual", "prompt_cache_breakpoint": {"mode": "explicit"}}]},
        {"role": "user", "content": "q"}]))
    assert v.body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert "cache_control" not in v.body["messages"][0]["content"][0]


@pytest.mark.parametrize("url", ["http://x:99999/a.png", "http://[::1/a.png", "https:///a.png", "http://x:0/a.png"])
def test_pain7_malformed_image_urls_are_a_400_before_any_fetch(url):
    with pytest.raises(OpenAIError) as err:
        vertex(body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]))
    assert err.value.param == "messages[0].content[0].image_url.url"


def test_pain3_reused_tool_call_ids_are_made_unique_and_still_pair():
    v = vertex(body(tools=[WEATHER], messages=[
        {"role": "user", "content": "a"},
        {"role": "assistant", "tool_calls": [call("call_0")]},
        {"role": "tool", "tool_call_id": "call_0", "content": "r1"},
        {"role": "assistant", "tool_calls": [call("call_0")]},  # a framework that numbers calls per turn
        {"role": "tool", "tool_call_id": "call_0", "content": "r2"},
    ]))
    ids = [b["id"] for t in v.body["messages"] for b in t["content"] if b["type"] == "tool_use"]
    results = [b["tool_use_id"] for t in v.body["messages"] for b in t["content"] if b["type"] == "tool_result"]
    assert ids == results == ["call_0", "call_0_2"]
    with pytest.raises(OpenAIError) as err:
        vertex(body(tools=[WEATHER], messages=[{"role": "user", "content": "a"},
                                               {"role": "assistant", "tool_calls": [call("c"), call("c")]}]))
    assert err.value.param == "messages[1].tool_calls[1].id"


@pytest.mark.parametrize("raw, param", [
    (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', None),
    (b"[" * 10000 + b"]" * 10000, None),
    (body(messages=[{"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [call("c", args='{"a": Infinity}')]}]),
     "messages[1].tool_calls[0].function.arguments"),
])
def test_non_json_numbers_and_deep_nesting_are_a_400(raw, param):
    with pytest.raises(OpenAIError) as err:
        vertex(raw)
    assert err.value.status == 400 and err.value.param == param


def test_odd_names_ids_and_users_never_crash():
    v = vertex(body(user="\ud800", tools=[{"type": "function", "function": {"name": "f\n"}}], messages=[
        {"role": "user", "content": "a"},
        {"role": "assistant", "tool_calls": [call("id\n", "f\n", "{}")]},
        {"role": "tool", "tool_call_id": "id\n", "content": "r"}]))
    assert v.body["tools"][0]["name"] != "f\n" and v.body["messages"][1]["content"][0]["id"] != "id\n"
    assert v.body["messages"][2]["content"][0]["tool_use_id"] == v.body["messages"][1]["content"][0]["id"]


def test_only_the_latest_four_cache_breakpoints_are_kept():
    part = lambda t: {"type": "text", "text": t, "prompt_cache_breakpoint": {"mode": "explicit"}}  # noqa: E731
    v = vertex(body(messages=[{"role": "system", "content": [part("s1"), part("s2")]},
                              {"role": "user", "content": [part("u1"), part("u2"), part("u3")]}]))
    marks = [b["text"] for b in v.body["system"] + v.body["messages"][0]["content"] if "cache_control" in b]
    assert marks == ["s2", "u1", "u2", "u3"]


def test_pain7_base64_is_checked_and_unwrapped():
    v = vertex(body(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO\nRw0K\nGgo="}}]}]))
    assert v.body["messages"][0]["content"][0]["source"]["data"] == "iVBORw0KGgo="
    with pytest.raises(OpenAIError) as err:
        vertex(body(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,not*base64"}}]}]))
    assert err.value.param == "messages[0].content[0].image_url.url"


def test_a_tool_history_without_tools_declares_the_tools_it_called_and_calls_none():
    """OpenAI takes a conversation whose earlier turns called tools with no `tools` (a summary, a follow-up);
    Anthropic refuses tool blocks without tools: the called ones are declared, tool_choice none."""
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "tool_calls": [call("c1"), call("c2", "get_time", "{}")]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "c2", "content": "noon"},
                {"role": "user", "content": "summarise that"}]
    out = vertex(body(messages=messages)).body
    assert [t["name"] for t in out["tools"]] == ["get_weather", "get_time"]
    assert all(t["input_schema"] == {"type": "object"} for t in out["tools"])
    assert out["tool_choice"] == {"type": "none"}
    with_tools = vertex(body(messages=messages, tools=[WEATHER, {**WEATHER, "function": {
        **WEATHER["function"], "name": "get_time"}}])).body
    assert "tool_choice" not in with_tools and with_tools["tools"][0]["description"] == "Weather for a city"
    plain = vertex(body()).body
    assert "tools" not in plain and "tool_choice" not in plain
