"""Real Responses API clients in Node (tests/node/responses.mjs), through a real `modelmux run` in HTTPS_PROXY and
reverse (base URL) mode against the emulator: the Vercel AI SDK (`openai('gpt-4o')` — generateText, streamText,
a tool loop with stopWhen, a follow-up turn that sends item_reference) and @openai/agents (an Agent with a
function tool, run and streamed run on its default model). The Response bodies and raw stream events the SDKs
received are checked against ../shared/openai-openapi.yaml.

`--responses-via=recorder` runs them against tests/responses_recorder.py instead (see test_clients_responses.py)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import procs
from e2e import CLIENT_KEY, CLIENT_KINDS_VIA_PROXY, client_env
from openapi import validate_response, validate_responses_events
from responses_targets import call, per_response, responses_target

NODE = shutil.which("node")
NODE_DIR = procs.ROOT / "tests" / "node"
pytestmark = [pytest.mark.responses_api,
              pytest.mark.skipif(NODE is None, reason="node is not on PATH: these tests need Node.js (>= 20.18) and "
                                                      "`npm ci --prefix tests/node`")]
WEATHER_TOOL = {"name": "get_weather", "returns": "Sunny in"}


@pytest.fixture(scope="module")
def target(request, tmp_path_factory):
    if not (NODE_DIR / "node_modules" / "ai").is_dir():
        pytest.fail("tests/node/node_modules lacks the AI SDK: run scripts/setup (`npm ci --prefix tests/node`)")
    with responses_target(request.config.getoption("--responses-via"), tmp_path_factory.mktemp("node")) as t:
        yield t


@pytest.fixture(params=CLIENT_KINDS_VIA_PROXY)
def kind(request):
    return request.param


def run_node(kind: str, target, *steps: tuple[str, dict]) -> list[dict]:
    """Run tests/node/responses.mjs with the steps as `kind` reaches the target; each step's {"ok"} or {"error"}."""
    p = target.proxy
    job: dict = {"apiKey": CLIENT_KEY, "steps": [{"op": op, "params": params} for op, params in steps]}
    if kind == "https_proxy":  # the SDKs keep https://api.openai.com/v1; the CA via NODE_EXTRA_CA_CERTS
        job["proxy"] = f"http://127.0.0.1:{p.regular_port}"
    else:
        job["baseURL"] = f"http://127.0.0.1:{p.reverse_port}/v1"
    proc = subprocess.run([NODE, str(NODE_DIR / "responses.mjs")], input=json.dumps(job), capture_output=True,
                          text=True, timeout=90, env=client_env(kind, p), cwd=NODE_DIR)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["versions"]["ai"].startswith("6.") and out["versions"]["@openai/agents"].startswith("0."), out
    return out["results"]


def ok(result: dict) -> dict:
    assert "ok" in result, result.get("error")
    return result["ok"]


def test_vercel_generate_text(kind, target):
    [result] = run_node(kind, target, ("vercel_generate", {"model": "gpt-4o", "prompt": "Hello Vercel"}))
    got = ok(result)
    validate_response(got["response"]["body"])
    assert got["text"] == "You said: Hello Vercel" and got["finishReason"] == "stop"
    assert got["response"]["modelId"] == "gpt-4o" and got["response"]["id"].startswith("resp_")
    assert got["usage"]["outputTokens"] > 0


def test_vercel_stream_text(kind, target):
    [result] = run_node(kind, target, ("vercel_stream", {"model": "gpt-4o", "prompt": "Hello stream"}))
    got = ok(result)
    validate_responses_events(got["events"])
    assert got["text"] == "You said: Hello stream" and got["finishReason"] == "stop"
    assert got["parts"][:3] == ["start", "start-step", "text-start"] and got["parts"][-2:] == ["finish-step", "finish"]


@pytest.mark.parametrize("op", ["vercel_tool", "vercel_stream_tool"])
def test_vercel_tool_loop(kind, target, op):
    """Its second step sends the first step's text back as an item_reference (store is on by default)."""
    prompt = "Weather? " + call("get_weather", {"city": "Paris"})
    [result] = run_node(kind, target, (op, {"model": "gpt-4o", "prompt": prompt, "tool": WEATHER_TOOL}))
    got = ok(result)
    assert got["toolCalls"] == [{"toolName": "get_weather", "input": {"city": "Paris"}}]
    assert got["toolResults"] == [{"toolName": "get_weather", "output": "Sunny in Paris"}]
    assert got["text"] == "Tool results: Sunny in Paris" and got["steps"] == 2 and got["finishReason"] == "stop"


@pytest.mark.parametrize("store", [True, False])
def test_vercel_follow_up_turn(kind, target, store):
    """store on: the earlier answer comes back as a bare item_reference; store off: as the message itself."""
    params = {"model": "gpt-4o", "prompt": "Hello one", "followup": "Hello two"}
    if not store:
        params["providerOptions"] = {"openai": {"store": False}}
    [result] = run_node(kind, target, ("vercel_followup", params))
    got = ok(result)
    assert (got["first"], got["second"]) == ("You said: Hello one", "You said: Hello two")
    if target.recorder:  # what the SDK sent for the earlier answer
        earlier = target.recorder.creates()[-1].body["input"][1]
        assert earlier["type" if store else "role"] == ("item_reference" if store else "assistant"), earlier
    else:  # the earlier answer reached Claude either way: never silently lost
        messages = target.emulator.last_request()["body"]["messages"]
        said = [b.get("text") for m in messages if m["role"] == "assistant"
                for b in (m["content"] if isinstance(m["content"], list) else [{"text": m["content"]}])]
        assert "You said: Hello one" in said, messages


def test_agents_run_with_function_tool(kind, target):
    prompt = "Weather? " + call("get_weather", {"city": "Paris"})
    plain, tooled = run_node(kind, target, ("agents_run", {"input": "Hello agents"}),
                             ("agents_run", {"input": prompt, "tool": WEATHER_TOOL}))
    assert ok(plain)["finalOutput"] == "You said: Hello agents" and ok(plain)["responses"] == 1
    got = ok(tooled)
    assert got["finalOutput"] == "Tool results: Sunny in Paris" and got["responses"] == 2
    assert got["items"] == ["message_output_item", "tool_call_item", "tool_call_output_item", "message_output_item"]


def test_agents_streamed_run_with_function_tool(kind, target):
    prompt = "Weather? " + call("get_weather", {"city": "Rome"})
    [result] = run_node(kind, target, ("agents_stream", {"input": prompt, "tool": WEATHER_TOOL}))
    got = ok(result)
    assert got["finalOutput"] == "Tool results: Sunny in Rome" and got["responses"] == 2
    streams = per_response(got["events"])
    assert len(streams) == 2
    for events in streams:
        validate_responses_events(events)
