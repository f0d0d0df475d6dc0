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


_REGION = re.compile(r"[a-z0-9-]+")  # us-east5, europe-west1, global, us, eu


def _vertex_region(value: str) -> str:
    """A region goes into the Vertex hostname (`R-aiplatform.googleapis.com`): nothing but a region name may."""
    value = value.strip()
    if not _REGION.fullmatch(value):
        raise ValueError(f"{value!r} is not a Vertex AI region: lowercase letters, digits and hyphens "
                         f"(us-east5, europe-west1), or global, us, eu")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VertexConfig(_Strict):
    project: str
    region: str = "us-east5"
    base_url: str | None = None
    anthropic_version: str = "vertex-2023-10-16"
    fallback_regions: tuple[str, ...] = ()  # tried in order when the region fails (429, 5xx, unreachable)

    @field_validator("project")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return _vertex_region(value)

    @field_validator("fallback_regions")
    @classmethod
    def _regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_vertex_region(r) for r in value)

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
    max_per_request: int = Field(default=20, ge=1)  # distinct URLs one request may make modelmux fetch
    # all fetched images of one request together: 20 MiB is ~26.7 MiB as base64, under Vertex's 30 MB request cap
    max_total_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
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


class SecurityConfig(_Strict):
    client_keys: tuple[str, ...] = Field(default=(), repr=False)  # accepted `Authorization: Bearer` keys; empty: any

    @field_validator("client_keys")
    @classmethod
    def _no_blank(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not k.strip() for k in value):
            raise ValueError("a client key must not be empty")
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
