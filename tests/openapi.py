"""Validation of what modelmux produces against OpenAI's published OpenAPI spec (../shared/openai-openapi.yaml).

The spec is OpenAPI 3.1 with some 3.0-style `nullable: true`; those are rewritten into JSON-Schema unions so a
`null` the spec allows is accepted and every other deviation is reported.
"""

from __future__ import annotations

import array
import base64
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import yaml

from modelmux.translate import sse

SPEC_PATH = Path(os.environ.get("OPENAI_OPENAPI_SPEC", Path(__file__).resolve().parents[2] / "shared" / "openai-openapi.yaml"))


def _nullable_to_union(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _nullable_to_union(v) for k, v in node.items()}
        if node.pop("nullable", False):
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable_to_union(v) for v in node]
    return node


@functools.cache
def _registry() -> tuple[referencing.Registry, dict]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader reads the 2 MB spec ~10x faster
    spec = _nullable_to_union(yaml.load(SPEC_PATH.read_text(encoding="utf-8"), Loader=loader))
    resource = referencing.Resource.from_contents(spec, default_specification=referencing.jsonschema.DRAFT202012)
    return referencing.Registry().with_resource("urn:openai", resource), spec


@functools.cache
def _validator(schema_name: str) -> jsonschema.Draft202012Validator:
    registry, spec = _registry()
    if schema_name not in spec["components"]["schemas"]:
        raise KeyError(schema_name)
    return jsonschema.Draft202012Validator({"$ref": f"urn:openai#/components/schemas/{schema_name}"}, registry=registry)


def validate(body: Any, schema_name: str) -> None:
    """Raise AssertionError listing every way `body` breaks the named schema."""
    if isinstance(body, (bytes, str)):
        body = json.loads(body)
    errors = sorted(_validator(schema_name).iter_errors(body), key=lambda e: list(e.path))
    if errors:
        lines = [f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:10]]
        raise AssertionError(f"{schema_name} violated:\n  " + "\n  ".join(lines))


def validate_completion(body: Any) -> None:
    validate(body, "CreateChatCompletionResponse")


def validate_chunk(body: Any) -> None:
    validate(body, "CreateChatCompletionStreamResponse")


def validate_embeddings(body: Any) -> list[list[float]]:
    """Validate a `CreateEmbeddingResponse`; returns the vectors as floats. The spec types `embedding` as floats
    only; with `encoding_format: base64` OpenAI sends a base64 string of little-endian float32 instead, which is
    decoded here the way openai-python decodes it (array("f")) before the body is validated."""
    if isinstance(body, (bytes, str)):
        body = json.loads(body)
    decoded = json.loads(json.dumps(body))
    for item in decoded.get("data") or []:
        if isinstance(item, dict) and isinstance(item.get("embedding"), str):
            raw = base64.b64decode(item["embedding"], validate=True)
            assert len(raw) % 4 == 0, f"data[{item.get('index')}]: {len(raw)} bytes is not a float32 vector"
            floats = array.array("f", raw)
            if sys.byteorder == "big":
                floats.byteswap()
            item["embedding"] = floats.tolist()
    validate(decoded, "CreateEmbeddingResponse")
    return [item["embedding"] for item in decoded["data"]]


def validate_error(body: Any) -> None:
    validate(body, "ErrorResponse")


def sse_payloads(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order (modelmux's one SSE parser)."""
    return [data for _, data in sse.events(raw)]


def validate_openai_sse(raw: bytes) -> list[dict]:
    """Validate a whole OpenAI SSE body: every chunk against the spec, ending in [DONE]; returns the chunks."""
    payloads = sse_payloads(raw)
    assert payloads and payloads[-1] == "[DONE]", f"stream does not end with [DONE]: {payloads[-2:]}"
    chunks = [json.loads(p) for p in payloads[:-1]]
    for c in chunks:
        validate_chunk(c)
    return chunks


# --- the Responses API's streams ----------------------------------------------------------------------------

RESPONSES_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


@functools.cache
def responses_event_schemas() -> dict[str, str]:
    """A ResponseStreamEvent's `type` → the name of the spec's schema for it."""
    _, spec = _registry()
    schemas = spec["components"]["schemas"]
    out = {}
    for ref in schemas["ResponseStreamEvent"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[1]
        for kind in schemas[name]["properties"]["type"]["enum"]:
            out[kind] = name
    return out


def validate_response(body: Any) -> None:
    validate(body, "Response")


def validate_responses_event(event: dict) -> None:
    """One stream event against the schema its `type` names. A failed response's error code may be
    `context_length_exceeded`: outside the spec's enum, but what OpenAI sends and Codex acts on (it compacts)."""
    schema = responses_event_schemas().get(event.get("type"))
    assert schema, f"not a ResponseStreamEvent type: {event.get('type')!r}"
    if event.get("type") == "response.failed" and \
            (event["response"].get("error") or {}).get("code") == "context_length_exceeded":
        event = json.loads(json.dumps(event))
        event["response"]["error"]["code"] = "server_error"
    validate(event, schema)


def validate_responses_events(events: list[dict]) -> list[dict]:
    """A whole Responses stream's events (parsed): each against its schema, and the rules clients rely on that a
    schema cannot say — sequence_number from 0 with no gap; created first; every output item added (in order)
    before its deltas and done, done once; every content / summary part added before its deltas and done;
    exactly one terminal event (completed / incomplete / failed), the last, whose response holds every item as
    its output_item.done gave it. Returns the events."""
    assert events, "empty stream"
    for event in events:
        validate_responses_event(event)
    numbers = [e["sequence_number"] for e in events]
    assert numbers == list(range(len(events))), f"sequence_number must count from 0 by 1: {numbers[:12]}"
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"], f"created, then in_progress: {kinds[:3]}"
    terminal = [k for k in kinds if k in RESPONSES_TERMINAL]
    assert len(terminal) == 1 and kinds[-1] == terminal[0], f"exactly one terminal event, last: {kinds[-3:]}"
    added: dict[int, dict] = {}
    done: dict[int, dict] = {}
    parts: set[tuple[int, str, int]] = set()  # (output_index, content|summary, index) open now
    closed_parts: set[tuple[int, str, int]] = set()
    for e in events:
        kind, index = e["type"], e.get("output_index")
        if kind == "response.output_item.added":
            assert index == len(added), f"item {index} added out of order (expected {len(added)})"
            added[index] = e["item"]
        elif kind == "response.output_item.done":
            assert index in added and index not in done, f"item {index} done without being added, or twice"
            assert e["item"]["id"] == added[index]["id"] and e["item"]["type"] == added[index]["type"], \
                f"item {index} done as another item than was added"
            assert not {p for p in parts if p[0] == index}, f"item {index} done before its parts"
            done[index] = e["item"]
        elif index is not None:
            assert index in added and index not in done, f"{kind} for item {index}, which is not open"
            assert e.get("item_id", added[index]["id"]) == added[index]["id"], f"{kind}: item_id of another item"
            for key, group in (("content_index", "content"), ("summary_index", "summary")):
                if key not in e:
                    continue
                part = (index, group, e[key])
                if kind.endswith("_part.added"):
                    assert part not in parts and part not in closed_parts, f"{kind}: part {part} added twice"
                    parts.add(part)
                elif kind.endswith("_part.done"):
                    assert part in parts, f"{kind}: part {part} done without being added"
                    parts.remove(part)
                    closed_parts.add(part)
                elif group == "content" or kind.startswith("response.reasoning_summary"):
                    assert part in parts, f"{kind} outside its part {part}"
    assert set(added) == set(done), f"items added but never done: {sorted(set(added) - set(done))}"
    final = events[-1]["response"]
    assert final["output"] == [done[i] for i in range(len(done))], "the terminal response holds every done item"
    assert all(e["response"]["id"] == final["id"] for e in events if "response" in e), "one response id"
    return events


def parse_responses_sse(raw: bytes) -> list[tuple[str | None, dict]]:
    """[(the `event:` line, the parsed data)] of a Responses SSE body, in order."""
    pairs = sse.events(raw)
    assert all(data != "[DONE]" for _, data in pairs), "a Responses stream has no [DONE]"
    return [(name, json.loads(data)) for name, data in pairs]


def validate_responses_sse(raw: bytes) -> list[dict]:
    """A whole Responses SSE body: `event:` lines naming their data's type, no [DONE], then
    validate_responses_events. Returns the events."""
    pairs = parse_responses_sse(raw)
    assert pairs, "no events"
    for name, event in pairs:
        assert name in (None, event.get("type")), f"event: {name} carries data of type {event.get('type')}"
    return validate_responses_events([event for _, event in pairs])
