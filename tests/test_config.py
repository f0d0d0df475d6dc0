import pytest

from modelmux.config import ConfigError, expand_env, load_config, parse_config
from modelmux.vertex import Router, UnknownModel, model_url, predict_url, vertex_origin

BASE = {"vertex": {"project": "p"}}


def test_contract_keys_and_defaults():
    cfg = parse_config({
        "vertex": {"project": "my-project", "region": "us-east5", "base_url": None, "anthropic_version": "vertex-2023-10-16"},
        "auth": {"credentials_file": None, "access_token": None},
        "models": {"default": "claude-sonnet-4-5@20250929",
                   "map": {"gpt-4o": "claude-sonnet-4-5@20250929", "gpt-4o-mini": "claude-haiku-4-5@20251001"}},
        "intercept": {"hosts": ["api.openai.com"]},
    })
    assert cfg.vertex.project == "my-project"
    assert cfg.models.map["gpt-4o-mini"] == "claude-haiku-4-5@20251001"
    assert parse_config(BASE).intercept.hosts == ("api.openai.com",)
    assert parse_config(BASE).vertex.anthropic_version == "vertex-2023-10-16"


@pytest.mark.parametrize("data, fragment", [
    ({"vertex": {"project": "p", "regoin": "x"}}, "vertex.regoin: unknown key"),
    ({"vertex": {"project": "p"}, "modles": {}}, "modles: unknown key"),
    ({}, "vertex: Field required"),
    ({"vertex": {"project": "p", "anthropic_version": "bogus"}}, "anthropic_version"),
    ({"vertex": {"project": "p", "base_url": "ftp://x"}}, "base_url"),
    ({"vertex": {"project": " "}}, "vertex.project"),
    ([1, 2], "mapping"),
])
def test_invalid_configs_name_the_key(data, fragment):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert fragment in str(err.value)


def test_env_expansion():
    env = {"PROJ": "from-env", "EMPTY": ""}
    assert expand_env("${PROJ}", env) == "from-env"
    assert expand_env("x-${MISSING:-dflt}-y", env) == "x-dflt-y"
    assert expand_env("${EMPTY:-dflt}", env) == "dflt"
    assert expand_env({"a": ["${PROJ}", 3]}, env) == {"a": ["from-env", 3]}
    with pytest.raises(ConfigError, match="MISSING"):
        expand_env("${MISSING}", env)
    cfg = parse_config({"vertex": {"project": "${PROJ}", "region": "${REGION:-global}"}}, env)
    assert (cfg.vertex.project, cfg.vertex.region) == ("from-env", "global")


def test_load_config_file_and_relative_credentials(tmp_path):
    (tmp_path / "c.yaml").write_text("vertex: {project: p}\nauth: {credentials_file: keys/sa.json}\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.auth.credentials_file == str(tmp_path / "keys" / "sa.json")
    (tmp_path / "bad.yaml").write_text("vertex: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_vertex_hosts():
    assert vertex_origin("us-east5") == "https://us-east5-aiplatform.googleapis.com"
    assert vertex_origin("global") == "https://aiplatform.googleapis.com"
    assert vertex_origin("eu") == "https://aiplatform.eu.rep.googleapis.com"
    assert model_url(project="p", region="global", model="claude-sonnet-4-5@20250929", stream=True) == (
        "https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/anthropic/models/"
        "claude-sonnet-4-5@20250929:streamRawPredict")
    assert model_url(project="p", region="us-east5", model="m", stream=False, base_url="http://127.0.0.1:9") == (
        "http://127.0.0.1:9/v1/projects/p/locations/us-east5/publishers/anthropic/models/m:rawPredict")


def test_routing():
    r = Router(parse_config({"vertex": {"project": "p"}, "models": {"default": None, "map": {"gpt-4o": "claude-x@1"}}}))
    assert r.route("gpt-4o").vertex_model == "claude-x@1"
    assert r.route("claude-opus-4-5@20251101").vertex_model == "claude-opus-4-5@20251101"
    with pytest.raises(UnknownModel):
        r.route("gpt-3.5-turbo")
    assert r.listed_models() == ["gpt-4o", "claude-x@1"]
    assert not r.routable("gpt-3.5-turbo")
    d = Router(parse_config(BASE))
    assert d.route("anything").vertex_model == "claude-sonnet-4-5@20250929"


# --- embeddings --------------------------------------------------------------------------------------------

def test_embeddings_defaults_without_the_key():
    emb = parse_config(BASE).embeddings
    assert emb.default == "gemini-embedding-001"
    assert emb.map == {"text-embedding-3-small": "gemini-embedding-001",
                       "text-embedding-3-large": "gemini-embedding-001",
                       "text-embedding-ada-002": "text-embedding-005"}
    assert emb.truncate is False
    assert emb.max_concurrent_batches == 4
    table = {name: (x.texts_per_request, x.tokens_per_request, x.tokens_per_text, x.native_dimensions,
                    x.min_dimensions, x.max_dimensions) for name, x in emb.limits.items()}
    assert table == {"gemini-embedding-001": (250, 20000, 2048, 3072, 1, 3072),
                     "text-embedding-005": (250, 20000, 2048, 768, 1, 768),
                     "text-multilingual-embedding-002": (250, 20000, 2048, 768, 1, 768)}


def test_embeddings_contract_keys():
    emb = parse_config({**BASE, "embeddings": {
        "default": None, "map": {"text-embedding-3-small": "text-multilingual-embedding-002"}, "truncate": True,
        "max_concurrent_batches": 2,
        "limits": {"gemini-embedding-001": {"texts_per_request": 1},
                   "text-embedding-005": {"tokens_per_request": 8000, "tokens_per_text": 1024, "min_dimensions": 64,
                                          "max_dimensions": 512},
                   "gemini-embedding-002": {"native_dimensions": 1536}}}}).embeddings
    assert emb.default is None and emb.truncate is True and emb.max_concurrent_batches == 2
    assert emb.map == {"text-embedding-3-small": "text-multilingual-embedding-002"}  # a given map replaces the built-in
    gem = emb.limits["gemini-embedding-001"]  # overridden key by key: the rest stays built-in
    assert (gem.texts_per_request, gem.tokens_per_request, gem.native_dimensions, gem.max_dimensions) == (1, 20000,
                                                                                                        3072, 3072)
    te5 = emb.limits["text-embedding-005"]
    assert (te5.tokens_per_request, te5.tokens_per_text, te5.native_dimensions, te5.min_dimensions,
            te5.max_dimensions) == (8000, 1024, 768, 64, 512)
    new = emb.limits["gemini-embedding-002"]  # a model the table lacks: Vertex's general limits
    assert (new.texts_per_request, new.tokens_per_request, new.tokens_per_text, new.max_dimensions) == (250, 20000,
                                                                                                      2048, 1536)
    assert "text-multilingual-embedding-002" in emb.limits
    unknown = emb.limits_for("some-future-embedding")
    assert (unknown.texts_per_request, unknown.native_dimensions, unknown.max_dimensions) == (250, None, None)


@pytest.mark.parametrize("embeddings, fragment", [
    ({"defualt": "x"}, "embeddings.defualt: unknown key"),
    ({"limits": {"gemini-embedding-001": {"texts_per_requests": 5}}},
     "embeddings.limits.gemini-embedding-001.texts_per_requests: unknown key"),
    ({"limits": {"text-embedding-005": {"texts_per_request": 0}}}, "texts_per_request"),
    ({"limits": {"text-embedding-005": {"texts_per_request": 2049}}}, "texts_per_request"),
    ({"limits": {"text-embedding-005": {"min_dimensions": 800}}}, "max_dimensions must not be below min_dimensions"),
    ({"limits": {"text-embedding-005": {"tokens_per_text": 30000}}}, "tokens_per_text must not exceed"),
    ({"limits": {"x": 5}}, "embeddings.limits.x"),
    ({"max_concurrent_batches": 0}, "max_concurrent_batches"),
    ({"truncate": "sometimes"}, "embeddings.truncate"),
    ({"map": {"text-embedding-3-small": " "}}, "embeddings.map"),
    ({"default": ""}, "embeddings.default"),
])
def test_invalid_embeddings_config_names_the_key(embeddings, fragment):
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, "embeddings": embeddings})
    assert fragment in str(err.value)


def test_predict_url():
    assert predict_url(project="p", region="us-central1", model="gemini-embedding-001") == (
        "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/publishers/google/models/"
        "gemini-embedding-001:predict")
    assert predict_url(project="p", region="global", model="text-embedding-005", base_url="http://127.0.0.1:9") == (
        "http://127.0.0.1:9/v1/projects/p/locations/global/publishers/google/models/text-embedding-005:predict")


def test_embedding_routing():
    d = Router(parse_config(BASE))
    assert d.route_embedding("text-embedding-3-large").vertex_model == "gemini-embedding-001"
    ada = d.route_embedding("text-embedding-ada-002")
    assert (ada.requested, ada.vertex_model, ada.limits.max_dimensions) == ("text-embedding-ada-002",
                                                                            "text-embedding-005", 768)
    assert d.route_embedding("text-multilingual-embedding-002").vertex_model == "text-multilingual-embedding-002"
    assert d.route_embedding("my-embedder").vertex_model == "gemini-embedding-001"  # the default
    assert d.embedding_url(ada, region="europe-west4") == (
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/publishers/google/"
        "models/text-embedding-005:predict")
    assert d.listed_embedding_models() == ["text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002",
                                           "gemini-embedding-001", "text-embedding-005"]
    strict = Router(parse_config({**BASE, "embeddings": {"default": None, "map": {"emb": "gemini-embedding-002"}}}))
    with pytest.raises(UnknownModel):
        strict.route_embedding("text-embedding-3-small")  # the given map replaced the built-in one
    assert not strict.embedding_routable("text-embedding-3-small")
    assert strict.embedding_routable("text-embedding-005")  # a Vertex model of the limits table, as is
    unlisted = strict.route_embedding("emb")
    assert (unlisted.vertex_model, unlisted.limits.max_dimensions) == ("gemini-embedding-002", None)
    assert strict.listed_embedding_models() == ["emb", "gemini-embedding-002"]
    assert strict.route("gpt-4o").vertex_model == "claude-sonnet-4-5@20250929"  # chat routing is untouched


def test_readme_config_block_parses_and_shows_the_embeddings_defaults():
    import re
    from pathlib import Path

    import yaml
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(vertex:.*?)```", text, re.S).group(1)
    assert parse_config(yaml.safe_load(block)).embeddings == parse_config(BASE).embeddings
def test_state_limits_budgets_contract_keys_and_defaults():
    cfg = parse_config(BASE)
    assert (cfg.state.url, cfg.state.fail_closed) == (None, False)
    assert (cfg.state.connect_timeout_seconds, cfg.state.timeout_seconds) == (0.5, 0.5)
    assert (cfg.state.response_ttl_days, cfg.state.response_max_count, cfg.state.response_max_mb) == (30, 100_000, 512)
    assert (cfg.limits.requests_per_minute, cfg.limits.tokens_per_minute) == (None, None)
    assert (cfg.budgets.monthly_usd, cfg.budgets.prices) == (None, {})
    cfg = parse_config({**BASE, "state": {"url": "rediss://:${PW}@redis.internal:6380/2", "fail_closed": True},
                        "limits": {"requests_per_minute": 60, "tokens_per_minute": 100000},
                        "budgets": {"monthly_usd": 250.5,
                                    "prices": {"claude-x": {"input": 1, "output": 2, "cache_write": 1.25,
                                                            "cache_read": 0.1}}}},
                       {"PW": "hunter2"})
    assert cfg.state.url == "rediss://:hunter2@redis.internal:6380/2" and cfg.state.fail_closed
    assert "hunter2" not in repr(cfg.state)
    assert cfg.limits.requests_per_minute == 60 and cfg.budgets.monthly_usd == 250.5
    assert cfg.budgets.prices["claude-x"].cache_write == 1.25
    for url in ("sqlite:///var/lib/modelmux/state.sqlite3", "redis://127.0.0.1:6379/0", "redis://localhost",
                "redis://user:pw@h:1/15", "sqlite://rel.db"):
        assert parse_config({**BASE, "state": {"url": url}}).state.url == url


@pytest.mark.parametrize("data, fragment", [
    ({"state": {"url": "postgres://x"}}, "state.url"),
    ({"state": {"url": "redis://:pw@/0"}}, "needs a host"),
    ({"state": {"url": "redis://h:99999/0"}}, "state.url"),
    ({"state": {"url": "redis://h:1/zero"}}, "database must be a number"),
    ({"state": {"url": "sqlite://"}}, "file path"),
    ({"state": {"timeout_seconds": 0}}, "state.timeout_seconds"),
    ({"state": {"ttl": 3}}, "state.ttl: unknown key"),
    ({"limits": {"requests_per_minute": 0}}, "limits.requests_per_minute"),
    ({"limits": {"rpm": 5}}, "limits.rpm: unknown key"),
    ({"budgets": {"monthly_usd": -1}}, "budgets.monthly_usd"),
    ({"budgets": {"prices": {"m": {"input": 1}}}}, "budgets.prices.m.output"),
    ({"security": {"client_keys": [{"key": "k", "nmae": "x"}]}}, "client_keys.0.nmae: unknown key"),
    ({"security": {"client_keys": ["a", {"name": "team"}]}}, "client_keys.1.key"),
    ({"security": {"client_keys": [{"key": "k", "name": "has space"}]}}, "client_keys.0.name"),
    ({"security": {"client_keys": [{"key": "k", "requests_per_minute": 0}]}}, "client_keys.0.requests_per_minute"),
    ({"security": {"client_keys": [{"key": "a", "name": "t"}, {"key": "b", "name": "t"}]}}, "the same name"),
    ({"security": {"client_keys": ["a", {"key": "a", "name": "x"}]}}, "the same key"),
    ({"security": {"client_keys": [" "]}}, "must not be empty"),
    ({"security": {"client_keys": [3]}}, "client_keys.0"),
    ({"security": {"client_keys": "one-key"}}, "must be a list"),
])
def test_invalid_state_and_client_keys_name_the_key(data, fragment):
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, **data})
    assert fragment in str(err.value)


def test_client_keys_as_strings_or_objects():
    cfg = parse_config({**BASE, "security": {"client_keys": [
        "plain-secret", {"key": "${TEAM_A_KEY}", "name": "team-a", "requests_per_minute": 5, "monthly_usd": None}]}},
        {"TEAM_A_KEY": "sk-team-a"})
    # the plain list other code (client_auth) compares with, whichever way each key was written
    assert cfg.security.client_keys == ("plain-secret", "sk-team-a")
    plain, team_a = cfg.security.clients
    assert team_a.name == "team-a" and team_a.requests_per_minute == 5
    assert team_a.limit("requests_per_minute", 60) == 5
    assert team_a.limit("tokens_per_minute", 1000) == 1000  # not written: the default
    assert team_a.limit("monthly_usd", 10.0) is None  # written as null: no budget for this key
    assert plain.name.startswith("key-") and "plain" not in plain.name  # a short hash, never the key
    assert "plain-secret" not in repr(cfg) and "sk-team-a" not in repr(cfg)
    assert cfg.security.client_for("sk-team-a") is team_a
    assert cfg.security.client_for("sk-other") is None
    assert parse_config(BASE).security.clients == ()
    assert parse_config({**BASE, "security": {"client_keys": ["x"]}}).security.clients[0].name == plain_name("x")


def plain_name(key):
    from modelmux.config import key_name
    return key_name(key)
@pytest.mark.parametrize("region", ["us-east5", "europe-west1", "global", "us", "eu", " asia-southeast1 "])
def test_regions_that_name_a_vertex_region_are_accepted(region):
    cfg = parse_config({"vertex": {"project": "p", "region": region, "fallback_regions": [region, "global"]}})
    assert cfg.vertex.region == region.strip() and cfg.vertex.fallback_regions == (region.strip(), "global")


@pytest.mark.parametrize("bad", ["evil.example.com/x?", "us-east5.evil.com", "US-EAST5", "us east5", "a/b", "x@y",
                                 "us-east5#", "", " ", "é", "us\nx"])
@pytest.mark.parametrize("key", ["region", "fallback_regions"])
def test_a_region_that_would_change_the_vertex_hostname_is_refused(key, bad):
    """vertex.region goes into the hostname (`R-aiplatform.googleapis.com`): only a region name may (issue 10)."""
    vertex = {"project": "p", key: [bad] if key == "fallback_regions" else bad}
    with pytest.raises(ConfigError) as err:
        parse_config({"vertex": vertex})
    assert f"vertex.{key}" in str(err.value) and "not a Vertex AI region" in str(err.value)
def test_security_and_bounds_keys_defaults_and_checks():
    cfg = parse_config(BASE)
    assert (cfg.security.proxy_auth, cfg.security.allow_unauthenticated_proxy, cfg.security.forward_private_networks) \
        == (None, False, False)
    assert (cfg.timeouts.client_header_seconds, cfg.timeouts.client_idle_seconds) == (20.0, 20.0)
    assert (cfg.bounds.max_connections, cfg.bounds.max_request_bytes, cfg.bounds.max_upstream_bytes,
            cfg.bounds.max_header_bytes) == (None, 30 << 20, 64 << 20, 64 << 10)
    auth = parse_config({**BASE, "security": {"proxy_auth": "relay:${PW}"}}, {"PW": "s3cret-pw"})
    assert auth.security.proxy_auth == "relay:s3cret-pw" and "s3cret-pw" not in repr(auth)
    assert parse_config({**BASE, "security": {"proxy_auth": "@/etc/modelmux.htpasswd"}}).security.proxy_auth
    for bad, fragment in [("any", "no authentication"), ("user", "user:password"), ("user:", "user:password"),
                          (":pw", "user:password")]:
        with pytest.raises(ConfigError, match=fragment):
            parse_config({**BASE, "security": {"proxy_auth": bad}})
    for key, value in [("client_header_seconds", 0), ("client_idle_seconds", -1)]:
        with pytest.raises(ConfigError, match=f"timeouts.{key}"):
            parse_config({**BASE, "timeouts": {key: value}})
    with pytest.raises(ConfigError, match="bounds.max_connectoins: unknown key"):
        parse_config({**BASE, "bounds": {"max_connectoins": 5}})
