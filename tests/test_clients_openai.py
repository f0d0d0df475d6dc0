"""openai-python as a real app uses it — a tool loop, parallel tool calls, the `stream()` and `parse()` helpers,
MCP-style tool names, multi-byte text, stream faults and rate limits — through a real `modelmux run` and a real
`mitmdump -s addon/modelmux_addon.py`, each in HTTPS_PROXY mode and reverse (base URL) mode. Raw bodies and
every chunk are checked against OpenAI's spec. What the fake model answers: addon/modelmux/emulator/model.py."""

from __future__ import annotations

import json
import re
import time
from typing import Literal

import openai
import pytest
from openapi import sse_payloads, validate_chunk, validate_completion, validate_error, validate_openai_sse
from pydantic import BaseModel

from e2e import (CLIENT_KINDS_VIA_PROXY, Emulator, finish_reasons, openai_client, stream_text, streamed_tool_calls)

ANTHROPIC_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "The local time somewhere.",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"},
                                                    "format": {"type": "string", "enum": ["24h", "12h"]}},
                   "required": ["timezone"]}}}
MCP_TOOL = {"type": "function", "function": {  # how MCP hosts qualify a server's tool: dots and slashes
    "name": "files.read/v2", "description": "Read a file.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris? Use get_weather."}]
ASK_BOTH = [{"role": "user", "content": "Use get_weather for Paris, then get_time for Europe/Paris."}]
BOTH_CALLS = [("get_weather", {"city": "city-value"}), ("get_time", {"timezone": "timezone-value", "format": "24h"})]


class GetWeather(BaseModel):
    city: str


class Place(BaseModel):
    name: str
    lat: float


class Forecast(BaseModel):
    city: str
    celsius: float
    days: int
    rain: bool
    alerts: list[str]
    sky: Literal["clear", "cloudy"]
    place: Place  # nested: the schema the SDK sends has $defs / $ref


# what the fake model fills Forecast's schema with
FORECAST = Forecast(city="city-value", celsius=4.5, days=42, rain=True, alerts=["alerts-value"], sky="clear",
                    place=Place(name="name-value", lat=4.5))


@pytest.fixture(params=CLIENT_KINDS_VIA_PROXY)
def client(request, proxy, monkeypatch):
    c = openai_client(request.param, proxy, monkeypatch)
    yield c
    c.close()


def raw_stream(client: openai.OpenAI, **params) -> list[dict]:
    """Stream a completion, return its chunks after checking the raw SSE body chunk by chunk against the spec."""
    with client.chat.completions.with_streaming_response.create(model="gpt-4o", stream=True, **params) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        return validate_openai_sse(b"".join(resp.iter_bytes()))


def upstream_body(emu: Emulator) -> dict:
    return emu.last_request()["body"]


# --- tool calls ----------------------------------------------------------------------------------------------

def test_pain5_tool_loop_get_weather(client, emulator):
    """The model calls get_weather; the app runs it and sends the result back; the model answers from it."""
    emu, _ = emulator
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=ASK_WEATHER, tools=[WEATHER_TOOL])
    validate_completion(raw.http_response.json())
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "I will call get_weather."
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert json.loads(call.function.arguments) == {"city": "city-value"}

    # as the SDK's docs do it: the returned message object goes back into the history as is
    history = [*ASK_WEATHER, choice.message, {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 °C"}]
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=history, tools=[WEATHER_TOOL])
    validate_completion(raw.http_response.json())
    answer = raw.parse().choices[0]
    assert answer.message.content == "Tool results: Sunny, 21 °C" and answer.finish_reason == "stop"
    assert not answer.message.tool_calls

    # upstream: the call and its result paired as Anthropic requires
    sent = upstream_body(emu)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert [b["type"] for b in sent[1]["content"]] == ["text", "tool_use"]
    tool_use = sent[1]["content"][1]
    assert (tool_use["id"], tool_use["name"], tool_use["input"]) == (call.id, "get_weather", {"city": "city-value"})
    [result] = sent[2]["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == call.id

    # a follow-up that sends no tools (a summary, as apps do after a tool loop): OpenAI answers it, so must we
    later = [*history, answer.message, {"role": "user", "content": "thanks"}]
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=later)
    validate_completion(raw.http_response.json())
    assert raw.parse().choices[0].finish_reason == "stop"
    sent = upstream_body(emu)
    assert [t["name"] for t in sent["tools"]] == ["get_weather"] and sent["tool_choice"] == {"type": "none"}


def test_parallel_tool_calls(client):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=ASK_BOTH,
                                                           tools=[WEATHER_TOOL, TIME_TOOL])
    validate_completion(raw.http_response.json())
    choice = raw.parse().choices[0]
    calls = choice.message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == BOTH_CALLS
    assert len({c.id for c in calls}) == 2 and choice.finish_reason == "tool_calls"


def test_pain15_streamed_parallel_tool_calls_chunk_by_chunk(client):
    """Two calls in one stream: indexes 0 and 1, id/type/name once each, arguments in fragments, every chunk valid."""
    chunks = raw_stream(client, messages=ASK_BOTH, tools=[WEATHER_TOOL, TIME_TOOL],
                        stream_options={"include_usage": True})
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    calls = streamed_tool_calls(chunks)
    assert [c["index"] for c in calls] == [0, 1]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == BOTH_CALLS
    assert len({c["id"] for c in calls}) == 2
    assert all(c["fragments"] > 1 for c in calls), calls  # forwarded as generated, not buffered into one chunk
    assert stream_text(chunks) == "I will call get_weather, get_time."
    assert finish_reasons(chunks) == ["tool_calls"]
    choice_chunks = [c for c in chunks if c["choices"]]
    assert choice_chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"  # on the last choice chunk
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_pain2_parallel_tool_calls_false(client, emulator):
    emu, _ = emulator
    for stream in (False, True):
        kwargs = {"messages": ASK_BOTH, "tools": [WEATHER_TOOL, TIME_TOOL], "parallel_tool_calls": False}
        if stream:
            calls = [(c["name"], json.loads(c["arguments"])) for c in streamed_tool_calls(raw_stream(client, **kwargs))]
        else:
            message = client.chat.completions.create(model="gpt-4o", **kwargs).choices[0].message
            calls = [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]
        assert calls == BOTH_CALLS[:1], stream
        assert upstream_body(emu)["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_stream_helper_accumulates_tool_calls(client):
    """`client.chat.completions.stream()` puts the call together (parsed with a pydantic tool) and the loop
    continues from its final completion."""
    tools = [openai.pydantic_function_tool(GetWeather, name="get_weather", description="The weather in a city.")]
    with client.chat.completions.stream(model="gpt-4o", messages=ASK_WEATHER, tools=tools) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()
    assert kinds.count("tool_calls.function.arguments.delta") > 1
    assert kinds.count("tool_calls.function.arguments.done") == 1 and kinds.count("content.done") == 1
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "I will call get_weather."
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.function.parsed_arguments == GetWeather(city="city-value")
    assert json.loads(call.function.arguments) == {"city": "city-value"}

    history = [*ASK_WEATHER, choice.message, {"role": "tool", "tool_call_id": call.id, "content": "Rain"}]
    with client.chat.completions.stream(model="gpt-4o", messages=history, tools=tools) as stream:
        answer = stream.get_final_completion().choices[0]
    assert answer.message.content == "Tool results: Rain" and answer.finish_reason == "stop"


def test_pain3_mcp_tool_name_restored(client, emulator):
    """`files.read/v2` is no valid Anthropic name: upstream it is mapped, the app sees its own name back —
    non-streamed, streamed, and when the call goes back in the history."""
    emu, _ = emulator
    force = {"type": "function", "function": {"name": "files.read/v2"}}
    ask = [{"role": "user", "content": "Read the README."}]
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=ask, tools=[MCP_TOOL, WEATHER_TOOL],
                                                           tool_choice=force)
    validate_completion(raw.http_response.json())
    message = raw.parse().choices[0].message
    [call] = message.tool_calls
    assert call.function.name == "files.read/v2" and json.loads(call.function.arguments) == {"path": "path-value"}
    sent = upstream_body(emu)
    mapped = sent["tool_choice"]["name"]
    assert ANTHROPIC_TOOL_NAME.fullmatch(mapped) and mapped != "files.read/v2"
    assert [t["name"] for t in sent["tools"]] == [mapped, "get_weather"]

    calls = streamed_tool_calls(raw_stream(client, messages=ask, tools=[MCP_TOOL, WEATHER_TOOL], tool_choice=force))
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("files.read/v2", {"path": "path-value"})]

    history = [*ask, message, {"role": "tool", "tool_call_id": call.id, "content": "# modelmux"}]
    answer = client.chat.completions.create(model="gpt-4o", messages=history, tools=[MCP_TOOL, WEATHER_TOOL])
    assert answer.choices[0].message.content == "Tool results: # modelmux"
    assert upstream_body(emu)["messages"][1]["content"][-1]["name"] == mapped


def test_pain3_foreign_tool_call_ids_in_history(client, emulator):
    """A history written by another provider (`functions.get_weather:0` ids) still pairs call and result upstream."""
    emu, _ = emulator
    history = [*ASK_WEATHER,
               {"role": "assistant", "content": None, "tool_calls": [{
                   "id": "functions.get_weather:0", "type": "function",
                   "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "Fog"}]
    answer = client.chat.completions.create(model="gpt-4o", messages=history, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content == "Tool results: Fog"
    sent = upstream_body(emu)["messages"]
    upstream_id = sent[1]["content"][0]["id"]
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", upstream_id) and sent[2]["content"][0]["tool_use_id"] == upstream_id


# --- structured output ---------------------------------------------------------------------------------------

def test_pain12_parse_returns_the_pydantic_object(client, emulator):
    emu, _ = emulator
    raw = client.chat.completions.with_raw_response.parse(
        model="gpt-4o", messages=[{"role": "user", "content": "Forecast for Paris"}], response_format=Forecast)
    validate_completion(raw.http_response.json())
    choice = raw.parse().choices[0]
    assert choice.message.parsed == FORECAST
    assert json.loads(choice.message.content) == FORECAST.model_dump()  # bare JSON: no wrapper, no prose
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert upstream_body(emu)["tool_choice"]["type"] == "tool"  # JSON through a forced tool

    with client.chat.completions.stream(model="gpt-4o", messages=[{"role": "user", "content": "Forecast for Paris"}],
                                        response_format=Forecast) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == FORECAST and final.choices[0].finish_reason == "stop"


# --- text, faults, errors ------------------------------------------------------------------------------------

def test_pain19_unicode_intact(client):
    from modelmux.emulator.model import UNICODE_SAMPLE  # the multi-byte text [[unicode]] makes the fake model add

    ask = [{"role": "user", "content": "[[unicode]] Grüße aus Köln, 你好"}]
    expected = f"You said: [[unicode]] Grüße aus Köln, 你好 {UNICODE_SAMPLE}"
    assert client.chat.completions.create(model="gpt-4o", messages=ask).choices[0].message.content == expected
    assert stream_text(raw_stream(client, messages=ask)) == expected  # upstream events split inside characters


def test_pain16_refusal(client):
    ask = [{"role": "user", "content": "[[refusal]]"}]
    choice = client.chat.completions.create(model="gpt-4o", messages=ask).choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.message.refusal == "I can't help with that." and choice.message.content is None
    with pytest.raises(openai.ContentFilterFinishReasonError):  # what parse() makes of a content_filter finish
        client.chat.completions.parse(model="gpt-4o", messages=ask, response_format=Forecast)


def test_pain16_streamed_refusal(client):
    """Streamed, Claude says a plain answer is a refusal only at its end, after the text has streamed: the text
    stays `content` and the stream ends with `content_filter`, as OpenAI's own filter does mid-stream. With a
    JSON response_format the prose can only be a refusal, so it streams in `delta.refusal` and
    `stream(response_format=…)` ends in the same ContentFilterFinishReasonError as `parse()` instead of failing
    to read the refusal text as JSON."""
    ask = [{"role": "user", "content": "[[refusal]]"}]
    chunks = raw_stream(client, messages=ask)
    assert stream_text(chunks) == "I can't help with that."
    assert finish_reasons(chunks) == ["content_filter"]
    chunks = raw_stream(client, messages=ask, response_format={"type": "json_object"})
    refusal = "".join(c["choices"][0]["delta"].get("refusal") or "" for c in chunks if c["choices"])
    assert (refusal, stream_text(chunks)) == ("I can't help with that.", "")
    assert finish_reasons(chunks) == ["content_filter"]
    with pytest.raises(openai.ContentFilterFinishReasonError):
        with client.chat.completions.stream(model="gpt-4o", messages=ask, response_format=Forecast) as stream:
            stream.get_final_completion()


@pytest.mark.parametrize("trigger, code", [("[[stream-error:overloaded]]", "overloaded_error"),
                                           ("[[cut]]", "stream_truncated")], ids=["overloaded", "cut"])
def test_pain20_stream_fault_raises_in_the_sdk(client, trigger, code):
    """An upstream error event or a cut stream: the SDK raises after the text so far — never a clean finish."""
    ask = [{"role": "user", "content": f"{trigger} tell me a long story"}]
    seen = []
    with pytest.raises(openai.APIError) as err:
        for chunk in client.chat.completions.create(model="gpt-4o", messages=ask, stream=True):
            seen.append(chunk)
    assert err.value.body["code"] == code
    assert seen and all(c.choices[0].finish_reason is None for c in seen if c.choices)
    with pytest.raises(openai.APIError):  # the stream helper too
        with client.chat.completions.stream(model="gpt-4o", messages=ask) as stream:
            stream.get_final_completion()

    # on the wire: the chunks so far, then one error event, and no [DONE]
    with client.chat.completions.with_streaming_response.create(model="gpt-4o", messages=ask, stream=True) as resp:
        raw = b"".join(resp.iter_bytes())
    *chunks, last = [json.loads(p) for p in sse_payloads(raw)]  # json.loads("[DONE]") would fail: none allowed
    for chunk in chunks:
        validate_chunk(chunk)
    assert len(chunks) > 1 and finish_reasons(chunks) == []
    validate_error(last)
    assert last["error"]["code"] == code


def test_pain22_rate_limit_with_retry_after(client):
    ask = [{"role": "user", "content": "[[status:429]] hello"}]
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="gpt-4o", messages=ask, stream=stream)
        headers = err.value.response.headers
        assert int(headers["retry-after"]) >= 1 and int(headers["retry-after-ms"]) >= 1000, dict(headers)
        validate_error({"error": err.value.body})


def test_pain22_sdk_retries_after_retry_after(proxy, emulator, monkeypatch):
    """With retries on, the SDK waits what retry-after-ms says (1 s) and tries again (its own backoff is < 1 s)."""
    emu, _ = emulator
    emu.clear()
    client = openai_client("reverse", proxy, monkeypatch, max_retries=1)
    start = time.monotonic()
    with pytest.raises(openai.RateLimitError), client:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "[[status:429]]"}])
    assert time.monotonic() - start >= 0.95
    assert len(emu.requests()) == 2 * 4  # per SDK attempt, modelmux's own 4 attempts (retries.max_attempts)
