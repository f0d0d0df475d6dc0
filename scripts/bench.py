#!/usr/bin/env python3
"""modelmux benchmark: what the proxy adds, measured against the floor (straight to the emulator).

    .venv/bin/python scripts/bench.py [--requests 300] [--streams 100] [--json out.json]

Runs, on this machine, in one go:
- proxy start-up time (`modelmux run` until it listens), median of 5 starts;
- non-streamed latency p50/p99: straight to the emulator (the floor), through modelmux in regular
  (HTTPS_PROXY) mode and in reverse mode;
- time to first content chunk p50/p99 for streamed requests, same three paths;
- the pure stream translator alone: upstream events per second on one core.
Prints a Markdown table (README's Performance section is a copy of it) and, with --json, the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "addon"))

import httpx  # noqa: E402

from modelmux.procs import EMULATOR_READY, PROXY_READY, Proc, free_port, wait_port  # noqa: E402
from modelmux.translate.response import AnswerShape  # noqa: E402
from modelmux.translate.stream import StreamTranslator  # noqa: E402

MODEL = "claude-sonnet-4-5@20250929"
WORDS = " ".join(f"word{i}" for i in range(30))  # a 32-event answer
OPENAI_BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": WORDS}], "max_tokens": 256}
VERTEX_BODY = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 256,
               "messages": [{"role": "user", "content": [{"type": "text", "text": WORDS}]}]}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def timed_requests(send, n: int) -> list[float]:
    send()  # warm-up: connections, token
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        send()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def first_chunk_times(open_stream, n: int, marker: bytes) -> list[float]:
    """ms from sending until the first content chunk (a read containing `marker`); reads the rest to the end."""
    out = []
    for i in range(n + 1):
        t0 = time.perf_counter()
        first = None
        with open_stream() as resp:
            for data in resp.iter_bytes():
                if first is None and marker in data:
                    first = (time.perf_counter() - t0) * 1000
        if i:  # the first one is a warm-up
            out.append(first)
    return out


def retried_stream_cost(emu_url: str, reverse: int, n: int) -> dict[str, float]:
    """Time to first chunk of a stream whose first attempt gets a 429 (failover to the fallback region),
    against the same stream without the fault."""
    admin = httpx.Client(base_url=emu_url, trust_env=False, timeout=10)
    client = httpx.Client(trust_env=False, timeout=30, headers={"authorization": "Bearer sk-bench"})
    url = f"http://127.0.0.1:{reverse}/v1/chat/completions"
    body = {**OPENAI_BODY, "stream": True}
    out = {}
    for name, fault in (("clean", False), ("one 429, failover", True)):
        times = []
        for _ in range(n):
            if fault:
                admin.post("/_emulator/faults", json={"rules": [{"match": {"location": "us-east5"},
                                                                 "action": "status", "status": 429, "count": 1}]})
            times += first_chunk_times(lambda: client.stream("POST", url, json=body), 1, b'"content": "w')
        out[name] = pct(times, 50)
    admin.delete("/_emulator/faults")
    return out


def translator_events_per_second(seconds: float = 2.0) -> float:
    events = [b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_vrtx_1","usage":'
              b'{"input_tokens":10,"output_tokens":1}}}\n\n']
    delta = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hello "}}\n\n'
    events += [delta] * 998
    events.append(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        t = StreamTranslator(AnswerShape(model="gpt-4o", created=0, include_usage=True, fallback_id="x"))
        for e in events:  # one event per socket read: the worst case for per-call overhead
            t.feed(e)
        count += len(events)
    return count / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300, help="sequential non-streamed requests per path")
    ap.add_argument("--streams", type=int, default=100, help="sequential streamed requests per path")
    ap.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = ap.parse_args()

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="modelmux-bench-") as tmp_name:
        tmp = Path(tmp_name)
        key = tmp / "sa.json"
        emu = Proc([sys.executable, "-m", "modelmux.emulator", "--port", "0", "--service-account-out", str(key),
                    "--accept-token", "bench-floor-token"], EMULATOR_READY)
        procs: list[Proc] = []
        try:
            emu_url = emu.match.group(1)
            config = tmp / "c.yaml"
            config.write_text(f"vertex: {{project: bench, region: us-east5, base_url: '{emu_url}', "
                              f"fallback_regions: [global]}}\n"
                              f"auth: {{credentials_file: '{key}'}}\nmodels: {{map: {{gpt-4o: {MODEL}}}}}\n")
            starts = []
            for _ in range(5):
                p = Proc([sys.executable, "-m", "modelmux.cli", "run", "--config", str(config), "--listen-port", "0",
                          "--confdir", str(tmp / "conf")], PROXY_READY)
                starts.append(p.ready_after * 1000)
                p.stop()
            regular, reverse = free_port(), free_port()
            proxy = Proc([sys.executable, "-m", "modelmux.cli", "run", "--config", str(config), "--confdir",
                          str(tmp / "conf"), "--mode", f"regular@{regular}",
                          "--mode", f"reverse:https://api.openai.com@{reverse}"], PROXY_READY)
            procs.append(proxy)
            wait_port(regular)
            wait_port(reverse)
            ca = str(tmp / "conf" / "mitmproxy-ca-cert.pem")

            vertex_url = f"{emu_url}/v1/projects/bench/locations/us-east5/publishers/anthropic/models/{MODEL}"
            clients = {
                "direct to emulator (floor)": (
                    httpx.Client(trust_env=False, timeout=30, headers={"authorization": "Bearer bench-floor-token"}),
                    f"{vertex_url}:rawPredict", VERTEX_BODY, f"{vertex_url}:streamRawPredict",
                    {**VERTEX_BODY, "stream": True}, b"content_block_delta"),
                "modelmux regular (HTTPS_PROXY)": (
                    httpx.Client(proxy=f"http://127.0.0.1:{regular}", verify=ca, trust_env=False, timeout=30,
                                 headers={"authorization": "Bearer sk-bench"}),
                    "https://api.openai.com/v1/chat/completions", OPENAI_BODY,
                    "https://api.openai.com/v1/chat/completions", {**OPENAI_BODY, "stream": True}, b'"content": "w'),
                "modelmux reverse (base URL)": (
                    httpx.Client(trust_env=False, timeout=30, headers={"authorization": "Bearer sk-bench"}),
                    f"http://127.0.0.1:{reverse}/v1/chat/completions", OPENAI_BODY,
                    f"http://127.0.0.1:{reverse}/v1/chat/completions", {**OPENAI_BODY, "stream": True},
                    b'"content": "w'),
            }
            for name, (client, url, body, surl, sbody, marker) in clients.items():
                with client:
                    def send():
                        r = client.post(url, json=body)
                        r.raise_for_status()
                    lat = timed_requests(send, args.requests)
                    ttfc = first_chunk_times(lambda: client.stream("POST", surl, json=sbody), args.streams, marker)
                results[name] = {"latency_ms_p50": pct(lat, 50), "latency_ms_p99": pct(lat, 99),
                                 "ttfc_ms_p50": pct(ttfc, 50), "ttfc_ms_p99": pct(ttfc, 99)}
            results["startup"] = {"ms_median": statistics.median(starts), "ms_all": starts}
            results["retried stream"] = retried_stream_cost(emu_url, reverse, min(args.streams, 50))
        finally:
            for p in procs:
                p.stop()
            emu.stop()
    results["translator"] = {"events_per_second": translator_events_per_second()}
    results["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": __import__("os").cpu_count()}

    floor = results["direct to emulator (floor)"]
    print(f"\nmachine: {results['machine']['platform']}, {results['machine']['cpus']} cores, "
          f"Python {results['machine']['python']}")
    print(f"proxy start-up (modelmux run until listening): {results['startup']['ms_median']:.0f} ms median of 5\n")
    print("| path | latency p50 | latency p99 | first chunk p50 | first chunk p99 |")
    print("|---|---|---|---|---|")
    for name in ("direct to emulator (floor)", "modelmux regular (HTTPS_PROXY)", "modelmux reverse (base URL)"):
        r = results[name]
        extra = "" if r is floor else (f" (+{r['latency_ms_p50'] - floor['latency_ms_p50']:.1f})")
        extra_t = "" if r is floor else (f" (+{r['ttfc_ms_p50'] - floor['ttfc_ms_p50']:.1f})")
        print(f"| {name} | {r['latency_ms_p50']:.1f} ms{extra} | {r['latency_ms_p99']:.1f} ms | "
              f"{r['ttfc_ms_p50']:.1f} ms{extra_t} | {r['ttfc_ms_p99']:.1f} ms |")
    r = results["retried stream"]
    print(f"\nfirst chunk of a stream whose first attempt gets a 429: {r['one 429, failover']:.1f} ms p50 "
          f"(clean: {r['clean']:.1f} ms): the failover costs one round trip")
    print(f"\nstream translator alone: {results['translator']['events_per_second']:,.0f} upstream events/s on one core")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
