"""What is decrypted (addons/intercept_scope.py), with real proxies and real TLS: a CONNECT whose target is not an
intercepted host is tunnelled even when its SNI names one, in both launchers; `intercept.hosts` edited while
`modelmux run` runs is decrypted from the reload on."""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import ssl
import threading
import time

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

import e2e
import procs
import report

SNI = "api.openai.com"


@contextlib.contextmanager
def recording_tls_server(tmp_path):
    """A TLS server on 127.0.0.1 with its own certificate; keeps the first bytes of each request it decrypts."""
    cert, key = procs.self_signed_cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    seen: list[bytes] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                continue
            try:
                with ctx.wrap_socket(raw, server_side=True) as conn:
                    conn.settimeout(5)
                    seen.append(conn.recv(65536))
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], cert, seen
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def tunnel(proxy_port: int, target: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    return s


def test_sni_alone_never_decrypts_and_the_apps_key_goes_nowhere_else(proxy, emulator, tmp_path):
    """CONNECT 127.0.0.1:PORT with SNI api.openai.com: the client sees the server's own certificate (not one
    made by modelmux's CA), so the proxy read nothing; nothing was translated, nothing reached the emulator."""
    emu, _ = emulator
    emu.clear()
    with recording_tls_server(tmp_path) as (port, cert, seen):
        trusting_the_proxy = ssl.create_default_context(cafile=str(proxy.ca))
        with tunnel(proxy.regular_port, f"127.0.0.1:{port}") as raw:
            with pytest.raises(ssl.SSLCertVerificationError):  # not modelmux's certificate
                trusting_the_proxy.wrap_socket(raw, server_hostname=SNI)
        plain = ssl.create_default_context(cafile=str(cert))
        plain.check_hostname = False  # the server's certificate is for 127.0.0.1; the SNI claims api.openai.com
        with tunnel(proxy.regular_port, f"127.0.0.1:{port}") as raw, plain.wrap_socket(raw, server_hostname=SNI) as tls:
            presented = tls.getpeercert(binary_form=True)
            tls.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
                        b"authorization: Bearer " + e2e.CLIENT_KEY.encode() + b"\r\ncontent-length: 2\r\n\r\n{}")
            answer = tls.recv(4096)
    own = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)
    assert hashlib.sha256(presented).digest() == hashlib.sha256(own).digest()
    assert answer.endswith(b"ok") and seen[-1].startswith(b"POST /v1/chat")  # end to end, untouched
    assert emu.requests() == []
    assert not proxy.proc.wait_lines("modelmux: proxy", 1, timeout=0.5)  # no exchange was translated


def test_a_host_added_to_intercept_hosts_is_decrypted_within_a_second_of_the_edit(emulator, tmp_path):
    emu, key = emulator
    config = e2e.write_config(tmp_path / "modelmux.yaml", emu.url, key)
    p = e2e.start_proxy("modelmux-run", config, tmp_path / "confdir")
    new_host = "llm-gateway.example.test"
    try:
        trust = ssl.create_default_context(cafile=str(p.ca))

        def models_via_proxy(timeout: float = 5) -> int | str:
            with httpx.Client(proxy=f"http://127.0.0.1:{p.regular_port}", verify=trust, trust_env=False,
                              timeout=timeout) as c:
                try:
                    return c.get(f"https://{new_host}/v1/models").status_code
                except httpx.HTTPError as err:
                    return type(err).__name__
        assert models_via_proxy() != 200  # tunnelled: no such host behind it
        config.write_text(config.read_text().replace("hosts: [api.openai.com]", f"hosts: [api.openai.com, {new_host}]"))
        edited = time.monotonic()
        deadline = edited + 10
        while (status := models_via_proxy(2)) != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        took = time.monotonic() - edited
        assert status == 200, status
        assert p.proc.wait_lines("reloaded", 1)
        report.add(f"intercept.hosts edit: the new host decrypted {took:.2f} s after the edit")
    finally:
        p.proc.stop()
    e2e.assert_no_secrets(p.proc.output())
    assert not re.search(r"Traceback", p.proc.output())
