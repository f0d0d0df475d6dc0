"""What modelmux decrypts: only connections whose destination is an intercepted host.

Cases:
- a TLS connection whose CONNECT target (or, transparent mode, original destination) is one of
  `intercept.hosts`: decrypted with mitmproxy's CA, its requests translated;
- one whose TLS SNI names an intercepted host but whose destination is not one (`CONNECT 203.0.113.7:443`, SNI
  api.openai.com): tunnelled untouched. mitmproxy's `allow_hosts` matches the SNI and the Host header too, so
  without this the connection would be decrypted, found not ours (the flow's host is the address) and forwarded
  there — with the app's real OpenAI key;
- reverse-mode listeners: their own TLS, always decrypted (every request on them is modelmux's);
- `modelmux_allow_hosts` (set by `modelmux run`): mitmproxy's `allow_hosts` is the intercepted hosts plus the
  reverse-mode targets, kept in step with the configuration file — a host added to `intercept.hosts` is decrypted
  from the reload on (within a second of the edit); everything else is tunnelled with its own certificates.
  Without it (`mitmdump -s`) mitmproxy decrypts what its own options say.
"""

from __future__ import annotations

import re

from mitmproxy import ctx, tls
from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode

from .runtime import Runtime, Snapshot


def allow_hosts(intercept_hosts, modes: list[str]) -> list[str]:
    """allow_hosts patterns: the intercepted hosts and the reverse-mode targets, any port."""
    hosts = sorted(intercept_hosts)
    for spec in modes:
        try:
            mode = ProxyMode.parse(spec)
        except ValueError:
            continue
        if isinstance(mode, ReverseMode):
            hosts.append(mode.address[0])
    return [rf"^{re.escape(h)}(:\d+)?$" for h in dict.fromkeys(hosts)]


class InterceptScope:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        runtime.installed.append(self._follow)

    def load(self, loader) -> None:
        loader.add_option("modelmux_allow_hosts", bool, False,
                          "Keep mitmproxy's allow_hosts to modelmux's intercepted hosts and reverse-mode targets, in "
                          "step with the configuration file: only those are decrypted (`modelmux run` sets it).")

    def configure(self, updated) -> None:
        if {"modelmux_allow_hosts", "mode"} & set(updated):
            self._set_allow_hosts()

    def _follow(self, snap: Snapshot) -> None:
        self._set_allow_hosts()

    def _set_allow_hosts(self) -> None:
        snap = self.runtime.current
        if snap is None or "modelmux_allow_hosts" not in ctx.options.keys() or not ctx.options.modelmux_allow_hosts:
            return
        patterns = allow_hosts(snap.intercept_hosts, list(ctx.options.mode))
        if list(ctx.options.allow_hosts) != patterns:
            ctx.options.update(allow_hosts=patterns)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        snap = self.runtime.current
        context = data.context
        if snap is None or data.ignore_connection or isinstance(context.client.proxy_mode, ReverseMode):
            return
        if context.server.address is None:
            return  # TLS to the proxy itself (a secure web proxy): the CONNECT inside decides
        if context.server.address[0].lower() in snap.intercept_hosts:
            return
        if (data.client_hello.sni or "").lower() in snap.intercept_hosts:
            data.ignore_connection = True  # the name alone: tunnelled, never decrypted
