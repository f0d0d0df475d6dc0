"""Child processes modelmux starts (the demo, the benchmark, the tests): start, wait for a readiness line,
drain output, stop.

Output is drained by a thread into a list (a full pipe would block the child) so it can be read afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

PROXY_ENV_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy")


class Proc:
    def __init__(self, argv: list[str], ready: str, *, env: dict[str, str] | None = None, timeout: float = 20.0,
                 cwd: str | Path | None = None):
        """Start argv; wait until a line matches the `ready` regex (group 1 captured as `self.match`)."""
        self.argv = argv
        self.lines: list[str] = []
        self._ready = re.compile(ready)
        self._event = threading.Event()
        self.match: re.Match[str] | None = None
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        # children (proxy, emulator) never talk through a proxy meant for the clients
        for var in PROXY_ENV_VARS:
            if env is None or var not in env:
                full_env.pop(var, None)
        self.popen = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace")
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()
        if not self._event.wait(timeout):
            self.stop()
            raise RuntimeError(f"{argv[:4]} not ready after {timeout}s:\n" + self.output())
        if self.match is None:
            raise RuntimeError(f"{argv[:4]} exited before it was ready:\n" + self.output())
        self.ready_after = time.monotonic() - self.started

    def _drain(self) -> None:
        assert self.popen.stdout
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))
            if self.match is None:
                m = self._ready.search(line)
                if m:
                    self.match = m
                    self._event.set()
        self._event.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_lines(self, needle: str, count: int, timeout: float = 10.0) -> list[str]:
        """The lines containing `needle`, once there are `count` of them (or whatever there is after `timeout`):
        a process logs an exchange just after its client has the answer."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in list(self.lines) if needle in line]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._thread.join(5)
        return self.popen.returncode




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not listening after {timeout}s")


# the line mitmproxy prints per listener, with the port actually bound
PROXY_READY = r"listening at [^\s]*?:(\d+)"
EMULATOR_READY = r"modelmux emulator listening on (http://\S+)"
