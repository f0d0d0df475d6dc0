"""Real processes for end-to-end tests: start, wait for a readiness line, drain output, stop.

Output is drained by a thread into a list (a full pipe would block the child); tests can read it all
afterwards (e.g. to check that no secret was logged).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


class Proc:
    def __init__(self, argv: list[str], ready: str, *, env: dict[str, str] | None = None, timeout: float = 20.0):
        """Start argv; wait until a line matches the `ready` regex (group 1 captured as `self.match`)."""
        self.argv = argv
        self.lines: list[str] = []
        self._ready = re.compile(ready)
        self._event = threading.Event()
        self.match: re.Match[str] | None = None
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        # the proxy must never talk through a proxy set for the test's clients
        for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
            if env is None or var not in env:
                full_env.pop(var, None)
        self.popen = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
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


def emulator(tmp: Path, *extra: str) -> tuple[Proc, str, Path]:
    """The Vertex emulator with a fresh service-account key; returns (proc, base url, key file)."""
    key = tmp / "service-account.json"
    proc = Proc([sys.executable, "-m", "modelmux.emulator", "--port", "0", "--service-account-out", str(key), *extra],
                r"modelmux emulator listening on (http://\S+)", env={"PYTHONPATH": str(ROOT / "addon")})
    return proc, proc.match.group(1), key


PROXY_READY = r"HTTP\(S\) proxy listening at [^\s]*?:(\d+)"


def mitmdump(config: Path, confdir: Path, *extra: str) -> Proc:
    """`mitmdump -s addon/modelmux_addon.py` straight from the checkout (no installation needed)."""
    return Proc([str(VENV_BIN / "mitmdump"), "-s", str(ROOT / "addon" / "modelmux_addon.py"),
                 "--listen-host", "127.0.0.1", "-p", "0", "--set", f"confdir={confdir}",
                 "--set", f"modelmux_config={config}", *extra], PROXY_READY)


def modelmux_run(config: Path, confdir: Path, *extra: str) -> Proc:
    """The installed `modelmux run` console script."""
    return Proc([str(VENV_BIN / "modelmux"), "run", "--config", str(config), "--listen-port", "0",
                 "--confdir", str(confdir), *extra], PROXY_READY)
