"""`modelmux run --workers N`: N modelmux processes on the same port(s), for more than one core.

mitmproxy runs on one asyncio loop, so one process uses one core. The parent started by `--workers N` (this
module's `supervise`) starts N ordinary `modelmux run` processes (the same arguments plus a hidden `--worker I`)
that all bind the same listen ports with SO_REUSEPORT; the Linux kernel spreads incoming connections across
them (by a hash of the connection's addresses: a kept-alive connection stays on its worker). docs/scaling.md
says what the workers share and how each piece of state degrades.

Cases:
- a worker is ready when its listeners are bound (mitmproxy's `running` hook): it says so on a socket pair
  shared with the parent; the parent prints mitmproxy's "… listening at HOST:PORT" line once every worker is
  ready (the workers' own such lines are held back, so a launcher waiting for that line waits for all);
- a worker that exits before it is ready (bad option, port taken): the others are stopped, exit 1;
- a worker that dies later (killed, crashed): restarted in its place, at most 5 times in 60 s, else all stop
  and the parent exits 1; meanwhile the kernel sends new connections to the remaining workers;
- SIGINT / SIGTERM to the parent: forwarded to every worker, each gets 10 s to stop, then SIGKILL; exit 0;
- the parent killed outright (SIGKILL): each worker sees its end of the socket pair close and shuts down;
- metrics: every worker writes prometheus-client's multiprocess files in a directory the parent creates and
  removes (PROMETHEUS_MULTIPROC_DIR), so `/metrics` on any worker is the sum over all (metrics.py);
- refused: port 0 (each worker would get a different port), modes that listen on UDP only or on no port
  (wireguard, dns, local, …), a port already in use, platforms other than Linux (elsewhere SO_REUSEPORT
  does not balance connections).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

STOP_GRACE_SECONDS = 10.0
READY_TIMEOUT_SECONDS = 60.0
MAX_RESTARTS, RESTART_WINDOW_SECONDS = 5, 60.0


class WorkersError(Exception):
    """A reason `--workers` cannot be used with these arguments."""


@dataclass(frozen=True)
class Listener:
    description: str  # mitmproxy's name of the mode, e.g. "HTTP(S) proxy"
    host: str
    port: int


def listeners(modes: list[str], listen_host: str, listen_port: int) -> list[Listener]:
    """What the workers will share, one entry per mode; WorkersError when a mode cannot be shared."""
    from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode

    out = []
    for spec in modes:
        try:
            mode = ProxyMode.parse(spec)
        except ValueError as err:
            raise WorkersError(f"invalid mode {spec!r}: {err}") from None
        port = mode.listen_port(listen_port)
        # reverse:https also listens on UDP for HTTP/3, which workers leave out (tcp_only_listeners)
        shareable = mode.transport_protocol == "tcp" or (isinstance(mode, ReverseMode) and mode.scheme == "https")
        if port is None or not shareable:
            raise WorkersError(f"mode {spec!r} cannot be shared by several processes (only TCP listeners can: "
                               "regular, reverse:http(s), upstream, socks5, transparent)")
        if port == 0:
            raise WorkersError(f"--workers needs a fixed port (mode {spec!r} has port 0: each worker would get "
                               "a different one)")
        out.append(Listener(mode.description, mode.listen_host(listen_host), port))
    return out


def check_free(items: list[Listener]) -> None:
    """Refuse a port something already listens on. Binding without SO_REUSEPORT fails even against sockets that
    have it, so workers never silently join another modelmux (or anything else) on the same port."""
    for item in items:
        try:
            socket.create_server((item.host, item.port)).close()
        except OSError as err:
            reason = os.strerror(err.errno) if err.errno else str(err)
            raise WorkersError(f"cannot listen on {item.host or '*'}:{item.port}: {reason}") from None


def ensure_ca(confdir: str, key_size: int = 2048) -> None:
    """Create mitmproxy's CA before the workers start: N workers creating it at once would each write their own
    and clients would see certificates from different CAs."""
    from mitmproxy.addons.tlsconfig import CONF_BASENAME
    from mitmproxy.certs import CertStore

    path = Path(os.path.expanduser(confdir))
    if not (path / f"{CONF_BASENAME}-ca.pem").exists():
        CertStore.create_store(path, CONF_BASENAME, key_size)


# --- inside a worker ----------------------------------------------------------------------------------------

MIN_BACKLOG = 1024  # asyncio's default is 100: a burst of connections beyond it is dropped or reset by the kernel
MAX_BACKLOG = 4096
_SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
FDS_PER_CONNECTION = 4  # a stream holds the client's, mitmproxy's and the relay's ends of the hop, and Vertex's
FD_RESERVE = 64  # listeners, the CA and config files, the dump, the token refresh, the event loop
ACCEPTED_IN_FLIGHT = 4  # asyncio accepts up to `backlog` sockets per wake-up; refusing one takes a few more
MAX_AUTO_CONNECTIONS = 4096  # the derived connection cap never goes higher (memory: docs/security.md)


def fd_limit() -> int:
    """The soft RLIMIT_NOFILE in force (raise_fd_limit raises it at start)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one where allowed; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return fd_limit()


def accept_backlog(fds: int | None = None) -> int:
    """The listen backlog for every server: the system's maximum (net.core.somaxconn), at least MIN_BACKLOG, at
    most MAX_BACKLOG — and small enough that a full queue accepted at once (asyncio takes up to `backlog` per
    wake-up) fits in the file descriptors: with `ulimit -n 1024` it is 120."""
    fds = fd_limit() if fds is None else fds
    wanted = max(MIN_BACKLOG, min(_somaxconn() or 0, MAX_BACKLOG))
    return max(16, min(wanted, (fds - FD_RESERVE) // (2 * ACCEPTED_IN_FLIGHT)))


def derived_max_connections(fds: int | None = None) -> int:
    """The connection cap for `bounds.max_connections: null`: every connection may hold FDS_PER_CONNECTION
    descriptors, besides FD_RESERVE and the sockets being accepted; at most MAX_AUTO_CONNECTIONS."""
    fds = fd_limit() if fds is None else fds
    room = fds - FD_RESERVE - ACCEPTED_IN_FLIGHT * accept_backlog(fds)
    return max(16, min(MAX_AUTO_CONNECTIONS, room // FDS_PER_CONNECTION))


def capacity_warning(fds: int | None = None) -> str | None:
    """What limits the process below the defaults: the kernel's backlog cap, or the file-descriptor limit."""
    fds = fd_limit() if fds is None else fds
    cap = _somaxconn()
    if accept_backlog(fds) < MIN_BACKLOG or derived_max_connections(fds) < MAX_AUTO_CONNECTIONS:
        return (f"the file-descriptor limit is {fds} (ulimit -n): at most {derived_max_connections(fds)} connections "
                f"at once and an accept backlog of {accept_backlog(fds)}; raise it (e.g. LimitNOFILE=65536 in a "
                "systemd unit) for more")
    if cap is not None and cap < MIN_BACKLOG:
        return (f"the kernel caps listen backlogs at {cap} (net.core.somaxconn): a burst of more connections is "
                f"dropped or reset; raise it with `sysctl -w net.core.somaxconn={MAX_BACKLOG}`")
    return None


def _somaxconn() -> int | None:
    try:
        return int(_SOMAXCONN.read_text())
    except (OSError, ValueError):
        return None


def _server_options(port: int | None, shared_ports: frozenset[int], kwargs: dict) -> dict:
    kwargs.setdefault("backlog", accept_backlog())
    if port in shared_ports:
        kwargs.setdefault("reuse_port", True)
    return kwargs


class ListenerLoop(asyncio.SelectorEventLoop):
    """The event loop of `modelmux run`. mitmproxy creates its TCP listeners with asyncio.start_server, that is with
    the running loop's create_server: here every server gets `accept_backlog()` (the relay on 127.0.0.1:0 too),
    and servers on the ports shared by `--workers` get SO_REUSEPORT."""

    def __init__(self, shared_ports: set[int] | frozenset[int] = frozenset()):
        super().__init__()
        self.shared_ports = frozenset(shared_ports)

    async def create_server(self, protocol_factory, host=None, port=None, **kwargs):
        return await super().create_server(protocol_factory, host, port,
                                           **_server_options(port, self.shared_ports, kwargs))


def adopt_loop(loop: asyncio.AbstractEventLoop) -> None:
    """`mitmdump -s`: mitmproxy made the loop, so the ListenerLoop's create_server is put on that loop object
    (before the listeners start: the addon's load hook)."""
    if isinstance(loop, ListenerLoop) or getattr(loop.create_server, "_modelmux", False):
        return
    plain = loop.create_server

    async def create_server(protocol_factory, host=None, port=None, **kwargs):
        return await plain(protocol_factory, host, port, **_server_options(port, frozenset(), kwargs))

    create_server._modelmux = True  # type: ignore[attr-defined]
    loop.create_server = create_server  # type: ignore[method-assign]


def tcp_only_listeners() -> None:
    """In a worker: a reverse:https mode listens on TCP only. mitmproxy also opens a UDP socket on its port for
    HTTP/3 (mitmproxy_rs binds it, without SO_REUSEPORT), which a second worker could not bind; OpenAI clients
    speak HTTP/1.1 and HTTP/2 over TCP. The TCP listener is made exactly as mitmproxy makes it."""
    from mitmproxy.proxy import mode_servers

    cls = mode_servers.AsyncioServerInstance
    if getattr(cls.listen, "_modelmux_tcp_only", False):
        return
    original = cls.listen

    async def listen(self, host: str, port: int):
        if self.mode.transport_protocol == "both":
            return [await asyncio.start_server(self.handle_stream, host, port)]
        return await original(self, host, port)

    listen._modelmux_tcp_only = True  # type: ignore[attr-defined]
    cls.listen = listen


class _HoldListeningLines(logging.Filter):
    """A worker's "… listening at …" lines are held back: the parent prints them once every worker listens."""

    def filter(self, record: logging.LogRecord) -> bool:
        return " listening at " not in record.getMessage()


class WorkerLink:
    """mitmproxy addon in a worker: tells the parent when the listeners are up; shuts down when the parent is
    gone (its end of the socket pair closes, whatever killed it)."""

    def __init__(self, fd: int, shutdown: Callable[[], None]):
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        self.shutdown = shutdown
        logging.getLogger("mitmproxy.proxy.mode_servers").addFilter(_HoldListeningLines())

    def running(self) -> None:  # called after mitmproxy's servers are listening
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self._parent_spoke)
        try:
            self.sock.send(b"ready\n")
        except OSError:
            self.shutdown()

    def _parent_spoke(self) -> None:
        try:
            data = self.sock.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.shutdown()

    def done(self) -> None:
        self.sock.close()


# --- the parent ---------------------------------------------------------------------------------------------

@dataclass
class _Worker:
    index: int
    popen: subprocess.Popen
    sock: socket.socket
    ready: bool = False
    linked: bool = True  # its socket is registered (until the worker's end closes)
    started: float = field(default_factory=time.monotonic)


def supervise(n: int, argv_for: Callable[[int, int], list[str]], items: list[Listener]) -> int:
    """Start n workers (argv_for(index, fd) is a worker's command line, fd its end of the socket pair), announce
    the listeners once all are ready, restart workers that die, stop them all on SIGINT / SIGTERM."""
    from prometheus_client import multiprocess

    metrics_dir = tempfile.mkdtemp(prefix="modelmux-metrics-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    sel = selectors.DefaultSelector()
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    sel.register(wake_r, selectors.EVENT_READ, None)
    stop: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    old_wakeup = signal.set_wakeup_fd(wake_w.fileno())
    workers: dict[int, _Worker] = {}
    restarts: deque[float] = deque()

    def start(index: int) -> _Worker:
        mine, theirs = socket.socketpair()
        try:
            popen = subprocess.Popen(argv_for(index, theirs.fileno()), env=env, pass_fds=(theirs.fileno(),),
                                     stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        mine.setblocking(False)
        w = _Worker(index, popen, mine)
        sel.register(mine, selectors.EVENT_READ, w)
        workers[index] = w
        return w

    def unlink(w: _Worker) -> None:
        if w.linked:
            sel.unregister(w.sock)
            w.sock.close()
            w.linked = False

    def forget(w: _Worker) -> None:
        unlink(w)
        multiprocess.mark_process_dead(w.popen.pid, metrics_dir)  # its live gauges go; its counters stay

    announced = False
    try:
        for i in range(1, n + 1):
            start(i)
        while not stop:
            for key, _ in sel.select(timeout=0.5):
                if key.data is None:
                    _drain(wake_r)
                    continue
                w: _Worker = key.data
                try:
                    data = w.sock.recv(64)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if b"ready" in data:
                    w.ready = True
                elif not data:
                    unlink(w)  # its end closed: it is exiting (poll() below sees it go)
            for w in list(workers.values()):
                if stop:
                    break  # a Ctrl-C reaches the workers too: those exits are not failures
                status = w.popen.poll()
                if status is None:
                    if not w.ready and time.monotonic() - w.started > READY_TIMEOUT_SECONDS:
                        _say(f"worker {w.index} (pid {w.popen.pid}) not listening after {READY_TIMEOUT_SECONDS:g} s")
                        return 1
                    continue
                forget(w)
                del workers[w.index]
                if not w.ready:
                    _say(f"worker {w.index} (pid {w.popen.pid}) {_exited(status)} before listening; stopping")
                    return 1
                now = time.monotonic()
                while restarts and restarts[0] < now - RESTART_WINDOW_SECONDS:
                    restarts.popleft()
                if len(restarts) >= MAX_RESTARTS:
                    _say(f"worker {w.index} (pid {w.popen.pid}) {_exited(status)}; {MAX_RESTARTS} restarts in "
                         f"{RESTART_WINDOW_SECONDS:g} s already, stopping")
                    return 1
                restarts.append(now)
                new = start(w.index)
                _say(f"worker {w.index} (pid {w.popen.pid}) {_exited(status)}; restarted as pid {new.popen.pid}")
            if not announced and len(workers) == n and all(w.ready for w in workers.values()):
                announced = True
                pids = ", ".join(str(workers[i].popen.pid) for i in sorted(workers))
                for item in items:
                    host = f"[{item.host}]" if ":" in item.host else (item.host or "*")
                    print(f"{item.description} listening at {host}:{item.port} ({n} workers, pids {pids}).",
                          flush=True)
        return 0
    finally:
        _stop_all(list(workers.values()))
        for w in workers.values():
            forget(w)
        signal.set_wakeup_fd(old_wakeup)
        for s, handler in previous.items():
            signal.signal(s, handler)
        sel.close()
        wake_r.close()
        wake_w.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _stop_all(workers: list[_Worker]) -> None:
    for w in workers:
        if w.popen.poll() is None:
            w.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for w in workers:
        try:
            w.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"worker {w.index} (pid {w.popen.pid}) did not stop in {STOP_GRACE_SECONDS:g} s; killing it")
            w.popen.kill()
            w.popen.wait(5)


def _exited(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(512):
            pass
    except OSError:
        pass


def _say(message: str) -> None:
    print(f"modelmux: {message}", file=sys.stderr, flush=True)
