"""POST /v1/embeddings → Vertex :predict batches → one OpenAI answer (modelmux/translate/embeddings.py), and the
cl100k_base tokenizer shipped with the package (modelmux/cl100k.py).

The Vertex answers here are made by `vertex_answer` from the batch it answers (deterministic vectors derived from
each text, its word count as `token_count`), so an answer that lands at the wrong index is caught."""

from __future__ import annotations

import array
import base64
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from openapi import validate_embeddings, validate_error

from modelmux import cl100k
from modelmux.config import EmbeddingLimits, parse_config
from modelmux.translate import embeddings
from modelmux.translate.embeddings import (
    MAX_INPUTS, TOKEN_BUDGET_SHARE, EmbeddingsPlan, assemble, assemble_bytes, batch_error, batch_tokens, embeddings_plan,
    parse_embeddings_request, plan_embeddings, split, token_budget)
from modelmux.translate.errors import OpenAIError
from modelmux.vertex import EmbeddingRoute, Router

ROOT = Path(__file__).resolve().parents[1]
ROUTER = Router(parse_config({"vertex": {"project": "p"}}))
ENC = cl100k.encoding()
PROPS = settings(deadline=None, database=None, max_examples=200,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=80)


def body(**fields) -> bytes:
    return json.dumps({"model": "text-embedding-3-small", **fields}).encode()


def plan_for(truncate: bool = False, **fields) -> EmbeddingsPlan:
    return embeddings_plan(body(**fields), ROUTER.route_embedding, truncate=truncate)


def rejected(truncate: bool = False, raw: bytes | None = None, **fields) -> OpenAIError:
    with pytest.raises(OpenAIError) as err:
        embeddings_plan(raw if raw is not None else body(**fields), ROUTER.route_embedding, truncate=truncate)
    validate_error(err.value.body())
    return err.value


def vector(text: str, width: int) -> list[float]:
    """A deterministic vector for a text: what lets a test tell which text an embedding belongs to."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = (seed * (width * 4 // len(seed) + 1))[:width * 4]
    return [round(x / 2**31, 6) for x in struct.unpack(f"<{width}i", raw)]


def vertex_answer(batch: dict, width: int = 8, token_count=None) -> dict:
    width = batch["parameters"].get("outputDimensionality", width)
    return {"predictions": [
        {"embeddings": {"values": vector(inst["content"], width),
                        "statistics": {"token_count": len(inst["content"].split()) if token_count is None
                                       else token_count, "truncated": False}}}
        for inst in batch["instances"]], "metadata": {"billableCharacterCount": 1}}


def route(limits: EmbeddingLimits, vertex_model: str = "text-embedding-005") -> EmbeddingRoute:
    return EmbeddingRoute(requested="text-embedding-ada-002", vertex_model=vertex_model, limits=limits)


# --- the shipped tokenizer -----------------------------------------------------------------------------------

OFFLINE_CHECK = r"""
import hashlib, json, os, shutil, socket, sys

def refuse(*args, **kwargs):
    raise OSError("the network is blocked in this test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse

from modelmux import cl100k
from modelmux.translate.embeddings import parse_embeddings_request
ours = cl100k.encoding()
ids = ours.encode_ordinary("Embeddings on Vertex, offline.")
req = parse_embeddings_request(json.dumps({"model": "m", "input": [ids, [9906]]}).encode())
untouched = os.listdir(os.environ["TIKTOKEN_CACHE_DIR"])

# tiktoken's own loader, given the file where its cache keeps the download, takes it as the file it pins
import tiktoken, tiktoken_ext.openai_public as public
consts = public.cl100k_base.__code__.co_consts
url = next(c for c in consts if isinstance(c, str) and c.endswith("/cl100k_base.tiktoken"))
theirs_dir = sys.argv[1]
shutil.copy(cl100k.resources.files("modelmux").joinpath(cl100k.DATA_FILE),
            os.path.join(theirs_dir, hashlib.sha1(url.encode()).hexdigest()))
os.environ["TIKTOKEN_CACHE_DIR"] = theirs_dir
theirs = tiktoken.get_encoding("cl100k_base")
print(json.dumps({
    "texts": req.texts, "cache_untouched": untouched == [], "hash_pinned_by_tiktoken": cl100k.SHA256 in consts,
    "same_ranks": ours._mergeable_ranks == theirs._mergeable_ranks, "same_pat": ours._pat_str == theirs._pat_str,
    "same_specials": ours._special_tokens == theirs._special_tokens,
    "same_ids": ours.encode_ordinary("naïve café 12345 \n\n def f(x): return x") ==
                theirs.encode_ordinary("naïve café 12345 \n\n def f(x): return x"),
}))
"""


def test_cl100k_loads_offline_from_the_package_and_is_tiktokens_own(tmp_path):
    """No socket can connect and every proxy points at a closed port: the shipped file is all there is. tiktoken's
    cache directory stays empty (nothing read or written), and tiktoken's own cl100k_base, built from the same file,
    is identical."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "theirs").mkdir()
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty"), "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "ALL_PROXY": "http://127.0.0.1:9", "NO_PROXY": "",
           "PYTHONPATH": str(ROOT / "addon")}
    out = subprocess.run([sys.executable, "-c", OFFLINE_CHECK, str(tmp_path / "theirs")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {"texts": ["Embeddings on Vertex, offline.", "Hello"], "cache_untouched": True,
                      "hash_pinned_by_tiktoken": True, "same_ranks": True, "same_pat": True, "same_specials": True,
                      "same_ids": True}


def test_cl100k_refuses_a_file_that_is_not_the_pinned_one():
    good = cl100k.resources.files("modelmux").joinpath(cl100k.DATA_FILE).read_bytes()
    assert len(cl100k.mergeable_ranks(good)) == 100256
    with pytest.raises(cl100k.EncodingFileError, match="SHA-256"):
        cl100k.mergeable_ranks(good[:-2] + b"9\n")


@pytest.fixture
def tiktoken_cache(tmp_path, monkeypatch):
    """tiktoken's own cache holding the shipped file, so that a client library's tiktoken (LangChain's) works
    offline too; the network is blocked while it is in use."""
    import tiktoken_ext.openai_public as public
    url = next(c for c in public.cl100k_base.__code__.co_consts if isinstance(c, str) and c.endswith(".tiktoken"))
    data = cl100k.resources.files("modelmux").joinpath(cl100k.DATA_FILE).read_bytes()
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(data)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))

    def refuse(*args, **kwargs):
        raise OSError("the network is blocked in this test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return tmp_path


def test_langchain_token_id_input_decodes_to_its_texts(tiktoken_cache):
    """LangChain's OpenAIEmbeddings sends token ids (its own tiktoken, cl100k_base): they come back as the texts."""
    from langchain_openai import OpenAIEmbeddings
    texts = ["What is the capital of France?", "Paris is the capital and largest city of France.", "naïve — 日本語"]
    _, tokens, _, _ = OpenAIEmbeddings(model="text-embedding-3-small", api_key="sk-test")._tokenize(texts, 1000)
    assert all(isinstance(t, list) and all(type(i) is int for i in t) for t in tokens)
    plan = plan_for(input=tokens)
    assert [inst["content"] for inst in plan.batches[0]["instances"]] == texts
    # its default chunk (8191 tokens) is longer than Vertex takes: a 400 that says how to fit, not a silent cut
    _, long, _, _ = OpenAIEmbeddings(model="text-embedding-3-small", api_key="sk-test")._tokenize(
        ["word " * 3000], 1000)
    err = rejected(input=long)
    assert (err.status, err.param, err.code) == (400, "input[0]", "context_length_exceeded")
    assert "embedding_ctx_length=2048" in err.message and "embeddings.truncate" in err.message


# --- the request ---------------------------------------------------------------------------------------------

def test_input_forms():
    one = plan_for(input="The food was delicious")
    assert one.batches == [{"instances": [{"content": "The food was delicious"}],
                            "parameters": {"autoTruncate": False}}]
    assert (one.requested, one.vertex_model, one.encoding_format, one.count) == (
        "text-embedding-3-small", "gemini-embedding-001", "float", 1)
    ids = ENC.encode_ordinary("hello world")
    assert plan_for(input=ids).batches[0]["instances"] == [{"content": "hello world"}]
    assert plan_for(input=["a", "b"]).batches[0]["instances"] == [{"content": "a"}, {"content": "b"}]
    nested = plan_for(input=[ids, ENC.encode_ordinary("bye")]).batches[0]["instances"]
    assert nested == [{"content": "hello world"}, {"content": "bye"}]
    assert plan_for(input=[100257]).batches[0]["instances"] == [{"content": "<|endoftext|>"}]  # a special token's text
    # bytes cut mid-character decode as tiktoken decodes them
    assert plan_for(input=ENC.encode_ordinary("🦜")[:1]).batches[0]["instances"][0]["content"] == "\ufffd"
    # a lone surrogate (valid JSON, not UTF-8) is made U+FFFD rather than sent to fail
    raw = b'{"model": "text-embedding-3-small", "input": ["ok", "a\\ud800b"]}'
    assert embeddings_plan(raw, ROUTER.route_embedding, truncate=False).batches[0]["instances"][1] == {
        "content": "a\ufffdb"}


def test_parameters():
    p = plan_for(input="x", dimensions=256, encoding_format="base64", user="user-1234")
    assert p.batches[0]["parameters"] == {"autoTruncate": False, "outputDimensionality": 256}
    assert (p.dimensions, p.encoding_format) == (256, "base64")
    assert plan_for(input="x", encoding_format=None, dimensions=None, user=None).encoding_format == "float"
    assert plan_for(truncate=True, input="x").batches[0]["parameters"] == {"autoTruncate": True}
    assert plan_for(input="x", dimensions=3072).dimensions == 3072  # gemini-embedding-001's native size
    assert plan_for(input="x", model="text-embedding-ada-002", dimensions=768).vertex_model == "text-embedding-005"
    req = parse_embeddings_request(body(input="x", user="u", some_future_field={"a": 1}))  # unknown fields: ignored
    assert req.user == "u"


INVALID = [
    ({"input": ""}, "input", "invalid_value"),
    ({"input": []}, "input", "invalid_value"),
    ({"input": [""]}, "input[0]", "invalid_value"),
    ({"input": ["a", ""]}, "input[1]", "invalid_value"),
    ({"input": ["a", 1]}, "input[1]", "invalid_type"),
    ({"input": ["a", None]}, "input[1]", "invalid_type"),
    ({"input": [True]}, "input[0]", "invalid_type"),
    ({"input": [1, True]}, "input[1]", "invalid_type"),
    ({"input": [1, 2.0]}, "input[1]", "invalid_type"),
    ({"input": [1.0]}, "input[0]", "invalid_type"),
    ({"input": [[1], []]}, "input[1]", "invalid_value"),
    ({"input": [[1], [False]]}, "input[1][0]", "invalid_type"),
    ({"input": [[1], "a"]}, "input[1]", "invalid_type"),
    ({"input": [{"text": "a"}]}, "input[0]", "invalid_type"),
    ({"input": {"text": "a"}}, "input", "invalid_type"),
    ({"input": 5}, "input", "invalid_type"),
    ({"input": True}, "input", "invalid_type"),
    ({"input": None}, "input", "missing_required_parameter"),
    ({"input": ["x"] * (MAX_INPUTS + 1)}, "input", "invalid_value"),
    ({"input": [[1]] * (MAX_INPUTS + 1)}, "input", "invalid_value"),
    ({"input": [100256]}, "input[0]", "invalid_value"),  # unassigned
    ({"input": [5, 100277]}, "input[1]", "invalid_value"),  # beyond the vocabulary
    ({"input": [-1]}, "input[0]", "invalid_value"),
    ({"input": [2**64]}, "input[0]", "invalid_value"),
    ({"input": [[5], [5, 100300]]}, "input[1][1]", "invalid_value"),
    ({"input": "x", "model": None}, "model", "missing_required_parameter"),
    ({"input": "x", "model": 5}, "model", "invalid_type"),
    ({"input": "x", "model": ""}, "model", "invalid_value"),
    ({"input": "x", "dimensions": 0}, "dimensions", "invalid_value"),
    ({"input": "x", "dimensions": True}, "dimensions", "invalid_type"),
    ({"input": "x", "dimensions": 1.5}, "dimensions", "invalid_type"),
    ({"input": "x", "dimensions": "256"}, "dimensions", "invalid_type"),
    ({"input": "x", "dimensions": 3073}, "dimensions", "invalid_value"),  # gemini-embedding-001: up to 3072
    ({"input": "x", "model": "text-embedding-ada-002", "dimensions": 769}, "dimensions", "invalid_value"),
    ({"input": "x", "encoding_format": "hex"}, "encoding_format", "invalid_value"),
    ({"input": "x", "encoding_format": 1}, "encoding_format", "invalid_value"),
    ({"input": "x", "user": 5}, "user", "invalid_type"),
]


@pytest.mark.parametrize("fields, param, code", INVALID)
def test_bad_input_is_a_400_naming_the_parameter(fields, param, code):
    err = rejected(**fields)
    assert (err.status, err.type, err.param, err.code) == (400, "invalid_request_error", param, code)
    assert param in err.message or code == "missing_required_parameter"


def test_missing_input_and_bad_bodies():
    assert rejected(raw=b'{"model": "text-embedding-3-small"}').param == "input"
    for raw in (b"{", b"[1]", b'{"model": "m", "input": NaN}', b"\xff", b"[" * 100_000):
        err = rejected(raw=raw)
        assert err.status == 400


def test_dimensions_range_comes_from_the_limits_table():
    small = route(EmbeddingLimits(native_dimensions=768, min_dimensions=64, max_dimensions=512))
    req = parse_embeddings_request(body(input="x", dimensions=32))
    with pytest.raises(OpenAIError) as err:
        plan_embeddings(req, small, truncate=False)
    assert err.value.param == "dimensions" and "64 … 512" in err.value.message
    free = route(EmbeddingLimits(), vertex_model="future-embedding")  # a model no table knows: Vertex decides
    assert plan_embeddings(parse_embeddings_request(body(input="x", dimensions=99_999)), free,
                           truncate=False).dimensions == 99_999


def test_unrouted_model_is_a_404():
    strict = Router(parse_config({"vertex": {"project": "p"}, "embeddings": {"default": None}}))
    with pytest.raises(OpenAIError) as err:
        embeddings_plan(body(model="my-embedder", input="x"), strict.route_embedding, truncate=False)
    assert (err.value.status, err.value.param, err.value.code) == (404, "model", "model_not_found")
    validate_error(err.value.body())


def test_too_long_text_is_a_400_unless_truncating():
    text = "tok " * 2100  # 2100 cl100k_base tokens
    assert len(ENC.encode_ordinary(text)) > 2048
    err = rejected(input=["short", text])
    assert (err.status, err.param, err.code) == (400, "input[1]", "context_length_exceeded")
    assert "2048" in err.message and "gemini-embedding-001" in err.message and "embeddings.truncate" in err.message
    assert rejected(input=text).param == "input"
    assert rejected(input=list(range(1000, 3049))).param == "input"  # 2049 token ids
    assert rejected(input=[[5] * 2049]).param == "input[0]"
    exactly = "tok " * 2047 + "tok"
    assert len(ENC.encode_ordinary(exactly)) == 2048
    assert plan_for(input=exactly).count == 1  # at the limit: fine
    cut = plan_for(truncate=True, input=["short", text])
    assert cut.batches[0]["parameters"]["autoTruncate"] is True
    assert [inst["content"] for b in cut.batches for inst in b["instances"]] == ["short", text]
    assert plan_for(truncate=True, input=[5] * 9000).count == 1


def test_a_small_request_is_not_tokenized(monkeypatch):
    """Its UTF-8 size bounds its token count (a token is at least one byte), so it needs no tokenizer."""
    def fail():
        raise AssertionError("tokenized")
    monkeypatch.setattr(cl100k, "encoding", fail)
    assert plan_for(input=["short text"] * 600).spans == [(0, 250), (250, 500), (500, 600)]


# --- batching ------------------------------------------------------------------------------------------------

def test_600_texts_split_by_texts_per_request():
    plan = plan_for(input=[f"text number {i}" for i in range(600)])
    assert plan.spans == [(0, 250), (250, 500), (500, 600)]
    assert [len(b["instances"]) for b in plan.batches] == [250, 250, 100]
    assert plan.batches[1]["instances"][0] == {"content": "text number 250"}


def test_split_by_tokens():
    text = "tok " * 1999 + "tok"  # 2000 tokens: 8 fit the 16,000-token budget (80% of 20,000)
    assert token_budget(EmbeddingLimits()) == int(20_000 * TOKEN_BUDGET_SHARE) == 16_000
    plan = plan_for(input=[text] * 20)
    assert plan.spans == [(0, 8), (8, 16), (16, 20)]
    one = Router(parse_config({"vertex": {"project": "p"}, "embeddings": {
        "limits": {"gemini-embedding-001": {"texts_per_request": 1}}}}))
    assert embeddings_plan(body(input=["a", "b", "c"]), one.route_embedding, truncate=False).spans == [
        (0, 1), (1, 2), (2, 3)]


def test_a_text_above_the_budget_goes_alone_when_truncating():
    limits = EmbeddingLimits(tokens_per_request=100, tokens_per_text=50)
    req = parse_embeddings_request(body(input=["a", "tok " * 300, "b", "c"]))
    assert plan_embeddings(req, route(limits), truncate=True).spans == [(0, 1), (1, 2), (2, 4)]


@PROPS
@given(costs=st.lists(st.integers(0, 120), min_size=1, max_size=300), per_request=st.integers(1, 20),
       budget=st.integers(1, 400))
def test_split_never_exceeds_limits_and_keeps_order(costs, per_request, budget):
    spans = split(costs, per_request, budget)
    assert spans[0][0] == 0 and spans[-1][1] == len(costs)
    assert all(a < b for a, b in spans) and all(spans[k][1] == spans[k + 1][0] for k in range(len(spans) - 1))
    for a, b in spans:
        assert b - a <= per_request
        assert b - a == 1 or sum(costs[a:b]) <= budget
    for (a, b), (c, _) in zip(spans, spans[1:]):  # greedy: each run closed because the next input did not fit
        assert b - a == per_request or sum(costs[a:c + 1]) > budget


@PROPS
@given(texts=st.lists(TEXT, min_size=1, max_size=40), per_request=st.integers(1, 8), per_text=st.integers(1, 40),
       extra=st.integers(0, 200), truncate=st.booleans())
def test_plans_respect_the_model_limits(texts, per_request, per_text, extra, truncate):
    limits = EmbeddingLimits(texts_per_request=per_request, tokens_per_text=per_text,
                             tokens_per_request=per_text + extra)
    counts = [len(ENC.encode_ordinary(t)) for t in texts]
    req = parse_embeddings_request(body(input=texts))
    if not truncate and max(counts) > per_text:
        with pytest.raises(OpenAIError) as err:
            plan_embeddings(req, route(limits), truncate=truncate)
        first = next(i for i, c in enumerate(counts) if c > per_text)
        assert (err.value.param, err.value.code) == (f"input[{first}]", "context_length_exceeded")
        return
    plan = plan_embeddings(req, route(limits), truncate=truncate)
    assert [inst["content"] for b in plan.batches for inst in b["instances"]] == texts
    budget = token_budget(limits)
    for batch, (a, b) in zip(plan.batches, plan.spans):
        assert len(batch["instances"]) == b - a <= per_request
        assert b - a == 1 or sum(counts[a:b]) <= budget
        assert batch["parameters"]["autoTruncate"] is truncate


# --- the answer ----------------------------------------------------------------------------------------------

def test_answers_reassemble_in_order_and_validate():
    texts = [f"passage {i}: " + "words " * (i % 7) for i in range(600)]
    plan = plan_for(input=texts)
    answers = [vertex_answer(b, width=16) for b in plan.batches]  # narrow: the schema validator is slow
    out = assemble(plan, answers[:1] + [json.dumps(a).encode() for a in answers[1:]])  # parsed or raw bytes
    vectors = validate_embeddings(out)
    assert out["object"] == "list" and out["model"] == "text-embedding-3-small"
    assert [d["index"] for d in out["data"]] == list(range(600))
    assert vectors == [vector(t, 16) for t in texts]
    words = sum(len(t.split()) for t in texts)
    assert out["usage"] == {"prompt_tokens": words, "total_tokens": words}
    native = plan_for(input=["x", "y"])
    wide = assemble(native, [vertex_answer(native.batches[0], width=3072)])
    assert [len(v) for v in validate_embeddings(wide)] == [3072, 3072]


def openai_through_the_translator(**create) -> tuple[list, dict]:
    """openai-python's `embeddings.create`, its HTTP answered in-process by plan → vertex_answer → assemble."""
    import httpx
    import openai
    sent: dict = {}

    def handle(request: httpx.Request) -> httpx.Response:
        sent.update(json.loads(request.content))
        try:
            plan = embeddings_plan(request.content, ROUTER.route_embedding, truncate=False)
            answer = assemble(plan, [vertex_answer(b) for b in plan.batches])
        except OpenAIError as err:
            return httpx.Response(err.status, json=err.body(), headers=err.headers)
        validate_embeddings(answer)
        return httpx.Response(200, json=answer)
    client = openai.OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1", max_retries=0,
                           http_client=httpx.Client(transport=httpx.MockTransport(handle)))
    return client.embeddings.create(model="text-embedding-3-small", **create).data, sent


def test_base64_is_what_openai_python_decodes():
    texts = ["alpha", "beta", "gamma"]
    data, sent = openai_through_the_translator(input=texts, dimensions=16)
    assert sent["encoding_format"] == "base64"  # openai-python asks for it on its own …
    expected = [array.array("f", vector(t, 16)).tolist() for t in texts]  # float32 of Vertex's values
    assert [d.embedding for d in data] == expected  # … and decodes it to these floats
    data, sent = openai_through_the_translator(input=texts, dimensions=16, encoding_format="float")
    assert sent["encoding_format"] == "float" and [d.embedding for d in data] == [vector(t, 16) for t in texts]
    import openai
    with pytest.raises(openai.BadRequestError) as err:
        openai_through_the_translator(input=[""])
    assert err.value.status_code == 400 and err.value.param == "input[0]"
    plan = plan_for(input=texts, encoding_format="base64", dimensions=16)
    out = assemble(plan, [vertex_answer(b) for b in plan.batches])
    assert [struct.unpack("<16f", base64.b64decode(d["embedding"])) for d in out["data"]] == [
        tuple(e) for e in expected]  # little-endian float32, whatever the machine


@PROPS
@given(rows=st.lists(st.lists(st.floats(-1e6, 1e6, width=32), min_size=4, max_size=4), min_size=1, max_size=9))
def test_base64_round_trips_float32(rows):
    plan = plan_for(input=[f"t{i}" for i in range(len(rows))], encoding_format="base64")
    answer = {"predictions": [{"embeddings": {"values": r, "statistics": {"token_count": 1}}} for r in rows]}
    out = assemble(plan, [answer])
    assert validate_embeddings(out) == rows  # float32 values survive exactly


def test_usage_takes_vertex_counts_and_counts_itself_where_none():
    plan = plan_for(input=["one two three", "four"])
    answer = vertex_answer(plan.batches[0], token_count=6.0)  # a float count
    assert assemble(plan, [answer])["usage"]["prompt_tokens"] == 12
    del answer["predictions"][1]["embeddings"]["statistics"]
    answer["predictions"][0]["embeddings"]["statistics"]["token_count"] = float("inf")
    expected = len(ENC.encode_ordinary("one two three")) + len(ENC.encode_ordinary("four"))
    assert assemble(plan, [answer])["usage"] == {"prompt_tokens": expected, "total_tokens": expected}


def test_tokens_of_a_batch_vertex_answered_when_another_failed():
    """What is charged when batch 2 of 2 fails: batch 1's tokens, as Vertex counted them (ours where it gave none)."""
    plan = plan_for(input=[f"text {i}" for i in range(300)])
    first = vertex_answer(plan.batches[0], token_count=2)
    assert batch_tokens(plan, 0, json.dumps(first).encode()) == 500
    del first["predictions"][0]["embeddings"]["statistics"]
    assert batch_tokens(plan, 0, json.dumps(first).encode()) == 498 + len(ENC.encode_ordinary("text 0"))
    assert batch_tokens(plan, 1, b"not json") == batch_tokens(plan, 1, b"[]") == 0


JSON_STYLES = {"default": {}, "pretty": {"indent": 2}, "compact": {"separators": (",", ":")}}


@pytest.fixture
def no_slow_path(monkeypatch):
    def fail(*args):
        raise AssertionError("assemble_bytes took the parse-and-print path")
    monkeypatch.setattr(embeddings, "assemble", fail)


def test_float_answer_bytes_copy_vertex_numbers(no_slow_path):
    texts = [f"passage {i}" for i in range(600)]
    plan = plan_for(input=texts)
    answers = [json.dumps(vertex_answer(b, width=32), indent=2).encode() for b in plan.batches]  # as Google prints
    content = assemble_bytes(plan, answers)
    assert b" " not in content and b"\n" not in content  # whitespace inside the arrays removed
    assert validate_embeddings(content) == [vector(t, 32) for t in texts]
    assert json.loads(content)["usage"] == {"prompt_tokens": 1200, "total_tokens": 1200}


@PROPS
@given(rows=st.lists(st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-5, 5), min_size=3,
                              max_size=3), min_size=1, max_size=12),
       style=st.sampled_from(sorted(JSON_STYLES)), fmt=st.sampled_from(["float", "base64"]),
       counts=st.sampled_from([7, 2.0, None]))
def test_answer_bytes_equal_the_answer(rows, style, fmt, counts):
    plan = plan_for(input=[f"t{i}" for i in range(len(rows))], encoding_format=fmt)
    answer = {"predictions": [{"embeddings": {"values": r, "statistics": {"token_count": counts}}} for r in rows]}
    raw = json.dumps(answer, **JSON_STYLES[style]).encode()
    assert json.loads(assemble_bytes(plan, [raw])) == assemble(plan, [answer])


def test_answer_bytes_fall_back_to_assemble_and_its_errors():
    plan = plan_for(input=["a", "b"])
    good = vertex_answer(plan.batches[0])
    assert json.loads(assemble_bytes(plan, [good])) == assemble(plan, [good])  # parsed answers: the dict path
    with pytest.raises(OpenAIError) as err:
        assemble_bytes(plan, [json.dumps(good).replace("0.", "NaN, 0.", 1).encode()])
    assert (err.value.status, err.value.code) == (502, "bad_upstream_response")
    for broken in ({"values": [0.1, 0.2], "statistics": {}},  # another "values" array beside the vectors
                   {"embeddings": {"values": [1]}}):  # the wrong width
        answer = json.loads(json.dumps(good))
        answer["predictions"][1] = broken
        with pytest.raises(OpenAIError) as err:
            assemble_bytes(plan, [json.dumps(answer).encode()])
        assert err.value.status == 502 and "prediction 1" in err.value.message
    odd = json.dumps(good).encode().replace(b"[", b"[ ", 1)  # harmless whitespace: still the fast path
    assert json.loads(assemble_bytes(plan, [odd])) == assemble(plan, [good])


def bad(plan, answers) -> OpenAIError:
    with pytest.raises(OpenAIError) as err:
        assemble(plan, answers)
    assert (err.value.status, err.value.type, err.value.code) == (502, "server_error", "bad_upstream_response")
    validate_error(err.value.body())
    return err.value


def test_unexpected_answers_are_a_502():
    plan = plan_for(input=["a", "b"], encoding_format="base64")
    good = vertex_answer(plan.batches[0])
    assert "not JSON" in bad(plan, [b"<html>"]).message
    assert "not JSON" in bad(plan, [b'{"predictions": [NaN]}']).message
    assert "not JSON" in bad(plan, [b"[" * 100_000]).message
    with pytest.raises(OpenAIError):
        assemble_bytes(plan_for(input="a"), [b'{"predictions": ' + b"[" * 100_000])
    assert "predictions" in bad(plan, [{"error": "x"}]).message
    assert "1 predictions for 2 inputs" in bad(plan, [{"predictions": good["predictions"][:1]}]).message
    for broken in ({"embeddings": {}}, {"embeddings": {"values": []}}, {"embeddings": {"values": "0.1"}}, 5,
                   {"embeddings": {"values": [0.1, None]}}, {"embeddings": {"values": [0.1]}}):
        answer = json.loads(json.dumps(good))
        answer["predictions"][1] = broken
        assert "prediction 1" in bad(plan, [answer]).message
    sized = plan_for(input=["a"], dimensions=8)
    short = {"predictions": [{"embeddings": {"values": [0.5] * 7, "statistics": {"token_count": 1}}}]}
    assert "7 values, not 8" in bad(sized, [short]).message
    many = plan_for(input=["a"] * 300)
    assert "(request 2 of 2)" in bad(many, [vertex_answer(many.batches[0]), b"null"]).message
    with pytest.raises(ValueError):
        assemble(many, [vertex_answer(many.batches[0])])


def test_vertex_errors_in_a_batch():
    plan = plan_for(input=["a"] * 300)
    quota = batch_error(plan, 1, 429, b'{"error": {"code": 429, "message": "Quota exceeded", "status": '
                                      b'"RESOURCE_EXHAUSTED"}}', {"Retry-After": "7"}, region="us-east5")
    assert (quota.status, quota.code, quota.headers["retry-after"]) == (429, "rate_limit_exceeded", "7")
    assert "Quota exceeded" in quota.message and "(inputs 250…299, request 2 of 2)" in quota.message
    validate_error(quota.body())
    invalid = batch_error(plan_for(input="a"), 0, 400, b'{"error": {"message": "Invalid outputDimensionality", '
                                                       b'"status": "INVALID_ARGUMENT"}}')
    assert invalid.status == 400 and "outputDimensionality" in invalid.message and "inputs" not in invalid.message
    assert batch_error(plan, 0, 503, b"upstream connect error").status == 503


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                    | st.text(max_size=20), lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)
FIELD = JSON | st.lists(st.integers(-5, 100_300), max_size=20) | st.lists(
    st.lists(st.integers(-5, 100_300), max_size=6), max_size=6) | st.lists(TEXT, max_size=6)


@settings(PROPS, max_examples=150)
@given(fields=st.fixed_dictionaries(
    {"model": st.sampled_from(["text-embedding-3-small", "text-embedding-ada-002", "anything"]) | JSON,
     "input": FIELD},
    optional={"dimensions": st.sampled_from([8, 768, 3072, 5000]) | JSON,
              "encoding_format": st.sampled_from(["float", "base64"]) | JSON, "user": JSON, "extra": JSON}),
       truncate=st.booleans())
def test_any_body_gives_a_plan_or_an_openai_error(fields, truncate):
    try:
        plan = embeddings_plan(json.dumps(fields).encode(), ROUTER.route_embedding, truncate=truncate)
    except OpenAIError as err:
        assert err.status in (400, 404)
        validate_error(err.body())
        event(f"{err.status} {err.param}")
        return
    event("planned")
    assert sum(len(b["instances"]) for b in plan.batches) == plan.count >= 1
    answer = assemble_bytes(plan, [json.dumps(vertex_answer(b)).encode() for b in plan.batches])
    validate_embeddings(answer)
