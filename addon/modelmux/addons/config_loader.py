"""Loads the modelmux configuration into the shared Runtime.

Cases:
- `--set modelmux_config=FILE` (or env MODELMUX_CONFIG when the option is empty): loaded and validated at
  start-up; an invalid file is an OptionsError naming the key, so mitmproxy refuses it (and keeps the
  previous configuration when it was a change).
- no configuration at all: an error is logged and modelmux stays inactive (mitmproxy passes every flow
  through untouched), as mitmproxy's own addons do when their option is unset.
- the file changes while running (checked twice a second): reloaded without a restart; requests in flight finish
  on the configuration they started with, the next ones use the new one; an invalid edit — including a dump path
  that cannot be opened — is refused with a log line naming the problem and the previous configuration (and
  dump file) stays; nothing an edit does stops the watching (`--set modelmux_watch=false` turns it off);
- a dump file (`modelmux_dump` or `dump.path`) that cannot be opened at start is an OptionsError naming it;
- `connection_strategy` is forced to `lazy`: with `eager` mitmproxy connects to api.openai.com at CONNECT time,
  before the request hook can redirect the flow (offline every request fails; online it wastes a connection).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from mitmproxy import ctx, exceptions

from ..config import Config, ConfigError, load_config
from .runtime import Runtime

log = logging.getLogger("modelmux")

WATCH_INTERVAL = 0.5  # seconds between looks at the config file: an edit applies within a second


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class ConfigLoader:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.path = ""
        self._stamp: tuple[int, int] | None = None
        self._watcher: asyncio.Task | None = None

    def load(self, loader):
        loader.add_option("modelmux_config", str, "",
                          "modelmux configuration file (YAML); empty: the MODELMUX_CONFIG environment variable.")
        loader.add_option("modelmux_watch", bool, True, "Reload the modelmux configuration when its file changes.")
        loader.add_option("modelmux_dump", str, "",
                          "Append every translated exchange to this file as a JSON line (overrides dump.path).")

    def configure(self, updated):
        if "connection_strategy" in ctx.options.keys() and ctx.options.connection_strategy != "lazy":
            ctx.options.connection_strategy = "lazy"
        if "modelmux_dump" in updated and ctx.options.modelmux_dump:
            try:
                self._open_dump(ctx.options.modelmux_dump)
            except ConfigError as err:
                raise exceptions.OptionsError(f"modelmux: {err}") from None
        if "modelmux_config" in updated:
            path = ctx.options.modelmux_config or os.environ.get("MODELMUX_CONFIG", "")
            if not path:
                self.runtime.current = None
                return
            stamp = _stamp(path)
            try:
                self._apply(load_config(path), path)
            except ConfigError as err:
                raise exceptions.OptionsError(f"modelmux: {err}") from None
            self.path, self._stamp = path, stamp

    def _open_dump(self, path: str | None) -> None:
        try:
            self.runtime.dump.open(path)
        except OSError as err:
            raise ConfigError(f"the dump file {path} (dump.path / --dump) cannot be opened: {err.strerror or err}"
                              ) from None

    def _apply(self, config: Config, path: str) -> None:
        """Make `config` the current one. Raises ConfigError, with nothing changed, when an addon's check refuses it
        (e.g. an exposed listener without auth) or its dump cannot be opened."""
        self.runtime.check(config)
        self._open_dump(ctx.options.modelmux_dump or config.dump.path)
        if "confdir" in ctx.options.keys():
            self.runtime.confdir = Path(ctx.options.confdir).expanduser()
        old = self.runtime.current
        # same credentials: keep the token provider and its cached token (no refresh just for a reload)
        tokens = old.tokens if old is not None and old.config.auth == config.auth else None
        snap = self.runtime.install(config, tokens)
        log.info("modelmux: %s, project %s, region %s, %d mapped model(s), credentials: %s",
                 path, config.vertex.project, config.vertex.region, len(config.models.map), snap.tokens.source)

    def running(self):
        if self.runtime.current is None:
            log.error("modelmux is inactive: no configuration (--set modelmux_config=FILE or MODELMUX_CONFIG)")
        elif ctx.options.modelmux_watch and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                self._reload_if_changed()
            except Exception:  # a bug in one reload must not end the watching (the task would die silently)
                log.exception("modelmux: reloading %s failed; keeping the previous configuration", self.path)

    def _reload_if_changed(self) -> None:
        stamp = _stamp(self.path)
        if stamp is None or stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            config = load_config(self.path)
        except ConfigError as err:
            log.error("modelmux: %s changed but is invalid, keeping the previous configuration: %s", self.path, err)
            return
        try:
            self._apply(config, self.path)
        except ConfigError as err:  # valid, but refused: an addon's check, or a dump file that cannot be opened
            log.error("modelmux: %s changed but is refused, keeping the previous configuration: %s", self.path, err)
            return
        log.info("modelmux: reloaded %s", self.path)

    async def done(self):
        if self._watcher is not None:
            self._watcher.cancel()
        if self.runtime.current is not None:
            self.runtime.current.tokens.close()
        await self.runtime.close()
        self.runtime.dump.close()
