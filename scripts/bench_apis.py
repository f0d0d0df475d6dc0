"""The API paths scripts/bench.py measures beside chat completions, each a phase of its run with its own tables:

- the Responses API (`POST /v1/responses`) beside chat, both modes, against the same floor;
- embeddings (`POST /v1/embeddings`) through reverse mode against the emulator's `:predict`;
- what a rate-limit check costs on the request path, on the embedded SQLite store and on Redis.

Every path is first checked once (the answer is the kind expected, and where a floor stands for it, the emulator
received exactly the floor's call), then measured in rounds with the other paths of its phase (bench_rounds).
bench.py's docstring says how each figure is taken.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from bench_embeddings import request_cost
from bench_measure import TICKS, BenchError, Target, stream_once
from bench_rounds import attempt, latencies_in_rounds, starts_in_rounds
from bench_state import bench_limit_check
from bench_state import report as limit_check_table

from modelmux.config import parse_config
from modelmux.procs import Proc, free_port
from modelmux.state import StoreSettings
from modelmux.vertex import Router


def upstream_call(admin: httpx.Client, t: Target, stream: bool = False) -> tuple[str, Any]:
    """(path, JSON body) of the call the emulator received for one request sent through t."""
    admin.delete("/_emulator/requests").raise_for_status()
    if stream:
        async def one() -> None:
            async with t.async_client(1) as client:
                await stream_once(client, t)
        asyncio.run(one())
    else:
        with t.client() as client:
            r = client.post(t.path, json=t.body)
            if r.status_code != 200:
                raise BenchError(f"{t.name}: HTTP {r.status_code}: {r.text[:200]}")
    entries = admin.get("/_emulator/requests").json()
    if len(entries) != 1:
        raise BenchError(f"{t.name}: {len(entries)} emulator calls for one request")
    return entries[0]["path"], entries[0]["body"]


def check_same_upstream(emu_url: str, floor: Target, others: list[Target], stream: bool = False) -> None:
    """The floor stands for these paths only if the emulator gets exactly the floor's call from each."""
    with httpx.Client(base_url=emu_url, trust_env=False, timeout=30) as admin:
        want = upstream_call(admin, floor, stream)
        for t in others:
            got = upstream_call(admin, t, stream)
            if got != want:
                raise BenchError(f"{t.name} makes another Vertex call than the floor's: {json.dumps(got)[:300]} "
                                 f"instead of {json.dumps(want)[:300]}")


# --- the Responses API --------------------------------------------------------------------------------------

CHAT_REG, CHAT_REV = "chat, modelmux regular (HTTPS_PROXY)", "chat, modelmux reverse (base URL)"
RESP_REG, RESP_REV = "Responses, modelmux regular (HTTPS_PROXY)", "Responses, modelmux reverse (base URL)"
RESP_NOSTORE = "Responses, modelmux reverse, store: false"
CHAT_OF = {RESP_REG: CHAT_REG, RESP_REV: CHAT_REV, RESP_NOSTORE: CHAT_REV}  # the chat path each is held against


def responses_paths(floor: Target, regular: Target, reverse: Target, body: dict) -> dict[str, Target]:
    """The floor, chat in both modes, and the Responses API in both modes (with `store` left to its default, true,
    as the SDKs send it) and in reverse mode with `store: false` (as Codex and the agents SDKs send it)."""
    def as_responses(t: Target, name: str, extra: dict) -> Target:
        return replace(t, name=name, path="/v1/responses", stream_path="/v1/responses", body={**body, **extra},
                       dialect="responses")
    return {floor.name: floor, CHAT_REG: replace(regular, name=CHAT_REG), CHAT_REV: replace(reverse, name=CHAT_REV),
            RESP_REG: as_responses(regular, RESP_REG, {}), RESP_REV: as_responses(reverse, RESP_REV, {}),
            RESP_NOSTORE: as_responses(reverse, RESP_NOSTORE, {"store": False})}


def check_responses_answer(t: Target, expect_text: str) -> None:
    with t.client() as client:
        r = client.post(t.path, json=t.body)
    if r.status_code != 200:
        raise BenchError(f"{t.name}: HTTP {r.status_code}: {r.text[:200]}")
    b = r.json()
    text = "".join(part.get("text", "") for item in b.get("output", []) if item.get("type") == "message"
                   for part in item.get("content", []))
    if b.get("object") != "response" or b.get("status") != "completed" or expect_text not in text:
        raise BenchError(f"{t.name}: not the completed response expected: {r.text[:300]}")


def measure_responses(floor: Target, regular: Target, reverse: Target, body: dict, expect_text: str,
                      emu_url: str, cfg: dict, results: dict) -> None:
    paths = responses_paths(floor, regular, reverse, body)
    out: dict[str, dict] = {name: {} for name in paths}
    results["responses"] = {"paths": out, "requests": cfg["requests"], "streams": cfg["streams"]}
    resp = [t for t in paths.values() if t.dialect == "responses"]
    checks: dict[str, Any] = {}
    if not attempt(results, checks, "answers", "Responses: answers",
                   lambda: [check_responses_answer(t, expect_text) for t in resp]):
        return
    for stream in (False, True):  # chat and Responses make the floor's very call, streamed or not
        if not attempt(results, checks, f"same call, stream={stream}", "Responses: the floor's call",
                       lambda stream=stream: check_same_upstream(emu_url, floor, [paths[CHAT_REV], *resp], stream)):
            return
    results["responses"]["same_vertex_call"] = True
    latencies_in_rounds(paths, cfg["requests"], results, out)
    starts_in_rounds(paths, cfg["streams"], results, out)


def _fig(results: dict, section: str, name: str, *keys: str) -> float | None:
    v: Any = results.get(section, {}).get("paths", {}).get(name)
    for k in keys:
        if not isinstance(v, dict) or k not in v:
            return None
        v = v[k]
    return v if isinstance(v, (int, float)) else None


def _ms(v: float | None, fmt: str = ".1f") -> str:
    return "–" if v is None else f"{v:{fmt}} ms"


def cpu_resolution(n: int, what: str = "requests") -> str:
    """/proc counts CPU time in clock ticks: what one tick is worth per request over n of them."""
    return (f"CPU is counted in clock ticks of {1000 / TICKS:g} ms: over {n} {what}, ±{1000 / TICKS / n:.2f} ms "
            "each.")


def responses_report(results: dict, floor_name: str) -> list[str]:
    section = results.get("responses")
    if not section or not section.get("paths"):
        return []
    paths = section["paths"]

    def added(name: str, *keys: str) -> float | None:
        v, f = _fig(results, "responses", name, *keys), _fig(results, "responses", floor_name, *keys)
        return None if name == floor_name or v is None or f is None else v - f

    def added_cell(name: str, *keys: str) -> str:
        a = added(name, *keys)
        if a is None:
            return "–"
        chat = added(CHAT_OF[name], *keys) if name in CHAT_OF else None
        return f"{a:+.1f} ms" + (f" ({a / chat:.2f}× chat's {chat:+.1f})" if chat is not None and chat > 0 else "")

    out = ["", f"Responses API beside chat completions: {section['requests']} sequential non-streamed requests and "
           f"{section['streams']} sequential unpaced streams per path, in rounds. The floor is the same emulator call "
           "for both APIs (" + ("checked: the emulator received byte-for-byte the floor's Claude request from chat "
           "and from Responses, streamed and not" if section.get("same_vertex_call") else "NOT checked")
           + "). First delta: the first content event (chat: a chunk with content; Responses: "
           "`response.output_text.delta`; floor: Vertex's first `text_delta`); first event: whatever comes first "
           "(chat: the role chunk; Responses: `response.created`; floor: `message_start`). \"×chat's\": the added "
           "latency over the floor against the chat path's in the same mode (the issue's budget: at most 1.00×).",
           "", "| path | latency p50 | p99 | added to the floor (p50) | first delta p50 | p99 | "
           "added to the floor (p50) | first event p50 | p99 | CPU per request | CPU per stream |", "|---" * 11 + "|"]
    for name in paths:
        out.append(f"| {name} | " + " | ".join([
            _ms(_fig(results, "responses", name, "latency", "ms_p50")),
            _ms(_fig(results, "responses", name, "latency", "ms_p99")),
            added_cell(name, "latency", "ms_p50"),
            _ms(_fig(results, "responses", name, "stream_start", "first_content_ms_p50")),
            _ms(_fig(results, "responses", name, "stream_start", "first_content_ms_p99")),
            added_cell(name, "stream_start", "first_content_ms_p50"),
            _ms(_fig(results, "responses", name, "stream_start", "first_event_ms_p50")),
            _ms(_fig(results, "responses", name, "stream_start", "first_event_ms_p99")),
            _ms(_fig(results, "responses", name, "latency", "cpu_ms_per_request"), ".2f"),
            _ms(_fig(results, "responses", name, "stream_start", "cpu_ms_per_stream"), ".2f")]) + " |")
    out.append("CPU: of the process in between (floor: the emulator's own) over the sequential requests and streams "
               "above (not the warm-up request each round starts with); regular and reverse are one modelmux "
               "process. " + cpu_resolution(section["streams"], "streams"))
    return out


# --- embeddings ---------------------------------------------------------------------------------------------

EMBED_MODEL, EMBED_VERTEX_MODEL, EMBED_DIMENSIONS = "text-embedding-3-small", "gemini-embedding-001", 768
EMBED_COUNTS = (1, 64)
EMBED_FORMATS = ("float", "base64")


def texts_label(n: int) -> str:
    return f"{n} text" if n == 1 else f"{n} texts"


def embed_texts(n: int) -> list[str]:
    return [f"query {i}: which region serves vertex embeddings for this document passage?" for i in range(n)]


def embeddings_paths(floor: Target, reverse: Target, project: str, region: str, n: int) -> dict[str, Target]:
    """For n texts: the emulator's :predict with the instances modelmux sends, and modelmux reverse with the
    OpenAI request (one text: `input` a string, as `embed_query` sends it) in each encoding format."""
    texts = embed_texts(n)
    predict = (f"/v1/projects/{project}/locations/{region}/publishers/google/models/{EMBED_VERTEX_MODEL}:predict")
    vertex_body = {"instances": [{"content": t} for t in texts],
                   "parameters": {"autoTruncate": False, "outputDimensionality": EMBED_DIMENSIONS}}
    floor_name = f"{texts_label(n)}, floor"
    out = {floor_name: replace(floor, name=floor_name, path=predict, stream_path=predict, body=vertex_body)}
    for fmt in EMBED_FORMATS:
        name = f"{texts_label(n)}, {fmt}"
        out[name] = replace(reverse, name=name, path="/v1/embeddings", stream_path="/v1/embeddings",
                            body={"model": EMBED_MODEL, "input": texts[0] if n == 1 else texts,
                                  "dimensions": EMBED_DIMENSIONS, "encoding_format": fmt})
    return out


def check_embeddings_answer(t: Target, n: int) -> bytes:
    """One request: the answer's body, checked to hold n vectors of the asked size in the asked format."""
    with t.client() as client:
        r = client.post(t.path, json=t.body)
    if r.status_code != 200:
        raise BenchError(f"{t.name}: HTTP {r.status_code}: {r.text[:200]}")
    b = r.json()
    if "instances" in t.body:
        sizes = [len(p["embeddings"]["values"]) for p in b["predictions"]]
    elif t.body["encoding_format"] == "base64":
        sizes = [len(base64.b64decode(d["embedding"])) // 4 for d in b["data"]]
    else:
        sizes = [len(d["embedding"]) for d in b["data"]]
    if sizes != [EMBED_DIMENSIONS] * n:
        raise BenchError(f"{t.name}: {len(sizes)} vectors of sizes {sorted(set(sizes))}, not {n} of "
                         f"{EMBED_DIMENSIONS}")
    return r.content


def embeddings_in_process(paths: dict[str, Target], floor_answer: bytes, router: Router, repeat: int) -> dict:
    """Plan + assemble of each modelmux request, in this process, on the emulator's own answer to its batch."""
    return {name: request_cost(json.dumps(t.body).encode(), [floor_answer], router.route_embedding, repeat)
            for name, t in paths.items() if "instances" not in t.body}


def measure_embeddings(floor: Target, reverse: Target, project: str, region: str, emu_url: str, cfg: dict,
                       results: dict) -> None:
    out: dict[str, dict] = {}
    results["embeddings"] = {"paths": out, "model": EMBED_MODEL, "vertex_model": EMBED_VERTEX_MODEL,
                             "dimensions": EMBED_DIMENSIONS, "requests": {}, "in_process": {}}
    router = Router(parse_config({"vertex": {"project": project, "region": region}}))
    for n in EMBED_COUNTS:
        paths = embeddings_paths(floor, reverse, project, region, n)
        out.update({name: {} for name in paths})
        floor_t = next(iter(paths.values()))
        checks: dict[str, Any] = {}
        if not attempt(results, checks, "answers", f"embeddings, {texts_label(n)}: answers",
                       lambda: [check_embeddings_answer(t, n) for t in paths.values()]):
            continue
        if not attempt(results, checks, "same call", f"embeddings, {texts_label(n)}: the floor's call",
                       lambda: check_same_upstream(emu_url, floor_t, [t for t in paths.values() if t is not floor_t])):
            continue
        count = cfg["embed_requests"] if n == 1 else cfg["embed_requests_64"]
        results["embeddings"]["requests"][str(n)] = count
        latencies_in_rounds(paths, count, results, out)
        attempt(results, results["embeddings"]["in_process"], str(n), f"embeddings, {texts_label(n)}: in-process",
                lambda: embeddings_in_process(paths, checks["answers"][0], router, cfg["embed_repeat"]))


def embeddings_report(results: dict) -> list[str]:
    section = results.get("embeddings")
    if not section or not section.get("paths"):
        return []
    counts = ", ".join(f"{texts_label(int(k))}: {v}" for k, v in section["requests"].items())
    out = ["", f"Embeddings: `POST /v1/embeddings` ({section['model']} → {section['vertex_model']}, dimensions "
           f"{section['dimensions']}) through modelmux reverse, against the floor: the emulator's `:predict` with "
           f"the instances modelmux sends (checked against the emulator's log); sequential requests per path "
           f"({counts}), in rounds. In-process: this process runs the hook's pure part on the same request and the "
           "emulator's own answer — embeddings_plan (parse, validate, count, split) and assemble_bytes (Vertex's "
           "body → the client's) — median of repeated runs (scripts/bench_embeddings.py's request_cost).", "",
           "| request | floor p50 | p99 | modelmux p50 | p99 | added to the floor (p50) | CPU per request: emulator "
           "| modelmux | in-process plan | assemble |", "|---" * 10 + "|"]
    for n in EMBED_COUNTS:
        floor = f"{texts_label(n)}, floor"
        for fmt in EMBED_FORMATS:
            name = f"{texts_label(n)}, {fmt}"
            if name not in section["paths"]:
                continue
            v, f = _fig(results, "embeddings", name, "latency", "ms_p50"), _fig(results, "embeddings", floor,
                                                                                "latency", "ms_p50")
            cost = section["in_process"].get(str(n), {}).get(name, {})
            out.append(f"| {name} | " + " | ".join([
                _ms(f), _ms(_fig(results, "embeddings", floor, "latency", "ms_p99")), _ms(v),
                _ms(_fig(results, "embeddings", name, "latency", "ms_p99")),
                "–" if v is None or f is None else f"{v - f:+.1f} ms",
                _ms(_fig(results, "embeddings", floor, "latency", "cpu_ms_per_request"), ".2f"),
                _ms(_fig(results, "embeddings", name, "latency", "cpu_ms_per_request"), ".2f"),
                "–" if "plan" not in cost else f"{cost['plan']['median_us']:.0f} µs",
                "–" if "assemble_bytes" not in cost else f"{cost['assemble_bytes']['median_us']:.0f} µs"]) + " |")
    if section["requests"]:
        out.append(cpu_resolution(min(section["requests"].values())))
    return out


# --- rate limits --------------------------------------------------------------------------------------------

BIG = 10 ** 9  # requests and tokens per minute: far above what the run sends, never refusing
OPEN_KEY, LIMITED_KEY = "sk-bench-open", "sk-bench-limited"
REDIS_READY = r"Ready to accept connections"  # as tests/redis_proc.py waits for it


def limits_config(state_url: str | None) -> str:
    """Config lines for a modelmux with two client keys, one without limits and one with both rate limits."""
    state = f"state: {{url: '{state_url}'}}\n" if state_url else ""
    return (f"security: {{client_keys: [{{key: {OPEN_KEY}, name: open}}, {{key: {LIMITED_KEY}, name: limited, "
            f"requests_per_minute: {BIG}, tokens_per_minute: {BIG}}}]}}\n" + state)


def start_redis(tmp: Path) -> tuple[Proc, int]:
    """A redis-server on a free loopback port, started as tests/redis_proc.py starts it (no persistence)."""
    port = free_port()
    return Proc([shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(tmp), "--daemonize", "no", "--protected-mode", "no",
                 "--port", str(port)], REDIS_READY, timeout=20), port


def redis_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return f"version unknown ({err})"
    m = re.search(r"v=(\S+)", out)
    return m.group(1) if m else out.strip()[:60]


def check_limit_headers(t: Target, limited: bool) -> None:
    """The limited key's answer carries the x-ratelimit headers of both limits; the open key's carries none."""
    with t.client() as client:
        r = client.post(t.path, json=t.body)
    if r.status_code != 200:
        raise BenchError(f"{t.name}: HTTP {r.status_code}: {r.text[:200]}")
    got = {k: r.headers.get(f"x-ratelimit-limit-{k}") for k in ("requests", "tokens")}
    want = {k: str(BIG) if limited else None for k in got}
    if got != want:
        raise BenchError(f"{t.name}: x-ratelimit-limit headers {got}, expected {want}")


async def _in_process_checks(n: int, tmp: Path, redis_url: str | None) -> dict[str, Any]:
    """scripts/bench_state.py's bench_limit_check on a scratch SQLite file and (when given) Redis."""
    from modelmux.state.sqlite import SQLiteStore

    out: dict[str, Any] = {}
    sqlite = SQLiteStore(tmp / "limit-checks.sqlite3", StoreSettings(timeout=5, connect_timeout=5))
    try:
        out["sqlite"] = await bench_limit_check(sqlite, n)
    finally:
        await sqlite.close()
    if redis_url is None:
        out["redis"] = "skipped: redis-server is not installed"
        return out
    from modelmux.state.redis_store import RedisStore

    redis = RedisStore(redis_url, StoreSettings(timeout=5, connect_timeout=5))
    try:
        out["redis"] = await bench_limit_check(redis, n)
    finally:
        await redis.close()
    return out


LIMIT_ROWS = (("embedded SQLite (state.url unset)", "sqlite"), ("Redis", "redis"))


def measure_limits(start_reverse: Callable[[str, str], tuple[Proc, int]], base_target: Target, tmp: Path, cfg: dict,
                   results: dict) -> None:
    """start_reverse(name, extra config) → a modelmux reverse process started with those config lines, and its
    port. Two such processes (SQLite, Redis), each measured with the open and the limited key in rounds."""
    out: dict[str, dict] = {}
    section = results["limits"] = {"paths": out, "requests": cfg["limit_requests"], "big": BIG}
    with contextlib.ExitStack() as stack:
        urls: dict[str, str | None] = {"sqlite": None}
        scratch_redis = None  # another database of the same server, for the in-process checks
        if shutil.which("redis-server") is None:
            results["notes"].append("rate limits: redis-server is not installed (apt-get install redis-server): "
                                    "the Redis rows are skipped")
        else:
            redis, redis_port = start_redis(tmp)
            stack.callback(redis.stop)
            urls["redis"] = f"redis://127.0.0.1:{redis_port}/0"
            scratch_redis = f"redis://127.0.0.1:{redis_port}/1"
            section["redis_version"] = redis_version()
        paths: dict[str, Target] = {}
        for label, backend in LIMIT_ROWS:
            if backend not in urls:
                continue
            proc, port = start_reverse(f"limits-{backend}", limits_config(urls[backend]))
            stack.callback(proc.stop)
            for key, limited in ((OPEN_KEY, False), (LIMITED_KEY, True)):
                kind = "key with requests_per_minute + tokens_per_minute" if limited else "key without limits"
                name = f"{label}, {kind}"
                paths[name] = replace(base_target, name=name, base=f"http://127.0.0.1:{port}",
                                      headers={"authorization": f"Bearer {key}"}, pid=proc.popen.pid)
                out[name] = {"backend": backend, "limited": limited}
        checks: dict[str, Any] = {}
        if attempt(results, checks, "headers", "rate limits: headers",
                   lambda: [check_limit_headers(t, out[n]["limited"]) for n, t in paths.items()]):
            latencies_in_rounds(paths, cfg["limit_requests"], results, out)
        attempt(results, section, "in_process", "rate limits: in-process check",
                lambda: asyncio.run(_in_process_checks(cfg["limit_checks"], tmp, scratch_redis)))
        section["in_process_calls"] = cfg["limit_checks"]


def limits_report(results: dict) -> list[str]:
    section = results.get("limits")
    if not section:
        return []
    paths = section["paths"]
    out = ["", f"Rate-limit check on the request path: modelmux reverse, non-streamed chat, {section['requests']} "
           "sequential requests per path in rounds; one process per state backend, each with two client keys — "
           f"one with requests_per_minute and tokens_per_minute of {section['big']:,} (checked before the upstream "
           "call and charged when the answer ends; never refusing: checked by the x-ratelimit-* headers on its "
           "answers), one without limits (checked: no such headers). Each answer's spend is recorded on the "
           "process's store for both keys, after the answer; \"added\": the limited key against the open key of "
           "the same process."
           + (f" Redis: redis-server {section['redis_version']} on loopback." if "redis_version" in section else ""),
           "",
           "| state | key | latency p50 | p99 | added (p50) | CPU per request | added CPU |", "|---" * 7 + "|"]
    for label, backend in LIMIT_ROWS:
        rows = {info["limited"]: name for name, info in paths.items() if info.get("backend") == backend}
        for limited in (False, True):
            name = rows.get(limited)
            if name is None:
                continue
            lat = _fig(results, "limits", name, "latency", "ms_p50")
            cpu = _fig(results, "limits", name, "latency", "cpu_ms_per_request")
            base_lat = _fig(results, "limits", rows.get(False, ""), "latency", "ms_p50")
            base_cpu = _fig(results, "limits", rows.get(False, ""), "latency", "cpu_ms_per_request")
            diff = limited and lat is not None and base_lat is not None
            diff_cpu = limited and cpu is not None and base_cpu is not None
            out.append(f"| {label} | {'requests_per_minute + tokens_per_minute' if limited else 'no limits'} | "
                       + " | ".join([_ms(lat), _ms(_fig(results, "limits", name, "latency", "ms_p99")),
                                     f"{round(lat - base_lat, 2) + 0.0:+.2f} ms" if diff else "–", _ms(cpu, ".2f"),
                                     f"{round(cpu - base_cpu, 2) + 0.0:+.2f} ms" if diff_cpu else "–"]) + " |")
    out.append(cpu_resolution(section["requests"]))
    checks = section.get("in_process")
    if isinstance(checks, dict) and "error" not in checks:
        out += ["", f"In-process, one event loop, {section['in_process_calls']} calls each after 200 warm-up calls "
                "(scripts/bench_state.py's bench_limit_check; \"floor\": one bare round trip to the store):", "",
                limit_check_table(checks)]
    return out
