"""`POST /v1/embeddings` as RAG apps call it — openai-python (floats, its default base64, `dimensions`, a 600-text
batch), LangChain's OpenAIEmbeddings (token-id input), LlamaIndex's OpenAIEmbedding and the openai Node SDK —
through a real `modelmux run` in HTTPS_PROXY mode and reverse (base URL) mode, against the emulator's Vertex
`:predict`. Every answer is validated against OpenAI's `CreateEmbeddingResponse`."""

from __future__ import annotations

import hashlib
import json
import math
import socket
import subprocess

import httpx
import openai
import pytest
from openapi import validate_embeddings, validate_error

from e2e import CLIENT_KEY, CLIENT_KINDS_VIA_PROXY, client_env, emulator_and_proxy, openai_client, use_client_env
from modelmux import cl100k
from test_clients_node import NODE, NODE_DIR, ok

PREDICT = "/publishers/google/models/gemini-embedding-001:predict"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    with emulator_and_proxy(tmp_path_factory.mktemp("embeddings")) as running:
        yield running


@pytest.fixture(params=CLIENT_KINDS_VIA_PROXY)
def kind(request):
    return request.param


@pytest.fixture
def client(kind, setup, monkeypatch):
    return openai_client(kind, setup[0], monkeypatch)


def predict_calls(emu, since: int) -> list[dict]:
    return [r for r in emu.requests()[since:] if r["path"].endswith(":predict")]


def unit(vector: list[float]) -> bool:
    return abs(math.sqrt(sum(v * v for v in vector)) - 1) < 1e-3


def test_floats_and_the_sdks_default_base64_carry_the_same_vectors(client, setup):
    _, emu = setup
    seen = len(emu.requests())
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["alpha", "beta gamma"],
                                                     encoding_format="float")
    floats = validate_embeddings(raw.http_response.content)
    body = raw.http_response.json()
    assert body["model"] == "text-embedding-3-small" and [d["index"] for d in body["data"]] == [0, 1]
    assert all(len(v) == 3072 and unit(v) for v in floats) and floats[0] != floats[1]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] == 3  # Vertex's token counts, summed
    [call] = predict_calls(emu, seen)
    assert call["path"].endswith(PREDICT) and "authorization" not in json.dumps(call["body"])
    assert call["body"] == {"instances": [{"content": "alpha"}, {"content": "beta gamma"}],
                            "parameters": {"autoTruncate": False}}
    # no encoding_format: openai-python asks for base64 and decodes it itself
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["alpha", "beta gamma"])
    assert isinstance(raw.http_response.json()["data"][0]["embedding"], str)
    decoded = [d.embedding for d in raw.parse().data]
    assert all(abs(a - b) < 1e-6 for x, y in zip(decoded, floats) for a, b in zip(x, y))
    assert validate_embeddings(raw.http_response.content) == decoded


def test_dimensions_reach_vertex_as_output_dimensionality(client, setup):
    _, emu = setup
    seen = len(emu.requests())
    result = client.embeddings.create(model="text-embedding-3-large", input="hello", dimensions=256)
    assert len(result.data[0].embedding) == 256 and unit(result.data[0].embedding)
    assert predict_calls(emu, seen)[0]["body"]["parameters"] == {"outputDimensionality": 256, "autoTruncate": False}
    with pytest.raises(openai.BadRequestError) as err:  # gemini-embedding-001 has 3072 at most: refused locally
        client.embeddings.create(model="text-embedding-3-large", input="hello", dimensions=4096)
    assert err.value.body["param"] == "dimensions"
    validate_error({"error": err.value.body})
    assert len(predict_calls(emu, seen)) == 1


def test_a_600_text_batch_is_split_for_vertex_and_reassembled_in_order(client, setup):
    _, emu = setup
    texts = [f"document number {i}" for i in range(600)]
    seen = len(emu.requests())
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=texts,
                                                     encoding_format="float")
    vectors = validate_embeddings(raw.http_response.content)
    calls = predict_calls(emu, seen)
    # Vertex takes 250 texts per request; the batches go concurrently, so they arrive in any order
    assert sorted(len(c["body"]["instances"]) for c in calls) == [100, 250, 250]
    sent = [inst["content"] for c in calls for inst in c["body"]["instances"]]
    assert sorted(sent) == sorted(texts)
    body = raw.http_response.json()
    assert [d["index"] for d in body["data"]] == list(range(600))
    # each vector is its own text's: the same text alone gives the same vector
    for i in (0, 249, 250, 599):
        alone = client.embeddings.create(model="text-embedding-3-small", input=texts[i], encoding_format="float")
        assert vectors[i] == alone.data[0].embedding
    assert body["usage"]["prompt_tokens"] == 600 * 3


def test_token_id_input_is_decoded_before_it_reaches_vertex(client, setup):
    _, emu = setup
    enc = cl100k.encoding()
    texts = ["What is RAG?", "naïve — 日本語"]
    seen = len(emu.requests())
    result = client.embeddings.create(model="text-embedding-ada-002", input=[enc.encode(t) for t in texts],
                                      encoding_format="float")
    assert len(result.data) == 2 and len(result.data[0].embedding) == 768  # text-embedding-005
    [call] = predict_calls(emu, seen)
    assert call["path"].endswith("/text-embedding-005:predict")
    assert [i["content"] for i in call["body"]["instances"]] == texts


@pytest.mark.parametrize("body, param", [
    ({"model": "text-embedding-3-small", "input": ""}, "input"),
    ({"model": "text-embedding-3-small", "input": []}, "input"),
    ({"model": "text-embedding-3-small", "input": ["ok", ""]}, "input[1]"),
    ({"model": "text-embedding-3-small", "input": ["x"] * 2049}, "input"),
    ({"model": "text-embedding-3-small", "input": [[1, True]]}, "input[0][1]"),
    ({"model": "text-embedding-3-small", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "text-embedding-3-small", "input": "word " * 3000}, "input"),
    ({"input": "x"}, "model"),
])
def test_bad_input_is_a_400_naming_the_parameter_before_any_upstream_call(kind, setup, body, param):
    proxy, emu = setup
    seen = len(emu.requests())
    url = (f"http://127.0.0.1:{proxy.reverse_port}/v1/embeddings" if kind == "reverse"
           else "https://api.openai.com/v1/embeddings")
    http = httpx.Client(proxy=f"http://127.0.0.1:{proxy.regular_port}" if kind != "reverse" else None,
                        verify=str(proxy.ca), trust_env=False, timeout=20)
    r = http.post(url, json=body, headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert r.status_code == 400, r.text
    validate_error(r.json())
    assert r.json()["error"]["param"] == param
    assert predict_calls(emu, seen) == []


def test_a_vertex_429_is_an_openai_429_with_retry_after(client, setup):
    with pytest.raises(openai.RateLimitError) as err:
        client.embeddings.create(model="text-embedding-3-small", input=["fine", "[[status:429]] quota"])
    assert int(err.value.response.headers["retry-after"]) >= 1
    validate_error({"error": err.value.body})
    assert "Vertex AI" in err.value.message


@pytest.fixture
def tiktoken_cache(tmp_path, monkeypatch):
    """LangChain's tiktoken downloads cl100k_base at run time: give it the file modelmux ships, and block the
    network to prove nothing is fetched (the proxy is reached over loopback, which stays open)."""
    import tiktoken_ext.openai_public as public
    url = next(c for c in public.cl100k_base.__code__.co_consts if isinstance(c, str) and c.endswith(".tiktoken"))
    data = cl100k.resources.files("modelmux").joinpath(cl100k.DATA_FILE).read_bytes()
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(data)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    real = socket.socket.connect

    def loopback_only(sock, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"the network is blocked in this test ({address[0]})")
        return real(sock, address)
    monkeypatch.setattr(socket.socket, "connect", loopback_only)


def test_langchain_openai_embeddings_with_its_token_id_input(kind, setup, monkeypatch, tiktoken_cache):
    from langchain_openai import OpenAIEmbeddings

    proxy, emu = setup
    base_url = use_client_env(kind, proxy, monkeypatch)
    emb = OpenAIEmbeddings(model="text-embedding-3-small", api_key=CLIENT_KEY, max_retries=0,
                           embedding_ctx_length=2048, timeout=httpx.Timeout(20),
                           **({"base_url": base_url} if base_url else {}))
    seen = len(emu.requests())
    docs = emb.embed_documents(["Paris is in France.", "Berlin is in Germany."])
    query = emb.embed_query("Where is Paris?")
    assert len(docs) == 2 and all(len(v) == 3072 for v in [*docs, query])
    calls = predict_calls(emu, seen)
    sent = [i["content"] for c in calls for i in c["body"]["instances"]]
    assert sent == ["Paris is in France.", "Berlin is in Germany.", "Where is Paris?"]  # token ids, decoded


def test_llamaindex_openai_embedding(kind, setup, monkeypatch):
    from llama_index.embeddings.openai import OpenAIEmbedding

    proxy, emu = setup
    base_url = use_client_env(kind, proxy, monkeypatch)
    emb = OpenAIEmbedding(model="text-embedding-3-small", api_key=CLIENT_KEY, max_retries=0, timeout=20,
                          **({"api_base": base_url} if base_url else {}))
    seen = len(emu.requests())
    vectors = emb.get_text_embedding_batch(["one text", "another text"])
    query = emb.get_query_embedding("a question")
    assert len(vectors) == 2 and len(query) == 3072 and unit(query)
    assert [i["content"] for c in predict_calls(emu, seen) for i in c["body"]["instances"]] == [
        "one text", "another text", "a question"]


def test_the_node_sdk_embeds_with_its_default_base64_and_floats(kind, setup):
    proxy, _ = setup
    job = {"apiKey": CLIENT_KEY, "steps": [
        {"op": "embeddings", "params": {"model": "text-embedding-3-small", "input": ["alpha", "beta gamma"]}},
        {"op": "embeddings", "params": {"model": "text-embedding-3-small", "input": ["alpha", "beta gamma"],
                                        "encoding_format": "float"}}]}
    env = client_env(kind, proxy)
    if kind == "https_proxy":
        job["proxy"] = f"http://127.0.0.1:{proxy.regular_port}"
    else:
        job["baseURL"] = f"http://127.0.0.1:{proxy.reverse_port}/v1"
    out = subprocess.run([NODE, str(NODE_DIR / "client.mjs")], input=json.dumps(job), capture_output=True,
                         text=True, timeout=60, env=env, cwd=NODE_DIR)
    assert out.returncode == 0, out.stderr
    decoded, floats = (ok(r)["result"] for r in json.loads(out.stdout)["results"])
    validate_embeddings(floats)
    assert decoded["model"] == "text-embedding-3-small" and len(decoded["data"]) == 2
    for a, b in zip(decoded["data"], floats["data"]):
        assert len(a["embedding"]) == 3072 and all(abs(x - y) < 1e-6 for x, y in zip(a["embedding"], b["embedding"]))
