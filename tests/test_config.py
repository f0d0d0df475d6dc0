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
