"""Keeps the client's credentials out of the flows modelmux keeps: saved with `-w` / `save_stream_file`, shown in
mitmweb, or anywhere else a flow outlives its request.

Cases:
- a flow of ours (scope.is_ours), at the end of the request phase — after ClientAuth has checked the key and
  Translate has used the request: the values of `authorization`, `proxy-authorization`, `api-key` (Azure-style
  clients) and `x-api-key` are replaced by `<redacted by modelmux>`; the header names stay, so a flow still
  shows that a credential was sent. Nothing of ours needs them later: the relay sends only modelmux's own token.
- a flow of ours that ends before its request phase (the client left mid-body, a time-out): the same, in
  `error` (mitmproxy's `save` addon writes such flows too);
- every flow, with modelmux active: the password mitmproxy's proxyauth notes in `flow.metadata["proxyauth"]`
  (user, password) — it would be saved with the flow — keeps only the user (proxyauth has its own copy).
- any other flow (a host modelmux does not intercept, or modelmux inactive) is forwarded to its own server, with
  its credentials: untouched.
Must be the last addon with a `request` hook (addons/__init__.py).
"""

from __future__ import annotations

from mitmproxy import http

from .guard import fail_closed
from .runtime import Runtime
from .scope import is_ours

CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "api-key", "x-api-key")
REDACTED = "<redacted by modelmux>"


class RedactCredentials:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    @fail_closed
    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._proxy_password(flow)

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        self._proxy_password(flow)
        self._headers(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._proxy_password(flow)
        self._headers(flow)

    def _proxy_password(self, flow: http.HTTPFlow) -> None:
        noted = flow.metadata.get("proxyauth")
        if self.runtime.current is not None and isinstance(noted, (tuple, list)) and len(noted) == 2:
            flow.metadata["proxyauth"] = (noted[0], REDACTED)

    def _headers(self, flow: http.HTTPFlow) -> None:
        snap = self.runtime.current
        if snap is None or not is_ours(flow, snap.intercept_hosts):
            return
        headers = flow.request.headers
        for name in CREDENTIAL_HEADERS:
            if values := headers.get_all(name):
                headers.set_all(name, [REDACTED] * len(values))
