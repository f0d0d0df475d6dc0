"""Bounds on client connections (addons/connection_limits.py, mitm_patches.py): deadlines (pure, with a fake clock), and
real `modelmux run` processes attacked by real sockets — half-sent heads, stalled and trickled bodies, bodies over
the cap, a flood past the connection cap and past the file-descriptor limit. Limits are configured small (half a
second, five connections) so that every wait is short and bounded."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import time
from pathlib import Path

import httpx
import pytest
from openapi import validate_error

import e2e
import procs
import report
from modelmux import workers
from modelmux.addons.connection_limits import Deadlines

LIMIT = 0.5  # timeouts.client_header_seconds and client_idle_seconds of the proxies here
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello there, Claude"}]}


# --- deadlines, on a fake clock ---------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_deadlines_headers_idle_body_and_what_is_never_timed():
    clock = Clock()
    d = Deadlines(20, 10, clock)
    for cid in ("silent", "kept-alive", "stalled-body", "moving-body", "serving", "tunnel"):
        d.connected(cid)
    d.request_headers("kept-alive", "f1")
    d.request_complete("kept-alive", "f1")
    d.answered("kept-alive", "f1")
    for cid in ("stalled-body", "moving-body", "serving"):
        d.request_headers(cid, f"{cid}-flow")
    d.request_complete("serving", "serving-flow")
    d.tunnel_established("tunnel")
    d.opaque("tunnel")
    clock.now += 9
    d.body_progress("moving-body", "moving-body-flow")
    assert d.expired() == []
    clock.now += 2  # 11 s: the stalled body is over its 10 s
    assert d.expired() == [("stalled-body", "body")]
    clock.now += 8  # 19 s: nothing else yet; a connection already reported is not reported again
    d.body_progress("moving-body", "moving-body-flow")
    assert d.expired() == []
    clock.now += 1.5  # 20.5 s: the silent one never sent a request, the kept-alive one sat idle after its answer
    assert sorted(d.expired()) == [("kept-alive", "idle"), ("silent", "headers")]
    clock.now += 100
    assert d.expired() == [("moving-body", "body")]  # the serving one and the tunnel are never timed here
    d.disconnected("serving")
    assert len(d) == 5


def test_time_the_proxy_itself_was_behind_does_not_count_against_a_client():
    clock = Clock()
    d = Deadlines(20, 10, clock)
    d.connected("a")
    clock.now += 15
    d.stalled(10)  # the event loop ran 10 s late: the client's own wait is 5 s
    clock.now += 10
    assert d.expired() == []  # 25 s of wall time, 15 s the client's
    clock.now += 6
    assert d.expired() == [("a", "headers")]
    d.connected("b")  # a connection made after the stall owes nothing to it
    clock.now += 21
    assert d.expired() == [("b", "headers")]


@pytest.mark.parametrize("fds, backlog, cap", [(1024, 120, 120), (20000, 2492, 2492), (65536, 4096, 4096),
                                               (1 << 20, 4096, 4096)])
def test_backlog_and_connection_cap_fit_the_file_descriptor_limit(fds, backlog, cap, monkeypatch):
    monkeypatch.setattr(workers, "_somaxconn", lambda: 4096)
    assert workers.accept_backlog(fds) == backlog and workers.derived_max_connections(fds) == cap
    # every connection at its 4 descriptors, plus a full accept queue taken at once, several times over, fit
    assert workers.FD_RESERVE + 4 * cap + workers.ACCEPTED_IN_FLIGHT * backlog <= fds or cap == 4096
    assert (workers.capacity_warning(fds) is None) == (fds >= 65536)
    monkeypatch.setattr(workers, "_somaxconn", lambda: 128)
    assert workers.accept_backlog(1 << 20) == 1024  # asked for; the kernel caps it at 128 …
    assert "net.core.somaxconn" in workers.capacity_warning(1 << 20)  # … and the operator is told


# --- real processes -----------------------------------------------------------------------------------------------

def start(tmp: Path, emu_url: str, key: Path, extra: str, *prefix: str) -> e2e.Proxy:
    config = e2e.write_config(tmp / "modelmux.yaml", emu_url, key)
    config.write_text(config.read_text() + extra)
    regular, reverse = procs.free_port(), procs.free_port()
    argv = [*prefix, str(procs.VENV_BIN / "modelmux"), "run", "--config", str(config), "--confdir",
            str(tmp / "confdir"), "--mode", f"regular@{regular}", "--mode", f"reverse:https://api.openai.com@{reverse}"]
    proc = procs.Proc(argv, procs.PROXY_READY, cwd=procs.ROOT)
    procs.wait_port(regular)
    procs.wait_port(reverse)
    return e2e.Proxy(proc, regular, reverse, tmp / "confdir")


@pytest.fixture(scope="module")
def quick(emulator, tmp_path_factory):
    """A proxy whose client limits are half a second."""
    emu, key = emulator
    p = start(tmp_path_factory.mktemp("quick"), emu.url, key,
              f"timeouts: {{client_header_seconds: {LIMIT}, client_idle_seconds: {LIMIT}}}\n")
    yield p
    p.proc.stop()
    e2e.assert_no_secrets(p.proc.output())


def closed_within(socks: list[socket.socket], seconds: float) -> dict[int, float]:
    """Which sockets the other side closed (EOF or reset) within `seconds`, and after how long."""
    t0 = time.monotonic()
    closed: dict[int, float] = {}
    for s in socks:
        s.setblocking(False)
    while len(closed) < len(socks) and time.monotonic() - t0 < seconds:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                if not s.recv(4096):
                    closed[i] = time.monotonic() - t0
            except BlockingIOError:
                pass
            except OSError:
                closed[i] = time.monotonic() - t0
        time.sleep(0.02)
    return closed


def test_half_sent_heads_are_closed_after_the_header_limit_even_when_trickled(quick):
    """Slowloris: 30 connections send half a request head and stop, 3 more keep sending it a byte at a time (which
    keeps mitmproxy's own inactivity timeout at bay); all are closed once client_header_seconds is over, and the
    proxy says so in one line with the count — not a line per connection."""
    socks = []
    t_start = time.monotonic()
    for port in (quick.reverse_port, quick.regular_port):
        for _ in range(15):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(HEAD[:30])
            socks.append(s)
    trickled = [socket.create_connection(("127.0.0.1", quick.reverse_port), timeout=5) for _ in range(3)]
    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < 4 * LIMIT and sent < len(HEAD):
        for s in trickled:
            with contextlib.suppress(OSError):
                s.send(HEAD[sent:sent + 1])
        sent += 1
        time.sleep(0.05)
    closed = closed_within(socks + trickled, 10)
    took = time.monotonic() - t_start
    for s in socks + trickled:
        s.close()
    assert len(closed) == len(socks) + len(trickled), f"{len(closed)} of {len(socks) + len(trickled)} closed"
    lines = quick.proc.wait_lines("sent no complete request headers", 1)
    counted = sum(int(re.search(r"closed (\d+) connection", line).group(1)) for line in lines)
    assert counted >= len(socks) + len(trickled) - 3 and len(lines) <= 4, lines
    assert not [line for line in quick.proc.lines if "before completing request headers" in line]
    report.add(f"slowloris: {len(closed)} half-sent or trickled heads all closed within {took:.2f} s of connecting "
               f"(limit {LIMIT} s; the trickled ones while still sending)")


def test_a_stalled_body_is_closed_and_a_trickled_one_is_answered(quick, emulator):
    body = json.dumps(CHAT).encode()
    head = HEAD + b"content-length: %d\r\n\r\n" % len(body)
    stalled = socket.create_connection(("127.0.0.1", quick.reverse_port), timeout=5)
    stalled.sendall(head + body[:10])
    moving = socket.create_connection(("127.0.0.1", quick.reverse_port), timeout=5)
    moving.sendall(head)
    for i in range(0, len(body), 4):  # 4 bytes every 0.1 s: slow, but never LIMIT without progress
        moving.sendall(body[i:i + 4])
        time.sleep(0.1 if i < 40 else 0)
    assert closed_within([stalled], 10)
    moving.settimeout(10)
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 20:
        piece = moving.recv(65536)
        if not piece:
            break
        answer += piece
    moving.close()
    stalled.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert quick.proc.wait_lines("sent no request body for", 1)


def hwm_mb(pid: int) -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def reset_hwm(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_over_30_mb_is_a_413_without_the_proxy_holding_it(quick, framing):
    """50 MB to the chat endpoint (the default bounds.max_request_bytes is Vertex's 30 MB): an OpenAI 413, and the
    proxy's peak RSS does not grow by the body — with a content-length the body is dropped as it arrives; chunked,
    what came before the cap was found is dropped with it."""
    payload = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "' + b"x" * (50 << 20) + b'"}]}'

    def pieces():
        for i in range(0, len(payload), 1 << 20):
            yield payload[i:i + (1 << 20)]

    pid = quick.proc.popen.pid
    reset_hwm(pid)
    before = hwm_mb(pid)
    with httpx.Client(trust_env=False, timeout=60) as client:
        r = client.post(f"http://127.0.0.1:{quick.reverse_port}/v1/chat/completions",
                        content=pieces() if framing == "chunked" else payload,
                        headers={"content-type": "application/json", "authorization": f"Bearer {e2e.CLIENT_KEY}"})
    grown = hwm_mb(pid) - before
    assert r.status_code == 413
    validate_error(r.json())
    assert r.json()["error"]["code"] == "request_too_large" and "bounds.max_request_bytes" in r.json()["error"]["message"]
    assert grown < (15 if framing == "content-length" else 45), f"peak RSS grew by {grown:.0f} MB"
    report.add(f"50 MB body ({framing}): 413, proxy peak RSS +{grown:.1f} MB")


def test_a_request_head_over_the_header_limit_is_a_431(quick):
    s = socket.create_connection(("127.0.0.1", quick.reverse_port), timeout=10)
    s.sendall(HEAD + b"x-filler: " + b"a" * (70 << 10))
    answer = b""
    with contextlib.suppress(OSError):
        while piece := s.recv(65536):
            answer += piece
    s.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    validate_error(body)
    assert body["error"]["code"] == "request_header_fields_too_large"


def test_past_the_connection_cap_new_connections_are_refused_at_once_and_counted(emulator, tmp_path):
    emu, key = emulator
    p = start(tmp_path, emu.url, key, "bounds: {max_connections: 5}\ntimeouts: {client_header_seconds: 30}\n")
    try:
        t0 = time.monotonic()
        socks = [socket.create_connection(("127.0.0.1", p.reverse_port), timeout=5) for _ in range(45)]
        for s in socks:
            with contextlib.suppress(OSError):
                s.sendall(HEAD[:20])
        closed = closed_within(socks, 5)
        # at most five held (fewer while the start-up probes' connections are still being let go), the rest
        # refused at once
        assert 40 <= len(closed) < 45 and max(closed.values()) < 3, closed
        lines = p.proc.wait_lines("new connection(s) in the last second", 1)
        assert 1 <= len(lines) <= time.monotonic() - t0 + 2
        assert sum(int(re.search(r"refused (\d+)", line).group(1)) for line in lines) >= 39
        for s in socks:
            s.close()
        time.sleep(0.3)
        with httpx.Client(trust_env=False, timeout=20) as client:  # room again
            r = client.post(f"http://127.0.0.1:{p.reverse_port}/v1/chat/completions", json=CHAT,
                            headers={"authorization": f"Bearer {e2e.CLIENT_KEY}"})
        assert r.status_code == 200
    finally:
        p.proc.stop()


@pytest.mark.skipif(not shutil.which("prlimit"), reason="needs prlimit (util-linux)")
def test_near_the_file_descriptor_limit_a_flood_is_refused_not_logged_per_socket(emulator, tmp_path):
    """Under `ulimit -n 256` (which the proxy cannot raise): 600 connections at once. The derived cap keeps the
    descriptors in bounds: no "Too many open files" (mitmproxy once logged 140k such lines in 15 s), the refusals
    counted in at most one line per second."""
    emu, key = emulator
    p = start(tmp_path, emu.url, key, "", "prlimit", "--nofile=256:256", "--")
    try:
        assert p.proc.wait_lines("file-descriptor limit is 256", 1)
        socks, failed = [], 0
        t0 = time.monotonic()
        for _ in range(600):
            try:
                socks.append(socket.create_connection(("127.0.0.1", p.reverse_port), timeout=2))
            except OSError:
                failed += 1
        for s in socks:
            with contextlib.suppress(OSError):
                s.sendall(HEAD[:20])
        lines = p.proc.wait_lines("new connection(s) in the last second", 1)
        elapsed = time.monotonic() - t0
        for s in socks:
            s.close()
        assert not [line for line in p.proc.lines if "Too many open files" in line]
        assert 1 <= len(lines) <= elapsed + 2, lines
        assert p.proc.popen.poll() is None  # still running
        with httpx.Client(trust_env=False, timeout=20) as client:
            r = client.get(f"http://127.0.0.1:{p.reverse_port}/v1/models")
        assert r.status_code == 200
        report.add(f"fd limit 256: 600 connections, {failed} connect failures, "
                   f"{len(lines)} refusal line(s), 0 'Too many open files'")
    finally:
        p.proc.stop()
