"""Loads the modelmux configuration into the shared Runtime.

Cases:
- `--set modelmux_config=FILE` (or env MODELMUX_CONFIG when the option is empty): loaded and validated at
  start-up; an invalid file is an OptionsError naming the key, so mitmproxy refuses it (and keeps the
  previous configuration when it was a change).
- no configuration at all: an error is logged and modelmux stays inactive (mitmproxy passes every flow
  through untouched), as mitmproxy's own addons do when their option is unset.
- `connection_strategy` is forced to `lazy`: with `eager` mitmproxy connects to api.openai.com at CONNECT time,
  before the request hook can redirect the flow (offline every request fails; online it wastes a connection).
"""

from __future__ import annotations

import logging
import os

from mitmproxy import ctx, exceptions

from ..config import ConfigError, load_config
from .runtime import Runtime

log = logging.getLogger("modelmux")


class ConfigLoader:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def load(self, loader):
        loader.add_option("modelmux_config", str, "",
                          "modelmux configuration file (YAML); empty: the MODELMUX_CONFIG environment variable.")
        loader.add_option("modelmux_dump", str, "",
                          "Append every translated exchange to this file as a JSON line (overrides dump.path).")

    def configure(self, updated):
        if "connection_strategy" in ctx.options.keys() and ctx.options.connection_strategy != "lazy":
            ctx.options.connection_strategy = "lazy"
        if "modelmux_dump" in updated and ctx.options.modelmux_dump:
            self.runtime.dump.open(ctx.options.modelmux_dump)
        if "modelmux_config" in updated:
            path = ctx.options.modelmux_config or os.environ.get("MODELMUX_CONFIG", "")
            if not path:
                self.runtime.current = None
                return
            try:
                config = load_config(path)
            except ConfigError as err:
                raise exceptions.OptionsError(f"modelmux: {err}") from None
            snap = self.runtime.install(config)
            self.runtime.dump.open(ctx.options.modelmux_dump or config.dump.path)
            log.info("modelmux: %s, project %s, region %s, %d mapped model(s), credentials: %s",
                     path, config.vertex.project, config.vertex.region, len(config.models.map), snap.tokens.source)

    def running(self):
        if self.runtime.current is None:
            log.error("modelmux is inactive: no configuration (--set modelmux_config=FILE or MODELMUX_CONFIG)")

    def done(self):
        if self.runtime.current is not None:
            self.runtime.current.tokens.close()
        self.runtime.dump.close()
