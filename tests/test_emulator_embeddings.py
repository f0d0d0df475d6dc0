"""The emulator's Vertex text-embedding models (`…/publishers/google/models/{MODEL}:predict`), run as a real
subprocess and driven over HTTP: vectors, token statistics, Vertex's limits and errors, auth, faults, the log."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import httpx
import pytest
from emulator_helpers import client, emu, faults, token  # noqa: F401  (fixtures)
from emulator_helpers import STATIC_TOKEN, Running, rules

from modelmux.emulator import embeddings

GEMINI, TE005, MULTILINGUAL, TE004 = ("gemini-embedding-001", "text-embedding-005", "text-multilingual-embedding-002",
                                      "text-embedding-004")
NATIVE = {GEMINI: 3072, TE005: 768, MULTILINGUAL: 768, TE004: 768}


def url(emu: Running, model: str = TE005, location: str = "us-central1", colon: str = ":") -> str:
    return f"{emu.url}/v1/projects/p1/locations/{location}/publishers/google/models/{model}{colon}predict"


def predict(client: httpx.Client, emu: Running, payload: Any, token: str | None = STATIC_TOKEN,
            **where: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    content = payload if isinstance(payload, bytes) else json.dumps(payload)
    return client.post(url(emu, **where), content=content, headers=headers)


def request(*texts: str, **parameters: Any) -> dict:
    payload: dict = {"instances": [{"content": t} for t in texts]}
    if parameters:
        payload["parameters"] = parameters
    return payload


def vectors(resp: httpx.Response) -> list[list[float]]:
    assert resp.status_code == 200, resp.text
    return [p["embeddings"]["values"] for p in resp.json()["predictions"]]


def google_400(resp: httpx.Response) -> str:
    """The message of a Google INVALID_ARGUMENT answer."""
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"code", "message", "status"} and (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    return error["message"]


def norm(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values))


# --- answers -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", NATIVE)
def test_answer_shape_and_native_dimension(client, emu, model):
    resp = predict(client, emu, request("Hello, world!", "  two  words "), model=model)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    answer = resp.json()
    assert set(answer) == {"predictions", "metadata"}
    first, second = answer["predictions"]
    assert first["embeddings"]["statistics"] == {"token_count": 4, "truncated": False}  # Hello , world !
    assert second["embeddings"]["statistics"] == {"token_count": 2, "truncated": False}
    assert answer["metadata"] == {"billableCharacterCount": len("Hello,world!") + len("twowords")}
    for prediction in (first, second):
        values = prediction["embeddings"]["values"]
        assert len(values) == NATIVE[model] and all(isinstance(v, float) for v in values)
        assert abs(norm(values) - 1) < 1e-6
        assert len(set(values)) > 0.99 * NATIVE[model] and min(values) < 0 < max(values)  # spread, not constant


def test_vectors_are_deterministic_and_depend_on_what_is_embedded(client, emu):
    base = {"content": "the same text"}
    variants = [base, {**base, "task_type": "RETRIEVAL_DOCUMENT"},
                {**base, "task_type": "RETRIEVAL_DOCUMENT", "title": "A title"}, {"content": "another text"}]
    first = vectors(predict(client, emu, {"instances": variants}))
    again = vectors(predict(client, emu, {"instances": list(reversed(variants))}))
    assert again == list(reversed(first))  # in instance order, the same on every request
    assert len({tuple(v) for v in first}) == 4
    assert vectors(predict(client, emu, {"instances": [{**base, "task_type": "RETRIEVAL_QUERY"}]})) == first[:1]
    other_model = vectors(predict(client, emu, request("the same text"), model=TE004))
    assert other_model != first[:1]


@pytest.mark.parametrize("model, dimension", [(GEMINI, 768), (GEMINI, 1), (TE005, 256), (TE005, 768)])
def test_output_dimensionality_truncates_and_renormalises(client, emu, model, dimension):
    [native] = vectors(predict(client, emu, request("matryoshka doll"), model=model))
    [short] = vectors(predict(client, emu, request("matryoshka doll", outputDimensionality=dimension), model=model))
    assert len(short) == dimension and abs(norm(short) - 1) < 1e-6
    scale = norm(native[:dimension])
    assert all(abs(s - n / scale) < 1e-8 for s, n in zip(short, native))


def test_percent_encoded_colon(client, emu):
    assert len(vectors(predict(client, emu, request("x"), colon="%3A"))[0]) == 768


def test_token_counting_rule():
    assert embeddings.count_tokens("Hello, world!") == 4
    assert embeddings.count_tokens("don't stop_me now: 3.14") == 9  # don ' t stop_me now : 3 . 14
    assert embeddings.count_tokens("  \n ") == 0


# --- limits --------------------------------------------------------------------------------------------------

def test_250_instances_and_not_251(client, emu):
    texts = [f"text number {k}" for k in range(251)]
    assert len(vectors(predict(client, emu, request(*texts[:250], outputDimensionality=4), model=GEMINI))) == 250
    assert len(vectors(predict(client, emu, request(*texts[:250], outputDimensionality=4)))) == 250
    for model in (GEMINI, TE005):
        message = google_400(predict(client, emu, request(*texts, outputDimensionality=4), model=model))
        assert message.startswith("Unable to submit request because it has a batchSize value of 251 but the supported "
                                  "range is from 1 (inclusive) to 251 (exclusive).")


def test_gemini_instance_limit_is_a_setting(client, emu):
    assert client.post("/_emulator/settings", json={"gemini_embedding_instances": 1}).status_code == 200
    try:
        assert len(vectors(predict(client, emu, request("one"), model=GEMINI))) == 1
        message = google_400(predict(client, emu, request("one", "two"), model=GEMINI))
        assert "batchSize value of 2 but the supported range is from 1 (inclusive) to 2 (exclusive)" in message
        assert len(vectors(predict(client, emu, request("one", "two"), model=TE005))) == 2  # the others: 250
    finally:
        client.post("/_emulator/settings", json={"gemini_embedding_instances": 250})


def _words(count: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{k}" for k in range(count))


def test_20000_tokens_per_request(client, emu):
    at_limit = [_words(2000, f"t{k}_") for k in range(10)]
    resp = predict(client, emu, request(*at_limit, outputDimensionality=2))
    assert [p["embeddings"]["statistics"]["token_count"] for p in resp.json()["predictions"]] == [2000] * 10
    over = at_limit[:-1] + [_words(2001)]
    assert google_400(predict(client, emu, request(*over, outputDimensionality=2))) == (
        "Unable to submit request because the input token count is 20001 but the model supports up to 20000 tokens "
        "per request. Reduce the input token count and try again.")


def test_long_text_is_truncated_by_default(client, emu):
    long = _words(2049) + " tail"
    for parameters in ({}, {"autoTruncate": True}):
        resp = predict(client, emu, request(long, **parameters))
        [prediction] = resp.json()["predictions"]
        assert prediction["embeddings"]["statistics"] == {"token_count": 2048, "truncated": True}
        assert resp.json()["metadata"]["billableCharacterCount"] == len("".join(_words(2048).split()))
        assert [prediction["embeddings"]["values"]] == vectors(predict(client, emu, request(_words(2048))))
    [exact] = predict(client, emu, request(_words(2048))).json()["predictions"]
    assert exact["embeddings"]["statistics"] == {"token_count": 2048, "truncated": False}


def test_long_text_without_auto_truncate_is_400(client, emu):
    message = google_400(predict(client, emu, {"instances": [{"content": "short"}, {"content": _words(2049)}],
                                               "parameters": {"autoTruncate": False}}))
    assert message.startswith("Unable to submit request because instances[1] has 2049 input tokens but the model "
                              "supports up to 2048.")


# --- bad requests --------------------------------------------------------------------------------------------

BAD_REQUESTS: list[tuple[str, Any, str]] = [
    ("not JSON", b"{", "Invalid JSON payload received. Unexpected token."),
    ("not an object", [], "Invalid JSON payload received. Expected an object"),
    ("unknown key", {**request("x"), "input": "x"}, 'Invalid JSON payload received. Unknown name "input"'),
    ("no instances", {}, "instances: a non-empty list of instances is required."),
    ("empty instances", {"instances": []}, "instances: a non-empty list"),
    ("instances object", {"instances": {"content": "x"}}, "instances: a non-empty list"),
    ("instance string", {"instances": ["x"]}, "instances[0]: must be an object"),
    ("unknown instance field", {"instances": [{"content": "x", "text": "x"}]}, 'instances[0]: unknown field "text"'),
    ("no content", {"instances": [{"task_type": "CLUSTERING"}]}, "instances[0].content: a string is required."),
    ("content list", {"instances": [{"content": ["x"]}]}, "instances[0].content: a string is required."),
    ("empty content", request("fine", ""), "instances[1].content: The text content is empty."),
    ("blank content", request(" \n\t"), "instances[0].content: The text content is empty."),
    ("bad task_type", {"instances": [{"content": "x", "task_type": "SEARCH"}]},
     'instances[0].task_type: Unsupported task type "SEARCH"; it must be one of RETRIEVAL_QUERY, RETRIEVAL_DOCUMENT'),
    ("lowercase task_type", {"instances": [{"content": "x", "task_type": "clustering"}]},
     "instances[0].task_type: Unsupported task type"),
    ("title without document", {"instances": [{"content": "x", "title": "T"}]},
     "instances[0].title: a title is only valid with task_type RETRIEVAL_DOCUMENT."),
    ("title not a string", {"instances": [{"content": "x", "task_type": "RETRIEVAL_DOCUMENT", "title": 1}]},
     "instances[0].title: must be a string."),
    ("parameters list", {**request("x"), "parameters": []}, "parameters: must be an object."),
    ("unknown parameter", request("x", dimensions=8), 'parameters: unknown parameter "dimensions"'),
    ("dimension 0", request("x", outputDimensionality=0), "Unable to submit request because outputDimensionality "
                                                          "value 0 is out of range: the supported range is from 1 "
                                                          "(inclusive) to 768 (inclusive)."),
    ("dimension over native", request("x", outputDimensionality=769), "Unable to submit request because "
                                                                      "outputDimensionality value 769 is out of range"),
    ("dimension string", request("x", outputDimensionality="8"), "parameters.outputDimensionality: must be an integer"),
    ("dimension boolean", request("x", outputDimensionality=True), "parameters.outputDimensionality: must be an"),
    ("dimension float", request("x", outputDimensionality=8.0), "parameters.outputDimensionality: must be an"),
    ("autoTruncate string", request("x", autoTruncate="false"), "parameters.autoTruncate: must be a boolean."),
]


@pytest.mark.parametrize("payload, message", [(p, m) for _, p, m in BAD_REQUESTS], ids=[n for n, _, _ in BAD_REQUESTS])
def test_bad_request_is_google_400(client, emu, payload, message):
    assert google_400(predict(client, emu, payload)).startswith(message)


def test_gemini_dimension_range(client, emu):
    assert len(vectors(predict(client, emu, request("x", outputDimensionality=3072), model=GEMINI))[0]) == 3072
    assert "from 1 (inclusive) to 3072 (inclusive)" in google_400(
        predict(client, emu, request("x", outputDimensionality=3073), model=GEMINI))


def test_every_task_type_is_accepted(client, emu):
    instances = [{"content": "x", "task_type": kind} for kind in embeddings.TASK_TYPES]
    assert len(embeddings.TASK_TYPES) == 8
    assert len(vectors(predict(client, emu, {"instances": instances}))) == 8


def test_unknown_model_is_google_404(client, emu):
    resp = predict(client, emu, request("x"), model="text-embedding-999", location="europe-west4")
    assert (resp.status_code, resp.json()) == (404, {"error": {"code": 404, "status": "NOT_FOUND", "message": (
        "Publisher Model `projects/p1/locations/europe-west4/publishers/google/models/text-embedding-999` not "
        "found.")}})
    claude = client.post(f"{emu.url}/v1/projects/p1/locations/us-east5/publishers/google/models/"
                         f"claude-sonnet-4-5@20250929:predict", json=request("x"),
                         headers={"Authorization": f"Bearer {STATIC_TOKEN}"})
    assert claude.status_code == 404  # Claude is Anthropic's, not Google's, and has no :predict


@pytest.mark.parametrize("bearer", [None, "ya29.forged"])
def test_auth_comes_first(client, emu, bearer):
    resp = predict(client, emu, b"not json", bearer, model="text-embedding-999")
    assert resp.status_code == 401 and resp.json()["error"]["status"] == "UNAUTHENTICATED"


def test_a_real_google_auth_token(client, emu, token):
    assert len(vectors(predict(client, emu, request("x"), token))) == 1


# --- faults, triggers, the request log -----------------------------------------------------------------------

def test_status_trigger_in_content(client, emu):
    resp = predict(client, emu, request("fine", "quota please [[status:429]]"))
    assert (resp.status_code, resp.json()) == (429, [{"error": {"code": 429, "message": "Injected error 429",
                                                               "status": "RESOURCE_EXHAUSTED"}}])


def test_fault_rules(client, emu, faults):
    faults({"match": {"model": GEMINI}, "action": "status", "status": 503, "count": 1},
           {"match": {"model": TE005}, "action": "status", "retry_after": 2, "count": 1},
           {"match": {"model": TE005, "stream": True}, "action": "stall", "ms": 1, "count": None},  # never here
           {"match": {"model": TE005}, "action": "close", "count": 1},
           {"match": {"location": "asia-east1"}, "action": "status", "status": 529, "count": 1})
    assert google_400(predict(client, emu, request(""))).startswith("instances[0].content")  # the body first
    unavailable = predict(client, emu, request("x"), model=GEMINI)
    assert (unavailable.status_code, unavailable.json()["error"]["status"]) == (503, "UNAVAILABLE")
    limited = predict(client, emu, request("x"))
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "2")
    assert limited.json()["error"]["message"].startswith(
        "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model with base model: "
        "text-embedding-005.")
    with pytest.raises(httpx.RemoteProtocolError):
        predict(client, emu, request("x"))
    overloaded = predict(client, emu, request("x"), model=TE004, location="asia-east1")
    assert overloaded.status_code == 529 and "error" in overloaded.json()  # Google's shape: no Anthropic layer here
    assert len(vectors(predict(client, emu, request("x")))) == 1
    assert [r["fired"] for r in rules(client)] == [1, 1, 0, 1, 1]
    assert client.get("/_emulator/stats").json()["model_requests"] == {"us-central1": 5, "asia-east1": 1}


def test_request_log(client, emu):
    client.delete("/_emulator/requests")
    small = request("logged", outputDimensionality=3)
    predict(client, emu, small)
    predict(client, emu, request("x"), token="ya29.forged")
    big = request(*[f"t{k}" for k in range(22)], outputDimensionality=3072)  # 67,584 values
    predict(client, emu, big, model=GEMINI)
    first, refused, large = client.get("/_emulator/requests").json()
    assert first["path"] == "/v1/projects/p1/locations/us-central1/publishers/google/models/text-embedding-005:predict"
    assert (first["status"], first["authorized"], first["body"]) == (200, True, small)
    assert first["headers"]["Authorization"] == "Bearer <redacted>"
    [logged] = first["response"]["body"]["predictions"]
    assert len(logged["embeddings"]["values"]) == 3
    assert (refused["status"], refused["authorized"]) == (401, False)
    assert large["body"] == big and len(large["response"]["body"]["predictions"]) == 22
    assert all(p["embeddings"] == {"values": None, "statistics": {"token_count": 1, "truncated": False}}
               for p in large["response"]["body"]["predictions"])  # too many values to keep
    assert re.search("ya29", json.dumps([first, refused, large])) is None
