"""The official openai Node SDK (tests/node: `openai` + `undici`, installed by scripts/setup) through a real
`modelmux run`, in reverse (base URL) mode and HTTPS_PROXY mode: non-streamed, streamed tool calls put together
by the SDK's stream helper, the SDK's own tool loop (`runTools`), and stream faults and 429s raised as SDK errors.
tests/node/client.mjs runs the SDK calls a job lists and prints what came back as JSON."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from openapi import validate_chunk, validate_completion

import procs
from e2e import (CLIENT_KEY, CLIENT_KINDS_VIA_PROXY, client_env, emulator_and_proxy, finish_reasons, stream_text, streamed_tool_calls)

NODE = shutil.which("node")
NODE_DIR = procs.ROOT / "tests" / "node"
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not on PATH: the openai Node SDK tests need Node.js "
                                                     "(>= 20.18) and `npm ci --prefix tests/node`")

WEATHER = {"name": "get_weather", "description": "The current weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TIME = {"name": "get_time", "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}}}
HELLO = [{"role": "user", "content": "Hello from Node"}]


def as_tool(spec: dict) -> dict:
    return {"type": "function", "function": spec}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("tests/node/node_modules is missing: run scripts/setup (it runs `npm ci --prefix tests/node`)")
    tmp = tmp_path_factory.mktemp("node")
    with emulator_and_proxy(tmp) as running:
        yield running


def node_version() -> tuple[int, ...]:
    out = subprocess.run([NODE, "--version"], capture_output=True, text=True, timeout=10).stdout
    return tuple(int(n) for n in re.findall(r"\d+", out)[:3])


def run_node(kind: str, proxy, *steps: tuple[str, dict], env_proxy: bool = False) -> list[dict]:
    """Run tests/node/client.mjs with one job (the steps, as `kind` reaches modelmux); its per-step results."""
    p, _ = proxy
    job: dict = {"apiKey": CLIENT_KEY, "steps": [{"op": op, "params": params} for op, params in steps]}
    env = client_env(kind, p)
    if kind == "https_proxy":
        # the SDK keeps https://api.openai.com/v1; mitmproxy's CA via NODE_EXTRA_CA_CERTS (set by client_env)
        job["proxy"] = "env" if env_proxy else f"http://127.0.0.1:{p.regular_port}"
        if env_proxy:
            env["NODE_USE_ENV_PROXY"] = "1"
    else:
        job["baseURL"] = f"http://127.0.0.1:{p.reverse_port}/v1"
    proc = subprocess.run([NODE, str(NODE_DIR / "client.mjs")], input=json.dumps(job), capture_output=True,
                          text=True, timeout=60, env=env, cwd=NODE_DIR)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert int(out["sdk"].split(".")[0]) >= 6, out["sdk"]
    return out["results"]


def ok(result: dict) -> dict:
    assert "ok" in result, result.get("error")
    return result["ok"]


@pytest.fixture(params=CLIENT_KINDS_VIA_PROXY)
def kind(request):
    return request.param


def test_non_streamed(kind, proxy):
    [result] = run_node(kind, proxy, ("create", {"model": "gpt-4o", "messages": HELLO, "max_tokens": 50}))
    got = ok(result)
    assert got["status"] == 200 and got["contentType"].startswith("application/json")
    validate_completion(got["completion"])
    choice = got["completion"]["choices"][0]
    assert choice["message"]["content"] == "You said: Hello from Node" and choice["finish_reason"] == "stop"
    assert got["completion"]["model"] == "gpt-4o"


def test_pain15_stream_helper_accumulates_parallel_tool_calls(kind, proxy):
    ask = [{"role": "user", "content": "Call get_weather for Paris and get_time for Europe/Paris."}]
    [result] = run_node(kind, proxy, ("stream_helper", {"model": "gpt-4o", "messages": ask,
                                                        "tools": [as_tool(WEATHER), as_tool(TIME)]}))
    got = ok(result)
    for chunk in got["chunks"]:  # as the SDK received them
        validate_chunk(chunk)
    assert [c["index"] for c in streamed_tool_calls(got["chunks"])] == [0, 1]
    assert got["events"]["tool_calls.function.arguments.done"] == 2
    assert got["events"]["tool_calls.function.arguments.delta"] > 2
    choice = got["final"]["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I will call get_weather, get_time."
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in choice["message"]["tool_calls"]]
    assert calls == [("get_weather", {"city": "city-value"}), ("get_time", {"timezone": "timezone-value"})]


def test_run_tools_full_loop(kind, proxy):
    """The SDK's own tool loop: it calls get_weather (in JS), sends the result back, and ends on the answer."""
    ask = [{"role": "user", "content": "What is the weather in Paris? Use get_weather."}]
    tools = [{**WEATHER, "returns": "Sunny in"}]
    [result] = run_node(kind, proxy, ("run_tools", {"model": "gpt-4o", "messages": ask, "tools": tools}))
    got = ok(result)
    assert got["content"] == "Tool results: Sunny in city-value"
    assert got["completions"] == 2
    assert [m["role"] for m in got["messages"]] == ["user", "assistant", "tool", "assistant"]


def test_streamed_text(kind, proxy):
    [result] = run_node(kind, proxy, ("stream", {"model": "gpt-4o", "messages": HELLO,
                                                 "stream_options": {"include_usage": True}}))
    chunks = ok(result)["chunks"]
    for chunk in chunks:
        validate_chunk(chunk)
    assert stream_text(chunks) == "You said: Hello from Node" and finish_reasons(chunks) == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


def test_pain20_pain22_errors_raise_in_the_sdk(kind, proxy):
    """A mid-stream error and a cut stream reject the SDK's iteration after the text so far (never a clean
    finish); a Vertex 429 is a RateLimitError with retry-after."""
    def say(text: str) -> dict:
        return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}

    overloaded, cut, helper_cut, limited = run_node(
        kind, proxy, ("stream", say("[[stream-error:overloaded]] tell me more")),
        ("stream", say("[[cut]] tell me more")), ("stream_helper", say("[[cut]] tell me more")),
        ("create", say("[[status:429]] hello")))
    for result, code in ((overloaded, "overloaded_error"), (cut, "stream_truncated"), (helper_cut, "stream_truncated")):
        assert "error" in result, result
        assert result["error"]["name"] == "APIError" and result["error"]["code"] == code, result["error"]
        assert result["partial"] and finish_reasons(result["partial"]) == []
    assert limited["error"]["name"] == "RateLimitError" and limited["error"]["status"] == 429, limited
    assert int(limited["error"]["retryAfter"]) >= 1 and int(limited["error"]["retryAfterMs"]) >= 1000


def test_https_proxy_with_node_env_proxy(proxy):
    """Node's own HTTPS_PROXY support (NODE_USE_ENV_PROXY=1), which apps get without code changes."""
    version = node_version()
    if version < (22, 21) or version[0] == 23:
        pytest.skip(f"Node {'.'.join(map(str, version))} has no NODE_USE_ENV_PROXY (22.21+ / 24+); "
                    "the ProxyAgent tests cover HTTPS_PROXY mode")
    [result] = run_node("https_proxy", proxy, ("create", {"model": "gpt-4o", "messages": HELLO}), env_proxy=True)
    assert ok(result)["completion"]["choices"][0]["message"]["content"] == "You said: Hello from Node"
