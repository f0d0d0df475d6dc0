"""Streaming modes (issue 5.6), the pure parts: `buffered` merges the deltas one feed carries, `never` replays a
whole message as the stream it would have been, and the relay's window gathers reads in time."""

from __future__ import annotations

import asyncio
import json

import looptime

from openapi import validate_openai_sse
from test_translate_stream import EVENTS, RICH, TEXTS, sse

from modelmux.config import parse_config
from modelmux.translate.response import AnswerShape, to_openai_response
from modelmux.translate.stream import StreamTranslator, message_as_events
from modelmux.upstream import _gathered


def shape(**kw):
    return AnswerShape(model="gpt-4o", created=1, fallback_id="f", include_usage=True, **kw)


def run(data: bytes, *, coalesce: bool, pieces: int = 1, **kw) -> list[dict]:
    t = StreamTranslator(shape(**kw), coalesce=coalesce)
    step = max(1, len(data) // pieces)
    out = b"".join(t.feed(data[i:i + step]) for i in range(0, len(data), step)) + t.finish()
    return validate_openai_sse(out)


def deltas(chunks):
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def assembled(chunks) -> dict:
    """What a client puts together: content, reasoning and each tool call's arguments; the finish reason; usage."""
    out = {"content": "", "reasoning": "", "calls": {}, "finish": None, "usage": None}
    for c in chunks:
        if not c["choices"]:
            out["usage"] = c["usage"]
            continue
        d = c["choices"][0]["delta"]
        out["content"] += d.get("content") or ""
        out["reasoning"] += d.get("reasoning_content") or ""
        for tc in d.get("tool_calls") or []:
            call = out["calls"].setdefault(tc["index"], {"id": None, "name": None, "arguments": ""})
            call["id"] = tc.get("id") or call["id"]
            call["name"] = (tc.get("function") or {}).get("name") or call["name"]
            call["arguments"] += (tc.get("function") or {}).get("arguments") or ""
        out["finish"] = c["choices"][0]["finish_reason"] or out["finish"]
    return out


def test_buffered_merges_the_deltas_of_one_feed_into_one_chunk():
    chunks = run(sse(*EVENTS), coalesce=True)
    texts = [d["content"] for d in deltas(chunks) if d.get("content")]
    assert texts == ["".join(TEXTS)]  # five text events, one chunk
    assert assembled(chunks) == assembled(run(sse(*EVENTS), coalesce=False))


def test_buffered_keeps_blocks_apart_and_changes_nothing_a_client_assembles():
    passthrough = run(RICH, coalesce=False, expose_reasoning=True)
    buffered = run(RICH, coalesce=True, expose_reasoning=True)
    assert assembled(buffered) == assembled(passthrough)
    assert len(buffered) < len(passthrough)
    fragments = [tc for d in deltas(buffered) for tc in d.get("tool_calls") or [] if "id" not in tc]
    assert [tc["index"] for tc in fragments] == [0, 1]  # one merged fragment per call, never across calls


def test_buffered_feeds_of_single_events_are_passthrough():
    data = sse(*EVENTS)
    events = data.count(b"\n\n")
    one_by_one = StreamTranslator(shape(), coalesce=True)
    out = b"".join(one_by_one.feed(e + b"\n\n") for e in data.split(b"\n\n")[:events]) + one_by_one.finish()
    assert [d.get("content") for d in deltas(validate_openai_sse(out)) if d.get("content")] == TEXTS


MESSAGE = {"id": "msg_vrtx_9", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5@20250929",
           "content": [{"type": "thinking", "thinking": "Hmm 🤔", "signature": "SIG"},
                       {"type": "text", "text": "Looking it up."},
                       {"type": "tool_use", "id": "toolu_A", "name": "lookup", "input": {"q": "naïve"}},
                       {"type": "tool_use", "id": "toolu_B", "name": "ping", "input": {}}],
           "stop_reason": "tool_use", "stop_sequence": None,
           "usage": {"input_tokens": 20, "output_tokens": 11, "cache_read_input_tokens": 5}}


def test_never_replays_a_message_as_the_stream_it_would_have_been():
    t = StreamTranslator(shape(expose_reasoning=True), coalesce=True)
    chunks = validate_openai_sse(t.feed(message_as_events(MESSAGE)) + t.finish())
    got = assembled(chunks)
    completion = to_openai_response(MESSAGE, shape(expose_reasoning=True))
    msg = completion["choices"][0]["message"]
    assert got["content"] == msg["content"] and got["reasoning"] == msg["reasoning_content"]
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in got["calls"].values()] == \
        [(tc["id"], tc["function"]["name"], json.loads(tc["function"]["arguments"])) for tc in msg["tool_calls"]]
    assert got["finish"] == "tool_calls" and got["usage"] == completion["usage"]
    assert chunks[0]["id"] == completion["id"]
    assert t.kept_thinking == ("toolu_A", [{"type": "thinking", "thinking": "Hmm 🤔", "signature": "SIG"}])


def test_never_replays_a_json_answer_and_a_bare_text():
    tool = {**MESSAGE, "content": [{"type": "tool_use", "id": "t", "name": "json_response",
                                    "input": {"value": [1, 2]}}]}
    t = StreamTranslator(shape(json_tool="json_response", json_wrapped=True), coalesce=True)
    assert json.loads(assembled(validate_openai_sse(t.feed(message_as_events(tool)) + t.finish()))["content"]) == [1, 2]
    text = {**MESSAGE, "content": [{"type": "text", "text": "hi"}], "stop_reason": "max_tokens"}
    t = StreamTranslator(shape(), coalesce=True)
    got = assembled(validate_openai_sse(t.feed(message_as_events(text)) + t.finish()))
    assert got["content"] == "hi" and got["finish"] == "length"


def test_streaming_mode_is_chosen_per_user_agent():
    cfg = parse_config({"vertex": {"project": "p"}, "streaming": {"mode": "passthrough", "rules": [
        {"user_agent": "^curl/", "mode": "never"}, {"user_agent": "langchain|Choky", "mode": "buffered"}]}}).streaming
    assert cfg.mode_for("OpenAI/Python 2.8.1") == "passthrough"
    assert cfg.mode_for("curl/8.5.0") == "never"
    assert cfg.mode_for("my choky-client/1.0") == "buffered"
    assert cfg.mode_for("") == "passthrough"


async def _paced(pieces: list[tuple[float, bytes]]):
    for delay, piece in pieces:
        await asyncio.sleep(delay)
        yield piece


def _gather(pieces, window):
    """Runs on an event loop whose clock is virtual (looptime): sleeps and time-outs take no wall-clock time and
    the arrival times are exact, whatever else the machine is doing."""
    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        return [(round(loop.time() - t0, 3), p) async for p in _gathered(_paced(pieces), window)]
    loop = looptime.new_event_loop(start=0)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def test_relay_window_gathers_reads_and_never_holds_one_longer_than_the_window():
    out = _gather([(0, b"a"), (0.01, b"b"), (0.01, b"c"), (0.3, b"d"), (0, b"e")], window=0.1)
    assert out == [(0.1, b"abc"), (0.32, b"de")]  # "abc" left when its window closed, not with "d"; "de" at the end
    assert _gather([], window=0.1) == []


def test_relay_window_delivers_what_it_gathered_before_a_failure():
    async def failing():
        yield b"a"
        yield b"b"
        raise ConnectionResetError("cut")

    async def main():
        got = []
        try:
            async for p in _gathered(failing(), 0.5):
                got.append(p)
        except ConnectionResetError:
            return got, True
        return got, False

    assert asyncio.run(main()) == ([b"ab"], True)


def test_buffered_turns_a_malformed_delta_into_the_same_error_as_passthrough():
    bad = sse(*EVENTS[:3], {"type": "content_block_delta", "index": 0}, *EVENTS[3:])
    for coalesce in (False, True):
        t = StreamTranslator(shape(), coalesce=coalesce)
        out = t.feed(bad) + t.finish()
        assert t.failed and t.failed.code == "bad_upstream_event" and b"[DONE]" not in out
