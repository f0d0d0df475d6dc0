"""The Responses stream checks in tests/openapi.py catch what clients choke on: a gap in sequence_number, an item
or part closed without being opened, a second terminal event, a terminal response missing items, [DONE]. Streams
come from tests/responses_recorder.py's fake, which must itself pass."""

from __future__ import annotations

import json

import pytest

from openapi import validate_response, validate_responses_events, validate_responses_sse
from responses_recorder import answer_items, build_response, sse_bytes, stream_events

TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": None},
         {"type": "custom", "name": "apply_patch"}]


def stream(prompt: str) -> list[dict]:
    body = {"model": "gpt-4o", "input": prompt, "tools": TOOLS}
    return stream_events(build_response(body, answer_items(body), 1700000000))


@pytest.mark.parametrize("prompt", ["Hello", '[[call:get_weather {"city": "Paris"}]]',
                                    '[[call:apply_patch {"input": "*** Begin Patch\\n*** End Patch\\n"}]]'])
def test_the_recorders_streams_pass(prompt):
    events = stream(prompt)
    validate_responses_sse(sse_bytes(events))
    validate_response(events[-1]["response"])


def broken(mutate) -> list[dict]:
    events = json.loads(json.dumps(stream('[[call:get_weather {"city": "Paris"}]]')))
    mutate(events)
    return events


@pytest.mark.parametrize("mutate, message", [
    (lambda ev: ev[3].update(sequence_number=30), "sequence_number"),
    (lambda ev: ev.pop(2), "added out of order|not open|without being added"),
    (lambda ev: ev.insert(len(ev) - 1, {**ev[-1], "sequence_number": 0}), "terminal"),
    (lambda ev: ev[-1]["response"]["output"].pop(), "holds every done item"),
    (lambda ev: ev[-1].pop("response"), "violated"),
    (lambda ev: [e.pop("logprobs") for e in ev if e["type"] == "response.output_text.delta"], "violated"),
], ids=["gap", "unopened", "two-terminals", "missing-output", "no-response", "no-logprobs"])
def test_broken_streams_are_caught(mutate, message):
    events = broken(mutate)
    for i, e in enumerate(events):
        if "sequence_number" in e and message != "sequence_number":
            e["sequence_number"] = i
    with pytest.raises(AssertionError, match=message):
        validate_responses_events(events)


def test_done_sentinel_is_caught():
    with pytest.raises(AssertionError, match=r"\[DONE\]"):
        validate_responses_sse(sse_bytes(stream("Hello")) + b"data: [DONE]\n\n")
