"""Which flows are modelmux's, and which local endpoint a path names.

A flow is ours when the listener is in reverse mode (every request), when its target host is one of
`intercept.hosts` (regular mode: CONNECT or absolute-form), or when it was sent straight to the listener
(`http://127.0.0.1:PORT/v1/...`; addresses compared as addresses, an IPv4-mapped one as its IPv4). The target
comes from mitmproxy's parsed request (`flow.request.host`, the CONNECT authority), never from `pretty_host`,
which is the client-controlled Host header.
"""

from __future__ import annotations

import ipaddress

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
    return flow.request.port == sock[1] and (host in _LOOPBACK_NAMES or _same_address(host, str(sock[0]).lower()))


def _same_address(host: str, listener: str) -> bool:
    """The target host is the listener's address: on a dual-stack listener (`::`) an IPv4 client's connection
    reads as ::ffff:a.b.c.d, its target as a.b.c.d."""
    return host == listener or _address(host) == _address(listener)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host  # a name: only the same name matches
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def route_path(flow: http.HTTPFlow) -> str:
    """The request path without query, with an optional missing /v1 prefix restored (clients whose base URL
    lacks /v1 send /chat/completions)."""
    path = flow.request.path.split("?", 1)[0].rstrip("/") or "/"
    if not path.startswith("/v1/") and path != "/v1":
        path = "/v1" + path
    return path
