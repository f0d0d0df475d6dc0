"""Which flows are modelmux's, and which local endpoint a path names.

A flow is ours when the listener is in reverse mode (every request), when its target host is one of
`intercept.hosts` (regular mode: CONNECT or absolute-form), or when it was sent straight to the listener
(`http://127.0.0.1:PORT/v1/...`). The target comes from mitmproxy's parsed request (`flow.request.host`,
the CONNECT authority), never from `pretty_host`, which is the client-controlled Host header.
"""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ReverseMode

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_ours(flow: http.HTTPFlow, hosts: frozenset[str]) -> bool:
    if isinstance(flow.client_conn.proxy_mode, ReverseMode):
        return True
    host = flow.request.host.lower()
    if host in hosts:
        return True
    return sent_to_listener(flow)


def sent_to_listener(flow: http.HTTPFlow) -> bool:
    """A plain-HTTP request whose target is the listener's own address (`OPENAI_BASE_URL=http://127.0.0.1:PORT/v1`)."""
    host = flow.request.host.lower()
    sock = flow.client_conn.sockname
    if not sock or flow.client_conn.tls:
        return False
    return flow.request.port == sock[1] and (host == str(sock[0]).lower() or host in _LOOPBACK_NAMES)


def route_path(flow: http.HTTPFlow) -> str:
    """The request path without query, with an optional missing /v1 prefix restored (clients whose base URL
    lacks /v1 send /chat/completions)."""
    path = flow.request.path.split("?", 1)[0].rstrip("/") or "/"
    if not path.startswith("/v1/") and path != "/v1":
        path = "/v1" + path
    return path
