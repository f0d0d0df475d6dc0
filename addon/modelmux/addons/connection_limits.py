"""Bounds on what one client connection may hold (docs/security.md): time to send a request, body progress, body
size, header size, and how many connections there are at once.

Cases:
- a connection that has not sent a complete request's headers within `timeouts.client_header_seconds` — of
  being accepted, of its CONNECT being answered, or of its previous answer (an idle keep-alive connection) — is
  closed (slowloris: headers sent a byte at a time);
- a request body that makes no progress for `timeouts.client_idle_seconds` gets its connection closed;
- a request body of ours over `bounds.max_request_bytes` (Vertex's 30 MB cap): 413 in OpenAI's shape, found from
  the content-length before the body is read, or while a chunked body arrives; either way its body is dropped
  as it arrives, not buffered — as is any body of a request whose answer was set before its body came (413,
  403, 407);
- an HTTP/1 request head over `bounds.max_header_bytes`: 431, connection closed;
- past `bounds.max_connections` open connections (default: derived from the file-descriptor limit, whose soft
  value is raised to the hard one at start), new connections are closed at accept;
- what was closed or refused is logged at most once per second per reason, with a count — never a line per
  connection (a flood must not become a flood of log lines).
Tunnels (CONNECT to hosts not intercepted, WebSocket) are not timed here: mitmproxy's `tcp_timeout` closes an
idle one. The mitmproxy patch points these need are in mitm_patches.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mitmproxy import connection, ctx, exceptions, http, tcp

from .. import mitm_patches, workers
from ..request_body import too_large
from ..apis.answers import error_response
from .guard import fail_closed
from .runtime import Runtime
from .scope import is_ours

log = logging.getLogger("modelmux")

LOG_INTERVAL = 1.0
MAX_LOGGED_CHARS = 300  # mitmproxy logs a half-sent request head whole: an attacker's bytes, up to the header cap


# --- which connection waits for what, since when (pure: the clock is injected) --------------------------------

@dataclass
class _Conn:
    idle_since: tuple[float, float]  # waiting for a request's headers since then (unless receiving or serving)
    receiving: dict[str, tuple[float, float]] = field(default_factory=dict)  # flow id → its body's last progress
    serving: set[str] = field(default_factory=set)  # flows whose request is complete and whose answer is not
    requests: int = 0
    tunnel: bool = False
    closing: bool = False


class Deadlines:
    """The client-side deadlines of every connection. `expired()` names the connections to close: "headers" (no
    complete request since the connection was accepted or its CONNECT answered), "idle" (kept alive after an
    answer, nothing since), "body" (a request body stalled).

    Time the proxy itself was too busy to read (`stalled`: its event loop running late, e.g. a burst of TLS
    handshakes) does not count against a client: a deadline measures the client's slowness, not the proxy's —
    otherwise an overload would close every connection waiting its turn, and serve no one."""

    def __init__(self, header_seconds: float, idle_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.header_seconds = header_seconds
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._stalled = 0.0  # seconds the proxy was behind, summed since the start
        self._conns: dict[str, _Conn] = {}

    def __len__(self) -> int:
        return len(self._conns)

    def stalled(self, seconds: float) -> None:
        self._stalled += seconds

    def _now(self) -> tuple[float, float]:
        return self.clock(), self._stalled

    def _waited(self, since: tuple[float, float], now: tuple[float, float]) -> float:
        return (now[0] - since[0]) - (now[1] - since[1])

    def connected(self, cid: str) -> None:
        self._conns[cid] = _Conn(idle_since=self._now())

    def disconnected(self, cid: str) -> None:
        self._conns.pop(cid, None)

    def request_headers(self, cid: str, fid: str) -> None:
        if c := self._conns.get(cid):
            c.receiving[fid] = self._now()
            c.requests += 1

    def body_progress(self, cid: str, fid: str) -> None:
        c = self._conns.get(cid)
        if c is not None and fid in c.receiving:
            c.receiving[fid] = self._now()

    def request_complete(self, cid: str, fid: str) -> None:
        if c := self._conns.get(cid):
            c.receiving.pop(fid, None)
            c.serving.add(fid)

    def answered(self, cid: str, fid: str) -> None:
        if c := self._conns.get(cid):
            c.receiving.pop(fid, None)
            c.serving.discard(fid)
            if not c.receiving and not c.serving:
                c.idle_since = self._now()

    def tunnel_established(self, cid: str) -> None:
        """A CONNECT answered 2xx: the first request inside must come within the header limit too."""
        if c := self._conns.get(cid):
            c.idle_since = self._now()
            c.requests = 0

    def opaque(self, cid: str) -> None:
        """TCP passthrough or WebSocket: not HTTP requests any more."""
        if c := self._conns.get(cid):
            c.tunnel = True

    def expired(self) -> list[tuple[str, str]]:
        now = self._now()
        out = []
        for cid, c in self._conns.items():
            if c.tunnel or c.closing:
                continue
            if c.receiving:
                if max(self._waited(since, now) for since in c.receiving.values()) > self.idle_seconds:
                    out.append((cid, "body"))
            elif not c.serving and self._waited(c.idle_since, now) > self.header_seconds:
                out.append((cid, "idle" if c.requests else "headers"))
        for cid, _ in out:
            self._conns[cid].closing = True
        return out


# --- the addon ------------------------------------------------------------------------------------------------

class ConnectionLimits:
    def __init__(self, runtime: Runtime, clock: Callable[[], float] = time.monotonic):
        self.runtime = runtime
        self.gate = mitm_patches.Gate()
        self.deadlines = Deadlines(20.0, 20.0, clock)
        self.fd_limit = 0
        self._capped: dict[str, int] = {}  # flow id → its body limit (flows of ours)
        self._counts: dict[str, int] = {}  # reason → connections closed / refused since the last log line
        self._task: asyncio.Task | None = None
        self._closed_peers: set = set()  # closed by a limit, not yet disconnected: already counted in our line
        self._warned_cap: int | None = None

    def load(self, loader) -> None:
        mitm_patches.install()
        mitm_patches.HOOKS.gate = self.gate
        mitm_patches.HOOKS.bodies = self
        mitm_patches.HOOKS.on_header_overflow = lambda: self._count("header_bytes")
        self.fd_limit = workers.raise_fd_limit()
        self.gate.limit = workers.derived_max_connections(self.fd_limit)
        logging.getLogger("mitmproxy.proxy.server").addFilter(self._filter_log)
        try:
            workers.adopt_loop(asyncio.get_running_loop())
        except RuntimeError:  # no running loop (hook tests): nothing listens either
            pass

    def configure(self, updated) -> None:
        if ctx.options.stream_large_bodies and self.runtime.current is not None:
            # mitmproxy would stream such a request body on before any request hook of modelmux ran: to
            # api.openai.com, with the app's key, past the client-key check
            raise exceptions.OptionsError(
                "modelmux: stream_large_bodies cannot be used with modelmux: a large request body would go on "
                "before modelmux sees it; bounds.max_request_bytes bounds request bodies instead")
        self._apply()

    def running(self) -> None:
        self._apply()
        if note := workers.capacity_warning(self.fd_limit):
            low = min(workers.accept_backlog(self.fd_limit), self.gate.limit or 0) < workers.MIN_BACKLOG
            log.log(logging.WARNING if low else logging.INFO, "modelmux: %s", note)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sweep())

    def done(self) -> None:
        logging.getLogger("mitmproxy.proxy.server").removeFilter(self._filter_log)
        if self._task is not None:
            self._task.cancel()
            self._task = None
        hooks = mitm_patches.HOOKS
        if hooks.gate is self.gate:
            hooks.gate = hooks.bodies = hooks.max_header_bytes = hooks.on_header_overflow = hooks.refuse_all = None

    def _apply(self) -> None:
        """The limits of the current configuration (read again every sweep: a reload applies within one)."""
        snap = self.runtime.current
        if snap is None:
            return
        timeouts, bounds = snap.config.timeouts, snap.config.bounds
        self.deadlines.header_seconds = timeouts.client_header_seconds
        self.deadlines.idle_seconds = timeouts.client_idle_seconds
        derived = workers.derived_max_connections(self.fd_limit)
        self.gate.limit = bounds.max_connections or derived
        if bounds.max_connections and bounds.max_connections > derived and bounds.max_connections != self._warned_cap:
            log.warning("modelmux: bounds.max_connections is %d, more than the file-descriptor limit (%d) leaves room "
                        "for (%d): near it, connections fail with 'Too many open files'", bounds.max_connections,
                        self.fd_limit, derived)
        self._warned_cap = bounds.max_connections
        mitm_patches.HOOKS.max_header_bytes = bounds.max_header_bytes

    # connections
    def client_connected(self, client: connection.Client) -> None:
        if client.transport_protocol == "tcp":
            self.deadlines.connected(client.id)

    def client_disconnected(self, client: connection.Client) -> None:
        self.deadlines.disconnected(client.id)
        self._closed_peers.discard(client.peername)

    # requests
    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.deadlines.request_headers(flow.client_conn.id, flow.id)
        snap = self.runtime.current
        if flow.response or snap is None or not is_ours(flow, snap.intercept_hosts):
            return
        limit = snap.config.bounds.max_request_bytes
        declared = flow.request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            flow.response = _too_large(limit)  # its body is dropped as it arrives (on_body)
        else:
            self._capped[flow.id] = limit

    def on_body(self, flow: http.HTTPFlow, total: int, buffered: bool) -> mitm_patches.Verdict:
        """mitm_patches: a piece of a request body arrived."""
        self.deadlines.body_progress(flow.client_conn.id, flow.id)
        if not buffered:
            return mitm_patches.Verdict.KEEP
        if flow.response is not None:  # answered already (413, 403, 407): the body is not needed
            return mitm_patches.Verdict.DROP
        limit = self._capped.get(flow.id)
        if limit is not None and total > limit:
            flow.response = _too_large(limit)
            return mitm_patches.Verdict.REFUSED
        return mitm_patches.Verdict.KEEP

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        self._capped.pop(flow.id, None)
        self.deadlines.request_complete(flow.client_conn.id, flow.id)

    def response(self, flow: http.HTTPFlow) -> None:
        self._capped.pop(flow.id, None)
        self.deadlines.answered(flow.client_conn.id, flow.id)

    def error(self, flow: http.HTTPFlow) -> None:
        self._capped.pop(flow.id, None)
        self.deadlines.answered(flow.client_conn.id, flow.id)

    def http_connected(self, flow: http.HTTPFlow) -> None:
        # decrypted or tunnelled is decided on the TLS ClientHello, after this: `tcp_start` marks a tunnel
        self.deadlines.tunnel_established(flow.client_conn.id)

    def http_connect_error(self, flow: http.HTTPFlow) -> None:
        self.deadlines.answered(flow.client_conn.id, flow.id)

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        self.deadlines.opaque(flow.client_conn.id)

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        self.deadlines.opaque(flow.client_conn.id)

    # the sweep: close what overstayed, log what was closed or refused
    async def _sweep(self) -> None:
        last_log = time.monotonic()
        while True:
            d = self.deadlines
            tick = min(0.5, max(0.05, min(d.header_seconds, d.idle_seconds) / 4))
            woke = time.monotonic() + tick
            await asyncio.sleep(tick)
            d.stalled(max(0.0, time.monotonic() - woke))  # the loop ran late: the proxy was behind, not the clients
            self._apply()
            for cid, reason in d.expired():
                if self._close(cid):
                    self._count(reason)
            if refused := self.gate.take_refused():
                self._counts["refused"] = self._counts.get("refused", 0) + refused
            if self._counts and time.monotonic() - last_log >= LOG_INTERVAL:
                last_log = time.monotonic()
                self._log_counts()

    def _close(self, cid: str) -> bool:
        server = ctx.master.addons.get("proxyserver")
        handler = server.connections.get(cid) if server is not None else None
        io = handler.transports.get(handler.client) if handler is not None else None
        if io is None or io.handler is None:
            return False
        io.handler.cancel("modelmux: client limit")  # as mitmproxy's own inactivity timeout does
        self._closed_peers.add(handler.client.peername)
        return True

    def _filter_log(self, record: logging.LogRecord) -> bool:
        """mitmproxy's per-connection lines: none for what a limit closed (counted in one line per second), and
        none longer than MAX_LOGGED_CHARS (it quotes what a client sent)."""
        message = record.getMessage()
        if getattr(record, "client", None) in self._closed_peers and message.startswith("Client closed connection"):
            return False
        if len(message) > MAX_LOGGED_CHARS:
            record.msg, record.args = f"{message[:MAX_LOGGED_CHARS]}… ({len(message)} characters)", None
        return True

    def _count(self, reason: str) -> None:
        self._counts[reason] = self._counts.get(reason, 0) + 1

    def _log_counts(self) -> None:
        d, counts = self.deadlines, self._counts
        self._counts = {}
        idle = counts.pop("idle", 0)
        if idle:
            log.debug("modelmux: closed %d kept-alive connection(s) idle for %g s", idle, d.header_seconds)
        messages = {
            "headers": f"sent no complete request headers within {d.header_seconds:g} s "
                       "(timeouts.client_header_seconds)",
            "body": f"sent no request body for {d.idle_seconds:g} s (timeouts.client_idle_seconds)",
            "header_bytes": f"sent request headers over {mitm_patches.HOOKS.max_header_bytes} bytes, answered 431 "
                            "(bounds.max_header_bytes)",
        }
        for reason, n in counts.items():
            if reason == "refused":
                log.warning("modelmux: refused %d new connection(s) in the last second: %d open, the limit "
                            "(bounds.max_connections) is %s", n, self.gate.open, self.gate.limit)
            else:
                log.warning("modelmux: closed %d connection(s) that %s", n, messages[reason])


def _too_large(limit: int) -> http.Response:
    return error_response(too_large(limit))
