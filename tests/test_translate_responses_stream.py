import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from openapi import parse_responses_sse as parse_sse, validate, validate_responses_sse

from modelmux.translate.errors import OpenAIError
from modelmux.translate.responses.response import ResponseShape, to_response, unseal_summary, unseal_thinking
from modelmux.translate.responses.stream import ResponsesStreamTranslator, _InputDecoder
from modelmux.translate.stream import message_as_events

KEY = bytes(range(32))
ECHO = {"instructions": None, "max_output_tokens": None, "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": "auto"}, "store": False, "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled", "metadata": {}}
VERCEL = json.loads((Path(__file__).parent / "data" / "vercel_ai_responses_event_order.json").read_text())


def shape(**kw):
    base = dict(response_id="resp_" + "0" * 50, created_at=1700000000, model="gpt-5", echo=ECHO, summary=True,
                include_encrypted=True, key=KEY)
    return ResponseShape(**{**base, **kw})


def sse(*events, crlf=False):
    out = b"".join(f"event: {d['type']}\ndata: {json.dumps(d, ensure_ascii=False)}\n\n".encode() for d in events)
    return out.replace(b"\n", b"\r\n") if crlf else out


def run(pieces, **kw):
    t = ResponsesStreamTranslator(shape(**kw))
    return b"".join(t.feed(p) for p in pieces) + t.finish(), t


def kinds(raw, collapse=True):
    out = []
    for _, e in parse_sse(raw):
        if collapse and out and out[-1] == e["type"] and e["type"].endswith(".delta"):
            continue
        out.append(e["type"])
    return out


_RANDOM = re.compile(r"\b(msg|fc|rs|ctc|tsc|ws|cmp)_[0-9a-f]{50}\b|modelmux:[A-Za-z0-9_-]+")


def normalized(text):
    """Ids and sealed blobs are random: number them in order of appearance."""
    seen = {}
    return _RANDOM.sub(lambda m: seen.setdefault(m.group(0), f"<{len(seen)}>"), text)


START = {"type": "message_start", "message": {"id": "msg_vrtx_1", "type": "message", "role": "assistant",
                                              "content": [], "usage": {"input_tokens": 12, "output_tokens": 1,
                                                                       "cache_read_input_tokens": 100,
                                                                       "cache_creation_input_tokens": 30}}}


def stop(reason="end_turn", output_tokens=9):
    return [{"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None},
             "usage": {"output_tokens": output_tokens}}, {"type": "message_stop"}]


def text_block(index, *texts):
    return [{"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            *[{"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}
              for t in texts],
            {"type": "content_block_stop", "index": index}]


def thinking_block(index, *texts, signature="SIG"):
    return [{"type": "content_block_start", "index": index,
             "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
            *[{"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": t}}
              for t in texts],
            {"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": signature}},
            {"type": "content_block_stop", "index": index}]


def tool_block(index, name, tid, *fragments):
    return [{"type": "content_block_start", "index": index,
             "content_block": {"type": "tool_use", "id": tid, "name": name, "input": {}}},
            *[{"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": f}}
              for f in fragments],
            {"type": "content_block_stop", "index": index}]


RICH = [START, {"type": "ping"}, *thinking_block(0, "Let me ", "think… 思考"),
        {"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "RDX"}},
        {"type": "content_block_stop", "index": 1},
        *text_block(2, "Hé", "llo, ", "世界 ", "🎉"), {"type": "vertex_event", "foo": 1},
        *tool_block(3, "apply_patch", "toolu_P", '{"input": "*** Be', 'gin Patch\\n+caf\\u00e9 \\ud83c',
                    '\\udf89\\n*** End"}'),
        *tool_block(4, "lookup_1a2b3c4d", "toolu_A", '{"ci', 'ty": "Pa', 'ris"}'),
        *tool_block(5, "ping", "toolu_B"),
        *stop("tool_use", 42)]
RICH_SHAPE = dict(tool_names={"lookup_1a2b3c4d": "lookup.v1"}, custom_tools=frozenset({"apply_patch"}))
RAW = sse(*RICH)


def test_a_whole_stream_is_valid_and_ordered_as_openai_streams_it():
    out, t = run([RAW], **RICH_SHAPE)
    events = validate_responses_sse(out)
    assert kinds(out) == [
        "response.created", "response.in_progress",  # Vertex's own ping changes nothing (only the relay's keep-alive)
        "response.output_item.added", "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.custom_tool_call_input.delta", "response.custom_tool_call_input.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    final = events[-1]["response"]
    reasoning, message, patch, lookup, ping = final["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Let me think… 思考"}]
    assert unseal_thinking(reasoning["encrypted_content"], KEY) == [
        {"type": "thinking", "thinking": "Let me think… 思考", "signature": "SIG"},
        {"type": "redacted_thinking", "data": "RDX"}]
    assert message["content"] == [{"type": "output_text", "text": "Héllo, 世界 🎉", "annotations": [], "logprobs": []}]
    assert patch["type"] == "custom_tool_call" and patch["input"] == "*** Begin Patch\n+café 🎉\n*** End"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta")
    assert deltas == patch["input"]  # decoded out of the partial JSON as it streamed
    assert (lookup["name"], lookup["arguments"], lookup["call_id"]) == ("lookup.v1", '{"city": "Paris"}', "toolu_A")
    assert ping["arguments"] == "{}"  # a call without arguments is still valid JSON
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [e["name"] for e in done] == ["lookup.v1", "ping"]
    assert final["usage"] == {"input_tokens": 142, "input_tokens_details": {"cached_tokens": 100,
                                                                             "cache_write_tokens": 30},
                              "output_tokens": 42, "output_tokens_details": {"reasoning_tokens": 0},
                              "total_tokens": 184}
    assert final["status"] == "completed" and final["id"] == "resp_" + "0" * 50 and final["model"] == "gpt-5"
    assert t.done and t.response == final and t.usage["prompt_tokens"] == 142
    assert t.kept_thinking == ("toolu_P", [{"type": "thinking", "thinking": "Let me think… 思考", "signature": "SIG"},
                                           {"type": "redacted_thinking", "data": "RDX"}])
    assert b"[DONE]" not in out and t.finish() == b"" and t.feed(RAW) == b""


def test_encrypted_content_only_when_included_but_always_stored():
    out, t = run([RAW], include_encrypted=False, **RICH_SHAPE)
    events = validate_responses_sse(out)
    assert "encrypted_content" not in json.dumps(events)
    assert t.stored_response["output"][0]["encrypted_content"].startswith("modelmux:")
    assert "encrypted_content" not in json.dumps(t.response)


def test_no_summary_unless_asked():
    out, _ = run([RAW], summary=False, **RICH_SHAPE)
    events = validate_responses_sse(out)
    assert not any(e["type"].startswith("response.reasoning_summary") for e in events)
    assert events[-1]["response"]["output"][0]["summary"] == []


def test_each_event_is_sent_when_complete():
    t = ResponsesStreamTranslator(shape())
    assert t.feed(sse(START)[:-1]) == b""
    assert kinds(t.feed(b"\n")) == ["response.created", "response.in_progress"]
    head = t.feed(sse(*text_block(0, "x")[:1]))
    assert kinds(head) == ["response.output_item.added", "response.content_part.added"]
    delta = parse_sse(t.feed(sse(text_block(0, "hi")[1])))
    assert [(e["type"], e["delta"], e["logprobs"]) for _, e in delta] == [("response.output_text.delta", "hi", [])]


def test_crlf_framing():
    assert normalized(run([sse(*RICH, crlf=True)], **RICH_SHAPE)[0].decode()) == normalized(
        run([RAW], **RICH_SHAPE)[0].decode())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(RAW)), max_size=60), st.booleans())
def test_any_split_of_the_upstream_bytes_gives_the_same_output(cuts, crlf):
    raw = sse(*RICH, crlf=crlf)
    cuts = sorted({min(c, len(raw)) for c in cuts})
    whole = normalized(run([raw], **RICH_SHAPE)[0].decode())
    split = run([raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])], **RICH_SHAPE)[0]
    assert normalized(split.decode()) == whole


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(RAW)), max_size=20))
def test_coalescing_merges_a_feeds_deltas_and_changes_nothing_else(cuts):
    """Streaming mode `buffered`: whatever one feed holds of a block's deltas leaves as one delta event."""
    cuts = sorted(set(cuts))
    t = ResponsesStreamTranslator(shape(**RICH_SHAPE), coalesce=True)
    out = b"".join(t.feed(RAW[a:b]) for a, b in zip([0, *cuts], [*cuts, len(RAW)])) + t.finish()
    validate_responses_sse(out)
    plain, p = run([RAW], **RICH_SHAPE)
    assert normalized(json.dumps(t.response)) == normalized(json.dumps(p.response))
    if not cuts:  # all in one feed: one delta per block
        assert kinds(out, collapse=False) == kinds(plain)


MESSAGES = [
    {"content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn"},
    {"content": [{"type": "thinking", "thinking": "t1", "signature": "s1"}, {"type": "text", "text": "a"},
                 {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": [1, 2]}},
                 {"type": "tool_use", "id": "toolu_2", "name": "apply_patch", "input": {"input": "diff\n"}}],
     "stop_reason": "tool_use"},
    {"content": [{"type": "redacted_thinking", "data": "R"}, {"type": "thinking", "thinking": "t", "signature": "s"},
                 {"type": "text", "text": "x"}, {"type": "text", "text": "y"}], "stop_reason": "max_tokens"},
    {"content": [{"type": "text", "text": "partial"}], "stop_reason": "refusal"},
    {"content": [{"type": "tool_use", "id": "toolu_3", "name": "f", "input": {}}], "stop_reason": "tool_use"},
    {"content": [{"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {"query": "news"}},
                 {"type": "web_search_tool_result", "tool_use_id": "srv_1",
                  "content": [{"type": "web_search_result", "url": "https://a.example/", "title": "A"}]},
                 {"type": "text", "text": "Found."}], "stop_reason": "end_turn"},
    {"content": [], "stop_reason": "end_turn"},
    {"content": [{"type": "text", "text": "Searching."},
                 {"type": "tool_use", "id": "toolu_S", "name": "tool_search", "input": {"query": "cal", "limit": 2}}],
     "stop_reason": "tool_use"},
]


@pytest.mark.parametrize("msg", MESSAGES)
@pytest.mark.parametrize("include", [True, False])
def test_the_stream_ends_with_the_response_the_non_streamed_path_builds(msg, include):
    msg = {"id": "msg_vrtx_9", "type": "message", "role": "assistant", "model": "claude", "stop_sequence": None,
           "usage": {"input_tokens": 3, "output_tokens": 5}, **msg}
    kw = dict(include_encrypted=include, include_sources=True, custom_tools=frozenset({"apply_patch"}),
              tool_search="tool_search")
    out, t = run([message_as_events(msg)], **kw)
    validate_responses_sse(out)
    answer = to_response(msg, shape(**kw))
    validate(answer.response, "Response")
    assert normalized(json.dumps(t.response)) == normalized(json.dumps(answer.response))
    assert normalized(json.dumps(t.stored_response)) == normalized(json.dumps(answer.stored))


def test_stop_reasons_choose_the_terminal_event():
    for reason, terminal, status, detail in [
            ("end_turn", "response.completed", "completed", None), ("stop_sequence", "response.completed", "completed", None),
            ("pause_turn", "response.completed", "completed", None),
            ("max_tokens", "response.incomplete", "incomplete", {"reason": "max_output_tokens"}),
            ("model_context_window_exceeded", "response.incomplete", "incomplete", {"reason": "max_output_tokens"}),
            ("refusal", "response.incomplete", "incomplete", {"reason": "content_filter"})]:
        out, _ = run([sse(START, *text_block(0, "a"), *stop(reason))])
        events = validate_responses_sse(out)
        final = events[-1]
        assert final["type"] == terminal and final["response"]["status"] == status
        assert final["response"]["incomplete_details"] == detail
        assert final["response"]["output"][0]["status"] == ("incomplete" if status == "incomplete" else "completed")


@pytest.mark.parametrize("error, code, wording", [
    ({"type": "overloaded_error", "message": "Overloaded"}, "rate_limit_exceeded", "try again in 1s"),
    ({"type": "rate_limit_error", "message": "Too many"}, "rate_limit_exceeded", "try again in"),
    ({"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"},
     "context_length_exceeded", "prompt is too long"),
    ({"type": "api_error", "message": "Internal"}, "server_error", "Internal"),
])
def test_a_mid_stream_error_closes_what_is_open_then_fails_with_the_code_clients_act_on(error, code, wording):
    out, t = run([sse(START, *text_block(0, "par")[:2], {"type": "error", "error": error})])
    events = validate_responses_sse(out)
    assert [e["type"] for e in events][-5:] == ["response.output_text.done", "response.content_part.done",
                                                "response.output_item.done", "error", "response.failed"]
    err_event, failed = events[-2], events[-1]["response"]
    assert err_event["code"] == code and err_event["error"]["code"] == code and wording.lower() in err_event[
        "message"].lower()
    assert failed["status"] == "failed" and failed["error"]["code"] == code
    assert failed["output"][0]["status"] == "incomplete" and failed["output"][0]["content"][0]["text"] == "par"
    assert t.failed is not None and not t.done and t.feed(sse(*stop())) == b""
    if code == "rate_limit_exceeded":  # Codex's retry parser: (?i)try again in\s*(\d+(?:\.\d+)?)\s*(s|ms|seconds?)
        assert re.search(r"(?i)try again in\s*(\d+(?:\.\d+)?)\s*(s|ms|seconds?)", failed["error"]["message"])


def test_a_truncated_stream_or_a_garbage_event_fails():
    out, t = run([sse(START, *text_block(0, "a"))])
    events = validate_responses_sse(out)
    assert events[-1]["type"] == "response.failed" and events[-1]["response"]["error"]["code"] == "server_error"
    assert t.failed.code == "stream_truncated"
    out, t = run([sse(START) + b"event: x\ndata: {not json\n\n"])
    assert validate_responses_sse(out)[-1]["type"] == "response.failed" and t.failed.code == "bad_upstream_event"


def test_fail_before_any_upstream_event_is_still_a_well_formed_stream():
    t = ResponsesStreamTranslator(shape())
    out = t.fail(OpenAIError(504, "Vertex AI did not answer in time.", "timeout_error", None, "upstream_timeout"))
    assert kinds(out) == VERCEL["error_before_output"] == ["response.created", "response.in_progress", "error",
                                                           "response.failed"]
    validate_responses_sse(out)
    assert t.fail(OpenAIError(500, "again")) == b"" and t.keepalive() == b""


def test_keepalive_starts_the_stream_then_repeats_in_progress():
    t = ResponsesStreamTranslator(shape())
    first = t.keepalive()
    assert kinds(first) == ["response.created", "response.in_progress"]
    again = t.keepalive()
    assert kinds(again) == ["response.in_progress"] and len(again) < 2000
    body = first + again + t.feed(sse(START, *text_block(0, "late"), *stop()))
    events = validate_responses_sse(body)  # message_start adds no second created
    assert [e["type"] for e in events].count("response.created") == 1
    assert t.keepalive() == b"" and t.start() == b""


def test_keepalive_in_the_middle_of_a_long_thinking_block():
    t = ResponsesStreamTranslator(shape())
    block = thinking_block(0, "a", "b")
    out = t.start() + t.feed(sse(START, *block[:2])) + t.keepalive() + t.keepalive() + t.feed(
        sse(*block[2:], *text_block(1, "x"), *stop()))
    events = validate_responses_sse(out)
    assert [e["type"] for e in events].count("response.in_progress") == 3
    assert events[-1]["response"]["output"][0]["summary"][0]["text"] == "ab"


def test_a_text_delta_without_its_block_start_opens_a_message():
    out, _ = run([sse(START, {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}},
                      {"type": "message_stop"})])
    events = validate_responses_sse(out)
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "x"


def test_json_mode_streams_the_answer_as_output_text_and_prose_as_refusal():
    out, _ = run([sse(START, *tool_block(0, "json_response", "t", '{"a"', ': 1}'), *stop("tool_use"))],
                 json_tool="json_response")
    events = validate_responses_sse(out)
    assert events[-1]["response"]["output"][0]["content"] == [{"type": "output_text", "text": '{"a": 1}',
                                                               "annotations": [], "logprobs": []}]
    out, _ = run([sse(START, *tool_block(0, "json_response", "t", '{"value": ', '[1, 2]}'), *stop("tool_use"))],
                 json_tool="json_response", json_wrapped=True)
    text = "".join(e["delta"] for e in validate_responses_sse(out) if e["type"] == "response.output_text.delta")
    assert json.loads(text) == [1, 2]
    out, _ = run([sse(START, *text_block(0, "I cannot."), *stop("end_turn"))], json_tool="json_response")
    events = validate_responses_sse(out)
    assert "response.refusal.delta" in kinds(out) and "response.output_text.delta" not in kinds(out)
    assert events[-1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": "I cannot."}]


def test_web_search_with_citations():
    cite = {"type": "web_search_result_location", "url": "https://a.example/x", "title": "A", "cited_text": "c",
            "encrypted_index": "e"}
    events = [START,
              {"type": "content_block_start", "index": 0,
               "content_block": {"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {}}},
              {"type": "content_block_delta", "index": 0,
               "delta": {"type": "input_json_delta", "partial_json": '{"query": "news"}'}},
              {"type": "content_block_stop", "index": 0},
              {"type": "content_block_start", "index": 1, "content_block": {
                  "type": "web_search_tool_result", "tool_use_id": "srv_1",
                  "content": [{"type": "web_search_result", "url": "https://a.example/x", "title": "A"}]}},
              {"type": "content_block_stop", "index": 1},
              *text_block(2, "Today: "),
              {"type": "content_block_start", "index": 3, "content_block": {"type": "text", "text": "", "citations": []}},
              {"type": "content_block_delta", "index": 3, "delta": {"type": "citations_delta", "citation": cite}},
              {"type": "content_block_delta", "index": 3, "delta": {"type": "text_delta", "text": "big news"}},
              {"type": "content_block_stop", "index": 3},
              *text_block(4, "."), *stop()]
    out, _ = run([sse(*events)], include_sources=True)
    got = validate_responses_sse(out)
    search, message = got[-1]["response"]["output"]
    assert search == {"id": search["id"], "type": "web_search_call", "status": "completed",
                      "action": {"type": "search", "query": "news", "queries": ["news"],
                                 "sources": [{"type": "url", "url": "https://a.example/x"}]}}
    assert message["content"][0]["text"] == "Today: big news."
    assert message["content"][0]["annotations"] == [{"type": "url_citation", "url": "https://a.example/x", "title": "A",
                                                     "start_index": 7, "end_index": 15}]
    assert [k for k in kinds(out) if "web_search" in k or "annotation" in k] == [
        "response.web_search_call.in_progress", "response.web_search_call.searching",
        "response.web_search_call.completed", "response.output_text.annotation.added"]


def test_compaction_mode_streams_one_sealed_compaction_item():
    out, t = run([sse(START, *text_block(0, "We did ", "X."), *stop())], compaction=True)
    events = validate_responses_sse(out)
    [item] = events[-1]["response"]["output"]
    assert item["type"] == "compaction" and unseal_summary(item["encrypted_content"], KEY) == "We did X."
    assert not any(e["type"] == "response.output_text.delta" for e in events)


def test_a_client_tool_search_streams_as_one_tool_search_call_with_object_arguments():
    """Codex runs the search itself and reads the call from output_item.done; the spec has no delta events for
    it, so the arguments arrive whole (an object, not JSON text)."""
    out, t = run([sse(START, *tool_block(0, "tool_search", "toolu_S", '{"que', 'ry": "calendar", ', '"limit": 2}'),
                      *stop("tool_use"))], tool_search="tool_search")
    events = validate_responses_sse(out)
    assert kinds(out) == ["response.created", "response.in_progress", "response.output_item.added",
                          "response.output_item.done", "response.completed"]
    added, done = events[2]["item"], events[3]["item"]
    assert added["type"] == done["type"] == "tool_search_call" and added["id"] == done["id"]
    assert added["id"].startswith("tsc_") and added["status"] == "in_progress" and added["arguments"] == {}
    assert done == {"id": added["id"], "type": "tool_search_call", "status": "completed", "call_id": "toolu_S",
                    "execution": "client", "arguments": {"query": "calendar", "limit": 2}}
    assert t.response["output"] == [done]
    cut, _ = run([sse(START, *tool_block(0, "tool_search", "toolu_S", '{"que')[:2])], tool_search="tool_search")
    failed = validate_responses_sse(cut)
    assert failed[-1]["type"] == "response.failed" and failed[-1]["response"]["output"][0]["arguments"] == {}


# --- the custom tool input decoder ----------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80) | st.sampled_from(
    ['"quoted"', "back\\slash", "tab\tnew\nline", "\u2028", "🎉🎉", "\\u0041", "\x00\x1f"]),
       st.lists(st.integers(min_value=0, max_value=400), max_size=12), st.booleans())
def test_the_custom_input_decoder_gets_any_string_through_any_split(text, cuts, ascii_only):
    raw = json.dumps({"input": text}, ensure_ascii=ascii_only)
    cuts = sorted({min(c, len(raw)) for c in cuts})
    decoder = _InputDecoder()
    assert "".join(decoder.feed(raw[a:b]) for a, b in zip([0, *cuts], [*cuts, len(raw)])) == text


def test_an_unexpected_custom_input_shape_still_ends_with_the_whole_input():
    out, _ = run([sse(START, *tool_block(0, "apply_patch", "t", '{"other": 1, ', '"input": "x"}'), *stop("tool_use"))],
                 custom_tools=frozenset({"apply_patch"}))
    events = validate_responses_sse(out)
    assert events[-1]["response"]["output"][0]["input"] == '{"other": 1, "input": "x"}'
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta")
    assert deltas == '{"other": 1, "input": "x"}'


# --- golden: the event order of recorded OpenAI streams (vercel/ai fixtures) ----------------------------------

def test_golden_reasoning_then_function_call():
    out, _ = run([sse(START, *thinking_block(0, "Calculating ", "step by step"),
                      *tool_block(1, "calculator", "toolu_c", '{"a": 12, ', '"b": 7}'), *stop("tool_use"))])
    validate_responses_sse(out)
    assert kinds(out) == VERCEL["reasoning_then_function_call"]


def test_golden_function_call_and_text():
    out, _ = run([sse(START, *tool_block(0, "calculator", "toolu_c", '{"a": 1}'), *stop("tool_use"))])
    assert kinds(out) == VERCEL["function_call"]
    out, _ = run([sse(START, *text_block(0, "The final ", "result is 570."), *stop())])
    assert kinds(out) == VERCEL["text"]


def test_golden_web_search_answer():
    """The recording's items (reasoning without summary, searches, a cited answer) as the Claude blocks that
    make them; the events between are ours to get right."""
    order = VERCEL["web_search"]
    cite = {"type": "web_search_result_location", "url": "https://a.example/", "title": "A"}
    events, n = [START], 0
    for at, kind in enumerate(order):
        if kind != "response.output_item.added":
            continue
        following = order[at + 1]
        if following == "response.output_item.done":  # a reasoning item
            events += thinking_block(n, "plan")
        elif following == "response.web_search_call.in_progress":
            events += [{"type": "content_block_start", "index": n, "content_block": {
                            "type": "server_tool_use", "id": f"srv_{n}", "name": "web_search", "input": {}}},
                       {"type": "content_block_delta", "index": n,
                        "delta": {"type": "input_json_delta", "partial_json": '{"query": "q"}'}},
                       {"type": "content_block_stop", "index": n},
                       {"type": "content_block_start", "index": n + 1, "content_block": {
                           "type": "web_search_tool_result", "tool_use_id": f"srv_{n}", "content": []}},
                       {"type": "content_block_stop", "index": n + 1}]
            n += 1
        else:  # the answer: a cited block per annotation, then the rest of the text
            for _ in range(order[at:].count("response.output_text.annotation.added")):
                events += [{"type": "content_block_start", "index": n, "content_block": {"type": "text", "text": ""}},
                           {"type": "content_block_delta", "index": n,
                            "delta": {"type": "citations_delta", "citation": cite}},
                           {"type": "content_block_delta", "index": n, "delta": {"type": "text_delta", "text": "f"}},
                           {"type": "content_block_stop", "index": n}]
                n += 1
            events += text_block(n, " end.")
        n += 1
    out, _ = run([sse(*events, *stop())], summary=False)
    validate_responses_sse(out)
    assert kinds(out) == order


# --- any upstream sequence: the output is always a valid stream ---------------------------------------------

BLOCK_STARTS = [{"type": "text", "text": ""}, {"type": "text", "text": "pre"},
                {"type": "thinking", "thinking": "", "signature": ""}, {"type": "redacted_thinking", "data": "R"},
                {"type": "tool_use", "id": "toolu_F", "name": "f", "input": {}},
                {"type": "tool_use", "id": "toolu_P", "name": "apply_patch", "input": {}},
                {"type": "tool_use", "id": "toolu_J", "name": "json_response", "input": {}},
                {"type": "tool_use", "id": "toolu_S", "name": "tool_search", "input": {}},
                {"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {}},
                {"type": "web_search_tool_result", "tool_use_id": "srv_1", "content": []},
                {"type": "mcp_tool_use", "id": "m"}]
DELTAS = [{"type": "text_delta", "text": "t"}, {"type": "thinking_delta", "thinking": "h"},
          {"type": "signature_delta", "signature": "s"}, {"type": "input_json_delta", "partial_json": '{"input": "a'},
          {"type": "input_json_delta", "partial_json": '"}'}, {"type": "input_json_delta", "partial_json": ""},
          {"type": "citations_delta", "citation": {"type": "web_search_result_location", "url": "https://a.example/",
                                                   "title": "A"}}]
UPSTREAM_EVENT = st.one_of(
    st.builds(lambda i, b: {"type": "content_block_start", "index": i, "content_block": b},
              st.integers(0, 3), st.sampled_from(BLOCK_STARTS)),
    st.builds(lambda i, d: {"type": "content_block_delta", "index": i, "delta": d},
              st.integers(0, 3), st.sampled_from(DELTAS)),
    st.builds(lambda i: {"type": "content_block_stop", "index": i}, st.integers(0, 3)),
    st.sampled_from([START, {"type": "ping"}, {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}},
                     {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}},
                     {"type": "message_stop"}, {"type": "error", "error": {"type": "overloaded_error"}}]))


@settings(max_examples=300, deadline=None)
@given(st.lists(UPSTREAM_EVENT, max_size=25), st.booleans(), st.booleans(), st.booleans())
def test_any_upstream_sequence_gives_a_valid_stream(events, json_mode, compaction, coalesce):
    t = ResponsesStreamTranslator(shape(custom_tools=frozenset({"apply_patch"}), include_sources=True,
                                        tool_search="tool_search",
                                        json_tool="json_response" if json_mode else None, compaction=compaction),
                                  coalesce=coalesce)
    out = t.feed(sse(*events)) + t.finish()
    validate_responses_sse(out)
    assert (t.done or t.failed) and t.response is not None


def test_the_relays_keepalive_ping_keeps_the_client_waiting_visibly_and_vertexs_own_ping_does_not():
    """Long silence from Vertex (thinking, a slow first token): the relay sends a marked ping (upstream.py), which
    becomes a response.in_progress — an event every client parses and ignores, and which restarts Codex's 300 s
    idle timer (an SSE comment would not). Vertex's own pings change nothing."""
    keepalive = {"type": "ping", "modelmux_keepalive": True}
    out, _ = run([sse(START, keepalive, *text_block(0, "hi"), keepalive, *stop())])
    events = validate_responses_sse(out)
    assert [e["type"] for e in events][:3] == ["response.created", "response.in_progress", "response.in_progress"]
    assert kinds(out).count("response.in_progress") == 3
    plain, _ = run([sse(START, {"type": "ping"}, *text_block(0, "hi"), *stop())])
    assert kinds(plain).count("response.in_progress") == 1
    before, _ = run([sse(keepalive)])  # a silence before Vertex's first event: the stream opens at once
    assert kinds(before)[:2] == ["response.created", "response.in_progress"]


# --- cut short, lone surrogates, searches, empty thinking, JSON mode -----------------------------------------

def test_a_call_cut_off_mid_arguments_is_incomplete_in_both_paths():
    """max_tokens while a tool_use's input_json was partial: the stored call must not look like a call to replay."""
    out, t = run([sse(START, *tool_block(0, "lookup", "toolu_A", '{"city": "Pa'), *stop("max_tokens"))])
    events = validate_responses_sse(out)
    call = events[-1]["response"]["output"][0]
    assert events[-1]["type"] == "response.incomplete"
    assert (call["status"], call["arguments"]) == ("incomplete", '{"city": "Pa')
    assert t.stored_response["output"][0]["status"] == "incomplete"
    done = next(e for e in events if e["type"] == "response.output_item.done")
    assert done["item"]["status"] == "incomplete"
    # a whole call then max_tokens: complete, as before
    out, _ = run([sse(START, *tool_block(0, "lookup", "toolu_A", '{"city": "Paris"}'), *stop("max_tokens"))])
    assert validate_responses_sse(out)[-1]["response"]["output"][0]["status"] == "completed"
    # the non-streamed answer cut off by max_tokens: its last call is incomplete (Vertex repaired the input)
    msg = {"id": "m", "content": [{"type": "text", "text": "a"},
                                  {"type": "tool_use", "id": "toolu_A", "name": "lookup", "input": {"city": "Pa"}}],
           "stop_reason": "max_tokens", "usage": {"input_tokens": 1, "output_tokens": 1}}
    answer = to_response(msg, shape())
    validate(answer.response, "Response")
    assert [i["status"] for i in answer.stored["output"]] == ["completed", "incomplete"]


def test_a_failed_stream_marks_its_open_call_incomplete_and_seals_no_unsigned_thinking():
    thinking = thinking_block(0, "Hmm")
    out, t = run([sse(START, *thinking[:2], {"type": "error", "error": {"type": "api_error", "message": "x"}})])
    validate_responses_sse(out)
    reasoning = t.stored_response["output"][0]
    assert reasoning["status"] == "incomplete" and reasoning["summary"] == [{"type": "summary_text", "text": "Hmm"}]
    assert "encrypted_content" not in reasoning  # nothing Vertex would take back
    assert t.kept_thinking is None
    out, t = run([sse(START, *thinking, *tool_block(1, "lookup", "toolu_A", '{"ci')[:2],
                      {"type": "error", "error": {"type": "api_error", "message": "x"}})])
    validate_responses_sse(out)
    reasoning, call = t.stored_response["output"]
    assert unseal_thinking(reasoning["encrypted_content"], KEY) == [
        {"type": "thinking", "thinking": "Hmm", "signature": "SIG"}]
    assert (call["status"], call["arguments"]) == ("incomplete", '{"ci')


def test_a_lone_surrogate_from_upstream_never_breaks_the_stream():
    raw = sse(START, *text_block(0, "x", "Y"), *tool_block(1, "apply_patch", "toolu_P", '{"input": "Z"}'),
              *stop("tool_use")).replace(b'"text": "Y"', b'"text": "\\ud83c"').replace(b'\\"Z\\"', b'\\"\\ud83c\\"')
    for coalesce in (False, True):
        t = ResponsesStreamTranslator(shape(custom_tools=frozenset({"apply_patch"})), coalesce=coalesce)
        out = t.feed(raw) + t.finish()
        events = validate_responses_sse(out)  # valid UTF-8, every event, the terminal one last
        final = events[-1]["response"]
        assert events[-1]["type"] == "response.completed" and t.done
        message, patch = final["output"]
        assert message["content"][0]["text"] == "x\ufffd" and patch["input"] == "\ufffd"
        json.dumps(t.stored_response, ensure_ascii=False).encode()  # the store can keep it
    answer = to_response({"id": "m", "content": [{"type": "text", "text": "x\ud83c"}], "stop_reason": "end_turn",
                          "usage": {}}, shape())
    assert answer.stored["output"][0]["content"][0]["text"] == "x\ufffd"


def test_a_feed_that_raised_still_lets_the_caller_end_the_stream():
    """The hook answers a translator bug with fail(): the terminal event must come even if the feed that raised had
    already ended the stream (done) — what it rendered never went out."""
    class Buggy(ResponsesStreamTranslator):
        def _stop(self, parts):
            super()._stop(parts)
            raise RuntimeError("a bug")

    t = Buggy(shape())
    head = t.feed(sse(START, *text_block(0, "Hi")))
    with pytest.raises(RuntimeError):
        t.feed(sse(*stop()))
    tail = t.fail(OpenAIError(500, "modelmux failed to translate the stream", "server_error", None,
                              "translation_failed"))
    events = validate_responses_sse(head + tail)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert t.failed is not None and not t.done and t.fail(OpenAIError(500, "again")) == b""


def search_blocks(index, tool_id, query):
    return [{"type": "content_block_start", "index": index,
             "content_block": {"type": "server_tool_use", "id": tool_id, "name": "web_search", "input": {}}},
            {"type": "content_block_delta", "index": index,
             "delta": {"type": "input_json_delta", "partial_json": json.dumps({"query": query})}},
            {"type": "content_block_stop", "index": index}]


def result_blocks(index, tool_id, url):
    return [{"type": "content_block_start", "index": index, "content_block": {
        "type": "web_search_tool_result", "tool_use_id": tool_id,
        "content": [{"type": "web_search_result", "url": url, "title": "T"}]}},
        {"type": "content_block_stop", "index": index}]


@pytest.mark.parametrize("results_order", [("srv_A", "srv_B"), ("srv_B", "srv_A")])
def test_back_to_back_web_searches_pair_with_their_results_by_id(results_order):
    urls = {"srv_A": "https://a.example/", "srv_B": "https://b.example/"}
    events = [START, *search_blocks(0, "srv_A", "alpha"), *search_blocks(1, "srv_B", "beta"),
              *[e for k, tid in enumerate(results_order) for e in result_blocks(2 + k, tid, urls[tid])],
              *text_block(4, "Both."), *stop()]
    out, t = run([sse(*events)], include_sources=True)
    got = validate_responses_sse(out)
    a, b, message = got[-1]["response"]["output"]
    assert [(i["status"], i["action"]["query"], i["action"]["sources"]) for i in (a, b)] == [
        ("completed", "alpha", [{"type": "url", "url": urls["srv_A"]}]),
        ("completed", "beta", [{"type": "url", "url": urls["srv_B"]}])]
    assert message["content"][0]["text"] == "Both."
    completed = [e["item_id"] for e in got if e["type"] == "response.web_search_call.completed"]
    assert completed == [a["id"], b["id"]]
    # the non-streamed answer of the same blocks is the same output
    blocks = [{"type": "server_tool_use", "id": "srv_A", "name": "web_search", "input": {"query": "alpha"}},
              {"type": "server_tool_use", "id": "srv_B", "name": "web_search", "input": {"query": "beta"}},
              *[{"type": "web_search_tool_result", "tool_use_id": tid,
                 "content": [{"type": "web_search_result", "url": urls[tid], "title": "T"}]} for tid in results_order],
              {"type": "text", "text": "Both."}]
    answer = to_response({"id": "m", "content": blocks, "stop_reason": "end_turn", "usage": {}},
                         shape(include_sources=True))
    assert normalized(json.dumps(answer.response["output"])) == normalized(json.dumps(got[-1]["response"]["output"]))


def test_a_web_search_without_its_result_is_a_failed_call_in_both_paths():
    out, _ = run([sse(START, *search_blocks(0, "srv_A", "alpha"), *text_block(1, "No luck."), *stop())])
    streamed = validate_responses_sse(out)[-1]["response"]["output"]
    msg = {"id": "m", "content": [{"type": "server_tool_use", "id": "srv_A", "name": "web_search",
                                   "input": {"query": "alpha"}}, {"type": "text", "text": "No luck."}],
           "stop_reason": "end_turn", "usage": {}}
    answer = to_response(msg, shape())
    validate(answer.response, "Response")
    assert [i["type"] for i in answer.response["output"]] == ["web_search_call", "message"]
    assert answer.response["output"][0]["status"] == "failed"
    assert normalized(json.dumps(answer.response["output"])) == normalized(json.dumps(streamed))


def test_an_empty_thinking_block_has_no_summary_part_in_either_path():
    events = [START, *thinking_block(0), *thinking_block(1, "", "Second."), *text_block(2, "ok"), *stop()]
    out, t = run([sse(*events)])
    got = validate_responses_sse(out)
    parts = [e for e in got if e["type"] == "response.reasoning_summary_part.added"]
    assert [e["summary_index"] for e in parts] == [0]
    assert got[-1]["response"]["output"][0]["summary"] == [{"type": "summary_text", "text": "Second."}]
    msg = {"id": "m", "content": [{"type": "thinking", "thinking": "", "signature": "SIG"},
                                  {"type": "thinking", "thinking": "Second.", "signature": "SIG"},
                                  {"type": "text", "text": "ok"}], "stop_reason": "end_turn", "usage": {}}
    assert to_response(msg, shape()).response["output"][0]["summary"] == got[-1]["response"]["output"][0]["summary"]


def test_json_mode_with_a_tool_call_without_input_deltas_is_the_empty_object_in_both_paths():
    out, _ = run([sse(START, *tool_block(0, "json_response", "t"), *stop("tool_use"))], json_tool="json_response")
    text = validate_responses_sse(out)[-1]["response"]["output"][0]["content"][0]["text"]
    msg = {"id": "m", "content": [{"type": "tool_use", "id": "t", "name": "json_response", "input": {}}],
           "stop_reason": "tool_use", "usage": {}}
    assert text == "{}" == to_response(msg, shape(json_tool="json_response")).response["output"][0]["content"][0][
        "text"]


def test_streaming_mode_never_keeps_web_search_citations():
    cite = {"type": "web_search_result_location", "url": "https://a.example/x", "title": "A", "cited_text": "c",
            "encrypted_index": "e"}
    msg = {"id": "m", "content": [
        {"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {"query": "news"}},
        {"type": "web_search_tool_result", "tool_use_id": "srv_1",
         "content": [{"type": "web_search_result", "url": "https://a.example/x", "title": "A"}]},
        {"type": "text", "text": "Today: "}, {"type": "text", "text": "big news", "citations": [cite]},
        {"type": "text", "text": "."}], "stop_reason": "end_turn", "usage": {}}
    out, t = run([message_as_events(msg)])
    got = validate_responses_sse(out)
    annotations = got[-1]["response"]["output"][1]["content"][0]["annotations"]
    assert annotations == [{"type": "url_citation", "url": "https://a.example/x", "title": "A", "start_index": 7,
                            "end_index": 15}]
    assert normalized(json.dumps(t.response)) == normalized(json.dumps(to_response(msg, shape()).response))
