"""How scripts/bench.py runs a figure over several paths: in rounds, the paths in turn within each round, so that
load from elsewhere on the machine lands on every path alike; a path that fails is noted and drops out, the others
go on.

`results` is the bench's result dict: failures are appended to results["errors"] (which fails the run) and noted
where the figure would have gone.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from bench_measure import Target, latencies, pct, stream_starts

ROUNDS = 3


def ceil_div(n: int, d: int) -> int:
    return -(-n // d)


def attempt(results: dict, where: dict, key: str, what: str, fn: Callable[[], Any]) -> bool:
    """where[key] = fn(); a failure is noted there (and fails the run) instead of ending it."""
    try:
        where[key] = fn()
        return True
    except Exception as err:  # noqa: BLE001 - one failed figure must not lose the others
        where[key] = {"error": f"{type(err).__name__}: {err}"[:300]}
        results["errors"].append(f"{what}: {where[key]['error']}")
        print(f"  ! {what}: {where[key]['error']}", file=sys.stderr)
        return False


def in_rounds(targets: dict[str, Target], results: dict, what: str, fn: Callable[[Target], Any],
              into: dict[str, dict] | None = None) -> dict[str, list]:
    """fn(target) ROUNDS times for each path, the paths in turn within a round, so that load from elsewhere
    on the machine spreads over all paths alike. Path → its rounds' results; a path that fails drops out, its
    error noted in into[path][what] (into: results["paths"] unless given)."""
    into = results["paths"] if into is None else into
    out: dict[str, list] = {name: [] for name in targets}
    for _ in range(ROUNDS):
        for name, t in targets.items():
            if name not in out:
                continue
            got: dict[str, Any] = {}
            if attempt(results, got, "round", f"{what}, {name}", lambda t=t: fn(t)):
                out[name].append(got["round"])
            else:
                into.setdefault(name, {})[what] = got["round"]
                del out[name]
    return out


def latency_round(t: Target, n: int) -> tuple[list[float], float]:
    """n sequential non-streamed requests: their latencies (ms) and the CPU seconds of the process in between."""
    return latencies(t, n, seconds=30)


def latency_summary(rounds: list[tuple[list[float], float]]) -> dict[str, float]:
    lat = [ms for r in rounds for ms in r[0]]
    return {"n": len(lat), "ms_p50": pct(lat, 50), "ms_p99": pct(lat, 99),
            "cpu_ms_per_request": sum(r[1] for r in rounds) * 1000 / len(lat)}


def latencies_in_rounds(targets: dict[str, Target], n: int, results: dict, into: dict[str, dict]) -> None:
    """into[path]["latency"]: n sequential non-streamed requests per path over the rounds: p50, p99 and the CPU
    of the process in between per request."""
    for name, rounds in in_rounds(targets, results, "latency", lambda t: latency_round(t, ceil_div(n, ROUNDS)),
                                  into).items():
        into.setdefault(name, {})["latency"] = latency_summary(rounds)


def starts_round(t: Target, n: int) -> tuple[list[tuple[float, float]], float]:
    """n sequential unpaced streams: (first event, first content event) ms of each, and the CPU seconds of the
    process in between."""
    return stream_starts(t, n, seconds=30)


def starts_in_rounds(targets: dict[str, Target], n: int, results: dict, into: dict[str, dict]) -> None:
    """into[path]["stream_start"]: n sequential unpaced streams per path over the rounds: p50/p99 of the first
    event of any kind and of the first content event, and the CPU of the process in between per stream."""
    for name, rounds in in_rounds(targets, results, "stream_start", lambda t: starts_round(t, ceil_div(n, ROUNDS)),
                                  into).items():
        firsts = [s for r in rounds for s in r[0]]
        any_event, content = [s[0] for s in firsts], [s[1] for s in firsts]
        into.setdefault(name, {})["stream_start"] = {
            "n": len(firsts), "first_event_ms_p50": pct(any_event, 50), "first_event_ms_p99": pct(any_event, 99),
            "first_content_ms_p50": pct(content, 50), "first_content_ms_p99": pct(content, 99),
            "cpu_ms_per_stream": sum(r[1] for r in rounds) * 1000 / len(firsts)}
