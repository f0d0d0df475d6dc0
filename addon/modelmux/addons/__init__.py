"""mitmproxy addons of modelmux, one concern each, composed in order by `make_addons`."""

from __future__ import annotations

from .client_auth import ClientAuth
from .connection_limits import ConnectionLimits
from .config_loader import ConfigLoader
from .exposure import Exposure
from .forwarding import Forwarding
from .intercept_scope import InterceptScope
from .local_endpoints import LocalEndpoints
from .local_errors import LocalErrors
from .redact import RedactCredentials
from .rate_limits import RateLimitHeaders, RateLimits
from .runtime import Runtime
from .stored_responses import StoredResponses
from .translate import Translate


def make_addons(runtime: Runtime | None = None) -> list[object]:
    """The addon chain: config first (others read the Runtime it fills); then what keeps the proxy safe to expose —
    who may use a forwarding listener, the client connection's limits, where forwarded traffic may go, what is
    decrypted; then inbound auth, rate limits and budgets, the stored responses' reads, local answers and
    translation (its answers get the rate-limit headers after it); then the count of errors answered locally; last,
    the client's credentials redacted from the flow (after every other request hook)."""
    runtime = runtime or Runtime()
    limits = RateLimits(runtime)
    return [ConfigLoader(runtime), Exposure(runtime), ConnectionLimits(runtime), Forwarding(runtime),
            InterceptScope(runtime), ClientAuth(runtime), limits, StoredResponses(runtime),
            LocalEndpoints(runtime), Translate(runtime), RateLimitHeaders(limits), LocalErrors(runtime),
            RedactCredentials(runtime)]


__all__ = ["make_addons", "Runtime", "ClientAuth", "ConfigLoader", "ConnectionLimits", "Exposure", "Forwarding",
           "InterceptScope", "LocalEndpoints", "LocalErrors", "RateLimitHeaders", "RateLimits", "RedactCredentials",
           "StoredResponses", "Translate"]
