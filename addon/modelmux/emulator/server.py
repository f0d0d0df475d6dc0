"""Starting and stopping an emulator on the running event loop."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterable

import tornado.httpserver
import tornado.netutil

from .credentials import Authority, new_authorized_user, new_service_account
from .handlers import MAX_BODY_BYTES, State, make_app
from .settings import DEFAULT_PROJECT, MAX_EMBEDDING_INSTANCES, Settings, apply_settings

log = logging.getLogger(__name__)


def _url_host(host: str) -> str:
    """The host a client uses to reach a server bound to `host`."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _write_private_json(path: str, data: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds a private key
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None


class Emulator:
    """A running emulator: `url`, `port`, `token_uri`, the credentials it trusts; `await stop()`."""

    def __init__(self, server: tornado.httpserver.HTTPServer, port: int, url: str, state: State,
                 service_account: dict[str, str], authorized_user: dict[str, str]):
        self._server = server
        self.port = port
        self.url = url
        self.state = state
        self.token_uri = state.token_uri
        self.service_account = service_account
        self.authorized_user = authorized_user

    async def stop(self) -> None:
        self._server.stop()
        self.state.stopping.set()
        pausing = set(self.state.pausing)
        if pausing:  # stalled and delayed handlers wake, drop their connections and end: nothing left to cancel
            await asyncio.wait(pausing, timeout=5)
        try:
            await asyncio.wait_for(self._server.close_all_connections(), timeout=5)
        except TimeoutError:
            log.warning("some connections did not close within 5 s")


async def start(host: str = "127.0.0.1", port: int = 0, *, pace_ms: float = 0.0, token_ttl: int = 3600,
                gemini_embedding_instances: int = MAX_EMBEDDING_INSTANCES, project: str = DEFAULT_PROJECT,
                service_account_out: str | None = None, authorized_user_out: str | None = None,
                trust: Iterable[str] = (), accept_tokens: Iterable[str] = ()) -> Emulator:
    """Serve on the running loop. Always mints a service account and an authorized user it trusts
    (`Emulator.service_account`, `.authorized_user`), written to the given files."""
    settings = Settings()
    apply_settings(settings, {"pace_ms": pace_ms, "token_ttl": token_ttl,
                              "gemini_embedding_instances": gemini_embedding_instances})
    authority = Authority(settings, accept_tokens)
    for path in trust:
        try:
            authority.trust_service_account(_read_json(path))
        except ValueError as err:
            raise ValueError(f"cannot trust {path}: {err}") from None
    sockets = tornado.netutil.bind_sockets(port, address=host)
    port = sockets[0].getsockname()[1]
    url = f"http://{_url_host(host)}:{port}"
    state = State(settings, authority, token_uri=f"{url}/token")
    service_account = new_service_account(project, state.token_uri)
    authorized_user = new_authorized_user(state.token_uri)
    authority.trust_service_account(service_account)
    authority.trust_authorized_user(authorized_user)
    try:
        if service_account_out:
            _write_private_json(service_account_out, service_account)
        if authorized_user_out:
            _write_private_json(authorized_user_out, authorized_user)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    server = tornado.httpserver.HTTPServer(make_app(state), max_body_size=2 * MAX_BODY_BYTES)
    server.add_sockets(sockets)
    return Emulator(server, port, url, state, service_account, authorized_user)
