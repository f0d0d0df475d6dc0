"""LangChain's ChatOpenAI (langchain-openai, on the openai SDK) with a `@tool` bound, through a real `modelmux run`
in reverse (base URL) mode and HTTPS_PROXY mode: tool calls parsed into AIMessage.tool_calls, streamed tool-call
chunks merged into the same call, a whole tool loop, structured output."""

from __future__ import annotations

import functools
import operator

import httpx
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from e2e import (CLIENT_KEY, CLIENT_KINDS_VIA_PROXY, emulator_and_proxy, use_client_env)

ASK = "What is the weather in Paris? Use get_weather."


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"Sunny in {city}"


class City(BaseModel):
    name: str
    population: int


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("langchain")
    with emulator_and_proxy(tmp) as running:
        yield running


@pytest.fixture(params=CLIENT_KINDS_VIA_PROXY)
def llm(request, proxy, monkeypatch):
    base_url = use_client_env(request.param, proxy[0], monkeypatch)  # HTTPS_PROXY + SSL_CERT_FILE only in here
    # an httpx.Timeout (unhashable) keeps langchain-openai from reusing a cached httpx client built under another
    # test's environment: this one reads HTTPS_PROXY now
    return ChatOpenAI(model="gpt-4o", api_key=CLIENT_KEY, max_retries=0, timeout=httpx.Timeout(20),
                      **({"base_url": base_url} if base_url else {}))


def test_bind_tools_invoke_parses_the_tool_call(llm, proxy):
    _, emu = proxy
    message = llm.bind_tools([get_weather]).invoke(ASK)
    assert isinstance(message, AIMessage) and message.content == "I will call get_weather."
    [call] = message.tool_calls
    assert (call["name"], call["args"], call["type"]) == ("get_weather", {"city": "city-value"}, "tool_call")
    assert call["id"].startswith("toolu_") and not message.invalid_tool_calls
    assert message.response_metadata["finish_reason"] == "tool_calls"
    assert message.response_metadata["model_name"] == "gpt-4o"
    assert emu.last_request()["body"]["tools"][0]["name"] == "get_weather"


def test_tool_loop(llm):
    """The app runs the tool LangChain's way (tool.invoke(tool_call) → ToolMessage) and the model answers."""
    bound = llm.bind_tools([get_weather])
    history = [HumanMessage(ASK)]
    history.append(bound.invoke(history))
    result = get_weather.invoke(history[-1].tool_calls[0])
    assert isinstance(result, ToolMessage) and result.tool_call_id == history[-1].tool_calls[0]["id"]
    history.append(result)
    answer = bound.invoke(history)
    assert answer.content == "Tool results: Sunny in city-value" and not answer.tool_calls
    assert answer.response_metadata["finish_reason"] == "stop"


def test_stream_merges_tool_call_chunks(llm):
    chunks = list(llm.bind_tools([get_weather]).stream(ASK))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    arg_pieces = [tc["args"] for c in chunks for tc in c.tool_call_chunks if tc["args"]]
    assert len(arg_pieces) > 1  # the arguments really came in pieces
    full = functools.reduce(operator.add, chunks)
    [merged] = full.tool_call_chunks  # all pieces merged into the one call (same index)
    assert merged["index"] == 0 and merged["name"] == "get_weather"
    [call] = full.tool_calls
    assert (call["name"], call["args"]) == ("get_weather", {"city": "city-value"})
    assert call["id"] == merged["id"] and call["id"].startswith("toolu_")
    assert full.content == "I will call get_weather." and not full.invalid_tool_calls
    assert full.response_metadata["finish_reason"] == "tool_calls"


def test_with_structured_output(llm, proxy):
    _, emu = proxy
    city = llm.with_structured_output(City).invoke("Tell me about Paris.")  # json_schema response_format
    assert city == City(name="name-value", population=42)
    assert emu.last_request()["body"]["tool_choice"]["type"] == "tool"
