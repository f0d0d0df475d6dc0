"""The state store's contract, run against both backends: SQLite in a temporary directory and a real redis-server
on a free loopback port. Then what only one backend has: SQLite's file, schema and processes; Redis' outages,
reconnection, password, TLS and key layout."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import multiprocessing
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

import state_workers
from modelmux.config import parse_config
from modelmux.state import (InvalidArgument, StateTooLarge, StateUnavailable, StoredResponse, StoreSettings,
                            TokenCounts, open_store, sqlite_path)
from modelmux.state.redis_store import RedisStore
from modelmux.state.sqlite import SCHEMA_VERSION, SQLiteStore
from redis_proc import RedisServer

T0 = 1_780_000_000.0  # 2026-05-28, a fixed "now" for the injected clock
DAY = 86400.0


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture(params=["sqlite", "redis"])
def backend(request, tmp_path):
    """(kind, target) of a fresh, empty store of each backend."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "state.sqlite3")
    server = request.getfixturevalue("redis_server")
    import redis
    redis.Redis(host="127.0.0.1", port=server.port).flushall()
    return "redis", server.url


def make(backend, clock, **settings):
    kind, target = backend
    s = StoreSettings(**settings)
    return SQLiteStore(target, s, clock=clock) if kind == "sqlite" else RedisStore(target, s, clock=clock)


@pytest.fixture
async def store(backend, clock):
    s = make(backend, clock)
    yield s
    await s.close()


def response(rid, *, owner="team-a", created=T0, prev=None, inputs=("in1", "in2"), outputs=("out1",), pad=""):
    return StoredResponse(
        id=rid, owner=owner, created_at=created, previous_response_id=prev,
        response={"id": rid, "object": "response", "created_at": int(created), "status": "completed", "pad": pad},
        input_items=[{"id": f"{rid}-{i}", "type": "message", "role": "user", "content": [{"type": "input_text",
                                                                                          "text": i}]}
                     for i in inputs],
        output_items=[{"id": f"{rid}-{o}", "type": "message", "role": "assistant", "content": []} for o in outputs])


# --- (a) responses -------------------------------------------------------------------------------------------------

async def test_response_round_trip_and_owner_scope(store):
    rec = response("resp_1")
    await store.put_response(rec)
    got = await store.get_response("resp_1", "team-a")
    assert got == rec
    assert await store.get_response("resp_1", "team-b") is None  # another team cannot read it
    assert await store.get_response("resp_1", None) is None  # nor a deployment without keys
    assert await store.get_response("resp_unknown", "team-a") is None
    await store.put_response(response("resp_open", owner=None))
    assert (await store.get_response("resp_open", None)).owner is None
    assert await store.get_response("resp_open", "team-a") is None


async def test_put_again_replaces(store):
    await store.put_response(response("resp_1", inputs=("a",)))
    await store.put_response(response("resp_1", inputs=("b", "c")))
    got = await store.get_response("resp_1", "team-a")
    assert [i["id"] for i in got.input_items] == ["resp_1-b", "resp_1-c"]
    assert await store.get_items(["resp_1-a"], "team-a") == {}


async def test_delete(store):
    await store.put_response(response("resp_1"))
    assert await store.delete_response("resp_1", "team-b") is False  # not theirs: untouched
    assert await store.get_response("resp_1", "team-a") is not None
    assert await store.delete_response("resp_1", "team-a") is True
    assert await store.get_response("resp_1", "team-a") is None
    assert await store.delete_response("resp_1", "team-a") is False
    assert await store.get_items(["resp_1-in1"], "team-a") == {}


async def test_input_items_pages_like_openai(store):
    await store.put_response(response("r", inputs=tuple(f"i{n}" for n in range(25))))
    ids = [f"r-i{n}" for n in range(25)]
    page = await store.list_input_items("r", "team-a")  # defaults: 20, newest first
    assert [i["id"] for i in page.data] == ids[::-1][:20]
    assert page.has_more and page.first_id == "r-i24" and page.last_id == "r-i5"
    rest = await store.list_input_items("r", "team-a", after=page.last_id)
    assert [i["id"] for i in rest.data] == ids[::-1][20:] and not rest.has_more
    asc = await store.list_input_items("r", "team-a", order="asc", limit=10, after="r-i9")
    assert [i["id"] for i in asc.data] == ids[10:20] and asc.has_more
    last = await store.list_input_items("r", "team-a", order="asc", limit=100)
    assert len(last.data) == 25 and not last.has_more
    body = (await store.list_input_items("r", "team-a", limit=1)).body()
    assert body == {"object": "list", "data": [page.data[0]], "first_id": "r-i24", "last_id": "r-i24", "has_more": True}
    assert await store.list_input_items("r", "team-b") is None
    assert await store.list_input_items("nope", "team-a") is None
    for kwargs, param in [({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": True}, "limit"),
                          ({"order": "newest"}, "order"), ({"after": "not-an-item"}, "after")]:
        with pytest.raises(InvalidArgument) as err:
            await store.list_input_items("r", "team-a", **kwargs)
        assert err.value.param == param


async def test_empty_input_page(store):
    await store.put_response(response("r", inputs=()))
    page = await store.list_input_items("r", "team-a")
    assert page.body() == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


async def test_items_by_id_for_item_reference(store, clock):
    await store.put_response(response("r1", inputs=("x",), outputs=("y",)))
    clock.now += 1
    shared = response("r2", inputs=(), outputs=())
    shared = StoredResponse(**{**shared.__dict__, "input_items": [{"id": "r1-y", "type": "message", "v": 2}]})
    await store.put_response(shared)
    got = await store.get_items(["r1-x", "r1-y", "missing", "r1-x"], "team-a")
    assert set(got) == {"r1-x", "r1-y"}
    assert got["r1-y"]["v"] == 2  # the newest response holding an id wins
    assert await store.get_items(["r1-x"], "team-b") == {}
    await store.delete_response("r2", "team-a")
    assert "v" not in (await store.get_items(["r1-y"], "team-a"))["r1-y"]  # the older holder still has it


async def test_chain_oldest_first_and_its_ends(store, clock):
    await store.put_response(response("r1"))
    await store.put_response(response("r2", prev="r1"))
    await store.put_response(response("r3", prev="r2"))
    chain = await store.response_chain("r3", "team-a")
    assert [r.id for r in chain.responses] == ["r1", "r2", "r3"] and chain.complete
    assert chain.responses[1].previous_response_id == "r1"
    short = await store.response_chain("r3", "team-a", max_depth=2)
    assert [r.id for r in short.responses] == ["r2", "r3"] and short.truncated and not short.complete
    await store.delete_response("r2", "team-a")
    broken = await store.response_chain("r3", "team-a")
    assert [r.id for r in broken.responses] == ["r3"] and broken.missing_id == "r2" and not broken.complete
    assert (await store.response_chain("r3", "team-b")).responses == []
    none = await store.response_chain("unknown", "team-a")
    assert none.responses == [] and none.missing_id == "unknown"


async def test_responses_expire(backend, clock):
    store = make(backend, clock, response_ttl=30 * DAY)
    try:
        await store.put_response(response("r1"))
        await store.put_response(response("r2", prev="r1", created=T0 + 10 * DAY))
        clock.now = T0 + 30 * DAY - 1
        assert await store.get_response("r1", "team-a") is not None
        clock.now = T0 + 30 * DAY + 1
        assert await store.get_response("r1", "team-a") is None
        assert await store.list_input_items("r1", "team-a") is None
        assert await store.get_items(["r1-in1"], "team-a") == {}
        chain = await store.response_chain("r2", "team-a")
        assert [r.id for r in chain.responses] == ["r2"] and chain.missing_id == "r1"
        assert await store.delete_response("r1", "team-a") is False
    finally:
        await store.close()


async def test_bounded_count_evicts_oldest_first(backend, clock):
    store = make(backend, clock, response_max_count=3)
    try:
        for n in range(5):
            clock.now = T0 + n
            await store.put_response(response(f"r{n}", created=clock.now))
        present = [n for n in range(5) if await store.get_response(f"r{n}", "team-a")]
        assert present == [2, 3, 4]
        assert await store.get_items(["r0-in1"], "team-a") == {}
    finally:
        await store.close()


async def test_bounded_bytes_evicts_oldest_first(backend, clock):
    one = len(json.dumps(response("r0", pad="x" * 3000).data(), separators=(",", ":")).encode())
    store = make(backend, clock, response_max_bytes=3 * one + one // 2)
    try:
        for n in range(6):
            clock.now = T0 + n
            await store.put_response(response(f"r{n}", created=clock.now, pad="x" * 3000))
        present = [n for n in range(6) if await store.get_response(f"r{n}", "team-a")]
        assert present == [3, 4, 5]  # 3 fit, 4 do not
        with pytest.raises(StateTooLarge):
            await store.put_response(response("huge", pad="x" * 4 * one))
    finally:
        await store.close()


async def test_items_need_ids(store):
    bad = StoredResponse(id="r", owner=None, created_at=T0, response={}, input_items=[{"type": "message"}],
                         output_items=[])
    with pytest.raises(ValueError, match="no id"):
        await store.put_response(bad)


# --- (b) kv (thinking signatures) ------------------------------------------------------------------------------------

async def test_kv_round_trip_ttl_and_bound(store, clock):
    blocks = [{"type": "thinking", "thinking": "…", "signature": "sig=="}]
    await store.kv_put("thinking", "toolu_1", blocks, ttl=60, max_entries=3)
    assert await store.kv_get("thinking", "toolu_1") == blocks
    assert await store.kv_get("thinking", "toolu_2") is None
    assert await store.kv_get("other", "toolu_1") is None  # namespaces are separate
    clock.now += 61
    assert await store.kv_get("thinking", "toolu_1") is None
    for n in range(5):
        clock.now += 1
        await store.kv_put("thinking", f"k{n}", {"n": n}, ttl=600, max_entries=3)
    assert await store.kv_get_many("thinking", [f"k{n}" for n in range(5)]) == {f"k{n}": {"n": n} for n in (2, 3, 4)}


async def test_shared_thinking_cache(store):
    from modelmux.state.thinking import SharedThinkingCache
    cache = SharedThinkingCache(store, max_bytes=200)
    assert await cache.put("toolu_1", [{"type": "thinking", "signature": "s"}])
    assert await cache.get("toolu_1") == [{"type": "thinking", "signature": "s"}]
    assert not await cache.put("toolu_big", [{"type": "thinking", "thinking": "x" * 500}])
    assert await cache.get_many(["toolu_1", "toolu_big"]) == {"toolu_1": [{"type": "thinking", "signature": "s"}]}
    assert cache.put_soon("toolu_2", [{"type": "thinking", "signature": "t"}])  # from synchronous code
    await cache.drain()
    assert await cache.get("toolu_2") == [{"type": "thinking", "signature": "t"}]


async def test_thinking_is_found_only_by_the_client_key_that_kept_it(store):
    """A tool-call id travels (transcripts, logs): another key naming it must not get the thinking into its own
    prompt — in this process or, through the shared store, in another."""
    from modelmux.state.thinking import SharedThinkingCache
    from modelmux.thinking_cache import Thinking, ThinkingCache
    blocks = [{"type": "thinking", "thinking": "secret plan", "signature": "s"}]
    here = Thinking(ThinkingCache(), SharedThinkingCache(store))
    here.put("toolu_1", blocks, owner="team-a")
    await here.shared.drain()
    elsewhere = Thinking(ThinkingCache(), SharedThinkingCache(store))  # another replica: nothing local
    for thinking in (here, elsewhere):
        assert (await thinking.lookup(["toolu_1"], owner="team-a"))("toolu_1") == blocks
        assert (await thinking.lookup(["toolu_1"], owner="team-b"))("toolu_1") is None
        assert (await thinking.lookup(["toolu_1"]))("toolu_1") is None  # no key: not a keyed client's either
    here.put("toolu_2", blocks)  # no client keys configured: every client is the same one
    assert (await here.lookup(["toolu_2"]))("toolu_2") == blocks
    assert (await here.lookup(["toolu_2"], owner="team-a"))("toolu_2") is None
    await here.shared.drain()


def test_tool_call_ids_are_the_keys_thinking_is_kept_under():
    from modelmux.state.thinking import tool_call_ids
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "toolu_a", "type": "function"}, {"id": "toolu_b"}]},
                {"role": "tool", "tool_call_id": "toolu_a", "content": "1"},
                {"role": "assistant", "content": "no tools"},
                {"role": "assistant", "tool_calls": [{"id": "toolu_c"}]}]
    assert tool_call_ids(messages) == ["toolu_a", "toolu_c"]


async def test_thinking_write_failures_are_logged_not_raised(tmp_path, caplog):
    from modelmux.state.thinking import SharedThinkingCache
    (tmp_path / "file").write_text("")
    cache = SharedThinkingCache(SQLiteStore(tmp_path / "file" / "s.sqlite3"))
    with caplog.at_level(logging.WARNING, "modelmux.state"):
        assert cache.put_soon("toolu_1", [{"type": "thinking"}])
        await cache.drain()
    assert any("thinking for a tool loop not kept" in r.getMessage() for r in caplog.records)
    await cache.store.close()


# --- (c) buckets ---------------------------------------------------------------------------------------------------------

async def test_bucket_take_refill_and_timing(store):
    taken = [await store.take("rpm:a", 3, 1.0, 1, now=100.0) for _ in range(4)]
    assert [b.allowed for b in taken] == [True, True, True, False]
    assert [b.remaining for b in taken] == [2, 1, 0, 0]
    refused = taken[3]
    assert refused.retry_after == pytest.approx(1.0) and refused.reset_seconds == pytest.approx(3.0)
    assert (await store.take("rpm:a", 3, 1.0, 1, now=100.5)).allowed is False
    later = await store.take("rpm:a", 3, 1.0, 1, now=101.0)
    assert later.allowed and later.tokens == pytest.approx(0.0)
    full = await store.take("rpm:a", 3, 1.0, 1, now=1000.0)  # refills to capacity, never beyond
    assert full.tokens == pytest.approx(2.0)
    assert (await store.take("rpm:b", 3, 1.0, 1, now=100.0)).remaining == 2  # keys are separate


async def test_bucket_check_only_does_not_consume(store):
    for _ in range(3):
        assert (await store.take("k", 1, 0.5, 1, now=10.0, consume=False)).allowed
    assert (await store.take("k", 1, 0.5, 1, now=10.0)).allowed
    assert not (await store.take("k", 1, 0.5, 1, now=10.0, consume=False)).allowed


async def test_charge_after_the_fact_drives_the_bucket_negative(store):
    cap, rate = 1000, 1000 / 60  # 1000 tokens per minute
    assert (await store.take("tpm:a", cap, rate, 1, now=0.0, consume=False)).allowed
    charged = await store.charge("tpm:a", cap, rate, 2500, now=0.0)  # one answer used 2500
    assert charged.allowed and charged.tokens == pytest.approx(-1500)
    assert charged.seconds_until(1) == pytest.approx(1501 / rate)
    assert not (await store.take("tpm:a", cap, rate, 1, now=60.0, consume=False)).allowed  # still 500 short
    assert (await store.take("tpm:a", cap, rate, 1, now=91.0, consume=False)).allowed


async def test_clock_going_back_refills_nothing(store):
    await store.take("k", 10, 1.0, 5, now=100.0)
    back = await store.take("k", 10, 1.0, 0, now=90.0)  # another replica's clock, behind
    assert back.tokens == pytest.approx(5.0)
    assert (await store.take("k", 10, 1.0, 0, now=102.0)).tokens == pytest.approx(7.0)


async def test_bucket_arguments_are_checked(store):
    for args in [(0, 1.0, 1), (5, -1.0, 1), (5, 1.0, -1)]:
        with pytest.raises(ValueError):
            await store.take("k", *args, now=0.0)
    with pytest.raises(ValueError):
        await store.take("x" * 300, 5, 1.0, 1, now=0.0)


async def test_admit_checks_budget_then_buckets_in_order(store):
    from modelmux.state import BucketSpec
    specs = [BucketSpec("tpm:a", 100, 100 / 60, 1, consume=False), BucketSpec("rpm:a", 2, 2 / 60, 1)]
    first = await store.admit(specs, spend_key="team-a", budget_usd=1.0, now=T0)
    assert first.allowed and first.spent_usd == 0.0 and not first.over_budget
    assert [b.remaining for b in first.buckets] == [100, 1]
    await store.charge("tpm:a", 100, 100 / 60, 150, now=T0)  # an answer used 150 tokens
    refused = await store.admit(specs, now=T0)
    assert not refused.allowed and len(refused.buckets) == 1 and refused.spent_usd is None  # stopped at tpm
    assert (await store.take("rpm:a", 2, 2 / 60, 0, now=T0)).tokens == pytest.approx(1.0)  # rpm untouched
    await store.add_spend("team-a", "claude-x", TokenCounts(1), 1.0, now=T0)
    over = await store.admit(specs, spend_key="team-a", budget_usd=1.0, now=T0 + 3600)
    assert over.over_budget and over.spent_usd == pytest.approx(1.0) and over.buckets == []
    assert (await store.take("tpm:a", 100, 100 / 60, 0, now=T0 + 3600)).tokens == pytest.approx(100)  # untouched
    assert (await store.admit([], spend_key="team-a", now=T0)).spent_usd == pytest.approx(1.0)


# --- (d) spend ---------------------------------------------------------------------------------------------------------

async def test_spend_counters_month_and_usage(store):
    dec1 = dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC).timestamp()
    dec15 = dt.datetime(2026, 12, 15, 23, 59, tzinfo=dt.UTC).timestamp()
    nov30 = dt.datetime(2026, 11, 30, 23, 59, tzinfo=dt.UTC).timestamp()
    sonnet, haiku = "claude-sonnet-4-5@20250929", "claude-haiku-4-5@20251001"
    for _ in range(1000):  # a thousand small answers sum exactly
        await store.add_spend("team-a", sonnet, TokenCounts(10, 5, 0, 0), 0.000105, now=dec1)
    await store.add_spend("team-a", haiku, TokenCounts(100, 50, 20, 30), 0.5, now=dec15)
    await store.add_spend("team-a", sonnet, TokenCounts(1, 1, 0, 0), 7.0, now=nov30)
    await store.add_spend("team-b", sonnet, TokenCounts(2, 2, 0, 0), 1.25, now=dec15)
    assert await store.month_spend("team-a", now=dec15) == pytest.approx(0.105 + 0.5, abs=1e-12)
    assert await store.month_spend("team-a", now=nov30) == pytest.approx(7.0)
    assert await store.month_spend("team-c", now=dec15) == 0.0
    rows = await store.usage()
    assert [(r.month, r.key, r.model) for r in rows] == [
        ("2026-11", "team-a", sonnet), ("2026-12", "team-a", haiku), ("2026-12", "team-a", sonnet),
        ("2026-12", "team-b", sonnet)]
    dec_a_sonnet = rows[2]
    assert (dec_a_sonnet.requests, dec_a_sonnet.input_tokens, dec_a_sonnet.output_tokens) == (1000, 10_000, 5000)
    assert dec_a_sonnet.usd == 0.105  # exact: counted in nano-dollars
    haiku_row = rows[1]
    assert (haiku_row.cache_write_tokens, haiku_row.cache_read_tokens, haiku_row.usd) == (20, 30, 0.5)
    assert [(r.month, r.model) for r in await store.usage(since=dt.date(2026, 12, 2), key="team-a")] == [
        ("2026-12", haiku)]
    assert await store.usage(key="nobody") == []


# --- races: two processes for the last token ----------------------------------------------------------------------------

def _run_children(target_fn, args_list):
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=target_fn, args=(*args, out)) for args in args_list]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=120) for _ in procs]
        for result in results:
            if isinstance(result, Exception):
                raise result
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    return results


def test_two_processes_race_for_the_last_token(backend):
    kind, target = backend
    rounds = 150
    barrier = multiprocessing.get_context("spawn").Barrier(2)
    wins = _run_children(state_workers.race, [(kind, target, "race:", rounds, barrier)] * 2)
    assert sorted(wins[0] + wins[1]) == list(range(rounds))  # every round exactly one winner, never two
    assert not set(wins[0]) & set(wins[1])


def test_four_processes_drain_one_bucket_exactly(backend):
    """Four at once also open a new SQLite file at once: none may be refused while another sets it up."""
    kind, target = backend
    barrier = multiprocessing.get_context("spawn").Barrier(4)
    allowed = _run_children(state_workers.drain, [(kind, target, "drain", 20, barrier)] * 4)
    assert sum(allowed) == 50  # capacity 50, 80 attempts


# --- SQLite only -----------------------------------------------------------------------------------------------------

def test_default_location_is_the_confdir(tmp_path):
    cfg = parse_config({"vertex": {"project": "p"}})
    store = open_store(cfg.state, tmp_path)
    assert isinstance(store, SQLiteStore) and store.path == tmp_path / "modelmux-state.sqlite3"
    assert sqlite_path("sqlite:///var/lib/mm/state.db", tmp_path) == Path("/var/lib/mm/state.db")
    assert sqlite_path("sqlite://rel/state.db", tmp_path) == tmp_path / "rel" / "state.db"
    redis_cfg = parse_config({"vertex": {"project": "p"}, "state": {"url": "redis://127.0.0.1:1/2"}})
    assert isinstance(open_store(redis_cfg.state, tmp_path), RedisStore)


async def test_sqlite_file_mode_wal_and_schema(tmp_path, clock):
    path = tmp_path / "sub" / "state.sqlite3"
    store = SQLiteStore(path, clock=clock)
    old_umask = os.umask(0o022)  # a permissive umask: the store's own modes must win
    try:
        await store.put_response(response("r1"))
    finally:
        os.umask(old_umask)
    await store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")  # as a newer modelmux would leave it
    conn.close()
    newer = SQLiteStore(path, clock=clock)
    with pytest.raises(StateUnavailable, match="newer than this modelmux"):
        await newer.get_response("r1", "team-a")
    await newer.close()


async def test_sqlite_survives_a_restart_and_is_shared_with_another_process(tmp_path):
    path = str(tmp_path / "state.sqlite3")
    _run_children(state_workers.put_response, [("sqlite", path, "resp_child")])
    store = SQLiteStore(path)  # a new process' view: a fresh store on the same file
    try:
        got = await store.get_response("resp_child", "team-a")
        assert got is not None and got.input_items == [{"id": "msg_in", "type": "message"}]
        assert await store.get_items(["msg_out"], "team-a") == {"msg_out": {"id": "msg_out", "type": "message"}}
    finally:
        await store.close()


async def test_sqlite_unwritable_place_is_unavailable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = SQLiteStore(blocker / "state.sqlite3")  # its directory would have to be a file
    with pytest.raises(StateUnavailable, match="sqlite"):
        await store.take("k", 1, 1, 1)
    await store.close()


async def test_sqlite_locked_by_another_writer_fails_within_the_deadline(tmp_path):
    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(path, StoreSettings(timeout=0.2, connect_timeout=0.1))
    await store.take("k", 5, 1, 1)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock (and does not let go)
    try:
        started = time.monotonic()
        with pytest.raises(StateUnavailable):
            await store.take("k", 5, 1, 1)
        assert time.monotonic() - started < 5  # bounded (0.3 s configured), never a hang
    finally:
        other.execute("ROLLBACK")
        other.close()
    store._down_until = float("-inf")
    assert (await store.take("k", 5, 1, 1)).allowed
    await store.close()


async def test_sqlite_calls_that_time_out_in_the_queue_give_their_place_back_and_never_run_late(tmp_path):
    """A worker thread held up (a slow disk): the calls queued behind it time out; once it is free, the queue is
    empty again (not `max_pending` ghosts refusing every call) and no timed-out take spent a token."""
    store = SQLiteStore(tmp_path / "state.sqlite3", StoreSettings(timeout=0.1, connect_timeout=0.05, max_pending=4,
                                                                  retry_seconds=0))
    await store.take("k", 5, 0, 1, now=1000.0)  # the file exists; 4 tokens left
    gate = threading.Event()
    held = asyncio.ensure_future(store._run(lambda conn: gate.wait(10)))
    await asyncio.sleep(0)  # it is submitted first
    try:
        for _ in range(6):  # more than max_pending, one after another
            with pytest.raises(StateUnavailable):
                await store.take("k", 5, 0, 1, now=1000.0)
    finally:
        gate.set()
        await held
    assert store._queued == 0
    bucket = await store.take("k", 5, 0, 1, now=1000.0)
    assert bucket.allowed and bucket.remaining == 3  # only the first and this one took a token
    await store.close()
    with pytest.raises(StateUnavailable, match="closed"):  # a late call (shutdown): the store's error, not a crash
        await store.take("k", 5, 0, 1, now=1000.0)


async def test_sqlite_lookup_of_many_keys_at_once(tmp_path):
    """More keys than SQLite binds in one statement (a long conversation's tool-call ids): one answer."""
    store = SQLiteStore(tmp_path / "state.sqlite3")
    await store.kv_put("sig", "k7", {"v": 7}, ttl=60, max_entries=10)
    keys = [f"k{i}" for i in range(300_000)]
    assert await store.kv_get_many("sig", keys) == {"k7": {"v": 7}}
    await store.close()


# --- the guard: fail fast after a failure, then try again --------------------------------------------------------------

async def test_fail_fast_window_then_retry(tmp_path):
    mono = Clock(0.0)
    errors = []
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = SQLiteStore(blocker / "x.sqlite3", StoreSettings(retry_seconds=1.0), monotonic=mono,
                        on_error=errors.append)
    with pytest.raises(StateUnavailable):
        await store.take("k", 1, 1, 1)
    assert errors == ["take"]
    blocker.unlink()
    blocker.mkdir()  # the cause is gone …
    mono.now = 0.5
    with pytest.raises(StateUnavailable):  # … but within the window calls fail at once, untried
        await store.month_spend("k")
    assert errors == ["take"]
    mono.now = 1.01
    assert (await store.take("k", 1, 1, 1)).allowed
    assert (await store.health())["ok"]
    await store.close()


# --- Redis only ---------------------------------------------------------------------------------------------------------

async def test_redis_outage_and_recovery_without_a_new_store(tmp_path, clock):
    server = RedisServer(tmp_path)
    errors = []
    store = RedisStore(server.url, StoreSettings(retry_seconds=0.0), clock=clock, on_error=errors.append)
    try:
        await store.put_response(response("r1"))
        assert (await store.take("k", 2, 0, 1, now=1.0)).allowed
        server.stop()
        for call in (lambda: store.get_response("r1", "team-a"), lambda: store.take("k", 2, 0, 1, now=1.0)):
            started = time.monotonic()
            with pytest.raises(StateUnavailable, match="redis"):
                await call()
            assert time.monotonic() - started < 3  # deadline 1 s (connect 0.5 + read 0.5)
        assert not (await store.health())["ok"]
        assert errors[:2] == ["get_response", "take"]
        server.start()  # same port, empty (no persistence)
        assert (await store.take("k", 2, 0, 1, now=1.0)).allowed  # the same store object works again
        assert await store.get_response("r1", "team-a") is None
        await store.put_response(response("r2"))  # scripts reloaded after the restart flushed them
        assert (await store.get_response("r2", "team-a")).id == "r2"
        assert (await store.health())["ok"]
    finally:
        await store.close()
        server.stop()


async def test_redis_that_hangs_is_unavailable_within_the_deadline(tmp_path):
    server = RedisServer(tmp_path)
    store = RedisStore(server.url, StoreSettings(timeout=0.3, connect_timeout=0.3, retry_seconds=0.0))
    try:
        await store.ping()
        server.pause()  # accepts nothing, answers nothing
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(StateUnavailable):
                await store.take("k", 1, 1, 1)
            assert time.monotonic() - started < 3  # bounded by the 0.6 s deadline, not a hang
        server.resume()
        assert (await store.take("k", 1, 1, 1)).allowed
    finally:
        server.resume()
        await store.close()
        server.stop()


async def test_redis_password(tmp_path):
    server = RedisServer(tmp_path, password="s3cret-pw")
    good = RedisStore(server.url)
    bad = RedisStore(server.url.replace("s3cret-pw", "wrong"))
    anonymous = RedisStore(f"redis://127.0.0.1:{server.port}/0")
    try:
        assert (await good.take("k", 1, 1, 1)).allowed
        for store in (bad, anonymous):
            with pytest.raises(StateUnavailable) as err:
                await store.take("k", 1, 1, 1)
            assert "s3cret-pw" not in str(err.value) and "wrong" not in str(err.value)
            assert "redis://127.0.0.1:" in str(err.value)
    finally:
        for store in (good, bad, anonymous):
            await store.close()
        server.stop()


async def test_rediss_tls(tmp_path, clock):
    server = RedisServer(tmp_path, tls=True)
    store = RedisStore(server.url, clock=clock)
    plain = RedisStore(f"redis://127.0.0.1:{server.port}/0", StoreSettings(timeout=0.3, connect_timeout=0.3))
    try:
        await store.put_response(response("r1"))
        assert (await store.get_response("r1", "team-a")).id == "r1"
        with pytest.raises(StateUnavailable):  # the TLS port does not speak plain RESP
            await plain.ping()
    finally:
        await store.close()
        await plain.close()
        server.stop()


async def test_redis_keys_are_namespaced_and_expire(redis_server, clock):
    import redis
    raw = redis.Redis(host="127.0.0.1", port=redis_server.port)
    raw.flushall()
    store = RedisStore(redis_server.url, clock=lambda: time.time())
    try:
        await store.put_response(response("r1", created=time.time()))
        await store.take("rpm:team-a", 10, 1, 1)
        await store.kv_put("thinking", "toolu_1", [1], ttl=60, max_entries=10)
        await store.add_spend("team-a", "claude-x", TokenCounts(1, 1), 0.1)
        keys = sorted(k.decode() for k in raw.scan_iter("*"))
        assert keys and all(k.startswith("modelmux:") for k in keys)
        assert "modelmux:{resp}:r:r1" in keys and "modelmux:{rl:rpm:team-a}" in keys
        for key in keys:
            if key.endswith((":idx", ":sizes", ":bytes", "spend:days")) and "{kv:" not in key:
                continue  # the store's own indexes, emptied by its eviction
            ttl = raw.pttl(key)
            assert ttl > 0, key
        assert 29 * DAY * 1000 < raw.pttl("modelmux:{resp}:r:r1") <= 30 * DAY * 1000
        assert raw.pttl("modelmux:{rl:rpm:team-a}") <= 2000  # gone once full again (1 s) + 1 s
    finally:
        await store.close()
        raw.close()


async def test_redis_evicted_or_deleted_responses_leave_no_item_index(redis_server, clock):
    """Redis memory is bounded by response_max_*: a response gone (evicted, deleted) takes its item indexes along."""
    import redis
    raw = redis.Redis(host="127.0.0.1", port=redis_server.port)
    raw.flushall()
    store = RedisStore(redis_server.url, StoreSettings(response_max_count=2), clock=clock)
    try:
        for n in range(5):
            await store.put_response(response(f"r{n}", created=clock.now, inputs=("in",), outputs=(f"o{n}",)))
        assert await store.delete_response("r4", "team-a")
        index = sorted(k.decode() for k in raw.scan_iter("modelmux:{resp}:i:*"))
        assert len(index) == 2 and all(k.endswith(("r3-in", "r3-o3")) for k in index)  # r0–r2 evicted, r4 deleted
        assert all(raw.zrange(k, 0, -1) == [b"r3"] for k in index)
        assert (await store.get_items(["r3-o3"], "team-a")).keys() == {"r3-o3"}
    finally:
        await store.close()
        raw.close()


async def test_state_unavailable_is_quick_for_a_closed_port(clock):
    from procs import free_port
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", clock=clock)
    started = time.monotonic()
    with pytest.raises(StateUnavailable):
        await store.put_response(response("r1"))
    assert time.monotonic() - started < 3
    await store.close()


def test_sqlite_call_cancelled_by_its_caller_leaves_the_worker_usable():
    """A caller's cancellation (client gone) must not wedge the SQLite worker: the next call still works."""
    async def main(path):
        store = SQLiteStore(path)
        task = asyncio.ensure_future(store.take("k", 5, 1, 1))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await store.take("k", 5, 1, 1)).allowed
        await store.close()
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(main(os.path.join(d, "s.sqlite3")))
