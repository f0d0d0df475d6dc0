"""Optional inbound authentication: only apps holding a modelmux key are served.

Cases:
- `security.client_keys` empty (default): every client on the listener is served (it listens on loopback
  unless told otherwise);
- set: a request to any modelmux endpoint must carry one of the keys as `Authorization: Bearer <key>` — the
  app's OPENAI_API_KEY becomes its modelmux key — else an OpenAI-shaped 401 `invalid_api_key`, answered
  locally. Keys are compared in constant time and never logged. The key is never forwarded (the relay sends
  only modelmux's own Google token upstream).
For proxy-level authentication (before any TLS interception) mitmproxy's own `proxyauth` option works as is
(`modelmux run --set proxyauth=user:pass`).
"""

from __future__ import annotations

from mitmproxy import http

from ..apis.answers import error_response
from ..translate.errors import OpenAIError
from .guard import fail_closed
from .runtime import Runtime
from .scope import is_ours


KEY_NAME = "modelmux_key"  # the client key's name (never the key), on flows of a key-gated modelmux


def _bearer(flow: http.HTTPFlow) -> str:
    value = flow.request.headers.get("authorization", "")
    return value[7:].strip() if value[:7].lower() == "bearer " else ""


class ClientAuth:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        snap = self.runtime.current
        if flow.response or snap is None or not snap.config.security.client_keys:
            return
        if not is_ours(flow, snap.intercept_hosts):
            return
        entry = snap.config.security.client_for(_bearer(flow))
        if entry is None:
            flow.response = error_response(OpenAIError(
                401, "Incorrect API key provided: this modelmux accepts only its configured client keys "
                     "(security.client_keys).", "invalid_request_error", None, "invalid_api_key"))
            return
        flow.metadata[KEY_NAME] = entry.name  # who asked: limits, spend and stored responses go by this name
