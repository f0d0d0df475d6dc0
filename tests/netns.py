"""A private network namespace for the tests that need a proxy bound to a non-loopback address.

`modelmux run --listen-host 0.0.0.0` on the test machine would expose it to whatever network the machine is on.
Inside a fresh network namespace (unshare --net, as root) the only interface is its own loopback: 0.0.0.0 is
"every interface" to the proxy, and that reaches nothing outside. Processes are started in it with
`argv(...)` (nsenter); the test's own clients run in it through `run(...)`, on a thread that joined the
namespace (a thread's network namespace is its own: the rest of the test process stays where it is).
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess

import pytest


class Netns:
    def __init__(self) -> None:
        if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"):
            pytest.skip("needs root, unshare and nsenter (a private network namespace)")
        self.holder = subprocess.Popen(["unshare", "--net", "sh", "-c", "ip link set lo up && echo up && exec sleep 600"],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.holder.stdout.readline() if self.holder.stdout else ""
        if line.strip() != "up":
            self.holder.kill()
            pytest.skip(f"no private network namespace here: {line.strip()!r}")
        self.pid = self.holder.pid
        self._pool = concurrent.futures.ThreadPoolExecutor(1, initializer=self._enter)

    def _enter(self) -> None:
        fd = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY)
        try:
            os.setns(fd, os.CLONE_NEWNET)
        finally:
            os.close(fd)

    def argv(self, argv: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-n", *argv]

    def run(self, fn, *args, timeout: float = 30.0, **kwargs):
        """fn(*args, **kwargs) on the namespace's thread: its sockets are the namespace's."""
        return self._pool.submit(fn, *args, **kwargs).result(timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.holder.kill()
        self.holder.wait(5)
