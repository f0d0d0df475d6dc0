#!/usr/bin/env python3
"""modelmux benchmark: what the proxy costs, side by side with the floor and with plain mitmproxy.

    .venv/bin/python scripts/bench.py [--quick] [--soak 10000] [--litellm PATH] [--json out.json]

One emulator (the local fake of Vertex AI), the same prompt (a 32-word answer: 32 content events), and these
paths from a client on 127.0.0.1, measured in the same run:
  (a) direct to the emulator: the floor;
  (b) plain `mitmdump`, no addon: `--mode reverse:<emulator>@PORT --set stream_large_bodies=1
      --set connection_strategy=lazy --set flow_detail=0`, reached two ways on that one listener:
      - plain HTTP: the twin of modelmux's reverse mode (plain HTTP from the client, one plain-HTTP connection
        to the emulator, lazy connection strategy as modelmux sets it, bodies streamed as they arrive as
        modelmux streams SSE, no per-flow dump as modelmux runs without the dumper);
      - HTTPS (mitmproxy's reverse mode terminates TLS when the client speaks it, with its CA): the twin of
        modelmux's regular mode, whose cost is mostly that TLS interception. A regular-mode passthrough cannot
        be it: the emulator speaks plain HTTP, and `map_remote` (which could point an intercepted
        https:// flow at it) runs after mitmproxy has already connected upstream to stream the request body;
  (c) modelmux in regular mode (HTTPS_PROXY: CONNECT, TLS intercepted with its CA);
  (d) modelmux in reverse mode (base URL);
  (e) LiteLLM's proxy, vertex_ai/ provider pointed at the emulator (api_base, and a service-account key whose
      token_uri is the emulator's), when a `litellm` executable is found (--litellm, .bench-venv/bin, PATH;
      scripts/bench_litellm.py says how to install it); otherwise the column is skipped with a note.
The floor and mitmdump send Vertex-shaped requests; modelmux and LiteLLM get OpenAI ones and translate.
"×mitmdump" compares each path with its twin: modelmux regular with mitmdump over TLS, modelmux reverse and
LiteLLM (plain HTTP in) with plain mitmdump.

Figures:
- non-streamed latency p50/p99: 300 sequential requests per path;
- first content chunk p50/p99: 100 sequential unpaced streams per path;
- added delay per event: the emulator paces its events 20 ms apart (set at run time through
  /_emulator/settings); 20 sequential streams per path (concurrent ones would queue their requests and
  measure that). An event's transit is its arrival at the client (from the request's start) minus when the
  emulator sent it (from the request's arrival there, read back from the emulator's request log; the prompt's
  last word carries a tag to find each stream's entry). The added delay is that transit minus the floor's
  median transit: mean and p99 over all events (the floor's own row is its jitter). Transits rather than
  bare arrival times, because the emulator's sleep-paced schedule drifts by ±10 ms over a stream, which would
  swamp what a proxy adds;
- throughput with 64 and 256 concurrent unpaced streams (asyncio + httpx): streams/s, content chunks/s,
  errors; per path up to 2000 streams or 15 s of starting new ones, over warm 16-connection httpx pools (one
  256-connection pool costs the client more than the proxies cost);
- CPU time per stream of the process in between: /proc/PID/stat utime+stime before and after a fixed batch
  of 400 streams (8 at a time), divided by the count; the floor's row is the emulator's own cost, for scale;
  per non-streamed request likewise, over the latency run (its rounds' warm-up requests not counted);
- memory over a soak of 10,000 requests (--soak; half streamed, each process's two ways in alternating,
  8 at a time, at most 120 s per proxy), first thing after start-up: VmRSS sampled every 250 ms; after warm-up
  (the first tenth), at the end, the peak (VmHWM, reset at the soak's start) and the growth per 1000 requests
  (least-squares slope after warm-up), so that flat is visible; and the peak over the whole run, 256
  concurrent streams included;
- start-up time (median of 5 starts until listening), the first chunk of a stream whose first attempt gets a
  429 (modelmux fails over; 50 streams, each checked in the emulator's log to have met its 429, on another
  modelmux in reverse mode whose circuit breaker never opens — the default one would send every stream after
  the third straight to the fallback region — against 50 clean streams on it), and the pure stream translators alone, chat and Responses, on the same 1,000
  events fed one per read (upstream events/s, one core; the target is 200,000).
Then the other APIs, each in rounds over its own paths (scripts/bench_apis.py), after the memory figures:
- the Responses API beside chat: `POST /v1/responses` with the chat prompt as `input` and max_output_tokens 256
  (openai-python's request, sent with the same raw httpx client, not the SDK), through modelmux regular and
  reverse with `store` at its default (true: every answer is stored, as the SDKs' default asks) and reverse
  with `store: false` (Codex, the agents SDKs), beside chat in both modes and the floor, which is the same
  emulator call for both APIs — checked first: the emulator's log shows byte-for-byte the floor's Claude
  request from chat and from Responses, streamed and not. Non-streamed latency p50/p99 (the --requests count
  per path) and, over sequential unpaced streams (the --streams count), the first content event p50/p99
  (Responses: the first `response.output_text.delta`; chat: the first chunk with content; floor: the first
  `text_delta`) and the first event of any kind (`response.created`, the role chunk, `message_start`); each
  with its added latency over the floor, and for Responses that against the chat path's in the same mode
  (the issue's budget: no more than chat's); CPU per request and per stream of the process in between;
- embeddings: `POST /v1/embeddings` (text-embedding-3-small → gemini-embedding-001, dimensions 768) with 1 text
  (`input` a string) and with 64 texts (a list), `encoding_format` float and base64, through modelmux reverse,
  against the floor: the emulator's `:predict` with the very instances and parameters modelmux sends (checked
  in its log); every answer checked once for n vectors of 768 values. Latency p50/p99 over 300 sequential
  requests per path (64 texts: 60), CPU per request (the floor's: the emulator's), and in this process the
  hook's pure part on the same request and the emulator's own answer: embeddings_plan and assemble_bytes,
  median of 30 runs each (scripts/bench_embeddings.py's request_cost);
- the rate-limit check: two more modelmux processes in reverse mode, one with `state.url` unset (the embedded
  SQLite file) and one on a redis-server started on a free loopback port as tests/redis_proc.py starts it (the
  Redis rows are skipped with a note when redis-server is not installed), each with two client keys: one with
  requests_per_minute and tokens_per_minute of 10⁹ (checked before the upstream call, charged when the answer
  ends, never refusing), one without limits — checked first by the x-ratelimit-* headers on their answers.
  Non-streamed chat latency p50/p99 over 300 sequential requests per key and CPU per request of its process;
  the limited key against the open key of the same process is the check's cost (both record each answer's
  spend on their store). Then scripts/bench_state.py's bench_limit_check in this process on a scratch SQLite
  file and Redis database: p50/p99/mean and CPU per call over 2000 calls each.
Latency, first chunk, paced streams and throughput run in 3 rounds, the paths in turn within each round (over
connections kept open, for throughput), so that load from elsewhere on the machine lands on every path alike;
the run notes how much CPU other processes took meanwhile. Client, proxy and emulator share the machine's
cores: throughput is the whole system's, as on a developer's machine.

--quick shrinks every count (one to two minutes); the full run takes 8-10 minutes on 2 cores. Every loop is
bounded in count and time, everything listens on 127.0.0.1, and every process started is stopped.
Output: Markdown tables on stdout (the headline first: each figure with its ratios to the floor and to
mitmdump); --json FILE for every raw number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "addon"))
sys.path.insert(0, str(ROOT / "scripts"))

import httpx  # noqa: E402
from bench_apis import (  # noqa: E402
    embeddings_report, limits_report, measure_embeddings, measure_limits, measure_responses, responses_report)
from bench_litellm import find_litellm, litellm_version, start_litellm  # noqa: E402
from bench_measure import (  # noqa: E402
    Target, arrivals, machine_busy_seconds, memory_kb, own_cpu_seconds, pct, run_streams, soak, stream_once,
    throughput)
from bench_rounds import ROUNDS, attempt, in_rounds, latencies_in_rounds  # noqa: E402

from modelmux.procs import EMULATOR_READY, PROXY_READY, Proc, free_port, wait_port  # noqa: E402
from modelmux.translate.response import AnswerShape  # noqa: E402
from modelmux.translate.responses.response import ResponseShape  # noqa: E402
from modelmux.translate.responses.stream import ResponsesStreamTranslator  # noqa: E402
from modelmux.translate.stream import StreamTranslator  # noqa: E402

MODEL, PROJECT, REGION = "claude-sonnet-4-5@20250929", "bench", "us-east5"
WORDS = " ".join(f"word{i}" for i in range(30))  # "You said: " + 30 words: 32 content events
TAG_SLOT = "word29"  # replaced by a same-length tag where streams must be told apart
OPENAI_BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": WORDS}], "max_tokens": 256}
RESPONSES_BODY = {"model": "gpt-4o", "input": WORDS, "max_output_tokens": 256}  # the same Claude call as OPENAI_BODY
VERTEX_BODY = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 256,
               "messages": [{"role": "user", "content": [{"type": "text", "text": WORDS}]}]}
FLOOR_TOKEN = "bench-floor-token"
MITMDUMP = str(Path(sys.executable).parent / "mitmdump")

FLOOR, MITM, MITM_TLS = "direct to emulator (floor)", "mitmdump passthrough", "mitmdump passthrough, client TLS"
REGULAR, REVERSE, LITELLM = "modelmux regular (HTTPS_PROXY)", "modelmux reverse (base URL)", "LiteLLM proxy"
# the passthrough doing the same transport work as each path, for the "×mitmdump" ratios
TWIN = {MITM_TLS: MITM, REGULAR: MITM_TLS, REVERSE: MITM, LITELLM: MITM}
FULL = dict(requests=300, streams=100, paced=20, pace_ms=20.0, concurrency=[64, 256], throughput_streams=2000,
            throughput_seconds=15.0, cpu_streams=400, soak=10_000, soak_seconds=120.0, starts=5, translator_s=2.0,
            embed_requests=300, embed_requests_64=60, embed_repeat=30, limit_requests=300, limit_checks=2000)
QUICK = dict(requests=30, streams=20, paced=3, pace_ms=20.0, concurrency=[16, 32], throughput_streams=200,
             throughput_seconds=3.0, cpu_streams=40, soak=500, soak_seconds=8.0, starts=2, translator_s=0.5,
             embed_requests=30, embed_requests_64=9, embed_repeat=10, limit_requests=30, limit_checks=300)
PACED_CONCURRENCY, CPU_CONCURRENCY, SOAK_CONCURRENCY = 1, 8, 8


# --- processes ----------------------------------------------------------------------------------------------

def mitmdump_argv(emu_url: str, port: int, confdir: Path) -> list[str]:
    # flow_detail=0: no per-flow dump (modelmux runs without the dumper); the info log stays, as in modelmux
    return [MITMDUMP, "--mode", f"reverse:{emu_url}@{port}", "--listen-host", "127.0.0.1",
            "--set", f"confdir={confdir}", "--set", "stream_large_bodies=1", "--set", "connection_strategy=lazy",
            "--set", "flow_detail=0"]


def modelmux_argv(config: Path, confdir: Path, modes: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "modelmux.cli", "run", "--config", str(config), "--confdir", str(confdir)]
    for mode in modes:
        argv += ["--mode", mode]
    return argv


def startup_ms(make_argv: Callable[[int], list[str]], starts: int) -> list[float]:
    """ms from exec until the proxy prints that it listens, `starts` times."""
    out = []
    for _ in range(starts):
        p = Proc(make_argv(free_port()), PROXY_READY)
        out.append(p.ready_after * 1000)
        p.stop()
    return out


def write_modelmux_config(tmp: Path, emu_url: str, key: Path, extra: str = "", name: str = "c") -> Path:
    """The bench's modelmux config (tmp/NAME.yaml), with `extra` config lines appended."""
    config = tmp / f"{name}.yaml"
    config.write_text(f"vertex: {{project: {PROJECT}, region: {REGION}, base_url: '{emu_url}', "
                      f"fallback_regions: [global]}}\n"
                      f"auth: {{credentials_file: '{key}'}}\nmodels: {{map: {{gpt-4o: {MODEL}}}}}\n" + extra)
    return config


def reverse_starter(tmp: Path, emu_url: str, key: Path) -> Callable[[str, str], tuple[Proc, int]]:
    """start(name, extra config lines) → another modelmux in reverse mode (its own config and confdir), its port."""
    def start(name: str, extra: str) -> tuple[Proc, int]:
        port = free_port()
        proc = Proc(modelmux_argv(write_modelmux_config(tmp, emu_url, key, extra, name), tmp / f"conf-{name}",
                                  [f"reverse:https://api.openai.com@{port}"]), PROXY_READY)
        try:
            wait_port(port)
        except BaseException:
            proc.stop()
            raise
        return proc, port
    return start


def vertex_target(name: str, base: str, pid: int, **kw: Any) -> Target:
    path = f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/anthropic/models/{MODEL}"
    return Target(name, base, f"{path}:rawPredict", f"{path}:streamRawPredict", VERTEX_BODY,
                  {"authorization": f"Bearer {FLOOR_TOKEN}"}, dialect="vertex", pid=pid, **kw)


def openai_target(name: str, base: str, pid: int, key: str = "sk-bench", **kw: Any) -> Target:
    return Target(name, base, "/v1/chat/completions", "/v1/chat/completions", OPENAI_BODY,
                  {"authorization": f"Bearer {key}"}, dialect="chat", pid=pid, **kw)


def start_paths(stack: contextlib.ExitStack, tmp: Path, emu: Proc, key: Path, litellm: str | None,
                results: dict) -> dict[str, Target]:
    """Start every proxy (each stopped when the stack closes); one Target per path."""
    emu_url = emu.match.group(1)
    mitm_port, regular, reverse = free_port(), free_port(), free_port()
    mitm = Proc(mitmdump_argv(emu_url, mitm_port, tmp / "mitm-conf"), PROXY_READY)
    stack.callback(mitm.stop)
    conf = tmp / "conf"
    mux = Proc(modelmux_argv(write_modelmux_config(tmp, emu_url, key), conf,
                             [f"regular@{regular}", f"reverse:https://api.openai.com@{reverse}"]), PROXY_READY)
    stack.callback(mux.stop)
    for port in (mitm_port, regular, reverse):
        wait_port(port)
    targets = {
        FLOOR: vertex_target(FLOOR, emu_url, emu.popen.pid),
        MITM: vertex_target(MITM, f"http://127.0.0.1:{mitm_port}", mitm.popen.pid),
        # the same listener: mitmproxy's reverse mode terminates TLS when the client speaks it
        MITM_TLS: vertex_target(MITM_TLS, f"https://127.0.0.1:{mitm_port}", mitm.popen.pid,
                                verify=str(tmp / "mitm-conf" / "mitmproxy-ca-cert.pem")),
        REGULAR: openai_target(REGULAR, "https://api.openai.com", mux.popen.pid,
                               proxy=f"http://127.0.0.1:{regular}", verify=str(conf / "mitmproxy-ca-cert.pem")),
        REVERSE: openai_target(REVERSE, f"http://127.0.0.1:{reverse}", mux.popen.pid),
    }
    if litellm is None:
        results["notes"].append("LiteLLM: no `litellm` executable (--litellm, .bench-venv/bin, PATH): column skipped")
        return targets
    try:
        proc, base, master_key = start_litellm(litellm, tmp, emu_url, key, PROJECT, REGION, MODEL, "gpt-4o")
    except RuntimeError as err:
        results["notes"].append(f"LiteLLM did not start, column skipped: {str(err)[-300:]}")
        return targets
    stack.callback(proc.stop)
    results["startup"]["LiteLLM"] = {"ms_median": proc.ready_after * 1000, "ms_all": [proc.ready_after * 1000]}
    results["notes"].append(f"LiteLLM {litellm_version(litellm)} ({litellm})")
    targets[LITELLM] = openai_target(LITELLM, base, proc.popen.pid, key=master_key)
    return targets


# --- measurements -------------------------------------------------------------------------------------------

def measure_latency(targets: dict[str, Target], cfg: dict, results: dict) -> None:
    latencies_in_rounds(targets, cfg["requests"], results, results["paths"])


def measure_first_chunk(targets: dict[str, Target], cfg: dict, results: dict) -> None:
    n = -(-cfg["streams"] // ROUNDS)
    for name, rounds in in_rounds(targets, results, "first_chunk",
                                  lambda t: list(arrivals(t, n, concurrency=1, seconds=30).values())).items():
        firsts = [s[0] for r in rounds for s in r]
        results["paths"][name]["first_chunk"] = {"n": len(firsts), "ms_p50": pct(firsts, 50),
                                                 "ms_p99": pct(firsts, 99)}


def tagged(body: dict, i: int) -> dict:
    """The body with the prompt's last word replaced by a tag of the same length, so that the emulator's log
    entry of stream i can be found whatever the proxy does to the request."""
    return json.loads(json.dumps(body).replace(TAG_SLOT, f"t{i:05d}"))


def sent_times(admin: httpx.Client) -> dict[int, list[float]]:
    """From the emulator's request log: tag → when each content event was sent (ms after the request came in)."""
    out = {}
    for entry in admin.get("/_emulator/requests").json():
        events = (entry.get("response") or {}).get("events")
        tag = re.search(r"\bt(\d{5})\b", json.dumps(entry.get("body")))
        if events and tag:
            out[int(tag.group(1))] = [e["t_ms"] for e in events if e["event"] == "content_block_delta"
                                      and e["data"]["delta"].get("type") == "text_delta"]
    return out


def transits(target: Target, admin: httpx.Client, n: int) -> list[float]:
    """Paced streams through the target: for every content event, its arrival at the client (from the request's
    start) minus when the emulator sent it (from the request's arrival there). The emulator's own schedule
    drifts by several ms over a stream; this difference does not."""
    admin.delete("/_emulator/requests")
    got = arrivals(target, n, PACED_CONCURRENCY, seconds=60,
                   body_for=lambda i: tagged(target.stream_body, i))
    sent = sent_times(admin)
    missing = set(got) - set(sent)
    if missing:
        raise RuntimeError(f"{len(missing)} streams not in the emulator's log")
    return [a - e for i, arr in got.items() for a, e in zip(arr, sent[i], strict=True)]


def measure_paced(targets: dict[str, Target], emu_url: str, cfg: dict, results: dict) -> None:
    """Added delay per content event with the emulator pacing: each path's transit against the floor's median."""
    admin = httpx.Client(base_url=emu_url, trust_env=False, timeout=10)
    admin.post("/_emulator/settings", json={"pace_ms": cfg["pace_ms"]}).raise_for_status()
    try:
        n = -(-cfg["paced"] // ROUNDS)
        raw = {name: [ms for r in rounds for ms in r]
               for name, rounds in in_rounds(targets, results, "paced", lambda t: transits(t, admin, n)).items()}
    finally:
        admin.post("/_emulator/settings", json={"pace_ms": 0})
        admin.close()
    floor = raw.get(FLOOR)
    for name, ts in raw.items():
        if not floor:
            results["paths"][name]["paced"] = {"error": "no floor to compare with"}
            continue
        base = statistics.median(floor)
        added = [t - base for t in ts]
        results["paths"][name]["paced"] = {
            "pace_ms": cfg["pace_ms"], "events": len(ts), "transit_ms_p50": statistics.median(ts),
            "added_ms_mean": statistics.fmean(added), "added_ms_p99": pct(added, 99)}


async def _retried_stream_cost(emu_url: str, reverse: Target, n: int) -> dict[str, float]:
    out = {}
    async with reverse.async_client(1) as client, httpx.AsyncClient(base_url=emu_url, trust_env=False) as admin:
        await stream_once(client, reverse)  # warm-up
        for name, fault in (("clean", False), ("one 429, failover", True)):
            times = []
            await admin.delete("/_emulator/requests")
            for _ in range(n):
                if fault:
                    await admin.post("/_emulator/faults", json={"rules": [{
                        "match": {"location": REGION}, "action": "status", "status": 429, "count": 1}]})
                times.append((await stream_once(client, reverse, t0=time.perf_counter())).arrivals[0])
            out[name] = pct(times, 50)
        met = sum(1 for e in (await admin.get("/_emulator/requests")).json() if e.get("status") == 429)
        await admin.delete("/_emulator/faults")
    if met != n:  # e.g. a circuit breaker that opened: the later streams would skip the faulty region
        raise RuntimeError(f"{met} of {n} streams met their 429")
    return out


# for the retried stream: with the default (3 failures in 30 s), the region's circuit would open after the third
# faulted stream and the rest would go straight to the fallback region, never meeting their 429
NO_BREAKER = "circuit_breaker: {failures: 1000000}\n"


def retried_stream_cost(emu_url: str, reverse: Target, n: int) -> dict[str, float]:
    """First chunk of a stream whose first attempt gets a 429 (failover to the fallback region), against the
    same stream without the fault; every faulted stream checked to have met its 429."""
    return asyncio.run(_retried_stream_cost(emu_url, reverse, n))


def measure_retried_stream(start: Callable[[str, str], tuple[Proc, int]], reverse: Target, emu_url: str, n: int,
                           results: dict) -> None:
    """On a modelmux like the reverse path's but whose circuit breaker never opens."""
    def run() -> dict[str, float]:
        proc, port = start("retried", NO_BREAKER)
        try:
            return retried_stream_cost(emu_url, replace(reverse, base=f"http://127.0.0.1:{port}",
                                                        pid=proc.popen.pid), n)
        finally:
            proc.stop()
    attempt(results, results, "retried stream", "retried stream", run)


def chat_translator() -> StreamTranslator:
    return StreamTranslator(AnswerShape(model="gpt-4o", created=0, include_usage=True, fallback_id="x"))


def responses_translator() -> ResponsesStreamTranslator:
    return ResponsesStreamTranslator(ResponseShape(response_id="resp_bench", created_at=0, model="gpt-4o",
                                                   key=bytes(32)))


def translator_events_per_second(seconds: float, make=chat_translator) -> float:
    events = [b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_vrtx_1","usage":'
              b'{"input_tokens":10,"output_tokens":1}}}\n\n']
    delta = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hello "}}\n\n'
    events += [delta] * 998
    events.append(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        t = make()
        for e in events:  # one event per socket read: the worst case for per-call overhead
            t.feed(e)
        count += len(events)
    return count / (time.perf_counter() - t0)


def run_all(cfg: dict, litellm: str | None, results: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="modelmux-bench-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        key = tmp / "sa.json"
        emu = Proc([sys.executable, "-m", "modelmux.emulator", "--port", "0", "--service-account-out", str(key),
                    "--accept-token", FLOOR_TOKEN], EMULATOR_READY)
        stack.callback(emu.stop)
        emu_url = emu.match.group(1)
        step("start-up times")
        measure_startup(tmp, emu_url, key, cfg, results)
        targets = start_paths(stack, tmp, emu, key, litellm, results)
        results["paths"] = {name: {} for name in targets}
        # the soak first, on fresh processes: its memory figures are then its own, not the 256 streams' after-effects
        step(f"soak ({cfg['soak']} requests per proxy)")
        measure_soak(targets, cfg, results)
        step("non-streamed latency, first chunk")
        measure_latency(targets, cfg, results)
        measure_first_chunk(targets, cfg, results)
        step(f"paced streams ({cfg['pace_ms']:g} ms between events)")
        measure_paced(targets, emu_url, cfg, results)
        for c in cfg["concurrency"]:
            step(f"throughput, {c} concurrent streams")
            measure_throughput(targets, c, cfg, results)
        step(f"CPU per stream ({cfg['cpu_streams']} streams, {CPU_CONCURRENCY} at a time)")
        for name, t in targets.items():
            attempt(results, results["paths"][name], "cpu", f"CPU per stream, {name}",
                    lambda: run_streams(t, CPU_CONCURRENCY, cfg["cpu_streams"], 120, watch=t.pid).as_json())
        for name, t in targets.items():  # the whole run's peak: after the 256 concurrent streams
            if name == FLOOR:
                continue
            rss, peak = memory_kb(t.pid)
            results["paths"][name]["memory_at_end"] = {"rss_mb": rss / 1024, "peak_since_soak_mb": peak / 1024}
        # the other APIs after the memory figures, which are the chat paths' own
        step("Responses API beside chat")
        measure_responses(targets[FLOOR], targets[REGULAR], targets[REVERSE], RESPONSES_BODY, "You said: " + WORDS,
                          emu_url, cfg, results)
        step("embeddings")
        measure_embeddings(targets[FLOOR], targets[REVERSE], PROJECT, REGION, emu_url, cfg, results)
        step("rate-limit check (embedded SQLite, Redis)")
        measure_limits(reverse_starter(tmp, emu_url, key), targets[REVERSE], tmp, cfg, results)
        step("retried stream")
        measure_retried_stream(reverse_starter(tmp, emu_url, key), targets[REVERSE], emu_url, min(cfg["streams"], 50),
                               results)
    step("stream translators alone")
    results["translator"] = {"events_per_second": translator_events_per_second(cfg["translator_s"]),
                             "responses_events_per_second": translator_events_per_second(cfg["translator_s"],
                                                                                         responses_translator)}


def measure_startup(tmp: Path, emu_url: str, key: Path, cfg: dict, results: dict) -> None:
    config = write_modelmux_config(tmp, emu_url, key)
    for name, argv in (("modelmux", lambda p: modelmux_argv(config, tmp / "conf", [f"regular@{p}"])),
                       ("mitmdump", lambda p: mitmdump_argv(emu_url, p, tmp / "mitm-conf"))):
        ms = startup_ms(argv, cfg["starts"])
        results["startup"][name] = {"ms_median": statistics.median(ms), "ms_all": ms}


def measure_soak(targets: dict[str, Target], cfg: dict, results: dict) -> None:
    """Each proxy process in turn, its modes alternating (one process serves both)."""
    soaks = {"mitmdump (both)": [targets[MITM], targets[MITM_TLS]],
             "modelmux (both modes)": [targets[REVERSE], targets[REGULAR]]}
    if LITELLM in targets:
        soaks["LiteLLM"] = [targets[LITELLM]]
    for name, ts in soaks.items():
        attempt(results, results["soak"], name, f"soak, {name}",
                lambda: soak(ts, ts[0].pid, cfg["soak"], cfg["soak_seconds"], SOAK_CONCURRENCY))


def measure_throughput(targets: dict[str, Target], c: int, cfg: dict, results: dict) -> None:
    got: dict[str, Any] = {}
    if attempt(results, got, "runs", f"throughput {c}", lambda: throughput(
            list(targets.values()), c, cfg["throughput_streams"], cfg["throughput_seconds"], ROUNDS)):
        for name, run in got["runs"].items():
            results["paths"][name].setdefault("throughput", {})[str(c)] = run.as_json()


def step(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


# --- report -------------------------------------------------------------------------------------------------

SOAK_OF = {MITM: "mitmdump (both)", MITM_TLS: "mitmdump (both)", REGULAR: "modelmux (both modes)",
           REVERSE: "modelmux (both modes)", LITELLM: "LiteLLM"}  # soak and start-up are per process; modelmux's serves both modes
STARTUP_OF = {MITM: "mitmdump", MITM_TLS: "mitmdump", REGULAR: "modelmux", REVERSE: "modelmux", LITELLM: "LiteLLM"}


def get(results: dict, name: str, *keys: str) -> float | None:
    """results["paths"][name][k1][k2]…, None when missing or failed."""
    v: Any = results["paths"].get(name)
    for k in keys:
        if not isinstance(v, dict) or k not in v:
            return None
        v = v[k]
    return v if isinstance(v, (int, float)) else None


def num(v: float | None, fmt: str = ".1f", unit: str = "") -> str:
    return "–" if v is None else f"{v:{fmt}}{unit}"


def headline_rows(results: dict, cfg: dict) -> list[tuple[str, Callable[[str], float | None], str, bool]]:
    """(figure, its value for a path, format, whether the ratio is to the cost added over the floor)."""
    def path(*keys: str) -> Callable[[str], float | None]:
        return lambda n: get(results, n, *keys)

    def added(*keys: str) -> Callable[[str], float | None]:
        return lambda n: (None if n == FLOOR or get(results, n, *keys) is None or get(results, FLOOR, *keys) is None
                          else get(results, n, *keys) - get(results, FLOOR, *keys))

    def per_process(table: str, of: dict, key: str) -> Callable[[str], float | None]:
        return lambda n: results[table].get(of.get(n, ""), {}).get(key)

    rows = [("latency p50, non-streamed", path("latency", "ms_p50"), ".1f ms", False),
            ("  added to the floor", added("latency", "ms_p50"), "+.1f ms", True),
            ("first chunk p50", path("first_chunk", "ms_p50"), ".1f ms", False),
            ("  added to the floor", added("first_chunk", "ms_p50"), "+.1f ms", True),
            (f"added per event, paced {cfg['pace_ms']:g} ms (mean)", path("paced", "added_ms_mean"), "+.2f ms", True)]
    rows += [(f"streams/s, {c} concurrent", path("throughput", str(c), "requests_per_s"), ".0f", False)
             for c in cfg["concurrency"]]
    rows += [("CPU per stream (floor: the emulator)", path("cpu", "cpu_ms_per_stream"), ".2f ms", False),
             ("CPU per non-streamed request", path("latency", "cpu_ms_per_request"), ".2f ms", False),
             ("peak RSS over the soak", per_process("soak", SOAK_OF, "peak_rss_mb"), ".0f MB", False),
             (f"peak RSS, whole run (up to {max(cfg['concurrency'])} streams at once)",
              path("memory_at_end", "peak_since_soak_mb"), ".0f MB", False),
             ("RSS growth per 1000 requests", per_process("soak", SOAK_OF, "growth_mb_per_1000"), "+.2f MB", False),
             ("start-up until listening", per_process("startup", STARTUP_OF, "ms_median"), ".0f ms", False)]
    return rows


def headline(results: dict, cfg: dict) -> list[str]:
    names = list(results["paths"])
    out = ["| figure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, value, fmt, of_added in headline_rows(results, cfg):
        spec, _, unit = fmt.partition(" ")
        cells = []
        for n in names:
            v = value(n)
            cell = num(v, spec, f" {unit}" if unit else "")
            ratios = []
            if v is not None and n != FLOOR and not of_added and value(FLOOR) and "RSS" not in label:
                ratios.append(f"{v / value(FLOOR):.2f}× floor")
            m = value(TWIN[n]) if n in TWIN else None
            if v is not None and m and "growth" not in label and not (n == MITM_TLS and "RSS" in label):
                ratios.append(f"{v / m:.2f}× {'mitmdump' if TWIN[n] == MITM else 'mitmdump TLS'}"
                              + ("'s" if of_added else ""))
            cells.append(cell + (f" ({', '.join(ratios)})" if ratios else ""))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def details(results: dict, cfg: dict) -> list[str]:
    names = list(results["paths"])
    conc = [str(c) for c in cfg["concurrency"]]
    out = ["", f"Details: {cfg['requests']} sequential non-streamed requests; {cfg['streams']} sequential unpaced "
           f"streams; {cfg['paced']} sequential streams paced {cfg['pace_ms']:g} ms (an event's transit from the "
           "emulator to the client, minus the floor's median transit); throughput cells of up to "
           f"{cfg['throughput_streams']} unpaced streams or {cfg['throughput_seconds']:g} s; CPU over "
           f"{cfg['cpu_streams']} streams, {CPU_CONCURRENCY} at a time.", "",
           "| path | latency p50 | p99 | first chunk p50 | p99 | added/event mean | p99 | "
           + " | ".join(f"@{c}: streams/s | chunks/s | errors" for c in conc) + " |",
           "|---" * (7 + 3 * len(conc)) + "|"]
    for n in names:
        cells = [num(get(results, n, "latency", "ms_p50"), unit=" ms"), num(get(results, n, "latency", "ms_p99"), unit=" ms"),
                 num(get(results, n, "first_chunk", "ms_p50"), unit=" ms"),
                 num(get(results, n, "first_chunk", "ms_p99"), unit=" ms"),
                 num(get(results, n, "paced", "added_ms_mean"), "+.2f", " ms"),
                 num(get(results, n, "paced", "added_ms_p99"), "+.2f", " ms")]
        for c in conc:
            cells += [num(get(results, n, "throughput", c, "requests_per_s"), ".0f"),
                      num(get(results, n, "throughput", c, "chunks_per_s"), ",.0f"),
                      num(get(results, n, "throughput", c, "errors"), "d")]
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    out += ["", f"Memory over the soak (up to {cfg['soak']} requests per proxy, half streamed, {SOAK_CONCURRENCY} at a "
            f"time, at most {cfg['soak_seconds']:g} s; warm-up: the first tenth):", "",
            "| proxy | requests (errors) | RSS after warm-up | RSS at end | peak | growth per 1000 requests |",
            "|---|---|---|---|---|---|"]
    for n, s in results["soak"].items():
        if "error" in s:
            out.append(f"| {n} | {s['error']} | | | | |")
        else:
            out.append(f"| {n} | {s['requests']} ({s['errors']}) | {s['rss_mb_after_warmup']:.1f} MB | "
                       f"{s['rss_mb_end']:.1f} MB | {s['peak_rss_mb']:.1f} MB | {s['growth_mb_per_1000']:+.2f} MB |")
    return out


def report(results: dict, cfg: dict) -> str:
    m = results["machine"]
    out = [f"machine: {m['platform']}, {m['cpus']} cores, Python {m['python']}; run took {results['seconds']:.0f} s",
           "", "Each figure, with its ratios to the floor (direct to the emulator) and to its mitmdump twin:", ""]
    out += headline(results, cfg) + details(results, cfg) + [""]
    r = results.get("retried stream", {})
    if "clean" in r:
        out.append(f"First chunk of a stream whose first attempt gets a 429 (modelmux fails over): "
                   f"{r['one 429, failover']:.1f} ms p50 (clean: {r['clean']:.1f} ms; a modelmux whose circuit "
                   "breaker never opens, so that every one meets its 429).")
    if "translator" in results:
        chat, resp = results["translator"]["events_per_second"], results["translator"]["responses_events_per_second"]
        out.append(f"Stream translators alone, the same 1,000 upstream events fed one per read, one core (target: "
                   f"≥ 200,000 upstream events/s): chat {chat:,.0f}/s, Responses {resp:,.0f}/s "
                   f"({resp / chat:.2f}× chat).")
    out += responses_report(results, FLOOR) + embeddings_report(results) + limits_report(results)
    out.append("")
    out += [f"Note: {n}" for n in results["notes"]]
    out += [f"ERROR: {e}" for e in results["errors"]]
    return "\n".join(out)


def note_foreign_load(results: dict, foreign_cpu_s: float) -> None:
    """Other processes on the machine skew every figure here: say how much CPU they took."""
    share = foreign_cpu_s / (results["seconds"] * (os.cpu_count() or 1))
    results["machine"]["foreign_cpu_share"] = share
    if share > 0.05:
        results["notes"].append(f"other processes used {share:.0%} of the machine's CPU during the run: "
                                "the figures are disturbed, run again on a quiet machine")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts: a smoke run in about a minute")
    ap.add_argument("--requests", type=int, help="sequential non-streamed requests per path (300)")
    ap.add_argument("--streams", type=int, help="sequential unpaced streams per path, for the first chunk (100)")
    ap.add_argument("--paced", type=int, help="sequential paced streams per path (20, at most 150)")
    ap.add_argument("--pace-ms", type=float, help="emulator delay between events for the paced streams (20)")
    ap.add_argument("--concurrency", type=int, nargs="+", help="concurrent streams for throughput (64 256)")
    ap.add_argument("--cpu-streams", type=int, help="streams in the CPU-per-stream batch (400)")
    ap.add_argument("--soak", type=int, help="requests per proxy in the memory soak (10000)")
    ap.add_argument("--litellm", metavar="PATH", help="the litellm executable (default: .bench-venv/bin, PATH)")
    ap.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = ap.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    for k in ("requests", "streams", "paced", "pace_ms", "concurrency", "cpu_streams", "soak"):
        if getattr(args, k) is not None:
            cfg[k] = getattr(args, k)
    cfg["paced"] = min(cfg["paced"], 150)  # the emulator's request log, which gives the send times, keeps 200

    results: dict[str, Any] = {"config": cfg, "paths": {}, "startup": {}, "soak": {}, "notes": [], "errors": [],
                               "machine": {"platform": platform.platform(), "python": platform.python_version(),
                                           "cpus": os.cpu_count()}}
    litellm = find_litellm(args.litellm)
    t0, busy0, own0 = time.monotonic(), machine_busy_seconds(), own_cpu_seconds()
    run_all(cfg, litellm, results)
    results["seconds"] = time.monotonic() - t0
    note_foreign_load(results, machine_busy_seconds() - busy0 - (own_cpu_seconds() - own0))
    print(report(results, cfg))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
