"""Every translated pair can be seen: a conversation with tools through a real `modelmux run --dump FILE`, then
the dump holds all four bodies with no secret in it, and `modelmux pairs` prints it. Secrets at rest (issue 10,
point 4): the dump file is created 0600, and flows saved by a real `modelmux run` hold no client key."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess

import openai
import pytest
from mitmproxy import io as mitmproxy_io

import procs
from e2e import CLIENT_KEY, emulator_and_proxy, openai_client

from modelmux.addons.redact import REDACTED
from modelmux.dump import DumpWriter

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


def test_secrets_at_rest_dump_is_0600_and_saved_flows_hold_no_client_key(tmp_path, monkeypatch):
    """A real `modelmux run --dump FILE --set save_stream_file=FLOWS` (what `mitmdump -w` does), driven through
    reverse mode and HTTPS_PROXY; the flows file is read back with mitmproxy's own reader."""
    dump, flows = tmp_path / "pairs.jsonl", tmp_path / "flows.mitm"
    with emulator_and_proxy(tmp_path, "modelmux-run", "--dump", str(dump), "--set",
                            f"save_stream_file={flows}") as (proxy, _):
        ask = [{"role": "user", "content": "hello"}]
        for kind in ("reverse", "https_proxy"):
            api = openai_client(kind, proxy, monkeypatch)
            api.chat.completions.create(model="gpt-4o", messages=ask)
            assert "".join(c.choices[0].delta.content or "" for c in api.chat.completions.create(
                model="gpt-4o", messages=ask, stream=True) if c.choices) == "You said: hello"
            assert any(m.id == "gpt-4o" for m in api.models.list())
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600 and len(dump.read_text().splitlines()) == 4
    assert CLIENT_KEY.encode() not in flows.read_bytes()
    with flows.open("rb") as f:
        saved = [flow for flow in mitmproxy_io.FlowReader(f).stream() if hasattr(flow, "request")]
    answered = [flow for flow in saved if flow.response is not None]
    assert len(answered) >= 6, [flow.request.url for flow in saved]
    sent_key = [flow for flow in answered if "authorization" in flow.request.headers]
    assert sent_key and all(flow.request.headers["authorization"] == REDACTED for flow in sent_key)


def test_a_new_dump_file_is_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        writer = DumpWriter()
        writer.open(str(tmp_path / "new" / "pairs.jsonl"))
        writer.write({"a": 1})
        writer.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new" / "pairs.jsonl").stat().st_mode) == 0o600


def test_an_existing_dump_file_keeps_its_mode_with_a_warning_when_others_can_read_it(tmp_path, caplog):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"earlier": true}\n')
    path.chmod(0o640)
    writer = DumpWriter()
    with caplog.at_level(logging.WARNING, logger="modelmux"):
        writer.open(str(path))
    writer.write({"later": True})
    writer.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the operator's choice: never widened, never changed
    assert "readable by others" in caplog.text and path.read_text().count("\n") == 2


def test_a_dump_path_that_cannot_be_opened_keeps_the_current_file(tmp_path):
    writer = DumpWriter()
    writer.open(str(tmp_path / "a.jsonl"))
    with pytest.raises(OSError):
        writer.open(str(tmp_path))  # a directory
    writer.write({"still": "here"})
    writer.close()
    assert json.loads((tmp_path / "a.jsonl").read_text()) == {"still": "here"}
