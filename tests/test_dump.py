"""Every translated pair can be seen: a conversation with tools through a real `modelmux run --dump FILE`, then
the dump holds all four bodies with no secret in it, and `modelmux pairs` prints it."""

from __future__ import annotations

import json
import subprocess

import openai

import procs
from e2e import CLIENT_KEY, emulator_and_proxy

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_dump_holds_the_four_bodies_of_each_exchange_without_secrets(tmp_path, monkeypatch):
    dump = tmp_path / "pairs.jsonl"
    with emulator_and_proxy(tmp_path, "modelmux-run", "--dump", str(dump), "--log-format", "json") as (proxy, _):
        api = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"http://127.0.0.1:{proxy.reverse_port}/v1", max_retries=0,
                            timeout=20)
        ask = [{"role": "user", "content": "What is the weather? use get_weather"}]
        first = api.chat.completions.create(model="gpt-4o", messages=ask, tools=[WEATHER])
        call = first.choices[0].message.tool_calls[0]
        ask += [{"role": "assistant", "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
        chunks = list(api.chat.completions.create(model="gpt-4o", messages=ask, tools=[WEATHER], stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Tool results: sunny"
        logged = [json.loads(line[line.index("{"):]) for line in proxy.proc.wait_lines('"event": "exchange"', 2)]
    # one structured log line per exchange (--log-format json)
    assert [(x["stream"], x["status"], x["model"], x["mode"]) for x in logged] == [
        (False, 200, "gpt-4o", "reverse"), (True, 200, "gpt-4o", "reverse")]
    assert logged[1]["first_chunk_ms"] <= logged[1]["duration_ms"] and logged[1]["completion_tokens"] == 3
    text = dump.read_text()
    for secret in (CLIENT_KEY, "ya29.", "PRIVATE KEY", "Bearer"):
        assert secret not in text
    plain, streamed = [json.loads(line) for line in text.splitlines()]
    assert plain["openai_request"]["tools"][0]["function"]["name"] == "get_weather"
    assert plain["vertex_request"]["body"]["tools"][0]["name"] == "get_weather"
    assert "model" not in plain["vertex_request"]["body"]
    assert plain["vertex_response"]["body"]["stop_reason"] == "tool_use"
    assert plain["openai_response"]["body"]["choices"][0]["finish_reason"] == "tool_calls"
    assert plain["status"] == 200 and plain["timings"]["done_ms"] > 0
    assert streamed["stream"] and streamed["vertex_request"]["url"].endswith(":streamRawPredict")
    assert streamed["vertex_request"]["body"]["messages"][2]["content"][0]["type"] == "tool_result"
    assert [e["type"] for e in streamed["vertex_response"]["events"]][:1] == ["message_start"]
    assert streamed["vertex_response"]["events"][-1] == {"type": "message_stop"}
    assert streamed["openai_response"]["chunks"][-1] == "[DONE]"
    assert 0 < streamed["timings"]["first_chunk_ms"] <= streamed["timings"]["done_ms"]

    out = subprocess.run([str(procs.VENV_BIN / "modelmux"), "pairs", str(dump)], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert "gpt-4o → claude-sonnet-4-5@20250929" in out and "2 of 2 exchanges shown" in out
    assert "Vertex response  200" in out and "OpenAI response (to the app)  200" in out
    assert "SSE events" in out and "\"tool_result\"" in out
    out = subprocess.run([str(procs.VENV_BIN / "modelmux"), "pairs", str(dump), "--status", "429"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert "0 of 2 exchanges shown" in out
