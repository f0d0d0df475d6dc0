"""Keeps the client's credentials out of the flows modelmux keeps: saved with `-w` / `save_stream_file`, shown in
mitmweb, or anywhere else a flow outlives its request.

Cases:
- a flow of ours (scope.is_ours), at the end of the request phase — after ClientAuth has checked the key and
  Translate has used the request: the values of `authorization`, `proxy-authorization`, `api-key` (Azure-style
  clients) and `x-api-key` are replaced by `<redacted by modelmux>`; the header names stay, so a flow still
  shows that a credential was sent. Nothing of ours needs them later: the relay sends only modelmux's own token.
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
    def request(self, flow: http.HTTPFlow) -> None:
        snap = self.runtime.current
        if snap is None or not is_ours(flow, snap.intercept_hosts):
            return
        headers = flow.request.headers
        for name in CREDENTIAL_HEADERS:
            if values := headers.get_all(name):
                headers.set_all(name, [REDACTED] * len(values))
