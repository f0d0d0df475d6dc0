"""mitmproxy addons of modelmux, one concern each, composed in order by `make_addons`."""

from __future__ import annotations

from .client_auth import ClientAuth
from .config_loader import ConfigLoader
from .local_endpoints import LocalEndpoints
from .local_errors import LocalErrors
from .redact import RedactCredentials
from .runtime import Runtime
from .translate import Translate


def make_addons(runtime: Runtime | None = None) -> list[object]:
    """The addon chain: config first (others read the Runtime it fills), then inbound auth, then local answers,
    then translation; then the count of errors answered locally; last, the client's credentials redacted from the
    flow (after every other request hook)."""
    runtime = runtime or Runtime()
    return [ConfigLoader(runtime), ClientAuth(runtime), LocalEndpoints(runtime), Translate(runtime),
            LocalErrors(runtime), RedactCredentials(runtime)]


__all__ = ["make_addons", "Runtime", "ClientAuth", "ConfigLoader", "LocalEndpoints", "LocalErrors", "Translate"]
