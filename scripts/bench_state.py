#!/usr/bin/env python3
"""What a rate-limit check costs on the request path, on each state backend.

    .venv/bin/python scripts/bench_state.py [--n 3000] [--json out.json]

For the embedded SQLite store (a file in a temporary directory) and for Redis (a redis-server started on a free
loopback port, when the Debian package is installed; else that column is skipped with a note), one event loop in
this process awaits, one after another:
- "take + headers": `store.take` on a requests-per-minute bucket and the three `x-ratelimit-*-requests` headers
  built from it — the least a limited request pays;
- "check, RPM + TPM + budget": `Limiter.check` for a key with all three limits (a month's spend read, a token
  bucket checked, a request bucket taken, six headers);
- "settle": `Limiter.settle` after an answer (the token bucket charged, the spend counters incremented);
- "floor": one bare round trip of the same kind (`SELECT 1` on SQLite's worker thread; a redis-py PING), to tell
  what the machine charges for any call from what modelmux adds.
Each is timed call by call with perf_counter_ns over `--n` calls after 200 warm-up calls: p50, p99, mean in
microseconds, and this process' CPU time per call (all its threads: SQLite's worker included; not redis-server's),
which a busy machine's scheduling does not inflate the way it inflates wall time. Capacities are large enough that nothing is refused. `bench_limit_check` is the piece
scripts/bench.py can call. Everything started is stopped; every loop is bounded by `--n`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "addon"))

from modelmux.limits import ClientLimits, Limiter, _bucket_headers  # noqa: E402
from modelmux.procs import free_port, wait_port  # noqa: E402
from modelmux.state import StoreSettings, TokenCounts  # noqa: E402
from modelmux.state.base import Store  # noqa: E402

WARMUP = 200


def _stats(samples_ns: list[int], cpu_ns: int) -> dict[str, float]:
    us = sorted(s / 1000 for s in samples_ns)
    return {"p50_us": round(statistics.median(us), 1), "p99_us": round(us[int(len(us) * 0.99) - 1], 1),
            "mean_us": round(statistics.fmean(us), 1), "cpu_us": round(cpu_ns / len(us) / 1000, 1), "n": len(us)}


async def _timed(n: int, call: Any) -> dict[str, float]:
    for _ in range(WARMUP):
        await call()
    samples = []
    cpu0 = time.process_time_ns()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await call()
        samples.append(time.perf_counter_ns() - t0)
    return _stats(samples, time.process_time_ns() - cpu0)


async def bench_limit_check(store: Store, n: int) -> dict[str, dict[str, float]]:
    """The three figures above for one store (its buckets and counters are left behind: use a scratch store)."""
    big = 10 ** 12

    async def take_and_headers() -> None:
        bucket = await store.take("rpm:bench", big, big / 60, 1)
        _bucket_headers("requests", big, bucket)

    limiter = Limiter(store)
    client = ClientLimits("bench", requests_per_minute=big, tokens_per_minute=big, monthly_usd=1e12,
                          spend_key="bench")

    async def check() -> None:
        decision = await limiter.check(client)
        assert decision.allowed and not decision.degraded

    async def settle() -> None:
        await limiter.settle(client, "claude-sonnet-4-5@20250929", TokenCounts(1000, 200, 0, 3000))

    return {"floor": await _timed(n, store._ping),
            "take + headers": await _timed(n, take_and_headers),
            "check, RPM + TPM + budget": await _timed(n, check),
            "settle": await _timed(n, settle)}


def _start_redis(tmp: Path) -> tuple[subprocess.Popen, int] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 10)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return proc, port


async def _run(n: int, tmp: Path) -> dict[str, Any]:
    from modelmux.state.sqlite import SQLiteStore

    results: dict[str, Any] = {}
    sqlite = SQLiteStore(tmp / "bench.sqlite3", StoreSettings(timeout=5, connect_timeout=5))
    try:
        results["sqlite"] = await bench_limit_check(sqlite, n)
    finally:
        await sqlite.close()
    started = _start_redis(tmp)
    if started is None:
        results["redis"] = "skipped: redis-server is not installed"
        return results
    proc, port = started
    try:
        from modelmux.state.redis_store import RedisStore

        redis = RedisStore(f"redis://127.0.0.1:{port}/0", StoreSettings(timeout=5, connect_timeout=5))
        try:
            results["redis"] = await bench_limit_check(redis, n)
        finally:
            await redis.close()
    finally:
        proc.terminate()
        proc.wait(10)
    return results


def report(results: dict[str, Any]) -> str:
    lines = ["| backend | operation | p50 | p99 | mean | CPU per call |", "|---|---|---|---|---|---|"]
    for backend, figures in results.items():
        if isinstance(figures, str):
            lines.append(f"| {backend} | {figures} | | | | |")
            continue
        for what, s in figures.items():
            lines.append(f"| {backend} | {what} | {s['p50_us']:.0f} µs | {s['p99_us']:.0f} µs | {s['mean_us']:.0f} µs "
                         f"| {s['cpu_us']:.0f} µs |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="timed calls per figure (default 3000)")
    parser.add_argument("--json", help="write the raw figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelmux-bench-state-") as tmp:
        results = asyncio.run(_run(max(100, args.n), Path(tmp)))
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
