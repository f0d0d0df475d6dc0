"""Never an open relay (addons/exposure.py, addons/forwarding.py).

Listeners bound to a non-loopback address run inside a private network namespace (tests/netns.py): there
0.0.0.0 is every interface of a namespace whose only interface is its own loopback, so nothing is exposed while
the proxy behaves exactly as it would on a real network — the clients and the "internal service" it must not
reach are in that namespace too, on its loopback. Loopback-only listeners run as the other end-to-end tests do.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

import procs
from modelmux.addons import Forwarding, Runtime, make_addons
from modelmux.addons.exposure import is_loopback_bind, problem
from modelmux.addons.forwarding import non_global, vet
from modelmux.config import SecurityConfig
from netns import Netns

PASSWORD = "pw-e2e-9f3c1b7d"  # must never appear in the proxy's output
BASE = """vertex: {project: p, region: us-east5, base_url: "http://127.0.0.1:9"}
auth: {access_token: static-test-token}
"""


# --- the rules ------------------------------------------------------------------------------------------------

def test_which_listeners_are_an_open_proxy():
    open_ = SecurityConfig()
    assert problem(open_, ["regular"], "", None)  # plain mitmdump's default: every interface
    assert problem(open_, ["regular@8080", "reverse:https://api.openai.com@8081"], "0.0.0.0", None)
    assert problem(open_, ["socks5"], "192.0.2.10", None) and problem(open_, ["regular@[::]:8080"], "", None)
    assert problem(open_, ["regular"], "0.0.0.0", "any")  # mitmproxy's "any" accepts every user
    assert not problem(open_, ["regular"], "127.0.0.1", None) and not problem(open_, ["regular"], "localhost", None)
    assert not problem(open_, ["regular@127.0.0.2:8080"], "0.0.0.0", None)  # the mode's own loopback address
    assert not problem(open_, ["reverse:https://api.openai.com"], "0.0.0.0", None)  # forwards only the API
    assert not problem(open_, ["regular"], "0.0.0.0", "user:secret")
    # a configuration's proxy_auth counts while it is about to be applied; once running, only what is in effect
    assert not problem(SecurityConfig(proxy_auth="user:secret"), ["regular"], "0.0.0.0", None, pending=True)
    assert problem(SecurityConfig(proxy_auth="user:secret"), ["regular"], "0.0.0.0", None)
    assert not problem(SecurityConfig(allow_unauthenticated_proxy=True), ["regular"], "0.0.0.0", None)
    assert "security.proxy_auth" in problem(open_, ["regular"], "0.0.0.0", None)
    assert is_loopback_bind("::1") and not is_loopback_bind("") and not is_loopback_bind("no-such-host.invalid")


def test_a_proxy_auth_mitmproxy_cannot_apply_is_refused_with_the_configuration(tmp_path):
    """An Apache-default ($apr1$) htpasswd file, a malformed spec: refused at load, never left silently open."""
    from modelmux.addons.exposure import check_proxy_auth
    from modelmux.config import ConfigError
    apr1 = tmp_path / "htpasswd"
    apr1.write_text("alice:$apr1$Qn5wEqCz$6rJ3Ctkm3R.9p/vj3cJqL1\n")
    bcrypt = tmp_path / "htpasswd-bcrypt"
    bcrypt.write_text("alice:$2y$05$wTn1Qm8v8d5yHn3kNSCuCeBpSi.bxkUJ2KctVdYKu4i9HDq4Hvq7W\n")
    for spec in (f"@{apr1}", "no-colon", "any", "ldap:only:two", "ldaps:host:u:pw-ldap-7:dc=x?bad=1"):
        with pytest.raises(ConfigError) as err:
            check_proxy_auth(spec)
        assert "pw-ldap-7" not in str(err.value)
    check_proxy_auth(f"@{bcrypt}")
    check_proxy_auth("user:secret")
    check_proxy_auth("ldap:ldap.example:cn=admin:pw:dc=example")


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "::ffff:10.1.2.3",
                                     "169.254.169.254", "fe80::1%eth0", "10.0.0.1", "172.16.5.4", "192.168.1.1",
                                     "fc00::1", "fd00:ec2::254", "0.0.0.0", "::", "100.64.0.1", "100.100.100.200",
                                     "224.0.0.1", "240.0.0.1", "192.0.2.1"])
def test_non_global_addresses_are_not_forwarded_to(address):
    assert non_global(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "142.250.74.110", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_global_addresses_are(address):
    assert not non_global(address)


async def test_a_name_is_checked_by_every_address_it_resolves_to_and_an_address_is_kept():
    assert (await vet("8.8.8.8", 443)) == ("8.8.8.8", None)
    address, reason = await vet("localhost", 80)
    assert address is None and "localhost" in reason and "security.forward_private_networks" in reason
    address, reason = await vet("no-such-host.invalid", 80)
    assert address is None and "cannot be resolved" in reason  # never handed on to be resolved again


async def test_a_reverse_listener_opens_no_connection_but_to_the_relay(tmp_path):
    """Every flow on a reverse-mode listener is modelmux's; a server connection it would open anyway (raw TCP, an
    upgrade, a flow an addon left unanswered) is not opened. The relay's address is."""
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    runtime = Runtime()
    addons = make_addons(runtime)
    forwarding = next(a for a in addons if isinstance(a, Forwarding))
    with taddons.context(Proxyserver(), *addons) as tctx:
        tctx.configure(addons[0], listen_host="127.0.0.1", confdir=str(tmp_path), modelmux_config=str(path))
        runtime.relay.port = 45678
        for address, refused in [(("api.openai.com", 443), True), (("127.0.0.1", 45678), False)]:
            client = tflow.tclient_conn()
            client.proxy_mode = ProxyMode.parse("reverse:https://api.openai.com")
            server = tflow.tserver_conn()
            server.address, server.error = address, None
            await forwarding.server_connect(server_hooks.ServerConnectionHookData(server, client))
            assert bool(server.error) == refused, (address, server.error)
        runtime.relay.port = 0


# --- real processes -----------------------------------------------------------------------------------------------

def modelmux_argv(config: Path, confdir: Path, *extra: str) -> list[str]:
    return [str(procs.VENV_BIN / "modelmux"), "run", "--config", str(config), "--confdir", str(confdir), *extra]


def mitmdump_argv(config: Path, confdir: Path, *extra: str) -> list[str]:
    return [str(procs.VENV_BIN / "mitmdump"), "-s", str(procs.ROOT / "addon" / "modelmux_addon.py"),
            "--set", f"confdir={confdir}", "--set", f"modelmux_config={config}", *extra]


@pytest.fixture(scope="module")
def ns():
    n = Netns()
    yield n
    n.close()


def run_to_exit(argv: list[str], timeout: float = 30) -> tuple[int, str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=procs.ROOT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("launcher", ["modelmux-run", "mitmdump"])
def test_an_exposed_proxy_without_authentication_is_refused_at_start(ns, tmp_path, launcher):
    config = tmp_path / "c.yaml"
    config.write_text(BASE)
    port = str(procs.free_port())
    if launcher == "mitmdump":  # mitmdump's own default listen host: every interface
        argv = mitmdump_argv(config, tmp_path / "confdir", "-p", port)
    else:
        argv = modelmux_argv(config, tmp_path / "confdir", "--listen-host", "0.0.0.0", "--listen-port", port)
    code, output = run_to_exit(ns.argv(argv))
    assert code != 0, output
    assert "refusing to run an open proxy" in output and "security.proxy_auth" in output
    assert "security.allow_unauthenticated_proxy: true" in output and "--listen-host 127.0.0.1" in output


def test_an_exposed_proxy_whose_htpasswd_mitmproxy_cannot_read_is_refused_at_start(ns, tmp_path):
    """Apache's default htpasswd ($apr1$): mitmproxy would refuse it and run with no authentication at all."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:$apr1$Qn5wEqCz$6rJ3Ctkm3R.9p/vj3cJqL1\n")
    config = tmp_path / "c.yaml"
    config.write_text(BASE + f"security: {{proxy_auth: '@{htpasswd}'}}\n")
    argv = modelmux_argv(config, tmp_path / "confdir", "--listen-host", "0.0.0.0", "--listen-port",
                         str(procs.free_port()))
    code, output = run_to_exit(ns.argv(argv))
    assert code != 0, output
    assert "security.proxy_auth" in output and "htpasswd" in output


def test_stream_large_bodies_is_refused_it_would_send_bodies_on_before_modelmux_sees_them(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(BASE)
    code, output = run_to_exit(modelmux_argv(config, tmp_path / "confdir", "--listen-port", str(procs.free_port()),
                                             "--set", "stream_large_bodies=5m"))
    assert code != 0 and "stream_large_bodies cannot be used with modelmux" in output, output
    assert "open proxy" not in output  # the options' rollback reports nothing of its own


def internal_service() -> tuple[int, list[str]]:
    """An HTTP server on the namespace's loopback — what an exposed proxy must not let anyone reach."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            self.send_response(200)
            self.send_header("content-length", "8")
            self.end_headers()
            self.wfile.write(b"internal")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server.server_address[1], seen


@contextlib.contextmanager
def exposed_proxy(ns: Netns, tmp_path: Path, security: str, env: dict[str, str] | None = None):
    config = tmp_path / "c.yaml"
    config.write_text(BASE + f"security: {security}\n")
    port = ns.run(procs.free_port)  # free in the namespace, where the test's own services listen too
    proc = procs.Proc(ns.argv(modelmux_argv(config, tmp_path / "confdir", "--listen-host", "0.0.0.0",
                                            "--listen-port", str(port))), procs.PROXY_READY, env=env, cwd=procs.ROOT)
    try:
        yield proc, port, config
    finally:
        proc.stop()
    assert PASSWORD not in proc.output()


def connect_status(proxy_port: int, target: str) -> int:
    """The status of a CONNECT to `target` through the proxy (raw: any authority, IPv6 forms included)."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as s:
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        return int(s.recv(4096).split(b" ", 2)[1])


def test_with_proxy_authentication_it_starts_and_still_keeps_private_addresses_out_of_reach(ns, tmp_path):
    svc, seen = ns.run(internal_service)
    with exposed_proxy(ns, tmp_path, '{proxy_auth: "relay-user:${MM_PROXY_PASSWORD}"}',
                       env={"MM_PROXY_PASSWORD": PASSWORD}) as (proc, port, _):
        def clients():
            with httpx.Client(proxy=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as anonymous:
                no_auth = anonymous.get(f"http://127.0.0.1:{svc}/").status_code
            with httpx.Client(proxy=f"http://relay-user:{PASSWORD}@127.0.0.1:{port}", trust_env=False,
                              timeout=10) as user:
                r = user.get(f"http://127.0.0.1:{svc}/secret")
                with pytest.raises(httpx.ProxyError, match="403"):
                    user.get(f"https://127.0.0.1:{svc}/")  # CONNECT: refused, no tunnel
            return no_auth, r
        no_auth, r = ns.run(clients)
    assert no_auth == 407
    assert r.status_code == 403 and r.headers["content-type"] == "text/plain"
    assert "127.0.0.1 is a loopback, link-local or private address" in r.text and "forward_private_networks" in r.text
    assert seen == []


def test_opted_in_unauthenticated_it_warns_refuses_private_destinations_and_a_reload_can_allow_them(ns, tmp_path):
    svc, seen = ns.run(internal_service)
    with exposed_proxy(ns, tmp_path, "{allow_unauthenticated_proxy: true}") as (proc, port, config):
        assert proc.wait_lines("anyone who reaches it may use it as a proxy, without authentication", 1)

        def refused():
            out = {}
            with httpx.Client(proxy=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as c:
                for url in (f"http://127.0.0.1:{svc}/", f"http://localhost:{svc}/", "http://169.254.169.254/latest/",
                            "http://10.0.0.1/"):
                    out[url] = c.get(url).status_code
            for target in (f"127.0.0.1:{svc}", f"[::ffff:127.0.0.1]:{svc}", f"localhost:{svc}", "[fd00:ec2::254]:80"):
                out[f"CONNECT {target}"] = connect_status(port, target)
            return out
        assert set(ns.run(refused).values()) == {403}
        assert seen == []

        config.write_text(config.read_text().replace("allow_unauthenticated_proxy: true",
                                                     "allow_unauthenticated_proxy: true, forward_private_networks: true"))

        def allowed_soon() -> int:
            deadline = time.monotonic() + 10
            with httpx.Client(proxy=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as c:
                while True:
                    status = c.get(f"http://127.0.0.1:{svc}/now").status_code
                    if status == 200 or time.monotonic() > deadline:
                        return status
                    time.sleep(0.1)
        assert ns.run(allowed_soon) == 200 and seen == ["/now"]


def test_an_edit_that_would_leave_an_exposed_proxy_open_is_refused(ns, tmp_path):
    with exposed_proxy(ns, tmp_path, '{proxy_auth: "relay-user:${MM_PROXY_PASSWORD}"}',
                       env={"MM_PROXY_PASSWORD": PASSWORD}) as (proc, port, config):
        config.write_text(BASE + "security: {}\n")
        assert proc.wait_lines("changed but is refused", 1)
        assert "refusing to run an open proxy" in proc.output()

        def still_authenticated() -> int:
            with httpx.Client(proxy=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as c:
                return c.get("http://127.0.0.1:1/").status_code
        assert ns.run(still_authenticated) == 407


def test_a_loopback_listener_forwards_to_loopback_as_before(tmp_path):
    """Apps on the machine reach loopback services anyway: a loopback-only proxy forwards to them."""
    svc, seen = internal_service()
    config = tmp_path / "c.yaml"
    config.write_text(BASE)
    port = procs.free_port()
    proc = procs.Proc(modelmux_argv(config, tmp_path / "confdir", "--listen-port", str(port)), procs.PROXY_READY,
                      cwd=procs.ROOT)
    try:
        with httpx.Client(proxy=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as c:
            r = c.get(f"http://127.0.0.1:{svc}/local")
        assert r.status_code == 200 and r.text == "internal" and seen == ["/local"]
        assert connect_status(port, f"127.0.0.1:{svc}") == 200
    finally:
        proc.stop()
    assert "anyone who reaches it" not in proc.output()


def test_a_client_key_that_is_not_utf8_is_a_401(tmp_path):
    """A real `modelmux run` with client keys, a key sent as raw non-UTF-8 bytes: refused, never served."""
    config = tmp_path / "c.yaml"
    config.write_text(BASE + "security: {client_keys: [mm-key-utf8-1]}\n")
    port = procs.free_port()
    proc = procs.Proc(modelmux_argv(config, tmp_path / "confdir", "--mode", f"reverse:https://api.openai.com@{port}"),
                      procs.PROXY_READY, cwd=procs.ROOT)
    try:
        procs.wait_port(port)
        for key in (b"\xff", b"mm-key-utf8-1\xfe", b"\xc3"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET /v1/models HTTP/1.1\r\nhost: api.openai.com\r\nauthorization: Bearer " + key +
                          b"\r\nconnection: close\r\n\r\n")
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
            assert b'"invalid_api_key"' in answer
    finally:
        proc.stop()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
