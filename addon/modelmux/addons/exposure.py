"""Never an open relay by accident: a forwarding listener on a non-loopback address needs proxy authentication.

A forwarding listener — regular (HTTP proxy), upstream or socks5 mode: its clients name any destination — that
binds anything but loopback (`--listen-host 0.0.0.0`, a LAN address; plain mitmdump's default is every
interface) would forward anyone who reaches the port to anywhere. Cases:
- such a listener, no proxy authentication (`security.proxy_auth` or mitmproxy's `proxyauth`; "any" is none),
  `security.allow_unauthenticated_proxy` false (the default): start refused, with a message naming both fixes;
  a configuration edit or an option change that would lead there is refused too (the previous state stays);
- with `security.allow_unauthenticated_proxy: true`: it starts, with a warning naming what it exposes;
- `security.proxy_auth` set: it becomes mitmproxy's `proxyauth` (HTTP 407 / SOCKS5 authentication, before any
  TLS interception), kept in step with the file on reload; the value is never logged;
- loopback-only listeners, reverse-mode listeners (they forward only the API: forwarding.py) and listeners
  without a port (local, tun) need nothing.
What exposed forwarding listeners may reach is forwarding.py's part.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket

from mitmproxy import ctx, exceptions
from mitmproxy.addons.proxyauth import Htpasswd, Ldap, SingleUser
from mitmproxy.proxy.mode_specs import ProxyMode, RegularMode, Socks5Mode, UpstreamMode

from .. import mitm_patches
from ..config import Config, ConfigError, SecurityConfig
from .runtime import Runtime, Snapshot

log = logging.getLogger("modelmux")

FORWARDING_MODES = (RegularMode, UpstreamMode, Socks5Mode)  # explicit proxies: the client names the destination
_WATCHED_OPTIONS = frozenset({"mode", "listen_host", "proxyauth"})


def is_loopback_bind(host: str) -> bool:
    """Whether a listen address reaches only this machine: "" is every interface; a name must resolve to
    loopback addresses only."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def exposed(mode: ProxyMode, listen_host: str) -> bool:
    """A listener that binds a non-loopback address (reverse or forwarding alike)."""
    return mode.listen_port() is not None and not is_loopback_bind(mode.listen_host(listen_host))


def exposed_forwarding(modes: list[str], listen_host: str) -> list[str]:
    """The forwarding listeners among `modes` that bind a non-loopback address, as "spec on host"."""
    out = []
    for spec in modes:
        try:
            mode = ProxyMode.parse(spec)
        except ValueError:
            continue  # mitmproxy refuses it with its own message
        if isinstance(mode, FORWARDING_MODES) and exposed(mode, listen_host):
            out.append(f"{spec} on {mode.listen_host(listen_host) or 'every interface'}")
    return out


def authenticated(security: SecurityConfig, proxyauth: str | None, *, pending: bool = False) -> bool:
    """Whether mitmproxy's `proxyauth` in effect authenticates; `pending`: a configuration not yet installed,
    whose (checked) security.proxy_auth is about to become it."""
    return bool(proxyauth and proxyauth != "any") or (pending and bool(security.proxy_auth))


def check_proxy_auth(spec: str) -> None:
    """Raises ConfigError unless mitmproxy will take `spec` as its proxyauth (its own parsers; an htpasswd file in
    a format it cannot read — Apache's default $apr1$ — is refused here, not silently left unapplied). The
    message never holds the password."""
    try:
        if spec.startswith("@"):
            Htpasswd(spec)
        elif spec.startswith("ldap"):
            Ldap.parse_spec(spec)  # the server is reached when it is applied
        elif spec == "any" or ":" not in spec:
            raise exceptions.OptionsError("it must be user:password, @htpasswd-file or an ldap[s]: specification")
        else:
            SingleUser(spec)
    except exceptions.OptionsError as err:
        what = "invalid LDAP specification" if spec.startswith("ldap") else str(err)
        raise ConfigError(f"security.proxy_auth: {what}") from None


def problem(security: SecurityConfig, modes: list[str], listen_host: str, proxyauth: str | None, *,
            pending: bool = False) -> str | None:
    """Why this combination must not start, or None."""
    listeners = exposed_forwarding(modes, listen_host)
    if not listeners or authenticated(security, proxyauth, pending=pending) or security.allow_unauthenticated_proxy:
        return None
    return (f"refusing to run an open proxy: {', '.join(listeners)} would forward anyone who reaches it to any "
            "address. Listen on loopback (--listen-host 127.0.0.1), or require proxy authentication "
            "(security.proxy_auth: \"user:${PASSWORD}\" in the configuration, or --set proxyauth=user:pass), or "
            "accept it explicitly with security.allow_unauthenticated_proxy: true (docs/security.md)")


class Exposure:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self._applied_auth: str | None = None  # the proxyauth value this addon set (from security.proxy_auth)
        self._warned: tuple | None = None
        self._running = False
        self._rolling_back = False
        runtime.checks.append(self._check_config)
        runtime.installed.append(self._follow)

    def _options(self) -> tuple[list[str], str, str | None]:
        opts = ctx.options
        return list(opts.mode), opts.listen_host, opts.proxyauth if "proxyauth" in opts.keys() else None

    def _check_config(self, config: Config) -> None:
        """A configuration about to be installed (start or reload): refused if it leaves an open proxy."""
        modes, host, auth = self._options()
        if auth == self._applied_auth:  # ours, from the configuration being replaced
            auth = None
        spec = config.security.proxy_auth or ""
        if spec.startswith("@") and not os.access(os.path.expanduser(spec[1:]), os.R_OK):
            raise ConfigError(f"security.proxy_auth: cannot read the htpasswd file {spec[1:]}")
        if spec:
            check_proxy_auth(spec)
        if reason := problem(config.security, modes, host, auth, pending=True):
            self._refused(reason)
            raise ConfigError(reason)

    def _follow(self, snap: Snapshot) -> None:
        """A configuration installed: its security.proxy_auth becomes mitmproxy's proxyauth."""
        wanted = snap.config.security.proxy_auth
        current = ctx.options.proxyauth if "proxyauth" in ctx.options.keys() else None
        if wanted and current != wanted:
            self._set_auth(wanted)
        elif not wanted and self._applied_auth is not None and current == self._applied_auth:
            self._set_auth(None)  # removed from the file: what this addon set goes too
        self._warn()

    def _set_auth(self, value: str | None) -> None:
        try:
            ctx.options.update(proxyauth=value)
        except Exception as err:  # mitmproxy refused it after all (an LDAP server that cannot be reached, …)
            log.error("modelmux: security.proxy_auth not applied (%s)", type(err).__name__)
            modes, host, auth = self._options()
            if reason := problem(SecurityConfig(), modes, host, auth):
                # exposed without the authentication the configuration asks for: serve no one rather than anyone
                log.error("modelmux: %s", reason)
                mitm_patches.HOOKS.refuse_all = reason
            return
        self._applied_auth = value

    def configure(self, updated) -> None:
        snap = self.runtime.current
        rolling_back, self._rolling_back = self._rolling_back, False
        if not (_WATCHED_OPTIONS & set(updated)):
            return
        if rolling_back:
            # another addon refused the update (the configuration, an option): mitmproxy puts the previous values
            # back, and that error is the one to report; an exposed listener still serves no one meanwhile
            if not self._running and (reason := problem(SecurityConfig(), *self._options())):
                self._refused(reason)
            return
        security = snap.config.security if snap is not None else SecurityConfig()
        modes, host, auth = self._options()
        # what is in effect counts, not what the configuration asks for (`--set proxyauth=` at run time)
        pending = snap is not None and security.proxy_auth is not None and self._applied_auth is None
        if reason := problem(security, modes, host, auth, pending=pending):
            self._refused(reason)
            raise exceptions.OptionsError(f"modelmux: {reason}")
        self._warn()

    def load(self, loader) -> None:
        ctx.options.errored.connect(self._options_refused)

    def _options_refused(self, exc: Exception) -> None:
        self._rolling_back = True  # the `changed` that follows at once is the rollback

    def running(self) -> None:
        self._running = True

    def _refused(self, reason: str) -> None:
        # `mitmdump -s` loads this script while its listeners start: until mitmproxy exits on the error, they
        # accept nothing (a refusal later, e.g. an option changed at run time, leaves the running state as it was)
        if not self._running:
            mitm_patches.HOOKS.refuse_all = reason

    def _warn(self) -> None:
        """Once per state: the operator opted in to an exposed listener without authentication."""
        snap = self.runtime.current
        security = snap.config.security if snap is not None else SecurityConfig()
        modes, host, auth = self._options()
        listeners = exposed_forwarding(modes, host)
        state = (tuple(listeners), authenticated(security, auth))
        if listeners and not state[1] and state != self._warned:
            log.warning("modelmux: %s: anyone who reaches it may use it as a proxy, without authentication "
                        "(security.allow_unauthenticated_proxy: true); %s", ", ".join(listeners),
                        "it forwards to loopback, link-local and private addresses too "
                        "(security.forward_private_networks: true)" if security.forward_private_networks else
                        "it never forwards to loopback, link-local or private addresses")
        self._warned = state
