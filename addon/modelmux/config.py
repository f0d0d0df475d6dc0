"""modelmux configuration: YAML, `${VAR}` / `${VAR:-default}` expansion, validated by pydantic.

The key names are a contract (users' files and other tools depend on them): `vertex`, `auth`, `models`,
`intercept` and the fields below. An unknown key is an error that names it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

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


# What Vertex AI documents for its text-embedding models: 250 texts and 20,000 tokens per request, 2,048 tokens per
# text. gemini-embedding-001 took one text per request until 2025 (the Vertex doc said so) and takes 250 in reports
# from 2026: if a project still sees the old limit, set `embeddings.limits.gemini-embedding-001.texts_per_request: 1`.
_VERTEX_EMBEDDING_LIMITS = {"texts_per_request": 250, "tokens_per_request": 20_000, "tokens_per_text": 2048}
BUILTIN_EMBEDDING_LIMITS: dict[str, dict[str, int]] = {
    "gemini-embedding-001": {**_VERTEX_EMBEDDING_LIMITS, "native_dimensions": 3072},
    "text-embedding-005": {**_VERTEX_EMBEDDING_LIMITS, "native_dimensions": 768},
    "text-multilingual-embedding-002": {**_VERTEX_EMBEDDING_LIMITS, "native_dimensions": 768},
}
DEFAULT_EMBEDDING_MAP: dict[str, str] = {
    "text-embedding-3-small": "gemini-embedding-001",
    "text-embedding-3-large": "gemini-embedding-001",
    "text-embedding-ada-002": "text-embedding-005",
}


class EmbeddingLimits(_Strict):
    """One Vertex embedding model's limits. A model in no table gets these defaults (Vertex's documented general
    limits) and no `dimensions` check beyond >= 1: Vertex itself rejects a size it does not support."""

    texts_per_request: int = Field(default=250, ge=1, le=2048)  # instances in one :predict call
    tokens_per_request: int = Field(default=20_000, ge=1)  # Vertex answers 400 above it
    tokens_per_text: int = Field(default=2048, ge=1)  # longer: 400 unless `embeddings.truncate`
    native_dimensions: int | None = Field(default=None, ge=1)  # the vector's size when `dimensions` is not given
    min_dimensions: int = Field(default=1, ge=1)  # allowed `dimensions` (→ outputDimensionality) …
    max_dimensions: int | None = Field(default=None, ge=1)  # … up to this; absent: native_dimensions

    @model_validator(mode="before")
    @classmethod
    def _max_is_native(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("max_dimensions") is None and data.get("native_dimensions"):
            data = {**data, "max_dimensions": data["native_dimensions"]}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> EmbeddingLimits:
        if self.max_dimensions is not None and self.max_dimensions < self.min_dimensions:
            raise ValueError("max_dimensions must not be below min_dimensions")
        if self.tokens_per_text > self.tokens_per_request:
            raise ValueError("tokens_per_text must not exceed tokens_per_request")
        return self


class ResponsesConfig(_Strict):
    """The Responses API (docs/responses.md)."""

    # seals reasoning and compaction items handed to clients (`encrypted_content`): 32 bytes as 64 hex digits or
    # base64, e.g. "${MODELMUX_SEALING_KEY}"; null → generated once into the confdir (modelmux-sealing.key, 0600).
    # Replicas must share one: set it here, or share the confdir.
    sealing_key: str | None = Field(default=None, repr=False)
    previous_sealing_keys: tuple[str, ...] = Field(default=(), repr=False)  # still opened, never used to seal
    web_search: bool = False  # `web_search` tools → Claude's web search on Vertex (Preview; blocked under VPC-SC)
    # OpenAI's built-in tools Claude cannot run (image_generation, file_search, code_interpreter, …; web_search
    # unless enabled) are a 400 naming the tool — or dropped with a log line when this is set, or when the client's
    # User-Agent matches one of these regexes (Codex always sends web_search and image_generation)
    drop_builtin_tools: bool = False
    drop_builtin_tools_user_agents: tuple[str, ...] = ("^codex",)
    keepalive_seconds: float = Field(default=15.0, ge=0)  # a silent stream gets a response.in_progress this often

    @field_validator("sealing_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None:
            from .translate.responses.sealing import parse_key
            parse_key(value)  # ValueError names the problem, never the key
        return value

    @field_validator("previous_sealing_keys")
    @classmethod
    def _keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from .translate.responses.sealing import parse_key
        for k in value:
            parse_key(k)
        return value

    @field_validator("drop_builtin_tools_user_agents")
    @classmethod
    def _regexes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"not a valid regular expression: {err}") from None
        return value


class EmbeddingsConfig(_Strict):
    """`POST /v1/embeddings` → Vertex AI `:predict` (docs/mapping.md, "Embeddings")."""

    default: str | None = "gemini-embedding-001"  # for requested names not in map (null → 404 model_not_found)
    map: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_EMBEDDING_MAP))  # given: replaces the built-in
    truncate: bool = False  # true: Vertex cuts texts above tokens_per_text (autoTruncate) instead of a 400
    max_concurrent_batches: int = Field(default=4, ge=1, le=32)  # :predict calls in flight for one request
    # per Vertex model; an entry given here overrides the built-in one key by key
    limits: dict[str, EmbeddingLimits] = Field(
        default_factory=lambda: {name: EmbeddingLimits(**v) for name, v in BUILTIN_EMBEDDING_LIMITS.items()})

    @field_validator("limits", mode="before")
    @classmethod
    def _over_builtin(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {name: dict(v) for name, v in BUILTIN_EMBEDDING_LIMITS.items()}
        for name, entry in value.items():
            if isinstance(entry, dict) and isinstance(merged.get(name), dict):
                merged[name] = {**merged[name], **entry}
            else:
                merged[name] = entry
        return merged

    @field_validator("default")
    @classmethod
    def _default_named(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a model name or null")
        return value

    @field_validator("map")
    @classmethod
    def _map_named(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not k.strip() or not v.strip() for k, v in value.items()):
            raise ValueError("model names must not be empty")
        return value

    def limits_for(self, vertex_model: str) -> EmbeddingLimits:
        return self.limits.get(vertex_model) or _GENERIC_LIMITS


_GENERIC_LIMITS = EmbeddingLimits()


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
    # the client side (docs/security.md): a request's headers must be complete this long after the connection (or
    # the previous answer) — else it is closed; a request body must make progress at least this often
    client_header_seconds: float = Field(default=20.0, gt=0)
    client_idle_seconds: float = Field(default=20.0, gt=0)


CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # it names Redis keys and metric labels


KEY_NAME_ROUNDS = 20_000  # PBKDF2 rounds of a key's default name: ~10 ms once per key, costly to guess back


@functools.lru_cache(maxsize=4096)
def key_name(key: str) -> str:
    """The name a client key without one is known by in logs, metrics and the store: a short, slow hash, never the
    key. The same on every replica (no per-install secret); slow because another key's holder sees these names
    (/metrics) and a plain hash of a short key would give the key back to a guesser."""
    digest = hashlib.pbkdf2_hmac("sha256", key.encode(), b"modelmux client key name", KEY_NAME_ROUNDS)
    return "key-" + digest.hex()[:10]


class ClientKey(_Strict):
    """One entry of `security.client_keys`: a plain string is `{key: STRING}`. A limit left out takes the default
    from `limits` / `budgets`; an explicit `null` means no limit for this key."""

    key: str = Field(repr=False)
    name: str
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    monthly_usd: float | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("name") is None and isinstance(data.get("key"), str):
            data = {**data, "name": key_name(data["key"])}
        return data

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a client key must not be empty")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not CLIENT_NAME.match(value):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    def limit(self, field: str, default: Any) -> Any:
        """This key's value for a limit: its own when written in the entry (even `null`), else the default."""
        return getattr(self, field) if field in self.model_fields_set else default


def _entry_errors(index: int, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in (f"client_keys.{index}", *e["loc"]))
        parts.append(f"{where}: {'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}")
    return "; ".join(parts)


class SecurityConfig(_Strict):
    # the accepted `Authorization: Bearer` keys as plain strings (empty: any client is served), whichever form
    # each entry was written in; `clients` has the full entries (name, limits)
    client_keys: tuple[str, ...] = Field(default=(), repr=False)
    # HTTP proxy authentication for forwarding listeners (regular, socks5), as mitmproxy's `proxyauth`: "user:pass",
    # "@/path/to/htpasswd" or an "ldap[s]:…" spec; never logged (docs/security.md)
    proxy_auth: str | None = Field(default=None, repr=False)
    # a forwarding listener on a non-loopback address without proxy authentication starts only with this (warning)
    allow_unauthenticated_proxy: bool = False
    # exposed forwarding listeners never connect to loopback, link-local or private addresses unless this is set
    forward_private_networks: bool = False
    _clients: tuple[ClientKey, ...] = PrivateAttr(default=())

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

    @model_validator(mode="wrap")
    @classmethod
    def _entries(cls, data: Any, handler: Any) -> SecurityConfig:
        entries: list[ClientKey] = []
        if isinstance(data, dict) and data.get("client_keys") is not None:
            raw = data["client_keys"]
            if not isinstance(raw, (list, tuple)):
                raise ValueError("client_keys: must be a list of keys (strings or {key, name, ...})")
            for i, entry in enumerate(raw):
                if isinstance(entry, ClientKey):
                    entries.append(entry)
                    continue
                if isinstance(entry, str):
                    entry = {"key": entry}
                if not isinstance(entry, dict):
                    raise ValueError(f"client_keys.{i}: must be a key (a string) or {{key, name, ...}}")
                try:
                    entries.append(ClientKey.model_validate(entry))
                except ValidationError as err:
                    raise ValueError(_entry_errors(i, err)) from None
            for what in ("key", "name"):
                values = [getattr(e, what) for e in entries]
                dup = next((i for i, v in enumerate(values) if v in values[:i]), None)
                if dup is not None:
                    raise ValueError(f"client_keys.{dup}: the same {what} as an earlier entry")
            data = {**data, "client_keys": [e.key for e in entries]}
        inst = handler(data)
        inst._clients = tuple(entries)
        return inst

    @property
    def clients(self) -> tuple[ClientKey, ...]:
        return self._clients

    def client_for(self, presented: str) -> ClientKey | None:
        """The entry whose key the client presented (compared in constant time with every key), else None."""
        found = None
        given = presented.encode("utf-8", "surrogateescape")  # mitmproxy keeps a header's non-UTF-8 bytes so
        for entry in self._clients:
            if hmac.compare_digest(given, entry.key.encode()):
                found = entry
        return found


class LimitsConfig(_Strict):
    """Defaults for every client key (`security.client_keys` entries override them), else per client address;
    enforced across every process sharing `state.url` (limits.py)."""

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)  # input + output tokens, counted from each answer


class PriceConfig(_Strict):
    """USD per million tokens (pricing.py)."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float = Field(ge=0)  # 5-minute cache writes
    cache_read: float = Field(ge=0)


class BudgetsConfig(_Strict):
    monthly_usd: float | None = Field(default=None, ge=0)  # per client key, per calendar month (UTC)
    prices: dict[str, PriceConfig] = Field(default_factory=dict)  # Vertex model id → its price, over pricing.py's


STATE_SCHEMES = ("sqlite", "redis", "rediss")


class StateConfig(_Strict):
    """Where state that outlives a request lives (modelmux/state): null → an SQLite file in the confdir;
    "sqlite:///PATH" → that file (relative paths: in the confdir); "redis://[:PASSWORD@]HOST[:PORT][/DB]" or
    "rediss://…" (TLS) → shared by every modelmux process that names it."""

    url: str | None = Field(default=None, repr=False)  # may carry a password
    fail_closed: bool = False  # state unreachable: refuse (503) instead of serving without limits and budgets
    connect_timeout_seconds: float = Field(default=0.5, gt=0, le=30)
    timeout_seconds: float = Field(default=0.5, gt=0, le=30)  # one operation, reply included
    retry_seconds: float = Field(default=1.0, ge=0, le=60)  # after a failure, calls fail at once for this long
    max_connections: int = Field(default=32, ge=1, le=1024)  # Redis connections per process
    response_ttl_days: float = Field(default=30.0, gt=0)  # stored responses expire (OpenAI: 30 days)
    response_max_count: int = Field(default=100_000, ge=1)  # oldest evicted first past either bound
    response_max_mb: float = Field(default=512.0, gt=0)
    thinking_ttl_hours: float = Field(default=24.0, gt=0)  # thinking signatures kept for tool loops
    thinking_max_entries: int = Field(default=100_000, ge=1)
    spend_retention_days: int = Field(default=400, ge=31)  # daily spend counters kept this long

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in STATE_SCHEMES:
            raise ValueError("must be sqlite:///PATH, redis://HOST:PORT/DB or rediss://HOST:PORT/DB")
        if scheme == "sqlite":
            if not value[len("sqlite://"):].strip():
                raise ValueError("sqlite:// needs a file path, e.g. sqlite:///var/lib/modelmux/state.sqlite3")
            return value
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            raise ValueError("not a valid redis URL (redis://[:PASSWORD@]HOST[:PORT][/DB])") from None
        if not parts.hostname:
            raise ValueError("a redis URL needs a host: redis://HOST:PORT/DB")
        if parts.path not in ("", "/") and not parts.path.lstrip("/").isdigit():
            raise ValueError("the redis database must be a number: redis://HOST:PORT/0")
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
    embeddings: EmbeddingsConfig = EmbeddingsConfig()
    responses: ResponsesConfig = ResponsesConfig()
    state: StateConfig = StateConfig()
    limits: LimitsConfig = LimitsConfig()
    budgets: BudgetsConfig = BudgetsConfig()


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
