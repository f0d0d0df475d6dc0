import pytest

from modelmux.config import ConfigError, expand_env, load_config, parse_config
from modelmux.vertex import Router, UnknownModel, model_url, vertex_origin

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
