from openapi import validate_completion, validate_error

from modelmux.translate.errors import from_upstream, from_stream_error
from modelmux.translate.response import AnswerShape, thinking_to_keep, to_openai_response

MSG = {
    "id": "msg_vrtx_abc", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 7, "cache_creation_input_tokens": 3},
}


def test_message_to_completion():
    out = to_openai_response(MSG, AnswerShape(model="gpt-4o", created=1700000000, fallback_id="f"))
    validate_completion(out)
    assert out["id"] == "chatcmpl-msg_vrtx_abc" and out["model"] == "gpt-4o" and out["created"] == 1700000000
    choice = out["choices"][0]
    assert choice["message"]["content"] == "Hello there" and choice["finish_reason"] == "stop"
    assert out["usage"]["prompt_tokens"] == 20 and out["usage"]["completion_tokens"] == 5
    assert out["usage"]["total_tokens"] == 25 and out["usage"]["prompt_tokens_details"]["cached_tokens"] == 7


def test_pain16_stop_reasons():
    for stop, finish in [("max_tokens", "length"), ("stop_sequence", "stop"),
                         ("refusal", "content_filter"), ("pause_turn", "stop"), (None, "stop")]:
        out = to_openai_response({**MSG, "stop_reason": stop}, AnswerShape(model="m", created=1, fallback_id="f"))
        validate_completion(out)
        assert out["choices"][0]["finish_reason"] == finish
    refused = to_openai_response({**MSG, "stop_reason": "refusal"}, AnswerShape(model="m", created=1, fallback_id="f"))
    assert refused["choices"][0]["message"]["content"] is None
    assert refused["choices"][0]["message"]["refusal"] == "Hello there"


def test_google_429_array_gzip_without_retry_after():
    import gzip, json
    body = gzip.compress(json.dumps([{"error": {"code": 429, "message": "Quota exceeded for aiplatform",
                                                "status": "RESOURCE_EXHAUSTED"}}]).encode())
    err = from_upstream(429, body, {"content-encoding": "gzip"})
    validate_error(err.body())
    assert err.status == 429 and err.code == "rate_limit_exceeded" and "Quota exceeded" in err.message
    assert err.headers["retry-after"] == "1" and err.headers["retry-after-ms"] == "1000"
    err = from_upstream(429, b'{"error": {"code": 429, "message": "slow down"}}', {"retry-after": "7"})
    assert err.headers["retry-after"] == "7" and err.headers["retry-after-ms"] == "7000"


def test_other_upstream_errors_keep_their_meaning():
    cases = [
        (400, b'{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}', 400, "max_tokens: too big"),
        (401, b'{"error":{"code":401,"message":"bad creds","status":"UNAUTHENTICATED"}}', 502, "credentials"),
        (403, b'{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}', 403, "roles/aiplatform.user"),
        (404, b'{"error":{"code":404,"message":"Publisher Model not found","status":"NOT_FOUND"}}', 404, "us-east5"),
        (529, b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', 503, "Overloaded"),
        (500, b"<html>oops</html>", 500, "oops"),
    ]
    for status, raw, want, fragment in cases:
        err = from_upstream(status, raw, {}, model="claude-x@1", region="us-east5")
        validate_error(err.body())
        assert err.status == want and fragment in err.message, (status, err)


def test_vertex_auth_errors_name_vertex_not_the_apps_openai_key():
    """A Vertex 401/403 is about modelmux's Google identity: `invalid_api_key` would make the SDK (and Codex) tell
    the user their OpenAI key is wrong, and a 401 would make Codex try to log in again."""
    err = from_upstream(401, b'{"error":{"code":401,"message":"bad creds","status":"UNAUTHENTICATED"}}', {})
    assert (err.status, err.type, err.code) == (502, "server_error", "vertex_auth_failed")
    assert "auth.credentials_file" in err.message and "not your OpenAI key" in err.message
    err = from_upstream(403, b'{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}', {})
    assert (err.status, err.type, err.code) == (403, "permission_error", "vertex_permission_denied")
    assert "roles/aiplatform.user" in err.message
    validate_error(err.body())


def test_stream_error_event():
    err = from_stream_error({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert err.status == 529 and "Overloaded" in err.message and err.type == "server_error"
    validate_error(err.body())


def test_pain15_tool_calls_with_restored_names_and_json_arguments():
    msg = {**MSG, "stop_reason": "tool_use", "content": [
        {"type": "thinking", "thinking": "need data", "signature": "sig"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "github_search_1a2b3c4d", "input": {"q": "bug"}},
        {"type": "tool_use", "id": "toolu_2", "name": "ping", "input": {}}]}
    shape = AnswerShape(model="m", created=1, fallback_id="f", tool_names={"github_search_1a2b3c4d": "github.search"},
                        expose_reasoning=True)
    out = to_openai_response(msg, shape)
    validate_completion(out)
    m = out["choices"][0]["message"]
    assert out["choices"][0]["finish_reason"] == "tool_calls" and m["content"] == "Checking."
    assert m["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "github.search", "arguments": '{"q": "bug"}'}},
        {"id": "toolu_2", "type": "function", "function": {"name": "ping", "arguments": "{}"}}]
    assert m["reasoning_content"] == "need data"  # pain 21
    assert "reasoning_content" not in to_openai_response(msg, AnswerShape(model="m", created=1, fallback_id="f"))[
        "choices"][0]["message"]
    assert thinking_to_keep(msg["content"]) == ("toolu_1", [msg["content"][0]])


def test_pain12_json_tool_answer_is_plain_content_and_finish_stop():
    msg = {**MSG, "stop_reason": "tool_use", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "json_response", "input": {"value": [1, 2]}}]}
    out = to_openai_response(msg, AnswerShape(model="m", created=1, fallback_id="f", json_tool="json_response",
                                              json_wrapped=True))
    validate_completion(out)
    assert out["choices"][0]["message"]["content"] == "[1, 2]" and out["choices"][0]["finish_reason"] == "stop"
    assert "tool_calls" not in out["choices"][0]["message"]


def test_pain18_usage_counts_cache_tokens():
    out = to_openai_response(MSG, AnswerShape(model="m", created=1, fallback_id="f"))
    assert out["usage"]["prompt_tokens"] == 10 + 7 + 3
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 7, "cache_write_tokens": 3}


def test_pain12_prose_beside_a_json_answer_never_reaches_content():
    shape = AnswerShape(model="m", created=1, fallback_id="f", json_tool="json_response")
    msg = {**MSG, "stop_reason": "tool_use", "content": [
        {"type": "text", "text": "Here you go:"},
        {"type": "tool_use", "id": "toolu_1", "name": "json_response", "input": {"a": 1}}]}
    assert to_openai_response(msg, shape)["choices"][0]["message"]["content"] == '{"a": 1}'
    refused = to_openai_response({**MSG, "stop_reason": "end_turn", "content": [{"type": "text", "text": "I won't."}]},
                                 shape)["choices"][0]["message"]
    assert refused["content"] is None and refused["refusal"] == "I won't."


def test_odd_upstream_error_answers_still_become_openai_errors():
    """A retry-after too large for a float's int, a gzip body that is corrupt or a bomb: an error, never a crash."""
    import gzip as gz

    from modelmux.translate.errors import decode_body, from_upstream
    huge = from_upstream(429, b"{}", {"retry-after": "1e308"})
    assert huge.status == 429 and huge.headers == {"retry-after": "86400", "retry-after-ms": "86400000"}
    for body in (b"\x1f\x8b\x08garbage", gz.compress(b" " * (8 << 20))):
        err = from_upstream(503, body, {"content-encoding": "gzip"})
        assert err.status == 503 and err.type == "server_error"
    assert decode_body(gz.compress(b'{"error": {"message": "m"}}')) == {"error": {"message": "m"}}
