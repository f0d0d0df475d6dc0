"""Streaming modes end to end (issue 5.6) through a real `modelmux run`, chosen per client by User-Agent, with the
openai SDK in HTTPS_PROXY and reverse modes; and the errors modelmux answers itself, counted in /metrics."""

from __future__ import annotations

import httpx
import openai
import pytest
from openapi import validate_openai_sse
from test_e2e_features import scrape

import procs
from e2e import Emulator, openai_client, start_proxy

WORDS = " ".join(f"w{i}" for i in range(12))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("streaming-modes")
    emu_proc, url, key = procs.emulator(tmp)
    config = tmp / "modelmux.yaml"
    config.write_text(f"""
vertex: {{project: modes, region: us-east5, base_url: "{url}"}}
auth: {{credentials_file: "{key}"}}
models: {{map: {{gpt-4o: claude-sonnet-4-5@20250929}}}}
streaming:
  mode: passthrough
  window_ms: 300
  rules:
    - {{user_agent: "oneshot", mode: never}}
    - {{user_agent: "^bufferme/", mode: buffered}}
""")
    proxy = start_proxy("modelmux-run", config, tmp / "confdir")
    yield proxy, Emulator(url)
    proxy.proc.stop()
    emu_proc.stop()


@pytest.fixture(params=["https_proxy", "reverse"])
def make_client(request, setup, monkeypatch):
    """openai clients as an app pointed at modelmux has them, with the User-Agent a rule may pick."""
    proxy, _ = setup
    made = []

    def make(user_agent: str | None = None) -> openai.OpenAI:
        made.append(openai_client(request.param, proxy, monkeypatch,
                                  default_headers={"User-Agent": user_agent} if user_agent else None))
        return made[-1]

    yield make
    for c in made:
        c.close()


def stream(client: openai.OpenAI) -> list[dict]:
    with client.chat.completions.with_streaming_response.create(
            model="gpt-4o", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": WORDS}]) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        return validate_openai_sse(b"".join(resp.iter_bytes()))


def contents(chunks: list[dict]) -> list[str]:
    return [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]


def test_official_sdk_gets_passthrough_one_chunk_per_event(make_client, setup):
    _, emu = setup
    chunks = stream(make_client())
    assert "".join(contents(chunks)) == "You said: " + WORDS
    assert len(contents(chunks)) == len(("You said: " + WORDS).split())  # one per upstream text event
    assert emu.last_request()["path"].endswith(":streamRawPredict")


def test_never_calls_vertex_once_unstreamed_and_still_streams_valid_sse(make_client, setup):
    _, emu = setup
    client = make_client("oneshot-agent/2.0")
    chunks = stream(client)
    assert "".join(contents(chunks)) == "You said: " + WORDS
    assert chunks[-1]["usage"]["completion_tokens"] == len(("You said: " + WORDS).split())
    sent = emu.last_request()
    assert sent["path"].endswith(":rawPredict") and "stream" not in sent["body"]
    # the SDK's own stream reader takes it as any stream
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="gpt-4o", stream=True, messages=[{"role": "user", "content": "again"}]) if c.choices)
    assert text == "You said: again"
    # a non-streamed request from the same client is unaffected
    assert client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}]
                                          ).choices[0].message.content == "You said: x"


def test_buffered_coalesces_paced_deltas_within_the_window(make_client, setup):
    _, emu = setup
    emu.set_pace(40)  # 15 events 40 ms apart; a 300 ms window gathers ~7 of them per chunk
    try:
        chunks = stream(make_client("bufferme/1.0"))
    finally:
        emu.set_pace(0)
    texts = contents(chunks)
    assert "".join(texts) == "You said: " + WORDS
    assert 1 < len(texts) <= 6, texts  # coalesced, and still more than one chunk: the window is time-bounded
    assert emu.last_request()["path"].endswith(":streamRawPredict")


def test_errors_answered_locally_are_counted(make_client, setup):
    proxy, _ = setup
    client = make_client()
    before = scrape(proxy)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "wizard", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="dall-e-3", prompt="x")  # no API of modelmux: a local 404
    httpx.get(f"http://127.0.0.1:{proxy.reverse_port}/metrics", trust_env=False)  # 200: not an error
    after = scrape(proxy)

    def delta(**labels):
        key = ("modelmux_local_errors_total", tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta(status="400", code="") == 1  # OpenAI gives validation errors no code either
    assert delta(status="404", code="unknown_url") == 1
    assert not any(k[0] == "modelmux_local_errors_total" and ("status", "200") in k[1] for k in after)
