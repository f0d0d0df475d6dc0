import json

import pytest

from modelmux.translate.errors import OpenAIError
from modelmux.translate.request import parse_request, to_vertex_body

MODEL = "claude-sonnet-4-5@20250929"


def body(**kw):
    base = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    base.update(kw)
    return json.dumps(base).encode()


def vertex(raw: bytes, model=MODEL, version="vertex-2023-10-16"):
    return to_vertex_body(parse_request(raw), model, version)


def test_system_and_developer_become_system_blocks_not_user_text():
    v = vertex(body(messages=[
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": [{"type": "text", "text": "use metric"}]},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi!"},
        {"role": "system", "content": "late rule"},
        {"role": "user", "content": "again"},
    ]))
    assert v.body["system"] == [{"type": "text", "text": "be brief"}, {"type": "text", "text": "use metric"},
                                {"type": "text", "text": "late rule"}]
    assert [t["role"] for t in v.body["messages"]] == ["user", "assistant", "user"]
    assert v.body["messages"][0]["content"] == [{"type": "text", "text": "hello"}]
    assert "model" not in v.body and v.body["anthropic_version"] == "vertex-2023-10-16"


def test_same_role_runs_merge_and_empty_content_never_makes_empty_blocks():
    v = vertex(body(messages=[
        {"role": "user", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "   "},
        {"role": "user", "content": "c"},
    ]))
    assert v.body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}, {"type": "text", "text": "c"}]}]


def test_max_tokens_default_cap_and_precedence():
    assert vertex(body()).body["max_tokens"] == 16384
    assert vertex(body(), model="claude-3-5-haiku@20241022").body["max_tokens"] == 8192
    assert vertex(body(max_tokens=100)).body["max_tokens"] == 100
    assert vertex(body(max_tokens=100, max_completion_tokens=50)).body["max_tokens"] == 50
    assert vertex(body(max_completion_tokens=10**6)).body["max_tokens"] == 64000
    with pytest.raises(OpenAIError) as err:
        vertex(body(max_tokens=0))
    assert err.value.param == "max_tokens"


def test_sampling_parameters():
    assert vertex(body(temperature=0.3)).body["temperature"] == 0.3
    assert vertex(body(temperature=1.7)).body["temperature"] == 1.0
    # Sonnet 4.5 rejects both together: temperature wins
    v = vertex(body(temperature=0.2, top_p=0.9)).body
    assert v["temperature"] == 0.2 and "top_p" not in v
    v = vertex(body(temperature=0.2, top_p=0.9), model="claude-3-7-sonnet@20250219").body
    assert v["top_p"] == 0.9
    v = vertex(body(temperature=0.2, top_p=0.9), version="2026-10-21").body
    assert "temperature" not in v and "top_p" not in v
    with pytest.raises(OpenAIError) as err:
        vertex(body(temperature=3))
    assert err.value.param == "temperature" and err.value.status == 400


def test_stop_and_user_and_stream_flags():
    v = vertex(body(stop=["END", "  ", "\n"], user="someone@example.com", stream=True,
                    stream_options={"include_usage": True}))
    assert v.body["stop_sequences"] == ["END"]
    assert v.body["metadata"]["user_id"].startswith("user-") and "@" not in v.body["metadata"]["user_id"]
    assert v.body["stream"] is True and v.stream and v.include_usage
    v = vertex(body(stop="STOP"))
    assert v.body["stop_sequences"] == ["STOP"] and "stream" not in v.body and not v.include_usage


def test_data_url_images():
    v = vertex(body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]))
    assert v.body["messages"][0]["content"][1] == {
        "type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


@pytest.mark.parametrize("raw, param", [
    (b"{not json", None),
    (b"[1]", None),
    (body(messages=[]), "messages"),
    (body(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    (body(model=""), "model"),
    (body(n=2), "n"),
    (body(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
    (body(response_format={"type": "json_object"}), "response_format"),
    (body(logprobs=True), "logprobs"),
    (body(modalities=["text", "audio"]), "modalities"),
    (body(messages=[{"role": "system", "content": "only system"}]), "messages"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]),
     "messages[0].content[0].image_url"),
])
def test_bad_input_is_an_openai_400_naming_the_param(raw, param):
    with pytest.raises(OpenAIError) as err:
        vertex(raw)
    e = err.value
    assert e.status == 400 and e.type == "invalid_request_error" and e.param == param
    assert set(e.body()["error"]) == {"message", "type", "param", "code"}
