"""`modelmux doctor`: checks a set-up and says, for each problem, how to fix it. Exit code 0 only when all pass.

Checks, in order (later ones are skipped when what they need failed):
1. the config file is valid;
2. a Google credential is found (which source) and gives an access token;
3. Vertex AI answers at the configured host (any HTTP answer counts: the network path and TLS work);
4. with --live: a 1-token call per mapped model (enabled in that region? IAM role?);
5. the mitmproxy CA exists and the environment's Python/httpx, Node and curl settings trust it;
6. the listen port is free;
7. proxy variables are sane (NO_PROXY covers loopback when HTTPS_PROXY is set).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from .auth import AuthError, TokenProvider
from .certs import CA_CERT
from .config import Config, ConfigError, load_config
from .translate.errors import from_upstream
from .vertex import Router, vertex_origin


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _config(path: str) -> tuple[Check, Config | None]:
    try:
        config = load_config(path)
    except ConfigError as err:
        return Check("config", False, str(err), "correct the file; `modelmux validate FILE` shows the routing"), None
    return Check("config", True, f"{path}: project {config.vertex.project}, region {config.vertex.region}"), config


def _token(config: Config) -> tuple[Check, str | None]:
    tokens = TokenProvider(config.auth)
    try:
        token = asyncio.run(tokens.token())
    except AuthError as err:
        fix = ("check auth.credentials_file (a service-account or authorized-user JSON key that is still valid)"
               if config.auth.credentials_file else
               "set auth.credentials_file, GOOGLE_APPLICATION_CREDENTIALS, or run "
               "`gcloud auth application-default login`")
        return Check("credentials", False, f"{tokens.source}: {err}", fix), None
    finally:
        tokens.close()
    return Check("credentials", True, f"{tokens.source}: access token obtained"), token


def _reachable(config: Config) -> Check:
    origin = config.vertex.base_url or vertex_origin(config.vertex.region)
    try:
        httpx.get(origin, trust_env=False, timeout=10)
    except httpx.HTTPError as err:
        return Check("vertex reachable", False, f"{origin}: {type(err).__name__}: {err}"[:300],
                     "check the network path to Google (firewall, DNS, Private Service Connect) or vertex.base_url")
    return Check("vertex reachable", True, f"{origin} answers")


def _live(config: Config, token: str) -> Iterator[Check]:
    router = Router(config)
    body = {"anthropic_version": config.vertex.anthropic_version, "max_tokens": 1,
            "messages": [{"role": "user", "content": "ping"}]}
    for name in config.models.map or ([config.models.default] if config.models.default else []):
        route = router.route(name)
        yield _live_call(f"model {name}", route.vertex_model, router.url(route, stream=False), body, token, config)
    # one one-input call per distinct Vertex embedding model the config reaches
    probe = {"instances": [{"content": "ping"}], "parameters": {"autoTruncate": False}}
    checked: set[str] = set()
    for name in router.listed_embedding_models():
        route = router.route_embedding(name)
        if route.vertex_model not in checked:
            checked.add(route.vertex_model)
            yield _live_call(f"embeddings {route.vertex_model}", route.vertex_model, router.embedding_url(route),
                             probe, token, config)


def _live_call(what: str, vertex_model: str, url: str, body: dict, token: str, config: Config) -> Check:
    try:
        r = httpx.post(url, json=body, headers={"authorization": f"Bearer {token}"}, trust_env=False, timeout=60)
    except httpx.HTTPError as err:
        return Check(what, False, f"{vertex_model}: {type(err).__name__}", "see vertex reachable")
    if r.status_code == 200:
        return Check(what, True, f"{vertex_model} answered in {config.vertex.region}")
    err = from_upstream(r.status_code, r.content, dict(r.headers), model=vertex_model, region=config.vertex.region)
    return Check(what, False, f"{vertex_model}: HTTP {r.status_code}", err.message.split(" — ", 1)[-1])


def _ca(confdir: Path, env: dict[str, str]) -> Iterator[Check]:
    ca_file = confdir / CA_CERT
    if not ca_file.exists():
        yield Check("CA", False, f"no CA at {ca_file}", "start `modelmux run` once, or run `modelmux certs`")
        return
    pem = ca_file.read_text().strip()
    yield Check("CA", True, str(ca_file))
    for runtime, var in (("Python/httpx", "SSL_CERT_FILE"), ("Python/requests", "REQUESTS_CA_BUNDLE"),
                         ("Node", "NODE_EXTRA_CA_CERTS"), ("curl", "CURL_CA_BUNDLE")):
        path = env.get(var)
        trusted = bool(path) and Path(path).is_file() and pem in Path(path).read_text(errors="replace")
        yield Check(f"CA trusted by {runtime}", trusted,
                    f"{var}={path}" if path else f"{var} is not set",
                    "" if trusted else f"run `modelmux certs` and export {var} as it prints "
                                       "(needed for HTTPS_PROXY mode only; reverse mode needs no CA)")


def _port(host: str, port: int) -> Check:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as err:
            return Check("listen port", False, f"{host}:{port}: {err.strerror}",
                         "stop what uses it, or choose another with --listen-port")
    return Check("listen port", True, f"{host}:{port} is free")


def _proxy_vars(env: dict[str, str]) -> Check:
    proxy = env.get("HTTPS_PROXY") or env.get("https_proxy")
    if not proxy:
        return Check("proxy variables", True, "HTTPS_PROXY not set (fine for reverse mode)")
    no_proxy = (env.get("NO_PROXY") or env.get("no_proxy") or "").replace(" ", "").split(",")
    if not {"127.0.0.1", "localhost"} & set(no_proxy):
        return Check("proxy variables", False, f"HTTPS_PROXY={proxy} but NO_PROXY does not cover loopback",
                     "export NO_PROXY=127.0.0.1,localhost (loopback calls must not loop through the proxy)")
    return Check("proxy variables", True, f"HTTPS_PROXY={proxy}, NO_PROXY covers loopback")


def _state(config: Config, confdir: Path) -> Check:
    """The state store answers (stored responses, limits, budgets, shared thinking depend on it)."""
    import asyncio

    from .state import open_store

    async def probe() -> dict:
        store = open_store(config.state, confdir)
        try:
            return await store.health()
        finally:
            await store.close()

    health = asyncio.run(probe())
    if health.get("ok"):
        return Check("state store", True, f"{health['backend']} answers in {health.get('latency_ms', 0):.1f} ms")
    return Check("state store", False, f"{health['backend']}: {health.get('error', 'unavailable')}",
                 "check state.url (the Redis host, port, password, TLS) or the confdir's permissions; without it "
                 "stored responses get 503 and limits fail open (state.fail_closed refuses instead)")


def run_checks(config_path: str, *, live: bool, confdir: Path, host: str, port: int,
               env: dict[str, str] | None = None) -> list[Check]:
    env = dict(os.environ if env is None else env)
    checks: list[Check] = []
    check, config = _config(config_path)
    checks.append(check)
    if config is not None:
        check, token = _token(config)
        checks.append(check)
        reach = _reachable(config)
        checks.append(reach)
        if live and token and reach.ok:
            checks.extend(_live(config, token))
        checks.append(_state(config, confdir))
    checks.extend(_ca(confdir, env))
    checks.append(_port(host, port))
    checks.append(_proxy_vars(env))
    return checks


def report(checks: list[Check], as_json: bool = False) -> str:
    if as_json:
        return json.dumps([c.__dict__ for c in checks], indent=1)
    lines = []
    for c in checks:
        lines.append(f"{'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"      fix: {c.fix}")
    failed = sum(not c.ok for c in checks)
    lines.append(f"\n{len(checks) - failed} passed, {failed} failed")
    return "\n".join(lines)
