"""End to end with real parts: the emulator, a real `mitmdump -s addon/modelmux_addon.py` and a real
`modelmux run` process, the openai SDK in HTTPS_PROXY mode, reverse mode and straight to the listener, and
google-auth service-account tokens verified by the emulator. Every body and chunk is checked against the spec."""

from __future__ import annotations

import contextlib
import http.server
import json
import ssl
import threading
import time

import httpx
import openai
import pytest
from openapi import validate_completion, validate_error, validate_openai_sse

import procs
from e2e import CLIENT_KEY

CLIENT_KINDS = ["https_proxy", "reverse", "direct"]
HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello there, Claude"}]


def make_client(kind: str, proxy, monkeypatch, cls=openai.OpenAI):
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
                "no_proxy", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    if kind == "https_proxy":
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.regular_port}")
        monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca))
        return cls(api_key=CLIENT_KEY, max_retries=0, timeout=20)
    port = proxy.reverse_port if kind == "reverse" else proxy.regular_port
    return cls(api_key=CLIENT_KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=20)


@pytest.fixture(params=CLIENT_KINDS)
def client(request, proxy, monkeypatch):
    c = make_client(request.param, proxy, monkeypatch)
    yield c
    c.close()


def test_non_streamed_completion(client, emulator):
    emu, _ = emulator
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO, max_tokens=50,
                                                           temperature=0.5, stop=["NEVER"])
    body = raw.http_response.json()
    validate_completion(body)
    completion = raw.parse()
    assert completion.model == "gpt-4o" and completion.object == "chat.completion"
    assert completion.choices[0].message.content == "You said: Hello there, Claude"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 5 and completion.usage.prompt_tokens > 0
    assert abs(completion.created - time.time()) < 60

    sent = emu.last_request()
    assert sent["path"].endswith("/projects/e2e-project/locations/us-east5/publishers/anthropic/models/"
                                 "claude-sonnet-4-5@20250929:rawPredict")
    assert sent["authorized"] and sent["status"] == 200
    vbody = sent["body"]
    assert "model" not in vbody and vbody["system"] == [{"type": "text", "text": "You are terse."}]
    assert vbody["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello there, Claude"}]}]
    assert vbody["max_tokens"] == 50 and vbody["temperature"] == 0.5 and vbody["stop_sequences"] == ["NEVER"]
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert not any(k.startswith(("openai-", "x-stainless")) for k in headers)
    assert CLIENT_KEY not in json.dumps(sent)


def test_streamed_completion_with_usage(client, emulator):
    emu, _ = emulator
    with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=HELLO, stream=True, stream_options={"include_usage": True}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(resp.iter_bytes())
    chunks = validate_openai_sse(raw)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len({c["id"] for c in chunks}) == 1 and all(c["model"] == "gpt-4o-mini" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "You said: Hello there, Claude"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]].count("stop") == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    assert emu.last_request()["path"].endswith("claude-haiku-4-5@20251001:streamRawPredict")

    # and the SDK's own stream iterator sees the same thing
    stream = client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text


def test_stop_and_length_finish_reasons(client):
    c = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "one two three four"}],
                                       max_completion_tokens=3)
    assert c.choices[0].finish_reason == "length" and c.choices[0].message.content == "You said: one "
    c = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "alpha STOP beta"}],
                                       stop="STOP")
    assert c.choices[0].finish_reason == "stop" and c.choices[0].message.content == "You said: alpha "


def test_models_endpoints(client):
    ids = [m.id for m in client.models.list()]
    assert ids[:2] == ["gpt-4o", "gpt-4o-mini"] and "claude-sonnet-4-5@20250929" in ids
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"


def test_errors_are_openai_shaped(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o", messages=HELLO, temperature=5)
    assert err.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError) as err:  # not a path modelmux serves: answered locally, never forwarded
        client.images.generate(model="dall-e-3", prompt="x")
    validate_error({"error": err.value.body})
    with pytest.raises(openai.NotFoundError) as err:  # Vertex's own 404 for a model it does not serve
        client.chat.completions.create(model="claude-unknown-9@20990101", messages=HELLO)
    assert "claude-unknown-9@20990101" in err.value.message and "us-east5" in err.value.message
    validate_error({"error": err.value.body})


def test_streaming_is_incremental(client, emulator):
    """With 120 ms between upstream events, chunks reach the SDK as the events happen, not at the end."""
    emu, _ = emulator
    emu.set_pace(120)
    try:
        words = " ".join(f"w{i}" for i in range(10))
        start = time.monotonic()
        arrivals = []
        for chunk in client.chat.completions.create(model="gpt-4o", stream=True,
                                                    messages=[{"role": "user", "content": words}]):
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic() - start)
        total = time.monotonic() - start
    finally:
        emu.set_pace(0)
    assert len(arrivals) == 12 and total > 1.2  # "You said:" + 10 words, one upstream event each
    assert arrivals[0] < total / 3, (arrivals[0], total)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert min(gaps) > 0.05, gaps  # one upstream event → one chunk, when it happens


async def test_async_client_streams(proxy, monkeypatch):
    client = make_client("https_proxy", proxy, monkeypatch, cls=openai.AsyncOpenAI)
    async with client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "You said: Hello there, Claude"


def test_other_https_is_tunnelled_untouched(proxy, tmp_path):
    """`modelmux run` decrypts only the intercepted hosts: HTTPS to any other host keeps its own certificate
    (a client that trusts only that server's certificate still connects through the proxy)."""
    if "run" not in proxy.proc.argv[1:2]:
        pytest.skip("plain mitmdump decrypts what its own options say; allow_hosts is set by `modelmux run`")
    with tls_server(tmp_path) as (port, cert):
        ctx = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(proxy=f"http://127.0.0.1:{proxy.regular_port}", verify=ctx, trust_env=False,
                          timeout=10) as http:
            r = http.get(f"https://127.0.0.1:{port}/hello")
    assert r.status_code == 200 and r.text == "untouched"


@contextlib.contextmanager
def tls_server(tmp_path):
    """An HTTPS server on loopback with its own self-signed certificate for 127.0.0.1."""
    cert_file, key_file = procs.self_signed_cert(tmp_path)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-length", "9")
            self.end_headers()
            self.wfile.write(b"untouched")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], cert_file
    finally:
        server.shutdown()
        server.server_close()


def test_pain26_streaming_answers_sse_whatever_accept_header_the_sdk_sends(client):
    """openai-python sends `Accept: application/json` even for streams; the seed's client detection answered
    those with JSON and broke the SDK. modelmux decides by `stream` alone."""
    with client.chat.completions.with_streaming_response.create(model="gpt-4o", messages=HELLO, stream=True) as resp:
        assert resp.http_request.headers["accept"] == "application/json"
        assert resp.headers["content-type"].startswith("text/event-stream")
        chunks = validate_openai_sse(b"".join(resp.iter_bytes()))
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
