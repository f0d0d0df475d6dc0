"""mitmproxy addons of modelmux, one concern each, composed in order by `make_addons`."""

from __future__ import annotations

from .config_loader import ConfigLoader
from .local_endpoints import LocalEndpoints
from .runtime import Runtime
from .translate import Translate


def make_addons(runtime: Runtime | None = None) -> list[object]:
    """The addon chain: config first (others read the Runtime it fills), local answers before translation."""
    runtime = runtime or Runtime()
    return [ConfigLoader(runtime), LocalEndpoints(runtime), Translate(runtime)]


__all__ = ["make_addons", "Runtime", "ConfigLoader", "LocalEndpoints", "Translate"]
