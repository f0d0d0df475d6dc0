"""modelmux configuration: YAML, `${VAR}` / `${VAR:-default}` expansion, validated by pydantic.

The key names are a contract (users' files and other tools depend on them): `vertex`, `auth`, `models`,
`intercept` and the fields below. An unknown key is an error that names it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ANTHROPIC_VERSIONS = ("vertex-2023-10-16", "2026-10-21")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says where and why."""


def _one_of(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VertexConfig(_Strict):
    project: str
    region: str = "us-east5"
    base_url: str | None = None
    anthropic_version: str = "vertex-2023-10-16"
    fallback_regions: tuple[str, ...] = ()  # tried in order when the region fails (429, 5xx, unreachable)

    @field_validator("project", "region")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/\s]+/?$", value):
            raise ValueError("must be scheme://host[:port], e.g. https://my-psc-endpoint.p.googleapis.com")
        return value.rstrip("/")

    @field_validator("anthropic_version")
    @classmethod
    def _version(cls, value: str) -> str:
        return _one_of(value, ANTHROPIC_VERSIONS)


class AuthConfig(_Strict):
    credentials_file: str | None = None
    access_token: str | None = Field(default=None, repr=False)


class ModelsConfig(_Strict):
    default: str | None = "claude-sonnet-4-5@20250929"
    map: dict[str, str] = Field(default_factory=dict)


class InterceptConfig(_Strict):
    hosts: tuple[str, ...] = ("api.openai.com",)

    @field_validator("hosts")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(h.strip().lower() for h in value if h.strip())


class ReasoningConfig(_Strict):
    expose: bool = False  # Claude's thinking → `reasoning_content` on messages and stream deltas


class ImagesConfig(_Strict):
    fetch: bool = True  # http(s) image URLs are fetched and inlined (Vertex takes base64 only)
    max_bytes: int = Field(default=5 * 1024 * 1024, ge=1)  # Anthropic's per-image limit
    timeout_seconds: float = Field(default=10.0, gt=0)
    allow_private_networks: bool = False  # fetch from loopback/private addresses (tests, internal hosts)


class RetryConfig(_Strict):
    """Retries before the first byte reaches the client (docs/reliability.md)."""

    max_attempts: int = Field(default=4, ge=1, le=20)  # all regions together
    max_wait_seconds: float = Field(default=30.0, ge=0)  # total backoff a request may spend waiting
    backoff_initial_seconds: float = Field(default=0.5, ge=0)
    backoff_max_seconds: float = Field(default=8.0, ge=0)


class CircuitBreakerConfig(_Strict):
    failures: int = Field(default=3, ge=1)  # this many failures of a region …
    window_seconds: float = Field(default=30.0, gt=0)  # … within this window open its circuit …
    cooldown_seconds: float = Field(default=30.0, gt=0)  # … for this long; then one trial request


class TimeoutsConfig(_Strict):
    connect_seconds: float = Field(default=10.0, gt=0)
    first_byte_seconds: float = Field(default=120.0, gt=0)  # until Vertex's response headers
    idle_seconds: float = Field(default=120.0, gt=0)  # the longest silence between two streamed events
    # no total limit: a long answer streams as long as it keeps moving
    # the client side (docs/security.md): a request's headers must be complete this long after the connection (or
    # the previous answer) — else it is closed; a request body must make progress at least this often
    client_header_seconds: float = Field(default=20.0, gt=0)
    client_idle_seconds: float = Field(default=20.0, gt=0)


class SecurityConfig(_Strict):
    """Who may use the proxy and where forwarded traffic may go (docs/security.md)."""

    client_keys: tuple[str, ...] = Field(default=(), repr=False)  # accepted `Authorization: Bearer` keys; empty: any
    # HTTP proxy authentication for forwarding listeners (regular, socks5), as mitmproxy's `proxyauth`: "user:pass",
    # "@/path/to/htpasswd" or an "ldap[s]:…" spec; never logged
    proxy_auth: str | None = Field(default=None, repr=False)
    # a forwarding listener on a non-loopback address without proxy authentication starts only with this (warning)
    allow_unauthenticated_proxy: bool = False
    # exposed forwarding listeners never connect to loopback, link-local or private addresses unless this is set
    forward_private_networks: bool = False

    @field_validator("client_keys")
    @classmethod
    def _no_blank(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not k.strip() for k in value):
            raise ValueError("a client key must not be empty")
        return value

    @field_validator("proxy_auth")
    @classmethod
    def _auth_spec(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value == "any":
            raise ValueError('"any" accepts every user: it is no authentication (use allow_unauthenticated_proxy)')
        user, sep, password = value.partition(":")
        if not (value.startswith(("@", "ldap:", "ldaps:")) or (sep and user and password)):
            raise ValueError('must be "user:password", "@/path/to/htpasswd" or an "ldap[s]:…" spec')
        return value


STREAMING_MODES = ("passthrough", "buffered", "never")


class StreamingRule(_Strict):
    user_agent: str  # a regular expression, searched in the client's User-Agent (case-insensitive)
    mode: str

    @field_validator("user_agent")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
        return value

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        return _one_of(value, STREAMING_MODES)


class StreamingConfig(_Strict):
    """How a streamed answer reaches the client (docs/mapping.md, "Streaming modes"):
    passthrough: one chunk per Vertex event, the moment it arrives (exact; what OpenAI does);
    buffered: the deltas of one block arriving within one `window_ms` window leave as one chunk (clients that choke
    on tiny ones);
    never: Vertex is called non-streamed; a client that asked for a stream gets the whole answer as SSE at once."""

    mode: str = "passthrough"
    window_ms: float = Field(default=50.0, gt=0, le=5000)
    rules: tuple[StreamingRule, ...] = ()  # first match on the client's User-Agent wins; else `mode`

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        return _one_of(value, STREAMING_MODES)

    def mode_for(self, user_agent: str) -> str:
        for rule in self.rules:
            if re.search(rule.user_agent, user_agent, re.IGNORECASE):
                return rule.mode
        return self.mode


class BoundsConfig(_Strict):
    """Bounds that keep one process safe to expose (docs/security.md)."""

    # connections a process holds at once; past it new ones are closed at accept. null: derived from the
    # file-descriptor limit (RLIMIT_NOFILE), each connection counting for the 4 descriptors a stream may use
    max_connections: int | None = Field(default=None, ge=1)
    max_request_bytes: int = Field(default=30 * 1024 * 1024, ge=1)  # a client's request body (Vertex's cap: 413)
    max_upstream_bytes: int = Field(default=64 * 1024 * 1024, ge=1)  # Vertex's answer, after decompression (502)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)  # an HTTP/1 request head (431)


class DumpConfig(_Strict):
    path: str | None = None  # JSON lines of every translated exchange (`modelmux run --dump FILE` does the same)


class Config(_Strict):
    vertex: VertexConfig
    auth: AuthConfig = AuthConfig()
    models: ModelsConfig = ModelsConfig()
    intercept: InterceptConfig = InterceptConfig()
    reasoning: ReasoningConfig = ReasoningConfig()
    images: ImagesConfig = ImagesConfig()
    retries: RetryConfig = RetryConfig()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    security: SecurityConfig = SecurityConfig()
    bounds: BoundsConfig = BoundsConfig()
    dump: DumpConfig = DumpConfig()
    streaming: StreamingConfig = StreamingConfig()


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def expand_env(value: Any, environ: dict[str, str] | os._Environ | None = None) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string of a parsed YAML tree.

    `${VAR}` with VAR unset is an error rather than an empty string: a silently empty project id or
    key path produces confusing failures far away.
    """
    env = os.environ if environ is None else environ
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env and (env[name] != "" or default is None):
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set (use ${{{name}:-default}} for a default)")
        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    return value


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
        else:
            lines.append(f"{where}: {e['msg']}")
    return "; ".join(lines)


def parse_config(data: Any, environ: dict[str, str] | None = None) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping of keys (vertex, auth, models, intercept)")
    try:
        return Config.model_validate(expand_env(data, environ))
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    try:
        config = parse_config(data, environ)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    # A relative credentials path means relative to the config file, not to wherever the proxy was started.
    cred = config.auth.credentials_file
    if cred and not Path(cred).expanduser().is_absolute():
        resolved = str((path.parent / cred).resolve())
        config = config.model_copy(update={"auth": config.auth.model_copy(update={"credentials_file": resolved})})
    return config
