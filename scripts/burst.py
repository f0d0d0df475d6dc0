#!/usr/bin/env python3
"""modelmux under a burst and under abuse: what a client sees and what the proxy holds (docs/security.md).

    .venv/bin/python scripts/burst.py [--streams 1000] [--path reverse|regular] [--only streams,slowloris,...]
                                      [--json out.json]

Starts the emulator (the local Vertex AI) and a real `modelmux run` (regular + reverse listeners, on 127.0.0.1,
default limits unless a scenario says otherwise), then runs each scenario in turn and reports, per scenario,
what the clients got and the proxy's peak RSS (VmHWM, reset before each scenario):
- streams: N concurrent streams (default 1000) started at once, each on its own new connection, through the
  reverse listener (base URL; --path regular: HTTPS_PROXY, CONNECT + TLS with the CA): completed, connection
  resets, connections closed without an answer, mitmproxy HTML pages, other errors, time;
- slowloris: 1000 connections that send half a request head and stop, with
  `timeouts.client_header_seconds: 2` — how many the proxy closed within the limit plus 3 s, and whether a
  normal request is answered meanwhile;
- bodies: five 50 MB request bodies with content-length and five chunked, at once: all must be 413s;
- bomb: a second `modelmux run` whose Vertex is a local server answering every call with a gzip bomb (1 GiB of
  zeros in 1 MB): five calls at once must be OpenAI-shaped 502s;
- fdlimit: a third `modelmux run` under RLIMIT_NOFILE 1024 (prlimit), 1500 connections opened and held:
  the log lines about "Too many open files" and about refused connections, and whether a request is answered.
Every loop is bounded in count and time; every process started is stopped; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "addon"))
sys.path.insert(0, str(ROOT / "scripts"))

import httpx  # noqa: E402
from bench_measure import memory_kb, reset_peak  # noqa: E402

from modelmux.procs import EMULATOR_READY, PROXY_READY, Proc, free_port, wait_port  # noqa: E402

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "say something short"}], "max_tokens": 64}
SCENARIOS = ("streams", "slowloris", "bodies", "bomb", "fdlimit")
RSS_BUDGET_MB = 600


def start_emulator(tmp: Path) -> tuple[Proc, str, Path]:
    key = tmp / "sa.json"
    proc = Proc([sys.executable, "-m", "modelmux.emulator", "--port", "0", "--service-account-out", str(key)],
                EMULATOR_READY, env={"PYTHONPATH": str(ROOT / "addon")}, cwd=ROOT)
    return proc, proc.match.group(1), key


def start_proxy(tmp: Path, name: str, config: str, *, prefix: list[str] | None = None) -> tuple[Proc, int, int]:
    (tmp / f"{name}.yaml").write_text(config)
    regular, reverse = free_port(), free_port()
    argv = [*(prefix or []), sys.executable, "-m", "modelmux.cli", "run", "--config", str(tmp / f"{name}.yaml"),
            "--confdir", str(tmp / "confdir"), "--mode", f"regular@{regular}",
            "--mode", f"reverse:https://api.openai.com@{reverse}"]
    proc = Proc(argv, PROXY_READY, cwd=ROOT, timeout=30)
    wait_port(regular)
    wait_port(reverse)
    return proc, regular, reverse


def config(base_url: str, auth: str, extra: str = "") -> str:
    return (f"vertex: {{project: burst, region: us-east5, base_url: '{base_url}'}}\n{auth}\n"
            f"models: {{map: {{gpt-4o: claude-sonnet-4-5@20250929}}}}\n{extra}")


def peak_mb(pid: int) -> float:
    return memory_kb(pid)[1] / 1024


def classify(exc: BaseException) -> str:
    text = repr(exc)
    seen: BaseException | None = exc
    while seen is not None:  # httpx wraps the OSError that says what happened
        if isinstance(seen, ConnectionResetError) or "reset by peer" in str(seen).lower():
            return "reset"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, httpx.RemoteProtocolError) and "without sending" in text:
        return "closed"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    return f"error:{type(exc).__name__}"


# --- scenarios ------------------------------------------------------------------------------------------------

async def _one_stream(client: httpx.AsyncClient, url: str) -> str:
    try:
        async with client.stream("POST", url, json={**BODY, "stream": True}) as r:
            data = await r.aread()
    except Exception as exc:  # noqa: BLE001 — every failure is counted by kind
        return classify(exc)
    if r.headers.get("content-type", "").startswith("text/html") or data[:200].lower().lstrip().startswith(b"<"):
        return "html"
    if r.status_code != 200:
        return f"status:{r.status_code}"
    return "ok" if b"data: [DONE]" in data else "error:incomplete"


async def _streams(n: int, base: str, proxy: str | None, ca: str | bool, seconds: float) -> dict[str, Any]:
    # one connection per stream, all opened at once: the burst lands on the listener's accept queue
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, proxy=proxy, verify=ca, trust_env=False, timeout=120,
                                 limits=limits, headers={"authorization": "Bearer sk-burst"}) as client:
        t0 = time.monotonic()
        tasks = [asyncio.ensure_future(_one_stream(client, "/v1/chat/completions")) for _ in range(n)]
        done, pending = await asyncio.wait(tasks, timeout=seconds)
        for task in pending:
            task.cancel()
        outcomes = Counter(t.result() for t in done)
        outcomes["unfinished"] += len(pending)
        return {"outcomes": dict(outcomes), "seconds": round(time.monotonic() - t0, 1)}


def scenario_streams(proc: Proc, regular: int, reverse: int, tmp: Path, n: int, path: str) -> dict[str, Any]:
    if path == "regular":
        result = asyncio.run(_streams(n, "https://api.openai.com", f"http://127.0.0.1:{regular}",
                                      str(tmp / "confdir" / "mitmproxy-ca-cert.pem"), 300))
    else:
        result = asyncio.run(_streams(n, f"http://127.0.0.1:{reverse}", None, True, 300))
    o = result["outcomes"]
    result.update(streams=n, path=path, completed=o.get("ok", 0), resets=o.get("reset", 0),
                  html_pages=o.get("html", 0), errors=sum(v for k, v in o.items() if k not in ("ok", "reset", "html")))
    return result


def scenario_slowloris(tmp: Path, emu_url: str, key: Path, n: int = 1000, header_seconds: float = 2.0, grace: float = 30.0
                       ) -> dict[str, Any]:
    proc, _, reverse = start_proxy(tmp, "slowloris", config(emu_url, f"auth: {{credentials_file: '{key}'}}",
                                                            f"timeouts: {{client_header_seconds: {header_seconds}}}\n"))
    try:
        reset_peak(proc.popen.pid)
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", reverse), timeout=5)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: appl")
            s.setblocking(False)
            socks.append(s)
        t0 = time.monotonic()
        with httpx.Client(trust_env=False, timeout=20) as c:  # served meanwhile?
            probe = c.post(f"http://127.0.0.1:{reverse}/v1/chat/completions", json=BODY).status_code
        closed: dict[int, float] = {}
        while len(closed) < n and time.monotonic() - t0 < header_seconds + grace:
            for i, s in enumerate(socks):
                if i in closed:
                    continue
                try:
                    if s.recv(64) == b"":
                        closed[i] = time.monotonic() - t0
                except BlockingIOError:
                    pass
                except OSError:
                    closed[i] = time.monotonic() - t0
            time.sleep(0.05)
        for s in socks:
            s.close()
        lines = [line for line in proc.lines if "sent no complete request headers" in line]
        return {"connections": n, "closed": len(closed), "last_closed_after_s": round(max(closed.values()), 2)
                if closed else None, "limit_s": header_seconds, "probe_status": probe,
                "log_lines": len(lines), "peak_rss_mb": round(peak_mb(proc.popen.pid), 1)}
    finally:
        proc.stop()


async def _bodies(reverse: int, size: int) -> list[tuple[int, str]]:
    payload = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "' + b"x" * size + b'"}]}'

    async def chunks():
        for i in range(0, len(payload), 1 << 20):
            yield payload[i:i + (1 << 20)]

    async def one(chunked: bool) -> tuple[int, str]:
        async with httpx.AsyncClient(trust_env=False, timeout=120) as c:
            try:
                r = await c.post(f"http://127.0.0.1:{reverse}/v1/chat/completions",
                                 content=chunks() if chunked else payload, headers={"content-type": "application/json"})
            except Exception as exc:  # noqa: BLE001
                return 0, classify(exc)
            try:
                return r.status_code, r.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                return r.status_code, r.text[:80]

    return await asyncio.gather(*[one(chunked) for chunked in (False,) * 5 + (True,) * 5])


def scenario_bodies(proc: Proc, reverse: int) -> dict[str, Any]:
    reset_peak(proc.popen.pid)
    before = memory_kb(proc.popen.pid)[0] / 1024
    answers = asyncio.run(_bodies(reverse, 50 << 20))
    return {"answers": dict(Counter(f"{s} {c}" for s, c in answers)), "rss_before_mb": round(before, 1),
            "peak_rss_mb": round(peak_mb(proc.popen.pid), 1)}


def gzip_bomb(inflated: int) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join([*(z.compress(zeros) for _ in range(inflated >> 20)), z.flush()])


@contextlib.contextmanager
def bomb_server(bomb: bytes):
    """A local "Vertex" that answers every call with `bomb` as a gzip-encoded 200."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []
    stop: list[asyncio.Event] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
                             b"content-length: %d\r\n\r\n" % len(bomb))
                writer.write(bomb)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError, ValueError):
            pass
        writer.close()

    async def main() -> None:
        stop.append(asyncio.Event())
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        await stop[0].wait()
        server.close()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{port[0]}"
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(5)


def scenario_bomb(tmp: Path) -> dict[str, Any]:
    with bomb_server(gzip_bomb(1 << 30)) as url:
        proc, _, reverse = start_proxy(tmp, "bomb", config(url, "auth: {access_token: burst-token}",
                                                           "retries: {max_attempts: 1}\n"))
        try:
            reset_peak(proc.popen.pid)

            async def calls() -> list[tuple[int, str]]:
                async with httpx.AsyncClient(trust_env=False, timeout=120) as c:
                    rs = await asyncio.gather(*[c.post(f"http://127.0.0.1:{reverse}/v1/chat/completions", json=BODY)
                                                for _ in range(5)])
                out = []
                for r in rs:
                    try:
                        out.append((r.status_code, r.json()["error"]["code"]))
                    except (ValueError, KeyError, TypeError):
                        out.append((r.status_code, r.text[:80]))
                return out

            answers = asyncio.run(calls())
            return {"answers": dict(Counter(f"{s} {c}" for s, c in answers)),
                    "peak_rss_mb": round(peak_mb(proc.popen.pid), 1)}
        finally:
            proc.stop()


def scenario_fdlimit(tmp: Path, emu_url: str, key: Path, n: int = 1500, seconds: float = 15.0) -> dict[str, Any]:
    proc, _, reverse = start_proxy(tmp, "fdlimit", config(emu_url, f"auth: {{credentials_file: '{key}'}}"),
                                   prefix=["prlimit", "--nofile=1024:1024", "--"])
    try:
        socks, failed = [], 0
        t0 = time.monotonic()
        for _ in range(n):
            try:
                s = socket.create_connection(("127.0.0.1", reverse), timeout=2)
                s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                socks.append(s)
            except OSError:
                failed += 1
        time.sleep(max(0.0, min(seconds, 2.5 - (time.monotonic() - t0))))
        with httpx.Client(trust_env=False, timeout=20) as c:
            try:
                probe: int | str = c.post(f"http://127.0.0.1:{reverse}/v1/chat/completions", json=BODY).status_code
            except httpx.HTTPError as exc:
                probe = classify(exc)
        for s in socks:
            s.close()
        time.sleep(1.2)  # the last second's count is logged
        text = proc.lines
        return {"connections_tried": n, "connect_failures": failed,
                "too_many_open_files_lines": sum("Too many open files" in line for line in text),
                "refused_log_lines": sum("refused" in line and "new connection" in line for line in text),
                "refused_counted": sum(int(line.split("refused ")[1].split()[0]) for line in text
                                       if "refused" in line and "new connection" in line),
                "probe_while_full": probe, "log_lines_total": len(text)}
    finally:
        proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams in the burst (default 1000)")
    parser.add_argument("--path", choices=("reverse", "regular"), default="reverse",
                        help="how the burst reaches the proxy: base URL (reverse) or HTTPS_PROXY (regular)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"scenarios to run ({','.join(SCENARIOS)})")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--config-extra", default="", metavar="YAML",
                        help="more configuration for the main proxy, e.g. 'timeouts: {client_header_seconds: 5}'")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="modelmux-burst-") as tmpname, contextlib.ExitStack() as stack:
        tmp = Path(tmpname)
        emu, emu_url, key = start_emulator(tmp)
        stack.callback(emu.stop)
        proc, regular, reverse = start_proxy(tmp, "main", config(emu_url, f"auth: {{credentials_file: '{key}'}}",
                                                                 args.config_extra + "\n"))
        stack.callback(proc.stop)
        with httpx.Client(trust_env=False, timeout=20) as c:  # warm: token, relay
            c.post(f"http://127.0.0.1:{reverse}/v1/chat/completions", json=BODY).raise_for_status()
        for name in chosen:
            print(f"… {name}", file=sys.stderr, flush=True)
            if name == "streams":
                reset_peak(proc.popen.pid)
                results[name] = scenario_streams(proc, regular, reverse, tmp, args.streams, args.path)
                results[name]["peak_rss_mb"] = round(peak_mb(proc.popen.pid), 1)
            elif name == "slowloris":
                results[name] = scenario_slowloris(tmp, emu_url, key)
            elif name == "bodies":
                results[name] = scenario_bodies(proc, reverse)
            elif name == "bomb":
                results[name] = scenario_bomb(tmp)
            elif name == "fdlimit":
                results[name] = scenario_fdlimit(tmp, emu_url, key)
            else:
                parser.error(f"unknown scenario {name!r}")
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    peaks = {k: v.get("peak_rss_mb") for k, v in results.items() if v.get("peak_rss_mb") is not None}
    over = {k: v for k, v in peaks.items() if v >= RSS_BUDGET_MB}
    print(f"peak RSS per scenario (MB): {json.dumps(peaks)}; budget {RSS_BUDGET_MB} MB: "
          f"{'exceeded by ' + ', '.join(over) if over else 'kept'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
