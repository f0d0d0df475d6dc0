"""Where traffic modelmux does not translate may go (docs/security.md).

Cases:
- a loopback-only forwarding listener: as mitmproxy does (apps on this machine reach those addresses anyway);
- a forwarding listener (regular, upstream, socks5: the client names the destination) on a non-loopback address
  (exposure.py), `security.forward_private_networks` false (the default): a destination that is — or whose name
  resolves to any — loopback, link-local (169.254.0.0/16, the cloud metadata servers), private (RFC 1918,
  fc00::/7, 100.64.0.0/10), unspecified (0.0.0.0/8, ::) or otherwise non-global address, IPv6 forms that carry
  such an IPv4 address included (mapped, NAT64, 6to4…: addresses.py), is refused: a CONNECT gets 403 (no
  tunnel), plain HTTP gets 403, any other connection (socks5, a tunnel's server side) is not opened. The name is
  resolved once and the connection goes to the address that was checked, never resolved again (no DNS-rebinding window);
  intercepted hosts are never connected to (their flows are answered by modelmux);
- upstream mode: the upstream proxy itself may be anywhere (the operator named it); the destinations its clients
  name are checked by this process's resolution;
- transparent, WireGuard, local and tun modes: as mitmproxy does (the destination is where the client was
  going, or the client is authenticated by its WireGuard key);
- a reverse-mode listener forwards nothing but the API: every flow on it is modelmux's (answered locally or by
  the relay), and any other connection it would open — raw TCP that is not HTTP, a protocol upgrade — is not
  opened (reverse mode already answers CONNECT with 400 and other paths with 404).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket

from mitmproxy import ctx, http
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode

from ..addresses import non_global
from ..config import SecurityConfig
from .guard import fail_closed
from .exposure import FORWARDING_MODES, exposed
from .runtime import Runtime
from .scope import is_ours


async def vet(host: str, port: int) -> tuple[str | None, str | None]:
    """(the address to connect to, None), or (None, why not): every address `host` resolves to must be global."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        addresses = [host]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as err:
            return None, f"{host} cannot be resolved ({err})"
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            return None, f"{host} cannot be resolved"
    for address in addresses:
        if non_global(address):
            shown = host if address == host else f"{host} ({address})"
            return None, (f"{shown} is a loopback, link-local or private address, which this exposed listener does "
                          "not forward to (security.forward_private_networks)")
    return addresses[0], None


@functools.lru_cache(maxsize=64)
def _exposed(mode: ProxyMode, listen_host: str) -> bool:
    return exposed(mode, listen_host)  # a listen host given by name is resolved: once


def refusal(reason: str) -> http.Response:
    """Not an API call: a plain-text 403 that says what happened."""
    return http.Response.make(403, f"modelmux: refused: {reason}\n".encode(), {"content-type": "text/plain"})


class Forwarding:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def _security(self) -> SecurityConfig:
        snap = self.runtime.current
        return snap.config.security if snap is not None else SecurityConfig()

    def _guarded(self, mode: ProxyMode) -> bool:
        """Destinations are checked for this listener: a forwarding one on a non-loopback address, no opt-in."""
        if not isinstance(mode, FORWARDING_MODES) or self._security().forward_private_networks:
            return False
        return _exposed(mode, ctx.options.listen_host)

    def _intercepted(self, host: str) -> bool:
        snap = self.runtime.current
        return snap is not None and host.lower() in snap.intercept_hosts

    @fail_closed
    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response or not self._guarded(flow.client_conn.proxy_mode) or self._intercepted(flow.request.host):
            return
        _, reason = await vet(flow.request.host, flow.request.port)
        if reason:
            flow.response = refusal(reason)

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or not self._guarded(flow.client_conn.proxy_mode):
            return
        snap = self.runtime.current
        if snap is not None and is_ours(flow, snap.intercept_hosts):
            return
        _, reason = await vet(flow.request.host, flow.request.port)
        if reason:
            flow.response = refusal(reason)  # its body is dropped as it arrives (connection_limits.py)

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        server = data.server
        if server.error or server.address is None:
            return
        host, port = server.address[0], server.address[1]
        relay = self.runtime.relay.port
        if relay and port == relay and host == "127.0.0.1":
            return  # modelmux's own relay: where its streamed flows go
        mode = data.client.proxy_mode
        if isinstance(mode, ReverseMode):
            if self.runtime.current is not None:  # inactive (no configuration): mitmproxy's reverse proxy, as is
                server.error = "modelmux's reverse-mode listener forwards only the OpenAI API"
            return
        if server.via is not None or not self._guarded(mode):
            return
        if self._intercepted(host):
            server.error = f"{host} is intercepted by modelmux: its requests are answered, never forwarded"
            return
        address, reason = await vet(host, port)
        if reason:
            server.error = reason
            return
        if address != host:
            if server.tls and server.sni is None:
                server.sni = host  # the certificate is checked for the name, not for the address
            server.address = (address, port)  # pinned: mitmproxy connects to what was checked
