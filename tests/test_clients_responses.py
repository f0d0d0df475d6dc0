"""Real Responses API clients (POST /v1/responses and its siblings) in Python, through a real `modelmux run` in
HTTPS_PROXY and reverse (base URL) mode against the emulator: openai-python (create, streamed, the stream helper,
parse with a pydantic text_format, retrieve / delete / input_items, input_tokens.count, a tool loop with and
without previous_response_id), openai-agents (an Agent with a function tool, Runner.run and run_streamed on the
SDK's default model), LangChain `ChatOpenAI(use_responses_api=True)`, and Codex CLI end to end (`codex exec`: a
plain answer, a shell command loop, an apply_patch loop, its default "code mode" loop, remote compaction, and a
client-executed tool_search loop).

Every Response body and stream event a client received is checked against ../shared/openai-openapi.yaml. The
fake model is driven by the prompt: "You said: …" by default, `[[call:NAME {JSON}]]` makes it call tool NAME
with exactly that input, and after tool results it answers "Tool results: …"; asked for a summary of the
conversation (a compaction), it answers "Summary: …".

`scripts/test tests/test_clients_responses.py` runs them against modelmux (they need /v1/responses);
`--responses-via=recorder` runs the same clients against tests/responses_recorder.py (a stand-in for OpenAI),
which proves the drivers themselves."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

import agents_driver
import codex
from e2e import CLIENT_KEY, CLIENT_KINDS_VIA_PROXY, openai_client, use_client_env
from openapi import validate, validate_response, validate_responses_events, validate_responses_sse
from responses_targets import call, per_response, responses_target

from modelmux.translate.responses.request import COMPACTION_PROMPT

pytestmark = pytest.mark.responses_api

WEATHER = {"type": "function", "name": "get_weather", "description": "The current weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}, "strict": True}


@pytest.fixture(scope="module")
def target(request, tmp_path_factory):
    with responses_target(request.config.getoption("--responses-via"), tmp_path_factory.mktemp("responses")) as t:
        yield t


@pytest.fixture(params=CLIENT_KINDS_VIA_PROXY)
def kind(request):
    return request.param


@pytest.fixture
def client(kind, target, monkeypatch):
    return openai_client(kind, target.proxy, monkeypatch)


def as_json(obj) -> dict:
    return obj.to_dict(mode="json") if hasattr(obj, "to_dict") else obj


# --- openai-python ------------------------------------------------------------------------------------------

def test_create(client):
    raw = client.responses.with_raw_response.create(model="gpt-4o", input="Hello Responses", max_output_tokens=200)
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("application/json")
    body = raw.http_response.json()
    validate_response(body)
    response = raw.parse()
    assert response.output_text == "You said: Hello Responses"
    assert response.status == "completed" and response.model == "gpt-4o" and response.id.startswith("resp_")
    assert response.usage.output_tokens > 0 and response.usage.input_tokens > 0


def test_create_streamed_raw_and_typed(client):
    with client.responses.with_streaming_response.create(model="gpt-4o", input="Hello stream", stream=True) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        events = validate_responses_sse(raw.read())
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "You said: Hello stream"
    assert events[-1]["type"] == "response.completed"

    typed = [as_json(e) for e in client.responses.create(model="gpt-4o", input="Hello typed", stream=True)]
    validate_responses_events(typed)
    assert typed[-1]["response"]["output"][0]["content"][0]["text"] == "You said: Hello typed"


def test_stream_helper(client):
    deltas = []
    with client.responses.stream(model="gpt-4o", input="Hello helper") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    validate_response(as_json(final))
    assert "".join(deltas) == final.output_text == "You said: Hello helper"


class City(BaseModel):
    name: str
    population: int


def test_parse_text_format(client):
    parsed = client.responses.parse(model="gpt-4o", input="Name a city as JSON.", text_format=City)
    validate_response(as_json(parsed))
    assert isinstance(parsed.output_parsed, City)
    assert City.model_validate_json(parsed.output_text) == parsed.output_parsed


def test_retrieve_input_items_delete(client):
    created = client.responses.create(model="gpt-4o", input="Remember me", store=True)
    got = client.responses.with_raw_response.retrieve(created.id)
    validate_response(got.http_response.json())
    assert got.parse().output_text == created.output_text == "You said: Remember me"

    items = client.responses.input_items.with_raw_response.list(created.id)
    validate(items.http_response.json(), "ResponseItemList")
    [item] = items.parse().data
    assert item.type == "message" and item.role == "user" and item.content[0].text == "Remember me"

    deleted = client.responses.with_raw_response.delete(created.id)
    assert deleted.status_code == 200
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_input_tokens_count(client):
    raw = client.responses.input_tokens.with_raw_response.count(model="gpt-4o", input="Count these four words")
    validate(raw.http_response.json(), "TokenCountsResource")
    assert raw.parse().input_tokens > 0


def test_tool_loop_stateless_and_chained(client):
    first = client.responses.create(model="gpt-4o", input="Weather? " + call("get_weather", {"city": "Paris"}),
                                    tools=[WEATHER])
    validate_response(as_json(first))
    [fc] = [item for item in first.output if item.type == "function_call"]
    assert fc.name == "get_weather" and json.loads(fc.arguments) == {"city": "Paris"} and fc.call_id
    result = {"type": "function_call_output", "call_id": fc.call_id, "output": "Sunny in Paris"}

    # stateless: the whole conversation sent back, as store=false clients do
    history = [{"role": "user", "content": "Weather? " + call("get_weather", {"city": "Paris"})},
               *[item.to_dict() for item in first.output], result]
    again = client.responses.create(model="gpt-4o", input=history, tools=[WEATHER], store=False)
    validate_response(as_json(again))
    assert again.output_text == "Tool results: Sunny in Paris"

    # chained: only the new item, the rest from the stored first response
    chained = client.responses.create(model="gpt-4o", previous_response_id=first.id, input=[result], tools=[WEATHER])
    validate_response(as_json(chained))
    assert chained.output_text == "Tool results: Sunny in Paris" and chained.previous_response_id == first.id


# --- openai-agents ------------------------------------------------------------------------------------------

@pytest.fixture
def agents_client(kind, target, monkeypatch):
    base_url = use_client_env(kind, target.proxy, monkeypatch)
    agents_driver.use_client(openai.AsyncOpenAI(api_key=CLIENT_KEY, max_retries=0, timeout=20,
                                                **({"base_url": base_url} if base_url else {})))


async def test_agents_runner_run_with_function_tool(agents_client):
    run = await agents_driver.run("Weather? " + call("get_weather", {"city": "Paris"}))
    assert run.final_output == "Tool results: Sunny in Paris"
    assert run.items == ["message_output_item", "tool_call_item", "tool_call_output_item", "message_output_item"]
    assert run.responses == 2


async def test_agents_run_streamed_with_function_tool(agents_client):
    run = await agents_driver.run_streamed("Weather? " + call("get_weather", {"city": "Oslo"}))
    assert run.final_output == "Tool results: Sunny in Oslo" and run.responses == 2
    streams = per_response(run.events)
    assert len(streams) == 2
    for events in streams:
        validate_responses_events(events)


async def test_agents_plain_answer_on_the_default_model(agents_client):
    run = await agents_driver.run("Hello agents", tools=False)
    assert run.final_output == "You said: Hello agents" and run.responses == 1


# --- LangChain ----------------------------------------------------------------------------------------------

@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"Sunny in {city}"


@pytest.fixture
def llm(kind, target, monkeypatch):
    base_url = use_client_env(kind, target.proxy, monkeypatch)
    # an httpx.Timeout (unhashable) keeps langchain-openai from reusing a cached httpx client built under another
    # test's environment
    return ChatOpenAI(model="gpt-4o", api_key=CLIENT_KEY, max_retries=0, timeout=httpx.Timeout(20),
                      use_responses_api=True, **({"base_url": base_url} if base_url else {}))


def test_langchain_invoke_stream_and_tool_call(llm):
    message = llm.invoke("Hello LangChain")
    assert isinstance(message, AIMessage) and message.text == "You said: Hello LangChain"
    assert message.response_metadata["model_name"] == "gpt-4o" and message.response_metadata["id"].startswith("resp_")

    chunks = list(llm.stream("Hello chunks"))
    assert "".join(c.text for c in chunks) == "You said: Hello chunks"

    called = llm.bind_tools([get_weather]).invoke("Weather? " + call("get_weather", {"city": "Rome"}))
    [tool_call] = called.tool_calls
    assert (tool_call["name"], tool_call["args"]) == ("get_weather", {"city": "Rome"})


# --- Codex CLI ----------------------------------------------------------------------------------------------

@pytest.fixture
def run_codex(kind, target, tmp_path):
    if not codex.available():
        pytest.fail(f"{codex.CODEX} is missing: run scripts/setup (npm ci in tests/node installs @openai/codex)")

    def go(prompt: str, **kwargs) -> codex.CodexRun:
        p = target.proxy
        where = ({"proxy": f"http://127.0.0.1:{p.regular_port}", "ca": p.ca} if kind == "https_proxy"
                 else {"base_url": f"http://127.0.0.1:{p.reverse_port}/v1"})
        run = codex.run_codex(prompt, tmp_path, api_key=CLIENT_KEY, **where, **kwargs)
        assert run.returncode == 0 and run.completed, run.explain()
        return run
    return go


def test_codex_exec_answers(run_codex):
    """Unmodified Codex (its default model, code mode) gets its answer."""
    run = run_codex("say hi")
    assert run.messages() and run.messages()[-1].startswith("You said:") and run.messages()[-1].endswith("say hi")


def test_codex_shell_command_loop(run_codex):
    run = run_codex("Run it: " + call("exec_command", {"cmd": "echo codex-shell-ok"}), model=codex.CLASSIC_MODEL)
    [command] = run.items("command_execution")
    assert command["exit_code"] == 0 and command["aggregated_output"].strip() == "codex-shell-ok", run.explain()
    final = run.messages()[-1]
    assert final.startswith("Tool results:") and "codex-shell-ok" in final


def test_codex_apply_patch_loop(run_codex):
    patch = "*** Begin Patch\n*** Add File: hello.txt\n+hello from apply_patch\n*** End Patch\n"
    run = run_codex("Patch it: " + call("apply_patch", {"input": patch}), model=codex.CLASSIC_MODEL)
    [change] = run.items("file_change")
    assert change["status"] == "completed" and change["changes"][0]["kind"] == "add", run.explain()
    assert (run.workdir / "hello.txt").read_text() == "hello from apply_patch\n"
    final = run.messages()[-1]
    assert final.startswith("Tool results:") and "A hello.txt" in final


def test_codex_code_mode_loop(run_codex):
    """Codex's default model runs tools through one custom tool, `exec` in namespace `functions` (JavaScript that
    calls `tools.exec_command(...)`); its Claude-side name is `functions__exec`."""
    script = 'const r = await tools.exec_command({cmd: "echo codex-code-mode-ok"});\ntext(r.output);'
    run = run_codex("Run it: " + call("functions__exec", {"input": script}))
    [command] = run.items("command_execution")
    assert command["exit_code"] == 0 and command["aggregated_output"].strip() == "codex-code-mode-ok", run.explain()
    final = run.messages()[-1]
    assert final.startswith("Tool results:") and "codex-code-mode-ok" in final


def _model_requests(target) -> list[dict]:
    """The Claude requests modelmux made (the emulator's log), streamed or not."""
    return [r["body"] for r in target.emulator.requests() if r["path"].endswith(("rawPredict", "streamRawPredict"))
            and isinstance(r["body"], dict)]


def _texts(message: dict) -> list[str]:
    return [b["text"] for b in message["content"] if b["type"] == "text"]


def test_codex_remote_compaction(run_codex, target):
    """Codex compacts remotely once its token limit is reached (here right after the first tool call): a streamed
    POST /v1/responses ending in `compaction_trigger` gets exactly one `compaction` item; the next request sends
    it after the user's message, where it expands into the summary. The tool ran once and the turn ends."""
    if target.via != "modelmux":
        pytest.skip("the emulator's request log is modelmux's")
    target.emulator.clear()
    script = 'text("codex-compact-ok");'
    run = run_codex("Compact it: " + call("functions__exec", {"input": script}),
                    config={"model_auto_compact_token_limit": "1000"})
    final = run.messages()[-1]
    assert final.startswith("You said:") and "codex-compact-ok" in final and "Summary: " in final, run.explain()
    calls, compaction, after = _model_requests(target)  # no second call of the tool: the loop ended
    assert compaction["tool_choice"] == {"type": "none"} and "thinking" not in compaction
    assert _texts(compaction["messages"][-1])[-1] == COMPACTION_PROMPT
    assert [b["type"] for b in compaction["messages"][-1]["content"]][0] == "tool_result"
    summary = _texts(after["messages"][-1])[-1]  # the compaction item, after the user's kept message
    assert summary.startswith("<conversation_summary>\nSummary: ") and "codex-compact-ok" in summary
    assert all(b["type"] != "tool_use" for m in after["messages"] for b in m["content"])  # history replaced


def test_codex_tool_search_round_trip(run_codex, target):
    """Codex's classic tool set has a client-executed `tool_search`: the call reaches Codex as a
    `tool_search_call` it runs, and its `tool_search_output` comes back as the tool result."""
    run = run_codex("Find tools: " + call("tool_search", {"query": "calendar", "limit": 2}),
                    model=codex.CLASSIC_MODEL)
    final = run.messages()[-1]
    assert final.startswith("Tool results:"), run.explain()
    if target.via == "modelmux":  # the result Claude reads names what the search loaded
        assert "No tools matched" in final or "callable now" in final, run.explain()
