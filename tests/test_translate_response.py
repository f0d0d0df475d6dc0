from openapi import validate_completion, validate_error

from modelmux.translate.errors import from_upstream, from_stream_error
from modelmux.translate.response import to_openai_response

MSG = {
    "id": "msg_vrtx_abc", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 7, "cache_creation_input_tokens": 3},
}


def test_message_to_completion():
    out = to_openai_response(MSG, model="gpt-4o", created=1700000000, fallback_id="f")
    validate_completion(out)
    assert out["id"] == "chatcmpl-msg_vrtx_abc" and out["model"] == "gpt-4o" and out["created"] == 1700000000
    choice = out["choices"][0]
    assert choice["message"]["content"] == "Hello there" and choice["finish_reason"] == "stop"
    assert out["usage"]["prompt_tokens"] == 20 and out["usage"]["completion_tokens"] == 5
    assert out["usage"]["total_tokens"] == 25 and out["usage"]["prompt_tokens_details"]["cached_tokens"] == 7


def test_stop_reasons():
    for stop, finish in [("max_tokens", "length"), ("stop_sequence", "stop"), ("tool_use", "tool_calls"),
                         ("refusal", "content_filter"), ("pause_turn", "stop"), (None, "stop")]:
        out = to_openai_response({**MSG, "stop_reason": stop}, model="m", created=1, fallback_id="f")
        validate_completion(out)
        assert out["choices"][0]["finish_reason"] == finish
    refused = to_openai_response({**MSG, "stop_reason": "refusal"}, model="m", created=1, fallback_id="f")
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
        (401, b'{"error":{"code":401,"message":"bad creds","status":"UNAUTHENTICATED"}}', 401, "credentials"),
        (403, b'{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}', 403, "roles/aiplatform.user"),
        (404, b'{"error":{"code":404,"message":"Publisher Model not found","status":"NOT_FOUND"}}', 404, "us-east5"),
        (529, b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', 503, "Overloaded"),
        (500, b"<html>oops</html>", 500, "oops"),
    ]
    for status, raw, want, fragment in cases:
        err = from_upstream(status, raw, {}, model="claude-x@1", region="us-east5")
        validate_error(err.body())
        assert err.status == want and fragment in err.message, (status, err)


def test_stream_error_event():
    err = from_stream_error({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert err.status == 529 and "Overloaded" in err.message and err.type == "server_error"
    validate_error(err.body())
