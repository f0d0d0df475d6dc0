"""Checks for an OpenAI Responses event stream, for unit and end-to-end tests alike.

`validate_responses_sse(raw)` parses `event: T\\ndata: JSON\\n\\n` framing and checks every event against its
`ResponseStreamEvent` variant in ../shared/openai-openapi.yaml, plus what the schema cannot say and clients
rely on: the `event:` line names the data's type; sequence_number counts from 0 with no gap;
response.created then response.in_progress come first; every item and content/summary part is added before
its deltas and done events, and done once; exactly one terminal event (completed / incomplete / failed),
last, whose `output` holds every item as its output_item.done gave it; no `[DONE]`.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from openapi import _registry, validate

TERMINAL = ("response.completed", "response.incomplete", "response.failed")


@functools.cache
def event_schemas() -> dict[str, str]:
    """event type → the name of its ResponseStreamEvent variant."""
    _, spec = _registry()
    schemas = spec["components"]["schemas"]
    out = {}
    for ref in schemas["ResponseStreamEvent"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[1]
        for kind in schemas[name]["properties"]["type"]["enum"]:
            out[kind] = name
    return out


def validate_event(event: dict[str, Any]) -> None:
    schema = event_schemas().get(event.get("type"))
    assert schema, f"not a ResponseStreamEvent type: {event.get('type')!r}"
    validate(event, schema)


def parse_sse(raw: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    """[(the event: line, the parsed data)] in order."""
    out = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.decode().split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if not data:
            continue
        assert data != ["[DONE]"], "a Responses stream has no [DONE]"
        out.append((name, json.loads("\n".join(data))))
    return out


def validate_responses_sse(raw: bytes, *, lenient_codes: bool = True) -> list[dict[str, Any]]:
    """Validate a whole stream; returns the events' data. `lenient_codes`: a failed response's error code may
    be one OpenAI sends outside the spec's enum (context_length_exceeded, which Codex acts on)."""
    pairs = parse_sse(raw)
    events = [data for _, data in pairs]
    assert events, "empty stream"
    for name, data in pairs:
        assert name == data.get("type"), f"event: line {name!r} names another type than {data.get('type')!r}"
        checked = data
        if lenient_codes and data.get("type") == "response.failed" and \
                (data["response"].get("error") or {}).get("code") == "context_length_exceeded":
            checked = json.loads(json.dumps(data))
            checked["response"]["error"]["code"] = "server_error"
        validate_event(checked)
    assert [e["sequence_number"] for e in events] == list(range(len(events))), "sequence_number must count from 0"
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds[:3]
    terminal = [k for k in kinds if k in TERMINAL]
    assert len(terminal) == 1 and kinds[-1] == terminal[0], f"one terminal event, last: {kinds[-3:]}"
    rid = events[0]["response"]["id"]
    assert all(e["response"]["id"] == rid for e in events if "response" in e)

    items: dict[int, dict[str, Any]] = {}  # output_index → the added item
    done: dict[int, dict[str, Any]] = {}
    open_parts: set[tuple[int, int]] = set()
    open_summaries: set[tuple[int, int]] = set()
    for e in events:
        kind = e["type"]
        index = e.get("output_index")
        if kind == "response.output_item.added":
            assert index == len(items) and index not in items, f"items are added in order: {index}"
            assert not [i for i in items if i not in done], "the previous item is done before the next is added"
            items[index] = e["item"]
        elif kind == "response.output_item.done":
            assert index in items and index not in done, f"item {index} done without being added, or twice"
            assert e["item"]["id"] == items[index]["id"] and e["item"]["type"] == items[index]["type"]
            assert not [p for p in open_parts | open_summaries if p[0] == index], "its parts are done first"
            done[index] = e["item"]
        elif index is not None:
            assert index in items and index not in done, f"{kind} for item {index}, which is not open"
            assert e.get("item_id") in (None, items[index]["id"]), f"{kind}: item_id of another item"
            if kind == "response.content_part.added":
                assert (index, e["content_index"]) not in open_parts
                open_parts.add((index, e["content_index"]))
            elif kind == "response.content_part.done":
                open_parts.remove((index, e["content_index"]))
            elif kind == "response.reasoning_summary_part.added":
                open_summaries.add((index, e["summary_index"]))
            elif kind == "response.reasoning_summary_part.done":
                open_summaries.remove((index, e["summary_index"]))
            elif "content_index" in e:
                assert (index, e["content_index"]) in open_parts, f"{kind} outside its content part"
            elif "summary_index" in e:
                assert (index, e["summary_index"]) in open_summaries, f"{kind} outside its summary part"
    assert set(items) == set(done), "every added item is done"
    final = events[-1]["response"]
    assert final["output"] == [done[i] for i in range(len(done))], "the terminal Response holds every item"
    return events
