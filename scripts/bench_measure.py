"""Measurement primitives for scripts/bench.py: what a client sees (latency, event arrival times, throughput)
and what the process in between spends (CPU time, resident memory, read from /proc).

Nothing here knows modelmux: a `Target` is a URL, a body, headers and optionally a proxy and the PID of the
process in between. Every loop is bounded by a count and by a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from modelmux.translate.sse import EventSplitter

# per stream dialect: (one content event, the stream's last event). A content event is a Vertex text delta, an
# OpenAI chat chunk whose delta has non-empty content (not the role chunk), or a Responses output_text delta.
DIALECTS = {
    "vertex": (re.compile(rb'"type":\s*"text_delta"'), b'"type":"message_stop"'),
    "chat": (re.compile(rb'"content":\s*"[^"]'), b"data: [DONE]"),
    "responses": (re.compile(rb'"type":\s*"response\.output_text\.delta"'), b'"type":"response.completed"'),
}
TICKS = os.sysconf("SC_CLK_TCK")
POOL = 16  # connections per httpx client in the load generator


@dataclass
class Target:
    """One way for a client to reach the model: straight, or through a proxy."""
    name: str
    base: str  # scheme://host[:port] the client addresses
    path: str
    stream_path: str
    body: dict[str, Any]
    headers: dict[str, str]
    dialect: str  # of the request and its SSE (DIALECTS): "vertex" (floor, passthrough), "chat" or "responses"
    proxy: str | None = None  # HTTPS_PROXY-style, for regular mode
    verify: str | bool = True
    pid: int | None = None  # the process in between (CPU, memory); for the floor: the emulator

    @property
    def stream_body(self) -> dict[str, Any]:
        return {**self.body, "stream": True}

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(proxy=self.proxy, verify=self.verify, trust_env=False, timeout=timeout,
                            headers=self.headers, base_url=self.base)

    def async_client(self, connections: int, timeout: float = 60) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncClient(proxy=self.proxy, verify=self.verify, trust_env=False, timeout=timeout,
                                 headers=self.headers, base_url=self.base, limits=limits)


class BenchError(Exception):
    pass


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# --- what the client sees -----------------------------------------------------------------------------------

class SSEReader:
    """Splits a response body into SSE frames as it arrives; counts content events and, when asked, notes
    when each one arrived (and when the first frame of any kind did)."""

    def __init__(self, dialect: str, t0: float | None = None):
        self._content, self._end = DIALECTS[dialect]
        self._events = EventSplitter()
        self._t0 = t0
        self.content = 0
        self.arrivals: list[float] = []  # ms after t0, one per content event
        self.first_frame_ms: float | None = None  # ms after t0 to the first whole event, whatever its type
        self.ended = False

    def feed(self, chunk: bytes) -> None:
        for frame in self._events.feed(chunk):  # an incomplete frame waits for the next read
            if self._t0 is not None and self.first_frame_ms is None:
                self.first_frame_ms = (time.perf_counter() - self._t0) * 1000
            if self._content.search(frame):
                self.content += 1
                if self._t0 is not None:
                    self.arrivals.append((time.perf_counter() - self._t0) * 1000)
            elif self._end in frame:
                self.ended = True


def latencies(target: Target, n: int, seconds: float) -> tuple[list[float], float]:
    """ms per non-streamed request, n sequential (after one warm-up: connections, token), until the deadline;
    and the CPU seconds the target's process spent on them (the warm-up's not counted; 0 without a pid)."""
    out: list[float] = []
    with target.client() as client:
        def send() -> None:
            r = client.post(target.path, json=target.body)
            if r.status_code != 200:
                raise BenchError(f"HTTP {r.status_code}: {r.text[:200]}")
        send()
        cpu0 = cpu_seconds(target.pid) if target.pid else 0.0
        deadline = time.monotonic() + seconds
        while len(out) < n and time.monotonic() < deadline:
            t0 = time.perf_counter()
            send()
            out.append((time.perf_counter() - t0) * 1000)
        cpu = cpu_seconds(target.pid) - cpu0 if target.pid else 0.0
    return out, cpu


async def stream_once(client: httpx.AsyncClient, target: Target, body: dict[str, Any] | None = None,
                      t0: float | None = None) -> SSEReader:
    """One stream read to its end; with t0, the arrival of each content event is noted."""
    reader = SSEReader(target.dialect, t0)
    async with client.stream("POST", target.stream_path, json=body or target.stream_body) as r:
        if r.status_code != 200:
            raise BenchError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
        async for chunk in r.aiter_raw():
            reader.feed(chunk)
    if not reader.ended:
        raise BenchError("stream ended before its last event")
    return reader


async def _readers(target: Target, n: int, concurrency: int, seconds: float,
                   body_for: Callable[[int], dict[str, Any]] | None,
                   cpu: list[float] | None = None) -> dict[int, SSEReader]:
    """Stream number i → its reader; with `cpu`, the CPU seconds of the target's process over the streams (the
    warm-up's not counted) are appended to it."""
    out: dict[int, SSEReader] = {}
    async with target.async_client(concurrency) as client:
        # warm-up (connection, TLS, token): non-streamed, which the emulator never paces
        (await client.post(target.path, json=target.body)).raise_for_status()
        cpu0 = cpu_seconds(target.pid) if cpu is not None and target.pid else 0.0
        deadline = time.monotonic() + seconds
        started = 0

        async def worker() -> None:
            nonlocal started
            while started < n and time.monotonic() < deadline:
                i, started = started, started + 1
                body = body_for(i) if body_for else None
                out[i] = await stream_once(client, target, body, time.perf_counter())
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if cpu is not None:
            cpu.append(cpu_seconds(target.pid) - cpu0 if target.pid else 0.0)
    return out


def arrivals(target: Target, n: int, concurrency: int, seconds: float,
             body_for: Callable[[int], dict[str, Any]] | None = None) -> dict[int, list[float]]:
    """Stream number i → ms from sending its request to each content event's arrival; n streams (the body of
    number i from `body_for`), `concurrency` at a time (1: sequential), until the deadline."""
    readers = asyncio.run(_readers(target, n, concurrency, seconds, body_for))
    return {i: r.arrivals for i, r in readers.items()}


def stream_starts(target: Target, n: int, seconds: float) -> tuple[list[tuple[float, float]], float]:
    """n sequential unpaced streams (until the deadline): for each, ms from sending its request to its first
    event of any kind and to its first content event; and the CPU seconds the target's process spent on them."""
    cpu: list[float] = []
    readers = asyncio.run(_readers(target, n, 1, seconds, None, cpu))
    if any(not r.arrivals for r in readers.values()):
        raise BenchError("a stream ended without a content event")
    return [(r.first_frame_ms, r.arrivals[0]) for r in readers.values()], cpu[0]


@dataclass
class StreamRun:
    ok: int = 0
    content_events: int = 0
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    cpu_seconds: float | None = None  # of the watched process, during the measured streams only

    def as_json(self) -> dict[str, Any]:
        return {"streams_ok": self.ok, "errors": sum(self.errors.values()), "error_kinds": dict(self.errors),
                "seconds": self.seconds, "requests_per_s": self.ok / self.seconds if self.seconds else 0.0,
                "chunks_per_s": self.content_events / self.seconds if self.seconds else 0.0,
                "cpu_seconds": self.cpu_seconds,
                "cpu_ms_per_stream": (self.cpu_seconds * 1000 / self.ok
                                      if self.cpu_seconds is not None and self.ok else None)}


async def _pools(stack: contextlib.AsyncExitStack, target: Target, concurrency: int) -> list[httpx.AsyncClient]:
    """Clients for `concurrency` streams, warmed up: one stream per connection, so that the measured part opens
    none (and the proxy has its token). Small pools: httpx's cost per request grows with its pool's size, and
    one pool of 256 made the client, not the path measured, the bottleneck."""
    clients = [await stack.enter_async_context(target.async_client(POOL)) for _ in range(-(-concurrency // POOL))]
    await asyncio.gather(*(stream_once(clients[w % len(clients)], target) for w in range(concurrency)),
                         return_exceptions=True)
    return clients


async def _measure_streams(target: Target, clients: list[httpx.AsyncClient], concurrency: int, total: int,
                           seconds: float, run: StreamRun, watch: int | None) -> None:
    """Adds to `run`: up to `total` streams, `concurrency` at a time, none started after `seconds`."""
    left = total
    deadline = time.monotonic() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal left
        while left > 0 and time.monotonic() < deadline:
            left -= 1
            try:
                reader = await stream_once(client, target)
            except (httpx.HTTPError, BenchError) as err:
                run.errors[type(err).__name__ if isinstance(err, httpx.HTTPError) else str(err)[:60]] += 1
                continue
            run.ok += 1
            run.content_events += reader.content

    cpu0 = cpu_seconds(watch) if watch else 0.0
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(clients[w % len(clients)]) for w in range(concurrency)))
    run.seconds += time.perf_counter() - t0
    if watch:
        run.cpu_seconds = (run.cpu_seconds or 0.0) + cpu_seconds(watch) - cpu0


async def _run_streams(target: Target, concurrency: int, total: int, seconds: float,
                       watch: int | None) -> StreamRun:
    run = StreamRun()
    async with contextlib.AsyncExitStack() as stack:
        clients = await _pools(stack, target, concurrency)
        await _measure_streams(target, clients, concurrency, total, seconds, run, watch)
    return run


def run_streams(target: Target, concurrency: int, total: int, seconds: float, watch: int | None = None) -> StreamRun:
    """Unpaced streams, `concurrency` at a time, until `total` are done or no new one may start after
    `seconds`; counts completions, content events and errors, and the watched process's CPU time."""
    return asyncio.run(_run_streams(target, concurrency, total, seconds, watch))


async def _throughput(targets: list[Target], concurrency: int, total: int, seconds: float,
                      rounds: int) -> dict[str, StreamRun]:
    runs = {t.name: StreamRun() for t in targets}
    async with contextlib.AsyncExitStack() as stack:
        pools = {t.name: await _pools(stack, t, concurrency) for t in targets}
        for _ in range(rounds):
            for t in targets:
                await _measure_streams(t, pools[t.name], concurrency, total // rounds, seconds / rounds,
                                       runs[t.name], None)
    return runs


def throughput(targets: list[Target], concurrency: int, total: int, seconds: float,
               rounds: int = 3) -> dict[str, StreamRun]:
    """run_streams for every target, interleaved in `rounds` rounds over warm connections kept open throughout:
    a burst of load from elsewhere on the machine then lands on every path alike, not on one."""
    return asyncio.run(_throughput(targets, concurrency, total, seconds, rounds))


# --- what the process in between spends ---------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()  # after the command name, which may hold spaces


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (LiteLLM may run workers; mitmdump and modelmux are one process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat_fields(int(entry))[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_seconds_of(pid: int) -> float:
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime: fields 14 and 15 of proc(5)


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process tree, seconds."""
    return sum(cpu_seconds_of(p) for p in process_tree(pid))


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores; steal counts: it was not ours either)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / TICKS


def own_cpu_seconds() -> float:
    """This process, its reaped children and its live descendants (emulator, proxies)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + sum(
        cpu_seconds_of(p) for p in process_tree(os.getpid())[1:])


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of the process tree, kB."""
    rss = hwm = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            continue
    return rss, hwm


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (proc(5) clear_refs "5"), so the next peak is the soak's own."""
    try:
        for p in process_tree(pid):
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
        return True
    except OSError:
        return False


async def _soak(targets: list[Target], pid: int, n: int, seconds: float, concurrency: int) -> dict[str, Any]:
    clients = [t.async_client(concurrency) for t in targets]
    samples: list[tuple[int, int]] = []  # (requests done, RSS kB)
    done, errors, left = 0, 0, n
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done, errors, left
        while left > 0 and time.monotonic() < deadline:
            i = n - left
            left -= 1
            # alternate the targets (e.g. the two modes of one process), and streamed / non-streamed
            target, client = targets[i % len(targets)], clients[i % len(clients)]
            try:
                if (i // len(targets)) % 2:
                    r = await client.post(target.path, json=target.body)
                    if r.status_code != 200:
                        raise BenchError(f"HTTP {r.status_code}")
                else:
                    await stream_once(client, target)
                done += 1
            except (httpx.HTTPError, BenchError):
                errors += 1

    async def sampler() -> None:
        while True:
            samples.append((done, memory_kb(pid)[0]))
            await asyncio.sleep(0.25)

    reset = reset_peak(pid)
    watcher = asyncio.create_task(sampler())
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        watcher.cancel()
        for c in clients:
            await c.aclose()
    elapsed = time.perf_counter() - t0
    rss_end, hwm = memory_kb(pid)
    samples.append((done, rss_end))
    return _soak_summary(samples, done, errors, elapsed, hwm if reset else max(s[1] for s in samples), n)


def _soak_summary(samples: list[tuple[int, int]], done: int, errors: int, elapsed: float, peak_kb: int,
                  n: int) -> dict[str, Any]:
    warm = max(100, n // 10)  # the first tenth fills caches, pools and the allocator's arenas
    after = [s for s in samples if s[0] >= warm] or samples[-1:]
    return {"requests": done, "errors": errors, "seconds": elapsed, "warmup_requests": warm,
            "rss_mb_after_warmup": after[0][1] / 1024, "rss_mb_end": samples[-1][1] / 1024,
            "peak_rss_mb": peak_kb / 1024, "growth_mb_per_1000": _slope(after) * 1000 / 1024,
            "samples": samples}


def _slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of RSS over requests done: growth that survives the sampling noise."""
    if len(points) < 2 or points[-1][0] == points[0][0]:
        return 0.0
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    var = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var if var else 0.0


def soak(targets: list[Target], pid: int, n: int, seconds: float, concurrency: int) -> dict[str, Any]:
    """n requests (half streamed) over the targets, `concurrency` at a time, at most `seconds`; samples the
    process's RSS as it goes: after warm-up, at the end, its peak and its growth per 1000 requests."""
    return asyncio.run(_soak(targets, pid, n, seconds, concurrency))
