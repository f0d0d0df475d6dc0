import json

from hypothesis import given, settings, strategies as st
from openapi import sse_payloads, validate_chunk, validate_error, validate_openai_sse

from modelmux.translate.stream import StreamTranslator


def sse(*events, crlf=False):
    out = b"".join(f"event: {d['type']}\ndata: {json.dumps(d, ensure_ascii=False)}\n\n".encode() for d in events)
    return out.replace(b"\n", b"\r\n") if crlf else out


START = {"type": "message_start", "message": {"id": "msg_vrtx_1", "type": "message", "role": "assistant",
         "content": [], "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 4,
                                  "cache_creation_input_tokens": 0}}}
TEXTS = ["Hé", "llo, ", "世界 ", "🎉", " done"]
EVENTS = [START, {"type": "ping"},
          {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
          *[{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}} for t in TEXTS],
          {"type": "vertex_event", "foo": 1},
          {"type": "content_block_stop", "index": 0},
          {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
           "usage": {"output_tokens": 9}},
          {"type": "message_stop"}]
RAW = sse(*EVENTS)


def translate(chunks, include_usage=True):
    t = StreamTranslator(model="gpt-4o", created=1700000000, include_usage=include_usage, fallback_id="f")
    return b"".join(t.feed(c) for c in chunks) + t.finish()


def test_whole_stream_is_openai_shaped():
    out = translate([RAW])
    chunks = validate_openai_sse(out)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"] == "chatcmpl-msg_vrtx_1"
    assert all(c["model"] == "gpt-4o" and c["created"] == 1700000000 for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "".join(TEXTS)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes.count("stop") == 1 and finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 16
    assert chunks[-1]["usage"]["completion_tokens"] == 9


def test_no_usage_chunk_unless_asked():
    chunks = validate_openai_sse(translate([RAW], include_usage=False))
    assert all(c["choices"] for c in chunks) and not any("usage" in c for c in chunks)


def test_each_event_is_forwarded_when_complete():
    t = StreamTranslator(model="m", created=1, include_usage=False, fallback_id="f")
    assert t.feed(sse(START)[:-1]) == b""  # not complete yet: nothing, and never an empty body end
    assert b'"role": "assistant"' in t.feed(b"\n")
    delta = sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}})
    assert b'"content":"x"' in t.feed(delta)


def test_crlf_framing():
    assert translate([sse(*EVENTS, crlf=True)]) == translate([RAW])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(RAW)), max_size=40))
def test_any_split_of_the_upstream_bytes_gives_the_same_output(cuts):
    """Events and multi-byte UTF-8 characters split across socket reads survive intact."""
    cuts = sorted(set(cuts))
    pieces = [RAW[a:b] for a, b in zip([0, *cuts], [*cuts, len(RAW)])]
    assert translate(pieces) == translate([RAW])


def test_mid_stream_error_event_becomes_an_sdk_error_without_done():
    raw = sse(START, {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "par"}},
              {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    payloads = sse_payloads(translate([raw]))
    assert "[DONE]" not in payloads
    err = json.loads(payloads[-1])
    validate_error(err)
    assert "Overloaded" in err["error"]["message"]
    for p in payloads[:-1]:
        validate_chunk(json.loads(p))


def test_stream_cut_before_message_stop_is_an_error_not_a_clean_finish():
    raw = sse(*EVENTS[:5])
    payloads = sse_payloads(translate([raw]))
    assert "[DONE]" not in payloads
    assert not any('"finish_reason": "stop"' in p for p in payloads)
    assert json.loads(payloads[-1])["error"]["code"] == "stream_truncated"


def test_garbage_event_is_an_error_chunk():
    payloads = sse_payloads(translate([sse(START) + b"event: x\ndata: {not json\n\n"]))
    assert json.loads(payloads[-1])["error"]["code"] == "bad_upstream_event"


def test_stop_reasons_map_once():
    for stop, want in [("max_tokens", "length"), ("stop_sequence", "stop"), ("refusal", "content_filter")]:
        events = [*EVENTS[:-2], {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 1}},
                  EVENTS[-1]]
        chunks = validate_openai_sse(translate([sse(*events)]))
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == want
