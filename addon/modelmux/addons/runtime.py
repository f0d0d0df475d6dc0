"""What the modelmux addons share: the loaded config and the objects built from it.

One `Runtime` is created by the entry point and handed to each addon; `ConfigLoader` fills it in `configure`.
A new config replaces the whole snapshot at once, so a request never sees half of an old and half of a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..auth import TokenProvider
from ..config import Config
from ..dump import DumpWriter
from ..apis.responses import Archive
from ..metrics import Metrics
from ..sealing_keys import sealing_keys
from ..state import Store, open_store
from ..state.thinking import SharedThinkingCache
from ..thinking_cache import Thinking, ThinkingCache
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
        self.thinking = Thinking(ThinkingCache())  # outlives config reloads: a tool loop may span one
        self.relay = Relay()  # so do the circuit breakers' memories and the upstream connections
        self.dump = DumpWriter()
        self.worker: int | None = None  # which of `modelmux run --workers N` this process is (1…N), else None
        self.metrics = Metrics(self.relay.health, lambda: self.current.tokens.refreshes if self.current else 0)
        # addons whose state follows the configuration: `checks` may refuse one (ConfigError, nothing changes),
        # `installed` are told of each one installed (at start and on every reload)
        self.checks: list[Callable[[Config], None]] = []
        self.installed: list[Callable[[Snapshot], None]] = []
        self.confdir = Path("~/.mitmproxy")  # mitmproxy's confdir: the embedded store and the sealing key live there
        self.store: Store | None = None  # opened for the current `state` config; nothing is touched before its use
        self._store_config: object = None
        self._keys: list[bytes] | None = None
        self._keys_config: object = None
        self.archive = Archive()  # stored-response writes still in flight
        self.exchange_ended: list[Callable[[object, object], None]] = []  # told of each (flow, Exchange) that ended
        self.closing: list[Callable[[], object]] = []  # awaited at shutdown, before the store closes

    def check(self, config: Config) -> None:
        """Raises ConfigError when an addon refuses `config`."""
        for check in self.checks:
            check(config)

    def install(self, config: Config, tokens: TokenProvider | None = None) -> Snapshot:
        self.check(config)
        snap = Snapshot(config=config, router=Router(config), tokens=tokens or TokenProvider(config.auth),
                        intercept_hosts=frozenset(config.intercept.hosts))
        self.relay.breaker.cfg = config.circuit_breaker
        if self.store is None or self._store_config != (config.state, self.confdir):
            old, self.store = self.store, open_store(config.state, self.confdir, on_error=self.metrics.state_error)
            self._store_config = (config.state, self.confdir)
            self.thinking.shared = SharedThinkingCache(self.store)
            if old is not None:
                _close_later(old)
        UpstreamClient.max_body_bytes = config.bounds.max_upstream_bytes  # the relay's client reads it per answer
        self.current = snap
        for follow in self.installed:
            follow(snap)
        return snap

    @property
    def sealing_keys(self) -> list[bytes]:
        """The keys of `responses.sealing_key` (made once when first needed, then kept)."""
        cfg = self.current.config.responses
        if self._keys is None or self._keys_config != (cfg.sealing_key, cfg.previous_sealing_keys):
            self._keys = sealing_keys(cfg, self.confdir)
            self._keys_config = (cfg.sealing_key, cfg.previous_sealing_keys)
        return self._keys

    async def close(self) -> None:
        for finish in self.closing:
            await finish()
        if self.store is not None:
            await self.store.close()


def _close_later(store: Store) -> None:
    """A store replaced by a reload is closed once requests in flight had their time."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    loop.call_later(30, lambda: loop.create_task(store.close()))
