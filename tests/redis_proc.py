"""A real `redis-server` (the Debian package) on a free loopback port, for the tests that need one.

Without redis-server those tests skip, except in CI (`CI` set), where they fail: `.ci/run` installs it.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from procs import Proc, free_port, self_signed_cert

REDIS_SERVER = shutil.which("redis-server")
READY = r"Ready to accept connections"


def require_redis() -> str:
    if REDIS_SERVER is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (CI must install the Debian package redis-server)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return REDIS_SERVER


class RedisServer:
    """One redis-server; `stop()` / `start()` again on the same port (data is not kept: no persistence), `pause()`
    / `resume()` to make it hang (SIGSTOP / SIGCONT)."""

    def __init__(self, tmp: Path, *, password: str | None = None, tls: bool = False):
        self.binary = require_redis()
        self.tmp = tmp
        self.password = password
        self.port = free_port()
        self.tls_ca: Path | None = None
        self.argv = [self.binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp),
                     "--daemonize", "no", "--protected-mode", "no"]
        if password:
            self.argv += ["--requirepass", password]
        if tls:
            cert, key = self_signed_cert(tmp)
            self.tls_ca = cert
            self.argv += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                          "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        else:
            self.argv += ["--port", str(self.port)]
        self.proc: Proc | None = None
        self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls_ca is not None:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls_ca}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = Proc(self.argv, READY, timeout=20)

    def stop(self) -> None:
        if self.proc is not None:
            self.resume()
            self.proc.stop()
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.popen.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.popen.poll() is None:
            os.kill(self.proc.popen.pid, signal.SIGCONT)
