"""A value a JSON schema accepts: the input the fake model passes to a tool when nothing dictates it."""

from __future__ import annotations

import functools
import math
from typing import Any

from .jsontypes import is_int, is_number

MAX_SCHEMA_DEPTH = 8  # below this, objects get only their required properties: recursive schemas end
MAX_REF_HOPS = 32
FORMAT_EXAMPLES = {"date-time": "2025-01-01T12:00:00Z", "date": "2025-01-01", "time": "12:00:00Z",
                   "email": "someone@example.com", "uri": "https://example.com/", "hostname": "example.com",
                   "uuid": "123e4567-e89b-42d3-a456-426614174000", "ipv4": "192.0.2.1", "ipv6": "2001:db8::1"}


def value_for_schema(schema: Any, root: Any, name: str = "value", depth: int = 0) -> Any:
    """A value `schema` accepts ($refs resolved against `root`). Every listed property gets one (only the required
    ones deeper than MAX_SCHEMA_DEPTH); strings are "<name>-value". Honours type, properties, required, items,
    prefixItems, enum, const, $ref, allOf, anyOf / oneOf (the first branch), numeric bounds, multipleOf, lengths,
    item counts and common formats; not pattern, not, if / then, uniqueItems or dependencies."""
    schema = _resolved(schema, root)
    if depth > 4 * MAX_SCHEMA_DEPTH:
        return None  # only a schema without any finite instance gets this deep
    if "allOf" in schema:
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        parts = [_resolved(part, root) for part in schema["allOf"]]
        return value_for_schema(functools.reduce(_merged, parts, rest), root, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            rest = {k: v for k, v in schema.items() if k != key}
            return value_for_schema(_merged(rest, _resolved(schema[key][0], root)), root, name, depth + 1)
    kind = _schema_type(schema)
    if kind == "object":
        return _object_value(schema, root, depth)
    if kind == "array":
        return _array_value(schema, root, name, depth)
    if kind in ("integer", "number"):
        return _number_value(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string_value(schema, name)


def _resolved(schema: Any, root: Any) -> dict:
    """The schema as a dict, its `$ref` chain followed (a $ref's siblings kept, as JSON Schema 2019+ reads them)."""
    for _ in range(MAX_REF_HOPS):
        if not isinstance(schema, dict):
            return {}  # `true`, or nonsense: anything goes
        ref = schema.get("$ref")
        if not isinstance(ref, str):
            return schema
        schema = _merged(_pointer(root, ref), {k: v for k, v in schema.items() if k != "$ref"})
    return {}


def _pointer(root: Any, ref: str) -> dict:
    """The target of a local reference like `#/$defs/Point` or `#/definitions/Point`; {} when there is none."""
    if not ref.startswith("#"):
        return {}
    node = root
    for part in filter(None, ref[1:].split("/")):
        node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _merged(a: dict, b: dict) -> dict:
    """Both schemas' keywords in one, with properties and required added up (enough for allOf and $ref siblings)."""
    merged = {**a, **b}
    if "properties" in a or "properties" in b:
        merged["properties"] = {**a.get("properties", {}), **b.get("properties", {})}
    if "required" in a or "required" in b:
        merged["required"] = [*a.get("required", []), *b.get("required", [])]
    return merged


def _schema_type(schema: dict) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null" if kind else None)
    if isinstance(kind, str):
        return kind
    keys = schema.keys()  # untyped: guess from the keywords present
    if keys & {"properties", "required", "additionalProperties"}:
        return "object"
    if keys & {"items", "prefixItems", "minItems", "maxItems"}:
        return "array"
    if keys & {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}:
        return "number"
    return "string"


def _object_value(schema: dict, root: Any, depth: int) -> dict:
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = [key for key in schema.get("required", []) if isinstance(key, str)]
    listed = [] if depth > MAX_SCHEMA_DEPTH else list(properties)
    extra = schema.get("additionalProperties")
    extra = extra if isinstance(extra, dict) else {}  # for required keys not among the properties
    return {key: value_for_schema(properties.get(key, extra), root, key, depth + 1)
            for key in dict.fromkeys(listed + required)}


def _array_value(schema: dict, root: Any, name: str, depth: int) -> list:
    items = schema.get("items")
    prefix = schema.get("prefixItems") or (items if isinstance(items, list) else [])
    rest = items if isinstance(items, dict) else {}
    count = max(len(prefix), schema.get("minItems", 0), 0 if depth > MAX_SCHEMA_DEPTH else 1)
    if is_int(schema.get("maxItems")):
        count = min(count, schema["maxItems"])
    return [value_for_schema(prefix[i] if i < len(prefix) else rest, root, name, depth + 1) for i in range(count)]


def _number_value(schema: dict, integer: bool) -> int | float:
    """42 or 4.5 when the bounds allow it, else the fitting candidate (a bound, next to one, between two) nearest
    to it: 42 clamped into [minimum, maximum], for instance."""
    preferred = 42 if integer else 4.5
    bounds = [schema.get(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")]
    bounds = [b for b in bounds if is_number(b)]
    guesses = [preferred, *bounds, *(b + d for b in bounds for d in (1, -1)),
               *((a + b) / 2 for a in bounds for b in bounds)]
    step = schema.get("multipleOf")
    if is_number(step) and step > 0:
        guesses = [r(g / step) * step for g in guesses for r in (math.ceil, math.floor)]
    if integer:
        guesses = [r(g) for g in guesses for r in (math.ceil, math.floor)]
    fitting = [g for g in guesses if _within(schema, g)]
    return min(fitting, key=lambda g: abs(g - preferred)) if fitting else preferred


def _within(schema: dict, value: float) -> bool:
    low, high = schema.get("minimum"), schema.get("maximum")
    open_low, open_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if open_low is True:  # draft 4: a flag on minimum
        low, open_low = None, low
    if open_high is True:
        high, open_high = None, high
    step = schema.get("multipleOf")
    return ((not is_number(low) or value >= low) and (not is_number(high) or value <= high)
            and (not is_number(open_low) or value > open_low) and (not is_number(open_high) or value < open_high)
            and (not is_number(step) or step <= 0 or (value / step).is_integer()))


def _string_value(schema: dict, name: str) -> str:
    text = FORMAT_EXAMPLES.get(schema.get("format"), f"{name}-value")
    if is_int(schema.get("minLength")):
        text = text.ljust(schema["minLength"], "x")
    return text[:schema["maxLength"]] if is_int(schema.get("maxLength")) else text
