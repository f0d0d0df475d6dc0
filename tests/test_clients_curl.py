"""curl as the client, to see the exact bytes: SSE through a real `modelmux run` in HTTPS_PROXY mode over HTTP/1.1
and HTTP/2 (`--http2`, negotiated with mitmproxy by ALPN), and in reverse (base URL) mode over HTTP/1.1 (mitmproxy
serves no cleartext HTTP/2). The framing must be exactly `data: {json}\\n\\n` per chunk and `data: [DONE]\\n\\n`,
with every chunk valid against OpenAI's spec."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass

import pytest
from openapi import validate_chunk, validate_completion, validate_error, validate_openai_sse

from e2e import (CLIENT_KEY, client_env, emulator_and_proxy, finish_reasons, stream_text, streamed_tool_calls)

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not on PATH")

# one line per chunk, nothing else: no comments, no `event:` lines, no CRLF, and [DONE] last
SSE_BODY = re.compile(rb"(data: \{[^\n]*\}\n\n)+data: \[DONE\]\n\n")
# (how curl reaches modelmux, the HTTP version it must end up speaking)
ROUTES = {"https_proxy-http1.1": ("https_proxy", "1.1"), "https_proxy-http2": ("https_proxy", "2"),
          "reverse-http1.1": ("reverse", "1.1")}
HELLO = [{"role": "user", "content": "Hello curl"}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@dataclass
class Answer:
    status: int
    http_version: str
    headers: dict[str, str]  # lower-case names; the last response's (not the proxy's CONNECT answer)
    body: bytes


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("curl")
    with emulator_and_proxy(tmp) as running:
        yield running


@pytest.fixture(params=list(ROUTES))
def route(request):
    return ROUTES[request.param]


def curl(proxy, route: tuple[str, str], body: dict, tmp_path) -> Answer:
    """POST `body` to /v1/chat/completions with curl, as `route` says; -N: no buffering, as an SSE reader runs."""
    p, _ = proxy
    kind, version = route
    out, head = tmp_path / "body", tmp_path / "headers"
    argv = [CURL, "-sS", "-N", "--max-time", "20", "-o", str(out), "-D", str(head),
            "-w", "%{http_code} %{http_version}", "-H", f"authorization: Bearer {CLIENT_KEY}",
            "-H", "content-type: application/json", "--data-binary", json.dumps(body)]
    if kind == "https_proxy":
        argv += ["--proxy", f"http://127.0.0.1:{p.regular_port}", "--cacert", str(p.ca),
                 "--http2" if version == "2" else "--http1.1", "https://api.openai.com/v1/chat/completions"]
    else:
        argv += ["--http1.1", f"http://127.0.0.1:{p.reverse_port}/v1/chat/completions"]
    # curl gets proxy and CA on its command line: its environment names none
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=client_env("none", p))
    assert proc.returncode == 0, f"curl exited {proc.returncode}: {proc.stderr}"
    status, got_version = proc.stdout.split()
    assert got_version == version, f"curl spoke HTTP/{got_version}, not HTTP/{version}"
    last = head.read_text().replace("\r\n", "\n").strip().split("\n\n")[-1]  # after any CONNECT answer
    headers = {}
    for line in last.split("\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status), got_version, headers, out.read_bytes())


def assert_sse_headers(answer: Answer) -> None:
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in answer.headers  # a stream has no length
    if answer.http_version == "1.1":
        assert answer.headers.get("transfer-encoding") == "chunked"
    else:  # HTTP/2 forbids connection-specific headers (curl would have refused the response)
        assert "transfer-encoding" not in answer.headers


def test_sse_framing_is_exact(proxy, route, tmp_path):
    answer = curl(proxy, route, {"model": "gpt-4o", "messages": HELLO, "stream": True,
                                 "stream_options": {"include_usage": True}}, tmp_path)
    assert_sse_headers(answer)
    assert SSE_BODY.fullmatch(answer.body), answer.body[-300:]
    chunks = validate_openai_sse(answer.body)
    assert stream_text(chunks) == "You said: Hello curl" and finish_reasons(chunks) == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4


def test_pain15_streamed_tool_call_framing(proxy, route, tmp_path):
    ask = [{"role": "user", "content": "Use get_weather for Oslo."}]
    answer = curl(proxy, route, {"model": "gpt-4o", "messages": ask, "tools": [WEATHER_TOOL], "stream": True},
                  tmp_path)
    assert_sse_headers(answer)
    assert SSE_BODY.fullmatch(answer.body), answer.body[-300:]
    chunks = validate_openai_sse(answer.body)
    [call] = streamed_tool_calls(chunks)
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "city-value"}
    assert finish_reasons(chunks) == ["tool_calls"]


def test_pain20_stream_error_framing(proxy, route, tmp_path):
    """A mid-stream upstream error: the chunks so far, then exactly one `data: {"error": …}` event, no [DONE]."""
    ask = [{"role": "user", "content": "[[stream-error:overloaded]] go on"}]
    answer = curl(proxy, route, {"model": "gpt-4o", "messages": ask, "stream": True}, tmp_path)
    assert_sse_headers(answer)
    assert re.fullmatch(rb"(data: \{[^\n]*\}\n\n)+", answer.body) and b"[DONE]" not in answer.body, answer.body
    *chunks, error = [json.loads(line[6:]) for line in answer.body.split(b"\n\n")[:-1]]
    for chunk in chunks:
        validate_chunk(chunk)
    assert chunks and finish_reasons(chunks) == []
    validate_error(error)
    assert error["error"]["code"] == "overloaded_error"


def test_non_streamed_and_rate_limit(proxy, route, tmp_path):
    answer = curl(proxy, route, {"model": "gpt-4o", "messages": HELLO}, tmp_path)
    assert answer.status == 200 and answer.headers["content-type"].startswith("application/json")
    assert int(answer.headers["content-length"]) == len(answer.body)
    validate_completion(json.loads(answer.body))

    answer = curl(proxy, route, {"model": "gpt-4o", "messages": [{"role": "user", "content": "[[status:429]]"}],
                                 "stream": True}, tmp_path)
    assert answer.status == 429 and int(answer.headers["retry-after"]) >= 1
    validate_error(json.loads(answer.body))
