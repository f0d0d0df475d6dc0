"""Failure as a first-class path (issue 4), end to end: a real `modelmux run` with a fallback region, the
emulator injecting faults through /_emulator/faults, the openai SDK as client (max_retries=0: what it sees is
what modelmux made of the fault). `pain N` names the item of ../shared/notes/pain-points.md a test proves."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest
from openapi import validate_error

import procs
import report
from e2e import CLIENT_KEY, start_proxy

ASK = [{"role": "user", "content": "alpha beta gamma delta"}]
KEYS: list = []  # the emulator's service-account key file
ANSWER = "You said: alpha beta gamma delta"


class Faults:
    def __init__(self, url: str):
        self.http = httpx.Client(base_url=url, trust_env=False, timeout=10)

    def add(self, *rules: dict) -> None:
        r = self.http.post("/_emulator/faults", json={"rules": list(rules)})
        assert r.status_code == 200, r.text

    def clear(self) -> None:
        self.http.delete("/_emulator/faults")
        self.http.delete("/_emulator/stats")
        self.http.post("/_emulator/settings", json={"pace_ms": 0})

    def stats(self) -> dict:
        return self.http.get("/_emulator/stats").json()

    def pace(self, ms: float) -> None:
        self.http.post("/_emulator/settings", json={"pace_ms": ms})


def config_text(url: str, key, fallback: bool) -> str:
    return f"""
vertex: {{project: rel, region: us-east5, base_url: "{url}"{', fallback_regions: [global]' if fallback else ''}}}
auth: {{credentials_file: "{key}"}}
models: {{map: {{gpt-4o: claude-sonnet-4-5@20250929}}}}
retries: {{max_attempts: 4, max_wait_seconds: 5, backoff_initial_seconds: 0.05, backoff_max_seconds: 0.3}}
circuit_breaker: {{failures: 3, window_seconds: 30, cooldown_seconds: 2}}
timeouts: {{connect_seconds: 2, first_byte_seconds: 1.5, idle_seconds: 1.0}}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reliability")
    emu_proc, url, key = procs.emulator(tmp)
    KEYS[:] = [key]
    proxies = {}
    try:
        for name, fallback in (("single", False), ("failover", True)):
            cfg = tmp / f"{name}.yaml"
            cfg.write_text(config_text(url, key, fallback))
            proxies[name] = start_proxy("modelmux-run", cfg, tmp / f"conf-{name}")
        yield Faults(url), proxies
    finally:
        for p in proxies.values():
            p.proc.stop()
            out = p.proc.output()
            for secret in (CLIENT_KEY, "ya29.", "PRIVATE KEY"):  # pain 27: nothing secret in any log line
                assert secret not in out
        emu_proc.stop()


@pytest.fixture
def faults(env):
    f, _ = env
    f.clear()
    yield f
    f.clear()


@pytest.fixture
def fresh(env, tmp_path):
    """A new failover proxy for one test: its circuits start closed whatever earlier tests did (no waiting for a
    cooldown on the wall clock; the cooldown itself is tested with a fake clock in test_upstream_policy.py)."""
    faults, proxies = env
    cfg = tmp_path / "fresh.yaml"
    cfg.write_text(config_text(faults.http.base_url, KEYS[0], True))
    p = start_proxy("modelmux-run", cfg, tmp_path / "conf")
    proxies["fresh"] = p
    yield p
    p.proc.stop()
    del proxies["fresh"]


def client(env, name, cls=openai.OpenAI):
    return cls(api_key=CLIENT_KEY, base_url=f"http://127.0.0.1:{env[1][name].reverse_port}/v1", max_retries=0,
               timeout=30)


def test_pain22_pain24_a_429_burst_is_absorbed_by_retries(env, faults):
    faults.add({"match": {"endpoint": "model"}, "action": "status", "status": 429, "count": 2, "array": True,
                "gzip": True})
    c = client(env, "single").chat.completions.create(model="gpt-4o", messages=ASK)
    assert c.choices[0].message.content == ANSWER
    assert faults.stats()["model_requests"] == {"us-east5": 3}  # two 429s, then the answer


def test_pain22_quota_exhausted_for_longer_reaches_the_client_as_429_with_retry_after(env, faults):
    faults.add({"match": {"endpoint": "model"}, "action": "status", "status": 429, "count": None, "array": True,
                "gzip": True})
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as err:
            client(env, "single").chat.completions.create(model="gpt-4o", messages=ASK, stream=stream)
        assert int(err.value.response.headers["retry-after"]) >= 1
        validate_error({"error": err.value.body})
        assert "Vertex AI" in err.value.message


@pytest.mark.parametrize("status", [500, 503, 529])
def test_pain23_pain24_server_errors_fail_over_to_the_next_region(env, faults, status):
    faults.add({"match": {"location": "us-east5"}, "action": "status", "status": status, "count": None})
    for stream in (False, True):
        c = client(env, "failover")
        if stream:
            text = "".join(ch.choices[0].delta.content or "" for ch in
                           c.chat.completions.create(model="gpt-4o", messages=ASK, stream=True) if ch.choices)
        else:
            text = c.chat.completions.create(model="gpt-4o", messages=ASK).choices[0].message.content
        assert text == ANSWER
    assert faults.stats()["model_requests"].get("global") == 2


def test_pain24_the_circuit_breaker_sends_new_requests_straight_to_the_healthy_region(env, faults, fresh):
    faults.add({"match": {"location": "us-east5"}, "action": "status", "status": 503, "count": None})
    c = client(env, "fresh")
    for _ in range(3):  # three failures in the window open us-east5's circuit
        assert c.chat.completions.create(model="gpt-4o", messages=ASK).choices[0].message.content == ANSWER
    before = faults.stats()["model_requests"]["us-east5"]
    for _ in range(5):
        chunks = list(c.chat.completions.create(model="gpt-4o", messages=ASK, stream=True))
        assert chunks[-1].choices[0].finish_reason == "stop"
    assert faults.stats()["model_requests"]["us-east5"] == before  # skipped while open


def test_pain23_unreachable_and_dropped_connections_are_openai_errors(env, faults):
    faults.add({"match": {"endpoint": "model"}, "action": "close", "count": None})
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as err:
            client(env, "single").chat.completions.create(model="gpt-4o", messages=ASK, stream=stream)
        assert err.value.status_code == 502 and err.value.body["code"] == "upstream_unavailable"
        validate_error({"error": err.value.body})


def test_pain25_first_byte_timeout_is_a_504(env, faults):
    faults.add({"match": {"endpoint": "model"}, "action": "delay", "ms": 2500, "count": None})
    start = time.monotonic()
    with pytest.raises(openai.APIStatusError) as err:
        client(env, "single").chat.completions.create(model="gpt-4o", messages=ASK, stream=True)
    assert err.value.status_code == 504 and err.value.body["code"] == "upstream_timeout"
    assert time.monotonic() - start < 4 * 1.5 + 5 + 2  # bounded by attempts × first-byte limit + waits


def test_pain25_a_stall_mid_stream_is_an_error_the_sdk_raises_but_a_slow_stream_is_not(env, faults):
    faults.add({"match": {"stream": True}, "action": "stall", "after_events": 4, "ms": 3000, "count": 1})
    seen = []
    with pytest.raises(openai.APIError) as err:
        for chunk in client(env, "single").chat.completions.create(model="gpt-4o", messages=ASK, stream=True):
            seen.append(chunk)
    assert "sent nothing for 1 s" in err.value.message and seen
    faults.clear()
    faults.pace(300)  # each gap < idle limit, total far above it: no total-time limit on streams
    words = " ".join(f"w{i}" for i in range(8))
    text = "".join(ch.choices[0].delta.content or "" for ch in client(env, "single").chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": words}], stream=True) if ch.choices)
    assert text == f"You said: {words}"


def health(env, name) -> dict:
    return httpx.get(f"http://127.0.0.1:{env[1][name].reverse_port}/health", trust_env=False, timeout=5).json()


def test_pain25_a_client_that_leaves_cancels_the_upstream_call(env, faults):
    faults.pace(200)
    words = " ".join(f"w{i}" for i in range(30))  # ~7 s if read to the end
    stream = client(env, "single").chat.completions.create(model="gpt-4o", stream=True,
                                                            messages=[{"role": "user", "content": words}])
    next(iter(stream))
    assert health(env, "single")["relay"]["active_calls"] == 1
    left = time.monotonic()
    stream.close()
    deadline = left + 5
    while time.monotonic() < deadline and health(env, "single")["relay"]["active_calls"]:
        time.sleep(0.05)
    relay = health(env, "single")["relay"]
    assert relay["active_calls"] == 0 and relay["pending_plans"] == 0
    assert time.monotonic() - left < 2  # cancelled, not streamed on to the end (~6 s more)


async def test_fault_suite_64_concurrent_streams(env, faults, fresh):
    """64 concurrent streams while the emulator injects 429 bursts, 500/529, mid-stream errors, truncated
    streams and stalls: every stream either completes with the exact text, or fails with the error that names
    its cause — none garbled, none silently truncated."""
    faults.add(
        {"match": {"location": "us-east5"}, "action": "status", "status": 429, "count": 24, "array": True},
        {"match": {"location": "us-east5"}, "action": "status", "status": 500, "count": 6},
        {"match": {"location": "global"}, "action": "status", "status": 529, "count": 4},
        {"match": {"stream": True}, "action": "stream_error", "after_events": 4, "count": 4},
        {"match": {"stream": True}, "action": "cut", "after_events": 5, "count": 4},
        {"match": {"stream": True}, "action": "stall", "after_events": 3, "ms": 2500, "count": 2},
    )
    faults.pace(5)
    api = client(env, "fresh", cls=openai.AsyncOpenAI)

    async def one(i: int) -> tuple[str, str]:
        words = " ".join(f"s{i}w{j}" for j in range(12))
        text, finish = "", None
        try:
            stream = await api.chat.completions.create(model="gpt-4o", stream=True,
                                                       messages=[{"role": "user", "content": words}])
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
                if i % 8 == 7 and text:  # every eighth client goes away mid-answer
                    await stream.close()
                    return "left", ""
        except openai.APIError as err:
            code = (err.body or {}).get("code") if isinstance(err.body, dict) else None
            assert f"You said: {words}".startswith(text), "garbled before the error"
            return "failed", str(code)
        assert text == f"You said: {words}" and finish == "stop", (text, finish)  # never silently truncated
        return "completed", ""

    started = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(64))), timeout=60)
    await api.close()
    elapsed = time.monotonic() - started
    stats = faults.stats()
    completed = sum(1 for r in results if r[0] == "completed")
    left = sum(1 for r in results if r[0] == "left")
    failures: dict[str, int] = {}
    for r in results:
        if r[0] == "failed":
            failures[r[1]] = failures.get(r[1], 0) + 1
    upstream = sum(stats["model_requests"].values())
    report.add(f"fault suite: 64 concurrent streams in {elapsed:.1f} s: {completed} completed exactly, "
               f"{left} left early by their clients, failed with the right error {failures}; {upstream} upstream "
               f"requests ({upstream - 64} retried or failed over: {stats['model_requests']}), "
               f"{stats['faults_fired']} faults injected, 0 garbled, 0 silently truncated")
    # only mid-stream faults may reach a client (after the first byte nothing can be retried), each named
    assert set(failures) <= {"overloaded_error", "stream_truncated", "timeout_error"}, failures
    assert sum(failures.values()) <= 4 + 4 + 2
    assert completed + left >= 64 - 10 and left >= 1 and upstream > 64
    relay = health(env, "fresh")["relay"]
    assert relay["active_calls"] == 0 and relay["pending_plans"] == 0  # nothing left behind


def test_token_endpoint_outage(tmp_path):
    """Tokens are refreshed early, in the background: while Google's token endpoint is down requests keep
    using the still-valid token; with no token at all the client gets a clear OpenAI-shaped error."""
    emu_proc, url, key = procs.emulator(tmp_path, "--token-ttl", "200")  # always inside the refresh margin
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config_text(url, key, False))
    proxy = start_proxy("modelmux-run", cfg, tmp_path / "conf")
    faults = Faults(url)
    try:
        api = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"http://127.0.0.1:{proxy.reverse_port}/v1",
                            max_retries=0, timeout=30)
        assert api.chat.completions.create(model="gpt-4o", messages=ASK).choices[0].message.content == ANSWER
        faults.add({"match": {"endpoint": "token"}, "action": "status", "status": 503, "count": None})
        for _ in range(3):
            assert api.chat.completions.create(model="gpt-4o", messages=ASK).choices[0].message.content == ANSWER
        assert faults.stats()["token_requests"] >= 2  # it did try to refresh, and failed, in the background
    finally:
        proxy.proc.stop()
    # a fresh proxy has no token yet: the outage is the client's error now, named as such
    proxy = start_proxy("modelmux-run", cfg, tmp_path / "conf")
    try:
        api = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"http://127.0.0.1:{proxy.reverse_port}/v1",
                            max_retries=0, timeout=30)
        with pytest.raises(openai.InternalServerError) as err:
            api.chat.completions.create(model="gpt-4o", messages=ASK, stream=True)
        assert "could not get a Google access token" in err.value.message
        assert err.value.status_code == 502 and err.value.body["code"] == "vertex_auth_failed"
        validate_error({"error": err.value.body})
    finally:
        proxy.proc.stop()
        emu_proc.stop()
