"""mitmproxy's upstream mode (`--mode upstream:http://proxy:port`): a streamed call of ours goes to modelmux's
loopback relay directly — never through the upstream proxy, which would otherwise get the Vertex body and the
relay's plan token — while other traffic on the same client connection still goes through it. A real
`modelmux run`, the emulator behind it, an upstream proxy of the test's own that records what reaches it."""

from __future__ import annotations

import json
import socket
import threading

import httpx
from openapi import validate_openai_sse

import e2e
import procs


def recording_proxy():
    """A loopback 'upstream proxy' that records each request head it gets and answers 502 to it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    seen: list[bytes] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    data = conn.recv(4096)
                    if not data:
                        break
                    head += data
                seen.append(head)
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close():
        stop.set()
        thread.join(5)
        listener.close()

    return listener.getsockname()[1], seen, close


def test_a_streamed_call_reaches_the_relay_directly_and_other_traffic_the_upstream_proxy(tmp_path):
    emu_proc, url, key = procs.emulator(tmp_path)
    upstream_port, seen, close = recording_proxy()
    listen = procs.free_port()
    config = e2e.write_config(tmp_path / "modelmux.yaml", url, key)
    proc = procs.Proc([str(procs.VENV_BIN / "modelmux"), "run", "--config", str(config), "--confdir",
                       str(tmp_path / "confdir"), "--mode", f"upstream:http://127.0.0.1:{upstream_port}@{listen}"],
                      procs.PROXY_READY, cwd=procs.ROOT)
    try:
        procs.wait_port(listen)
        with httpx.Client(proxy=f"http://127.0.0.1:{listen}", trust_env=False, timeout=30) as client:
            streamed = client.post("http://api.openai.com/v1/chat/completions",
                                   headers={"authorization": f"Bearer {e2e.CLIENT_KEY}"},
                                   json={"model": "gpt-4o", "stream": True,
                                         "messages": [{"role": "user", "content": "hi"}]})
            other = client.get("http://elsewhere.test/page")  # the same client connection, not ours
    finally:
        proc.stop()
        close()
        emu_proc.stop()
    e2e.assert_no_secrets(proc.output())
    assert streamed.status_code == 200, streamed.text
    assert validate_openai_sse(streamed.content)
    assert other.status_code == 502  # the upstream proxy's answer: it is still used for what is not ours
    heads = b"\n".join(seen).lower()
    assert b"elsewhere.test" in heads
    assert b"x-modelmux-plan" not in heads and b"streamrawpredict" not in heads and b"127.0.0.1" not in heads
    assert json.dumps([h.decode("latin-1") for h in seen]).count("GET ") == 1
