"""mitmweb shows each translated pair (issue 5.1): through a real `modelmux run --web` and a real
`mitmweb -s addon/modelmux_addon.py`, each flow carries the app's OpenAI request, the Vertex exchange and the
translated answer in its comment and metadata, and a streamed flow keeps its translated body."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

import procs
from e2e import CLIENT_KEY, assert_no_secrets, write_config

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PASSWORD = "web-ui-test-password"


def start_web(launcher: str, tmp, config, port: int, web_port: int) -> procs.Proc:
    mode = f"reverse:https://api.openai.com@{port}"
    if launcher == "mitmweb":
        argv = [str(procs.VENV_BIN / "mitmweb"), "-s", str(procs.ROOT / "addon" / "modelmux_addon.py"),
                "--mode", mode, "--web-port", str(web_port), "--set", "web_open_browser=false",
                "--set", f"confdir={tmp / 'confdir'}", "--set", f"modelmux_config={config}"]
    else:
        argv = [str(procs.VENV_BIN / "modelmux"), "run", "--config", str(config), "--confdir", str(tmp / "confdir"),
                "--mode", mode, "--web", "--web-port", str(web_port)]
    proc = procs.Proc([*argv, "--set", f"web_password={PASSWORD}"], procs.PROXY_READY, cwd=procs.ROOT)
    procs.wait_port(port)
    procs.wait_port(web_port)
    return proc


@pytest.mark.parametrize("launcher", ["modelmux-run", "mitmweb"])
def test_each_flow_in_the_web_ui_shows_the_pair(launcher, tmp_path):
    emu, url, key = procs.emulator(tmp_path)
    port, web_port = procs.free_port(), procs.free_port()
    proxy = None
    try:
        proxy = start_web(launcher, tmp_path, write_config(tmp_path / "c.yaml", url, key), port, web_port)
        api = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=20)
        ask = [{"role": "user", "content": "What is the weather? use get_weather"}]
        call = api.chat.completions.create(model="gpt-4o", messages=ask, tools=[WEATHER]).choices[0].message.tool_calls[0]
        ask += [{"role": "assistant", "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
        text = "".join(c.choices[0].delta.content or "" for c in api.chat.completions.create(
            model="gpt-4o", messages=ask, tools=[WEATHER], stream=True) if c.choices)
        assert text == "Tool results: sunny"
        ui = httpx.Client(base_url=f"http://127.0.0.1:{web_port}", params={"token": PASSWORD}, trust_env=False,
                          timeout=10)
        assert httpx.get(f"http://127.0.0.1:{web_port}/flows", trust_env=False).status_code == 403  # UI is locked
        deadline, flows = time.monotonic() + 10, []
        while time.monotonic() < deadline and len(flows) < 2:  # a flow's comment lands as its exchange is logged
            flows = [f for f in ui.get("/flows").json() if "OpenAI response (to the app)" in (f["comment"] or "")]
            time.sleep(0.05)
        plain, streamed = sorted(flows, key=lambda f: f["timestamp_created"])
        for flow in (plain, streamed):
            comment = flow["comment"]
            assert comment.startswith("modelmux: gpt-4o → claude-sonnet-4-5@20250929 (us-east5) 200")
            assert "OpenAI request (from the app)" in comment and '"get_weather"' in comment
            assert "Vertex request  POST " in comment and "Vertex response  200" in comment
            assert_no_secrets(comment)
            assert "Bearer" not in comment
        assert '"tool_use"' in plain["comment"] and '"tool_calls"' in plain["comment"]
        assert "SSE events" in streamed["comment"] and '"tool_result"' in streamed["comment"]
        # the streamed flow kept its body: the chunks as the app received them
        body = ui.get(f"/flows/{streamed['id']}/response/content.data").content
        assert b'"object": "chat.completion.chunk"' in body and body.endswith(b"data: [DONE]\n\n")
        assert b"\"content\": \"Tool \"" in body and b"\"content\": \"sunny\"" in body
    finally:
        if proxy is not None:
            proxy.stop()
            assert_no_secrets(proxy.output())
        emu.stop()
