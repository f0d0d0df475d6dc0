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
