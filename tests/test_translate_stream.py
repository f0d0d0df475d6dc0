import json

from hypothesis import given, settings, strategies as st
from openapi import sse_payloads, validate_chunk, validate_error, validate_openai_sse

from modelmux.translate.response import AnswerShape
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
    t = StreamTranslator(AnswerShape(model="gpt-4o", created=1700000000, include_usage=include_usage, fallback_id="f"))
    return b"".join(t.feed(c) for c in chunks) + t.finish()


def test_pain14_pain16_whole_stream_is_openai_shaped():
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


def test_pain17_no_usage_chunk_unless_asked():
    chunks = validate_openai_sse(translate([RAW], include_usage=False))
    assert all(c["choices"] for c in chunks) and not any("usage" in c for c in chunks)


def test_each_event_is_forwarded_when_complete():
    t = StreamTranslator(AnswerShape(model="m", created=1, fallback_id="f"))
    assert t.feed(sse(START)[:-1]) == b""  # not complete yet: nothing, and never an empty body end
    assert b'"role": "assistant"' in t.feed(b"\n")
    delta = sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}})
    assert b'"content": "x"' in t.feed(delta)


def test_crlf_framing():
    assert translate([sse(*EVENTS, crlf=True)]) == translate([RAW])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(RAW)), max_size=40))
def test_pain19_any_split_of_the_upstream_bytes_gives_the_same_output(cuts):
    """Events and multi-byte UTF-8 characters split across socket reads survive intact."""
    cuts = sorted(set(cuts))
    pieces = [RAW[a:b] for a, b in zip([0, *cuts], [*cuts, len(RAW)])]
    assert translate(pieces) == translate([RAW])


def test_pain20_mid_stream_error_event_becomes_an_sdk_error_without_done():
    raw = sse(START, {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "par"}},
              {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    payloads = sse_payloads(translate([raw]))
    assert "[DONE]" not in payloads
    err = json.loads(payloads[-1])
    validate_error(err)
    assert "Overloaded" in err["error"]["message"]
    for p in payloads[:-1]:
        validate_chunk(json.loads(p))


def test_pain20_stream_cut_before_message_stop_is_an_error_not_a_clean_finish():
    raw = sse(*EVENTS[:5])
    payloads = sse_payloads(translate([raw]))
    assert "[DONE]" not in payloads
    assert not any('"finish_reason": "stop"' in p for p in payloads)
    assert json.loads(payloads[-1])["error"]["code"] == "stream_truncated"


def test_garbage_event_is_an_error_chunk():
    payloads = sse_payloads(translate([sse(START) + b"event: x\ndata: {not json\n\n"]))
    assert json.loads(payloads[-1])["error"]["code"] == "bad_upstream_event"


def test_pain16_stop_reasons_map_once():
    for stop, want in [("max_tokens", "length"), ("stop_sequence", "stop"), ("refusal", "content_filter")]:
        events = [*EVENTS[:-2], {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 1}},
                  EVENTS[-1]]
        chunks = validate_openai_sse(translate([sse(*events)]))
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == want


def tool_events(name="lookup_1a2b3c4d", tid="toolu_A", index=1, fragments=('{"ci', 'ty": "Pa', 'ris"}')):
    return [{"type": "content_block_start", "index": index,
             "content_block": {"type": "tool_use", "id": tid, "name": name, "input": {}}},
            *[{"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": f}}
              for f in fragments],
            {"type": "content_block_stop", "index": index}]


def run_shape(events, **shape):
    t = StreamTranslator(AnswerShape(model="gpt-4o", created=1, fallback_id="f", **shape))
    return validate_openai_sse(t.feed(sse(*events)) + t.finish()), t


def test_pain15_streamed_tool_calls_index_per_call_id_and_name_once():
    events = [START,
              {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Looking."}},
              {"type": "content_block_stop", "index": 0},
              *tool_events(),
              *tool_events(name="ping", tid="toolu_B", index=2, fragments=("",)),
              {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 20}},
              {"type": "message_stop"}]
    chunks, _ = run_shape(events, tool_names={"lookup_1a2b3c4d": "lookup.v1"})
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    firsts = [tc for tc in calls if "id" in tc]
    assert [(tc["index"], tc["id"], tc["function"]["name"]) for tc in firsts] == [
        (0, "toolu_A", "lookup.v1"), (1, "toolu_B", "ping")]
    assert all("id" not in tc and "name" not in tc.get("function", {}) for tc in calls if tc not in firsts)
    args = {0: "", 1: ""}
    for tc in calls:
        args[tc["index"]] += tc["function"].get("arguments", "")
    assert json.loads(args[0]) == {"city": "Paris"} and args[1] == "{}"  # a call without arguments ends as "{}"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls" and finishes.count("tool_calls") == 1


def test_pain12_streamed_json_answer_is_content():
    events = [START, *tool_events(name="json_response", index=0, fragments=('{"value": ', '[1, ', '2]}')),
              {"type": "message_delta", "delta": {"stop_reason": "tool_use"}}, {"type": "message_stop"}]
    chunks, _ = run_shape(events, json_tool="json_response", json_wrapped=True)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert json.loads(text) == [1, 2] and not any("tool_calls" in c["choices"][0]["delta"] for c in chunks if c["choices"])
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    events = [START, *tool_events(name="json_response", index=0, fragments=('{"a"', ': 1}')),
              {"type": "message_delta", "delta": {"stop_reason": "tool_use"}}, {"type": "message_stop"}]
    chunks, _ = run_shape(events, json_tool="json_response")
    assert json.loads("".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])) == {"a": 1}


def test_pain21_thinking_streams_as_reasoning_content_and_is_kept_for_the_tool_loop():
    events = [START,
              {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me "}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "think."}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "SIG"}},
              {"type": "content_block_stop", "index": 0},
              *tool_events(),
              {"type": "message_delta", "delta": {"stop_reason": "tool_use"}}, {"type": "message_stop"}]
    chunks, t = run_shape(events, expose_reasoning=True)
    assert "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks if c["choices"]) == "Let me think."
    assert t.kept_thinking == ("toolu_A", [{"type": "thinking", "thinking": "Let me think.", "signature": "SIG"}])
    chunks, _ = run_shape(events)  # not exposed unless configured
    assert not any("reasoning_content" in c["choices"][0]["delta"] for c in chunks if c["choices"])


RICH = sse(START,
           {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
           {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "思考 🤔"}},
           {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "S1"}},
           {"type": "content_block_stop", "index": 0},
           *tool_events(index=1, fragments=('{"q": "', 'naïve ', '日本"}')),
           *tool_events(name="ping", tid="toolu_B", index=2, fragments=()),
           {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}},
           {"type": "message_stop"}, crlf=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(RICH)), max_size=60))
def test_pain19_any_split_of_a_tool_and_thinking_stream_gives_the_same_output(cuts):
    def run(pieces):
        t = StreamTranslator(AnswerShape(model="m", created=1, fallback_id="f", include_usage=True,
                                         expose_reasoning=True))
        return b"".join(t.feed(p) for p in pieces) + t.finish(), t.kept_thinking

    cuts = sorted(set(cuts))
    whole = run([RICH])
    assert run([RICH[a:b] for a, b in zip([0, *cuts], [*cuts, len(RICH)])]) == whole
    validate_openai_sse(whole[0])


def test_pain16_in_json_mode_prose_is_a_refusal_delta():
    events = [START, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "No."}},
              {"type": "message_delta", "delta": {"stop_reason": "refusal"}}, {"type": "message_stop"}]
    chunks, _ = run_shape(events, json_tool="json_response")
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("refusal") or "" for d in deltas) == "No." and not any(d.get("content") for d in deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_a_lone_surrogate_or_a_bad_last_delta_still_ends_the_stream():
    """A JSON "\\ud83c" escape from upstream passes as an escape (valid UTF-8 out); a malformed delta coalesced last
    in a feed is an error chunk, never an exception out of feed."""
    text = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}
    raw = sse(START, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
              text, {"type": "content_block_stop", "index": 0}, *EVENTS[-2:]).replace(b'"text": "x"',
                                                                                    b'"text": "\\ud83c"')
    for coalesce in (False, True):
        t = StreamTranslator(AnswerShape(model="m", created=1, fallback_id="f"), coalesce=coalesce)
        out = t.feed(raw) + t.finish()
        validate_openai_sse(out)
        assert t.done and out.endswith(b"data: [DONE]\n\n")
    t = StreamTranslator(AnswerShape(model="m", created=1, fallback_id="f"), coalesce=True)
    t.feed(sse(START, {"type": "content_block_start", "index": 0,
                       "content_block": {"type": "thinking", "thinking": "", "signature": ""}}))
    out = t.feed(sse({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": 5}}))
    assert t.failed is not None and t.failed.code == "bad_upstream_event"
    validate_error(json.loads(out.decode().removeprefix("data: ")))
