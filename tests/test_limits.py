"""The rate-limit and budget decisions (limits.py) against a real embedded store, with an injected clock; and the
price table (pricing.py)."""

from __future__ import annotations

import asyncio

import datetime as dt
import logging

import pytest

from modelmux.config import parse_config
from modelmux.limits import ClientLimits, Limiter, duration
from modelmux.pricing import (REGIONAL_PREMIUM, TABLE, cost, price_for, stem, tokens_from_anthropic,
                              tokens_from_openai)
from modelmux.state import RateLimitedLog, StoreSettings, TokenCounts
from modelmux.state.sqlite import SQLiteStore
from openapi import validate_error

T0 = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC).timestamp()
SONNET = "claude-sonnet-4-5@20250929"


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def store(tmp_path, clock):
    s = SQLiteStore(tmp_path / "state.sqlite3", clock=clock)
    yield s
    await s.close()


@pytest.fixture
async def broken(tmp_path):
    """A store that cannot work: its file would have to live under a regular file."""
    (tmp_path / "file").write_text("")
    s = SQLiteStore(tmp_path / "file" / "state.sqlite3", StoreSettings(retry_seconds=0))
    yield s
    await s.close()


def config(**extra):
    return parse_config({"vertex": {"project": "p"}, **extra})


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.0004, "1ms"), (0.12, "120ms"), (0.999, "999ms"), (1, "1s"), (6, "6s"), (8.64, "8.64s"),
    (59.9995, "1m0s"), (90, "1m30s"), (87.4, "1m27.4s"), (360, "6m0s"), (3600, "1h0m0s"), (3725.5, "1h2m5.5s"),
])
def test_openai_duration_format(seconds, text):
    assert duration(seconds) == text


async def test_no_limits_never_touch_the_store(broken):
    decision = await Limiter(broken).check(ClientLimits("team-a"))
    assert decision.allowed and decision.headers == {} and not decision.degraded


async def test_requests_per_minute(store, clock):
    limiter = Limiter(store, clock=clock)
    client = ClientLimits("team-a", requests_per_minute=5)
    decisions = [await limiter.check(client) for _ in range(5)]
    assert all(d.allowed for d in decisions)
    assert [d.headers["x-ratelimit-remaining-requests"] for d in decisions] == ["4", "3", "2", "1", "0"]
    assert decisions[0].headers == {"x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "4",
                                    "x-ratelimit-reset-requests": "12s"}
    refused = await limiter.check(client)
    assert not refused.allowed
    err = refused.error
    assert (err.status, err.type, err.code) == (429, "requests", "rate_limit_exceeded")
    assert err.headers["retry-after"] == "12" and err.headers["retry-after-ms"] == "12000"
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert "Limit 5, Used 5, Requested 1" in err.message and "12s" in err.message
    validate_error(err.body())
    clock.now += 12
    assert (await limiter.check(client)).allowed  # one request refilled
    assert not (await limiter.check(client)).allowed
    assert (await limiter.check(ClientLimits("team-b", requests_per_minute=5))).allowed  # another key: its own


async def test_tokens_per_minute_counts_the_answer_after_the_fact(store, clock):
    limiter = Limiter(store, clock=clock)
    client = ClientLimits("team-a", tokens_per_minute=1000)
    first = await limiter.check(client)
    assert first.allowed and first.headers["x-ratelimit-remaining-tokens"] == "1000"
    settled = await limiter.settle(client, SONNET, TokenCounts(input=900, output=600))
    assert settled.recorded and settled.headers["x-ratelimit-remaining-tokens"] == "0"
    assert settled.headers["x-ratelimit-reset-tokens"] == "1m30s"  # 500 in debt + 1000 to refill
    refused = await limiter.check(client)
    assert not refused.allowed and refused.error.type == "tokens" and refused.error.code == "rate_limit_exceeded"
    assert refused.error.headers["retry-after"] == "31"  # 501 tokens at 1000/min
    assert "Used 1500" in refused.error.message
    clock.now += 30
    assert not (await limiter.check(client)).allowed
    clock.now += 1
    assert (await limiter.check(client)).allowed


async def test_token_limit_refusal_takes_no_request_token(store, clock):
    limiter = Limiter(store, clock=clock)
    client = ClientLimits("team-a", requests_per_minute=2, tokens_per_minute=100)
    await limiter.check(client)
    await limiter.settle(client, SONNET, TokenCounts(input=500))
    for _ in range(3):
        assert (await limiter.check(client)).error.type == "tokens"
    clock.now += 600
    ok = await limiter.check(client)
    assert ok.allowed and ok.headers["x-ratelimit-remaining-requests"] == "1"  # only the first request was taken
    assert set(ok.headers) == {f"x-ratelimit-{w}-{k}" for w in ("limit", "remaining", "reset")
                               for k in ("requests", "tokens")}


async def test_monthly_budget(store, clock):
    limiter = Limiter(store, clock=clock)
    client = ClientLimits("team-a", monthly_usd=1.0, spend_key="team-a")
    assert (await limiter.check(client)).allowed
    settled = await limiter.settle(client, SONNET, TokenCounts(input=200_000, output=30_000))  # $0.60 + $0.45
    assert settled.usd == pytest.approx(1.05) and settled.price_source == "table"
    refused = await limiter.check(client)
    err = refused.error
    assert (err.status, err.type, err.code) == (429, "insufficient_quota", "insufficient_quota")
    assert err.headers == {"x-should-retry": "false"}  # the SDKs would otherwise retry in vain
    assert "$1.05 of its $1.00" in err.message and "2027-01-01" in err.message
    validate_error(err.body())
    clock.now = dt.datetime(2027, 1, 1, 0, 0, 1, tzinfo=dt.UTC).timestamp()
    assert (await limiter.check(client)).allowed  # a new month
    assert await store.month_spend("team-a", now=T0) == pytest.approx(1.05)


async def test_buffered_spend_is_written_once_per_key_model_and_day_and_counts_here_at_once(store, clock):
    """The proxy settles with `buffered`: recording spend is one write per second, not one per answer."""
    limiter = Limiter(store, clock=clock)
    client = ClientLimits("team-a", monthly_usd=1.0, spend_key="team-a")
    for _ in range(3):
        await limiter.settle(client, SONNET, TokenCounts(input=100_000, output=10_000), buffered=True)  # $0.45
    assert await store.month_spend("team-a", now=T0) == 0  # nothing written yet …
    refused = await limiter.check(client)  # … but this process counts it: $1.35 of $1.00
    assert refused.error.code == "insufficient_quota" and "$1.35 of its $1.00" in refused.error.message
    await limiter.flush()
    assert await store.month_spend("team-a", now=T0) == pytest.approx(1.35)
    [row] = await store.usage(None, "team-a")
    assert (row.requests, row.input_tokens, row.output_tokens) == (3, 300_000, 30_000)
    await limiter.flush()  # nothing pending: nothing written twice
    assert await store.month_spend("team-a", now=T0) == pytest.approx(1.35)


class GatedSQLiteStore(SQLiteStore):
    """The real store, its spend writes held at a gate: the moment a flush is under way."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()

    async def add_spend(self, *args, **kw):
        self.writing.set()
        await self.gate.wait()
        return await super().add_spend(*args, **kw)


async def test_spend_being_written_still_counts_against_the_budget(tmp_path, clock):
    store = GatedSQLiteStore(tmp_path / "state.sqlite3", clock=clock)
    try:
        limiter = Limiter(store, clock=clock)
        client = ClientLimits("team-a", monthly_usd=1.0, spend_key="team-a")
        await limiter.settle(client, SONNET, TokenCounts(input=200_000, output=30_000), buffered=True)  # $1.05
        flushing = asyncio.create_task(limiter.flush())
        await asyncio.wait_for(store.writing.wait(), 5)
        assert len(limiter.pending) == 0  # taken for writing, not yet in the store
        refused = await limiter.check(client)
        assert refused.error.code == "insufficient_quota" and "$1.05 of its $1.00" in refused.error.message
        store.gate.set()
        await asyncio.wait_for(flushing, 5)
        refused = await limiter.check(client)  # now read from the store, not counted twice
        assert "$1.05 of its $1.00" in refused.error.message
    finally:
        store.gate.set()
        await store.close()


async def test_spend_kept_while_the_store_is_known_down_and_written_once_it_is_back(tmp_path, clock):
    mono = Clock(0.0)
    blocker = tmp_path / "file"
    blocker.write_text("")  # the store's directory is a regular file: every call fails
    store = SQLiteStore(blocker / "state.sqlite3", StoreSettings(retry_seconds=5.0), clock=clock, monotonic=mono)
    limiter = Limiter(store, clock=clock)
    client = ClientLimits("team-a", monthly_usd=10.0, spend_key="team-a")
    await limiter.settle(client, SONNET, TokenCounts(input=100_000), buffered=True)  # $0.30
    await limiter.flush()  # tried and failed: dropped (it may have been written), never sent twice
    assert len(limiter.pending) == 0
    await limiter.settle(client, SONNET, TokenCounts(input=200_000), buffered=True)  # $0.60
    await limiter.flush()  # within the fail-fast window: no write tried, so the row stays
    assert limiter.pending.usd("team-a") == pytest.approx(0.60)
    blocker.unlink()
    mono.now = 10.0  # the window is over
    await limiter.flush()
    assert len(limiter.pending) == 0 and await store.month_spend("team-a", now=T0) == pytest.approx(0.60)
    await store.close()


async def test_stopping_mid_flush_loses_no_spend(tmp_path, clock):
    """Shutdown cancels the once-a-second writer while it writes: the write goes on, the last flush waits for it."""
    store = GatedSQLiteStore(tmp_path / "state.sqlite3", clock=clock)
    limiter = Limiter(store, clock=clock)
    a, b = (ClientLimits(n, monthly_usd=10.0, spend_key=n) for n in ("team-a", "team-b"))
    await limiter.settle(a, SONNET, TokenCounts(input=100_000), buffered=True)
    await limiter.settle(b, SONNET, TokenCounts(input=100_000), buffered=True)
    writer = asyncio.ensure_future(asyncio.shield(limiter.flush()))  # as the proxy's writer loop does
    await asyncio.wait_for(store.writing.wait(), 5)
    writer.cancel()
    last = asyncio.create_task(limiter.flush())
    await asyncio.sleep(0)
    store.gate.set()
    await asyncio.wait_for(last, 5)
    for key in ("team-a", "team-b"):
        assert await store.month_spend(key, now=T0) == pytest.approx(0.30)
    await store.close()


async def test_limits_from_config_keys_and_defaults():
    cfg = config(limits={"requests_per_minute": 60, "tokens_per_minute": 10000}, budgets={"monthly_usd": 50},
                 security={"client_keys": ["plain-key", {"key": "k-a", "name": "team-a", "requests_per_minute": 5,
                                                         "monthly_usd": None}]})
    plain, team_a = cfg.security.clients
    a = ClientLimits.for_key(team_a, cfg)
    assert (a.name, a.requests_per_minute, a.tokens_per_minute, a.monthly_usd) == ("team-a", 5, 10000, None)
    p = ClientLimits.for_key(plain, cfg)
    assert p.name.startswith("key-") and "plain-key" not in p.name
    assert (p.requests_per_minute, p.monthly_usd, p.spend_key) == (60, 50, p.name)
    anon = ClientLimits.for_address("10.0.0.7", cfg)
    assert (anon.name, anon.requests_per_minute, anon.monthly_usd, anon.spend_key) == (
        "addr:10.0.0.7", 60, None, "anonymous")


async def test_fail_open_logs_once_a_second_and_counts(broken, caplog):
    mono = Clock(0.0)
    events = []
    limiter = Limiter(broken, on_fail_open=events.append,
                      log_every=RateLimitedLog(logging.getLogger("modelmux.limits"), clock=mono))
    client = ClientLimits("team-a", requests_per_minute=1, tokens_per_minute=10, monthly_usd=1)
    with caplog.at_level(logging.WARNING, "modelmux.limits"):
        for _ in range(5):
            d = await limiter.check(client)
            assert d.allowed and d.degraded and d.headers == {}
        mono.now = 1.5
        await limiter.check(client)
    assert events == ["check"] * 6
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "serving without rate limits and budgets" in lines[0]
    assert "4 more like it" in lines[1]
    settled = await limiter.settle(client, SONNET, TokenCounts(input=1))
    assert not settled.recorded and settled.usd > 0  # never raises; the spend is reported lost


async def test_fail_closed_refuses_with_503(broken):
    d = await Limiter(broken, fail_closed=True).check(ClientLimits("team-a", requests_per_minute=5))
    assert not d.allowed and d.error.status == 503 and d.error.code == "state_unavailable"
    assert d.error.headers["retry-after"] == "1"
    validate_error(d.error.body())


# --- pricing ---------------------------------------------------------------------------------------------------------

def test_stems_and_family_rule():
    assert stem("claude-sonnet-4-5@20250929") == "claude-sonnet-4-5"
    assert stem("claude-3-5-sonnet-v2@20241022") == "claude-3-5-sonnet"
    assert stem("claude-haiku-4-5-20251001") == "claude-haiku-4-5"
    assert price_for("claude-opus-4-1@20250805")[1] == "table"
    assert price_for("claude-opus-5-2")[1] == "family:claude-opus-5"  # newest not above 5.2
    assert price_for("claude-haiku-9")[1] == "family:claude-haiku-5-5"
    assert price_for("claude-opus-2")[1] == "family:claude-3-opus"  # none below: the lowest above
    priciest, source = price_for("mistral-large")
    assert source.startswith("unknown:") and priciest.base.input == max(p.base.input for p in TABLE.values())


def test_embedding_models_are_priced_as_embeddings():
    """Input tokens only, at Vertex's embedding prices: never at a chat model's (the unknown rule's Opus)."""
    t = TokenCounts(input=1_000_000)
    assert price_for("gemini-embedding-001")[1] == "table" and cost("gemini-embedding-001", t) == pytest.approx(0.15)
    assert cost("text-embedding-005", t) == pytest.approx(0.10)
    assert cost("text-multilingual-embedding-002", t, region="us-central1") == pytest.approx(0.10)
    price, source = price_for("text-embedding-009")
    assert source == "unknown:gemini-embedding-001" and price.base.input == 0.15


def test_cost_counts_each_token_once():
    t = TokenCounts(input=1000, output=500, cache_write=2000, cache_read=10_000)
    # Sonnet 4.5: 3 in, 15 out, 3.75 cache write, 0.30 cache read per million
    assert cost(SONNET, t) == pytest.approx((1000 * 3 + 500 * 15 + 2000 * 3.75 + 10_000 * 0.30) / 1e6)
    assert cost(SONNET, t, region="global") == cost(SONNET, t)
    assert cost(SONNET, t, region="us-east5") == pytest.approx(cost(SONNET, t) * REGIONAL_PREMIUM)
    assert cost("claude-opus-4-1@20250805", t, region="us-east5") == cost("claude-opus-4-1@20250805", t)
    # prompts over 200k tokens (input + cache) are priced at the long-context rates, output included
    long = TokenCounts(input=150_000, output=1000, cache_read=60_000)
    assert cost(SONNET, long) == pytest.approx((150_000 * 6 + 1000 * 22.5 + 60_000 * 0.6) / 1e6)
    assert cost("claude-haiku-5-5", TokenCounts(input=100_000, output=10)) == pytest.approx(
        (100_000 * 0.10 + 10 * 0.50) / 1e6)
    assert cost("claude-haiku-5-5", TokenCounts(input=100_001)) == pytest.approx(100_001 * 0.50 / 1e6)


def test_cost_from_usage_never_negative():
    openai_usage = {"prompt_tokens": 100, "completion_tokens": 7,
                    "prompt_tokens_details": {"cached_tokens": 80, "cache_write_tokens": 15}}
    assert tokens_from_openai(openai_usage) == TokenCounts(5, 7, 15, 80)
    # a prompt count that left the cache out (as Vertex's did for LiteLLM): cached tokens are not subtracted twice
    bad = {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 5000}}
    t = tokens_from_openai(bad)
    assert t == TokenCounts(0, 1, 0, 5000) and cost(SONNET, t) > 0
    responses_usage = {"input_tokens": 50, "output_tokens": 3, "input_tokens_details": {"cached_tokens": 20}}
    assert tokens_from_openai(responses_usage) == TokenCounts(30, 3, 0, 20)
    anthropic = {"input_tokens": 5, "output_tokens": 7, "cache_creation_input_tokens": 15,
                 "cache_read_input_tokens": 80}
    assert tokens_from_anthropic(anthropic) == TokenCounts(5, 7, 15, 80)
    assert tokens_from_openai(None) == TokenCounts() and cost(SONNET, TokenCounts()) == 0


def test_config_prices_override_the_table():
    cfg = config(budgets={"prices": {"claude-sonnet-4-5": {"input": 1, "output": 2, "cache_write": 0,
                                                           "cache_read": 0}}})
    t = TokenCounts(input=1_000_000, output=1_000_000)
    assert price_for(SONNET, cfg.budgets.prices)[1] == "config"
    assert cost(SONNET, t, region="us-east5", overrides=cfg.budgets.prices) == pytest.approx(3.0)  # as given


# --- modelmux usage ---------------------------------------------------------------------------------------------------

async def test_modelmux_usage_prints_the_store(tmp_path):
    import json
    import subprocess

    from procs import VENV_BIN
    confdir = tmp_path / "conf"
    store = SQLiteStore(confdir / "modelmux-state.sqlite3")  # where the default state.url (null) puts it
    dec1 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp()
    await store.add_spend("team-a", SONNET, TokenCounts(1000, 200, 0, 5000), 0.0075, now=dec1)
    await store.add_spend("team-a", SONNET, TokenCounts(1000, 200, 0, 5000), 0.0075, now=T0)
    await store.add_spend("team-b", SONNET, TokenCounts(10, 20, 0, 0), 1.5, now=T0)
    await store.close()
    (tmp_path / "c.yaml").write_text("vertex: {project: p}\n")
    base = [str(VENV_BIN / "modelmux"), "usage", "--config", str(tmp_path / "c.yaml"), "--confdir", str(confdir)]

    def run(*extra):
        done = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    text = run()
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["month", "key", "model"]
    assert "team-a" in lines[1] and "2,000" in lines[1] and "0.015000" in lines[1]
    assert lines[-1].split()[0] == "total" and lines[-1].endswith("1.515000")
    rows = json.loads(run("--since", "2026-12-02", "--key", "team-a", "--json"))
    assert [(r["key"], r["requests"], r["cache_read_tokens"], r["usd"]) for r in rows] == [("team-a", 1, 5000, 0.0075)]
    assert run("--key", "nobody").strip() == "no usage recorded"
    bad = subprocess.run([*base, "--since", "yesterday"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "not a date" in bad.stderr
