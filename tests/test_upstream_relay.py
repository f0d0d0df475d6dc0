"""The relay (upstream.py) against a scripted loopback Vertex: which answer or failure reaches the client after
several attempts, and the refresh after a 401. The policy's decisions alone are in test_upstream_policy.py."""

from __future__ import annotations

import json

from test_upstream_http import Server, ok

from modelmux.auth import TokenProvider
from modelmux.config import AuthConfig, CircuitBreakerConfig, RetryConfig, TimeoutsConfig
from modelmux.upstream import Plan, Relay

RETRIES = RetryConfig(max_attempts=3, backoff_initial_seconds=0.001, backoff_max_seconds=0.002)


def status(code: int, body: dict, extra: bytes = b"") -> list[tuple[float, bytes]]:
    raw = json.dumps(body).encode()
    return [(0, b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\n" % code + extra
             + b"content-length: %d\r\n\r\n" % len(raw) + raw)]


class CountingTokens(TokenProvider):
    def __init__(self):
        super().__init__(AuthConfig(access_token="static-test-token"))
        self.invalidated = 0

    def invalidate(self) -> None:
        self.invalidated += 1


def plan(url: str, tokens: TokenProvider, retries: RetryConfig = RETRIES) -> Plan:
    return Plan(urls={"us-east5": url}, body=b"{}", stream=False, tokens=tokens, retries=retries,
                timeouts=TimeoutsConfig(connect_seconds=1, first_byte_seconds=1, idle_seconds=1))


async def test_the_last_attempts_failure_is_reported_not_an_earlier_answer():
    relay = Relay()
    quota = {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}
    async with Server([(status(429, quota), False), ([], True), ([], True)]) as vertex:  # 429, then dropped twice
        p = plan(vertex.url, CountingTokens())
        assert await relay.fetch(p) is None
    assert p.outcome.attempts == 3 and p.outcome.retried
    assert p.outcome.error.status == 502 and p.outcome.error.code == "upstream_unavailable"
    await relay.stop()


async def test_the_last_attempts_answer_is_passed_on_not_an_earlier_failure():
    relay = Relay()
    quota = {"error": {"code": 429, "message": "Quota still exceeded", "status": "RESOURCE_EXHAUSTED"}}
    async with Server([([], True), (status(429, quota, b"retry-after: 0\r\n"), False)]) as vertex:
        p = plan(vertex.url, CountingTokens(), RetryConfig(max_attempts=2, backoff_initial_seconds=0.001))
        answer = await relay.fetch(p)
    assert answer.status == 429 and b"Quota still exceeded" in answer.body and answer.headers["retry-after"] == "0"
    assert p.outcome.error is None and p.outcome.attempts == 2
    await relay.stop()


async def test_with_one_attempt_a_401_refreshes_the_token_and_still_gets_the_answer():
    relay = Relay()
    tokens = CountingTokens()
    denied = {"error": {"code": 401, "message": "token expired", "status": "UNAUTHENTICATED"}}
    async with Server([(status(401, denied), False), (ok(b'{"type": "message"}'), False)]) as vertex:
        p = plan(vertex.url, tokens, RetryConfig(max_attempts=1))
        answer = await relay.fetch(p)
    assert answer.status == 200 and tokens.invalidated == 1 and p.outcome.attempts == 1
    assert relay.counters.retries == 0
    await relay.stop()


async def test_a_second_401_is_the_answer():
    relay = Relay()
    denied = {"error": {"code": 401, "message": "bad creds", "status": "UNAUTHENTICATED"}}
    async with Server([(status(401, denied), False), (status(401, denied), False)]) as vertex:
        p = plan(vertex.url, CountingTokens())
        answer = await relay.fetch(p)
    assert answer.status == 401 and p.outcome.attempts == 1
    await relay.stop()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


async def test_a_trial_answered_2xx_closes_the_circuit_and_one_answered_404_frees_it():
    """After the cooldown, the relay's first 2xx from the region closes its circuit (it had stayed half-open for
    good: an answered call never told the breaker); a trial answered 404 lets the next request try again."""
    relay = Relay(CircuitBreakerConfig(failures=1, window_seconds=10, cooldown_seconds=30))
    clock = Clock()
    relay.breaker.clock = clock
    relay.breaker.failure("us-east5")
    assert relay.breaker.is_open("us-east5")
    clock.now += 31
    not_here = {"error": {"code": 404, "message": "Publisher model not found", "status": "NOT_FOUND"}}
    async with Server([(status(404, not_here), False), (ok(b'{"id": "msg_1"}'), False)]) as vertex:
        answer = await relay.fetch(plan(vertex.url, CountingTokens()))
        assert answer.status == 404
        assert not relay.breaker.is_open("us-east5")  # the 404 said nothing of its health: free for a trial
        answer = await relay.fetch(plan(vertex.url, CountingTokens()))
        assert answer.status == 200
    assert relay.breaker.state() == {}  # closed
    await relay.stop()


def test_a_silent_stream_gets_a_ping_event_after_each_keepalive_interval():
    """Long thinking must not trip a client's idle timeout (Codex: 300 s): after each `keepalive` seconds of
    silence the relay sends an Anthropic `ping` event, which the translators may turn into a visible keep-alive.
    On a virtual clock (looptime): exact, and no waiting."""
    import asyncio

    import looptime

    from modelmux.upstream import _with_pings

    async def upstream():
        yield b"event: a\ndata: {}\n\n"
        await asyncio.sleep(35)
        yield b"event: b\n"  # half an event: no ping may cut into it
        await asyncio.sleep(20)
        yield b"data: {}\n\n"

    async def main():
        loop = asyncio.get_running_loop()
        return [(round(loop.time()), piece) async for piece in _with_pings(upstream(), 15)]

    loop = looptime.new_event_loop(start=0)
    try:
        out = loop.run_until_complete(main())
    finally:
        loop.close()
    ping = b'event: ping\ndata: {"type": "ping", "modelmux_keepalive": true}\n\n'
    assert out == [(0, b"event: a\ndata: {}\n\n"), (15, ping), (30, ping), (35, b"event: b\n"),
                   (55, b"data: {}\n\n")]
