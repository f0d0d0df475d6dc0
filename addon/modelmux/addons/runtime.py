"""What the modelmux addons share: the loaded config and the objects built from it.

One `Runtime` is created by the entry point and handed to each addon; `ConfigLoader` fills it in `configure`.
A new config replaces the whole snapshot at once, so a request never sees half of an old and half of a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..auth import TokenProvider
from ..config import Config
from ..dump import DumpWriter
from ..metrics import Metrics
from ..thinking_cache import ThinkingCache
from ..upstream import Relay
from ..upstream_http import UpstreamClient
from ..vertex import Router


@dataclass(frozen=True)
class Snapshot:
    config: Config
    router: Router
    tokens: TokenProvider
    intercept_hosts: frozenset[str]


class Runtime:
    def __init__(self) -> None:
        self.current: Snapshot | None = None
        self.thinking = ThinkingCache()  # outlives config reloads: a tool loop may span one
        self.relay = Relay()  # so do the circuit breakers' memories and the upstream connections
        self.dump = DumpWriter()
        self.worker: int | None = None  # which of `modelmux run --workers N` this process is (1…N), else None
        self.metrics = Metrics(self.relay.health, lambda: self.current.tokens.refreshes if self.current else 0)
        # addons whose state follows the configuration: `checks` may refuse one (ConfigError, nothing changes),
        # `installed` are told of each one installed (at start and on every reload)
        self.checks: list[Callable[[Config], None]] = []
        self.installed: list[Callable[[Snapshot], None]] = []

    def check(self, config: Config) -> None:
        """Raises ConfigError when an addon refuses `config`."""
        for check in self.checks:
            check(config)

    def install(self, config: Config, tokens: TokenProvider | None = None) -> Snapshot:
        self.check(config)
        snap = Snapshot(config=config, router=Router(config), tokens=tokens or TokenProvider(config.auth),
                        intercept_hosts=frozenset(config.intercept.hosts))
        self.relay.breaker.cfg = config.circuit_breaker
        UpstreamClient.max_body_bytes = config.bounds.max_upstream_bytes  # the relay's client reads it per answer
        self.current = snap
        for follow in self.installed:
            follow(snap)
        return snap
