"""OpenAI's request value types, as strict as OpenAI is, and pydantic's errors told in OpenAI's words. Pure: no I/O.

pydantic's lax mode takes `true` for a float and "1" for an int; OpenAI answers 400 to both. The Annotated types
below check what OpenAI's spec (`CreateChatCompletionRequest`) says of a value — pydantic's strict types where
their errors map onto OpenAI's, checks of our own elsewhere — and `openai_error` turns any failure into OpenAI's
message and `code`, naming the parameter:
"Invalid type for 'seed': expected an integer, but got a string instead." (`invalid_type`).

Two readings of the spec, both lenient where a client cannot tell the difference:
- a JSON number without a fraction (`1.0`) is an integer, as JSON Schema (the spec's language) has it;
- `null` for an optional field means "not given" (`X | None`); for a required one it is a type error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from pydantic import (BeforeValidator, Discriminator, Field, PlainValidator, Strict, StringConstraints, Tag,
                      ValidationError)
from pydantic_core import PydanticCustomError

from .errors import OpenAIError, invalid_request

TYPE = "openai_type"  # ctx: expected
RANGE = "openai_range"  # ctx: kind (integer|decimal), side (above|below), limit, value
ENUM = "openai_enum"  # ctx: value, choices
LENGTH = "openai_length"  # ctx: what (string|array|object), side (above|below), limit, actual
INVALID = "openai_invalid"  # ctx: text (with {param}), code
MISSING = "openai_missing"
TAG = "tag:"  # the prefix of union members' tags (`tagged`): never a field name, so left out of parameter names
# every kind may carry ctx `at`: a suffix to the parameter (".key", "[3]") for checks made on a whole container


def json_kind(value: Any) -> str:
    """OpenAI's words for the JSON type of a value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _error(kind: str, template: str, ctx: dict[str, Any]) -> PydanticCustomError:
    """pydantic keeps ctx in Rust strings: a client's lone surrogate (`\\ud800`, valid JSON) would make
    `ValidationError.errors()` raise, so client text in ctx is escaped."""
    clean = {k: v.encode("utf-8", "backslashreplace").decode() if isinstance(v, str) else v for k, v in ctx.items()}
    return PydanticCustomError(kind, template, clean)


def type_error(expected: str, value: Any, at: str = "") -> PydanticCustomError:
    return _error(TYPE, "expected {expected}, but got {got} instead",
                               {"expected": expected, "got": json_kind(value), "at": at})


def too_many_properties(limit: int, actual: int) -> PydanticCustomError:
    return _error(LENGTH, "too many properties", {"what": "object", "side": "above", "limit": limit, "actual": actual})


def missing(at: str) -> PydanticCustomError:
    return _error(MISSING, "missing", {"at": at})


def invalid(text: str, code: str = "invalid_value", at: str = "") -> PydanticCustomError:
    """A free-form error; `{param}` in `text` becomes the parameter's name."""
    return _error(INVALID, "{text}", {"text": text, "code": code, "at": at})


def _bounds(value: int | float, kind: str, minimum: float | None, maximum: float | None, at: str = "") -> None:
    if maximum is not None and value > maximum:
        raise _error(RANGE, "{kind} above maximum value",
                                  {"kind": kind, "side": "above", "limit": maximum, "value": value, "at": at})
    if minimum is not None and value < minimum:
        raise _error(RANGE, "{kind} below minimum value",
                                  {"kind": kind, "side": "below", "limit": minimum, "value": value, "at": at})


def _length(what: str, actual: int, min_length: int | None, max_length: int | None, at: str = "") -> None:
    if max_length is not None and actual > max_length:
        raise _error(LENGTH, "{what} too long", {"what": what, "side": "above", "limit": max_length,
                                                              "actual": actual, "at": at})
    if min_length is not None and actual < min_length:
        raise _error(LENGTH, "{what} too short", {"what": what, "side": "below", "limit": min_length,
                                                               "actual": actual, "at": at})


def check_integer(value: Any, minimum: float | None = None, maximum: float | None = None, at: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (isinstance(value, float) and not value.is_integer()):
        raise type_error("an integer", value, at)
    value = int(value)
    _bounds(value, "integer", minimum, maximum, at)
    return value


def check_string(value: Any, min_length: int | None = None, max_length: int | None = None, at: str = "") -> str:
    if not isinstance(value, str):
        raise type_error("a string", value, at)
    _length("string", len(value), min_length, max_length, at)
    return value


def check_array(value: Any, min_length: int | None = None, max_length: int | None = None, at: str = "") -> list:
    if not isinstance(value, list):
        raise type_error("an array", value, at)
    _length("array", len(value), min_length, max_length, at)
    return value


def check_enum(value: Any, choices: tuple[str, ...], at: str = "") -> str:
    if not isinstance(value, str):
        raise type_error("a string", value, at)
    if value not in choices:
        raise _error(ENUM, "invalid value", {"value": value, "choices": choices, "at": at})
    return value


def check_object(value: Any, at: str = "") -> dict:
    if not isinstance(value, dict):
        raise type_error("an object", value, at)
    return value


def _validated(kind: type, check: Callable[[Any], Any]) -> Any:
    return Annotated[kind, PlainValidator(check)]


# pydantic's own strict types where their errors say what OpenAI says (they run in Rust: a request has hundreds of
# strings); checks of our own where they do not (an integer may be 1.0) or for a whole container.

def Integer(minimum: float | None = None, maximum: float | None = None) -> Any:  # noqa: N802 (a type)
    return _validated(int, lambda v: check_integer(v, minimum, maximum))


def Number(minimum: float | None = None, maximum: float | None = None) -> Any:  # noqa: N802
    return Annotated[float, Strict(), Field(ge=minimum, le=maximum, allow_inf_nan=False)]  # an int is a number too


def String(min_length: int | None = None, max_length: int | None = None) -> Any:  # noqa: N802
    return Annotated[str, StringConstraints(strict=True, min_length=min_length, max_length=max_length)]


def Enum(*choices: str) -> Any:  # noqa: N802
    return Literal[choices]


Boolean = Annotated[bool, Strict()]
Object = Annotated[dict[str, Any], Strict()]  # a free-form JSON object (a JSON schema, tool parameters)


def Custom(kind: Any, check: Callable[[Any], Any]) -> Any:  # noqa: N802
    """A value checked by hand (unions OpenAI tells apart by shape, maps with limits); `check` returns it."""
    return _validated(kind, check)


def tagged(members: dict[str, type], key: str = "type") -> Any:
    """A union of models told apart by `key`, OpenAI's discriminator: a value that is no object, or whose `key` is
    missing, not a string or unknown, is an OpenAI error naming `key`."""
    choices = tuple(members)

    def check(value: Any) -> Any:
        if isinstance(value, dict):
            if key not in value:
                raise missing("." + key)
            check_enum(value[key], choices, at="." + key)
        elif not any(isinstance(value, m) for m in members.values()):
            raise type_error("an object", value)
        return value

    def tag(value: Any) -> str:
        return TAG + (value[key] if isinstance(value, dict) else getattr(value, key))

    union = Union[tuple(Annotated[m, Tag(TAG + t)] for t, m in members.items())]  # noqa: UP007 (built at run time)
    return Annotated[union, Discriminator(tag), BeforeValidator(check)]


# --- pydantic errors → OpenAI's message ------------------------------------------------------------------------

_TYPE_OF_PYDANTIC = {"model_type": "an object", "model_attributes_type": "an object", "dict_type": "an object",
                     "list_type": "an array", "string_type": "a string", "bool_type": "a boolean",
                     "int_type": "an integer", "float_type": "a decimal"}


def _path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """pydantic's location without the names of union branches: ('messages', 0, 'content', 'list[...]', 0, 'text',
    'text') → ('messages', 0, 'content', 0, 'text')."""
    out: list[Any] = []
    for part in loc:
        if isinstance(part, int):
            out.append(part)
        elif part in ("str", "none") or part[:1].isupper() or part.startswith(
                (TAG, "function-", "list[", "dict[", "tagged-union", "literal[", "nullable[")):
            continue  # a union branch: a model's class name (OpenAI's fields are snake_case) or a schema's name
        else:
            out.append(part)
    return tuple(out)


def param_name(path: tuple[Any, ...]) -> str:
    """('messages', 0, 'content') → 'messages[0].content', OpenAI's notation."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _expected(e: dict[str, Any]) -> str | None:
    """What a type error expected, or None when `e` is not a type error."""
    kind, ctx = _ours(e)
    if kind == TYPE:
        return ctx["expected"]
    return _TYPE_OF_PYDANTIC.get(kind)


def _got(e: dict[str, Any]) -> str:
    """What a type error got: our checks name the value they looked at (`input` may be its container)."""
    kind, ctx = _ours(e)
    return ctx["got"] if kind == TYPE else json_kind(e["input"])


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _quoted(choices: tuple[str, ...] | list[str]) -> str:
    items = [f"'{c}'" for c in choices]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + (", and " if len(items) > 2 else " and ") + items[-1]


def _ours(e: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """pydantic's own errors of the kinds above, as ours."""
    kind, ctx, value = e["type"], e.get("ctx") or {}, e["input"]
    if kind in ("too_short", "too_long", "string_too_short", "string_too_long"):
        short = kind.endswith("short")
        what = "string" if kind.startswith("string") else "array"
        return LENGTH, {"what": what, "side": "below" if short else "above", "actual": len(value),
                        "limit": ctx["min_length"] if short else ctx["max_length"]}
    if kind in ("greater_than_equal", "less_than_equal"):
        above = kind == "less_than_equal"
        return RANGE, {"kind": "decimal", "side": "above" if above else "below", "value": value,
                       "limit": ctx["le"] if above else ctx["ge"]}
    if kind == "finite_number":
        return TYPE, {"expected": "a finite decimal", "got": json_kind(value)}
    if kind == "literal_error":
        if not isinstance(value, str):
            return TYPE, {"expected": "a string", "got": json_kind(value)}
        return ENUM, {"value": value, "choices": re.findall(r"'([^']*)'", str(ctx.get("expected", "")))}
    return kind, ctx


def _one(e: dict[str, Any], param: str) -> OpenAIError:
    kind, ctx = _ours(e)
    if kind == RANGE:
        op = "<=" if ctx["side"] == "above" else ">="
        bound = "maximum" if ctx["side"] == "above" else "minimum"
        return invalid_request(f"Invalid '{param}': {ctx['kind']} {ctx['side']} {bound} value. Expected a value {op} "
                               f"{_number(ctx['limit'])}, but got {_number(ctx['value'])} instead.", param,
                               f"{ctx['kind']}_{ctx['side']}_{'max' if ctx['side'] == 'above' else 'min'}_value")
    if kind == LENGTH:
        what, limit, actual = ctx["what"], ctx["limit"], ctx["actual"]
        if what == "object":
            return invalid_request(f"Invalid '{param}': too many properties. Expected an object with at most {limit} "
                                   f"properties, but got an object with {actual} properties instead.", param,
                                   "object_above_max_properties")
        if ctx["side"] == "below" and actual == 0:
            return invalid_request(f"Invalid '{param}': empty {what}. Expected {'an' if what == 'array' else 'a'} "
                                   f"{what} with minimum length {limit}, but got an empty {what} instead.", param,
                                   f"empty_{what}")
        side = "maximum" if ctx["side"] == "above" else "minimum"
        return invalid_request(f"Invalid '{param}': {what} too {'long' if ctx['side'] == 'above' else 'short'}. "
                               f"Expected {'an' if what == 'array' else 'a'} {what} with {side} length {limit}, but "
                               f"got {'an' if what == 'array' else 'a'} {what} with length {actual} instead.", param,
                               f"{what}_{ctx['side']}_{'max' if ctx['side'] == 'above' else 'min'}_length")
    if kind == ENUM:
        return invalid_request(f"Invalid value: '{ctx['value']}'. Supported values are: {_quoted(ctx['choices'])}.",
                               param, "invalid_value")
    if kind == INVALID:
        return invalid_request(ctx["text"].replace("{param}", param), param, ctx["code"])
    if kind in ("missing", MISSING):
        return invalid_request(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if (expected := _expected(e)) is not None:
        return invalid_request(f"Invalid type for '{param}': expected {expected}, but got {_got(e)} instead.", param,
                               "invalid_type")
    return invalid_request(f"Invalid value for '{param}': {e['msg']}.", param or None)


def openai_error(err: ValidationError) -> OpenAIError:
    """The one OpenAI 400 for a failed validation: the deepest problem (in a union, the branch the client meant);
    a value that fits no branch's type gets "expected one of a string or an array"."""
    located = []
    for e in err.errors(include_url=False):
        path = _path(e["loc"])
        ctx = e.get("ctx") or {}
        located.append((len(path) + (1 if ctx.get("at") else 0), param_name(path) + (ctx.get("at") or ""), e))
    depth = max(d for d, _, _ in located)
    deepest = [(p, e) for d, p, e in located if d == depth]
    param = deepest[0][0]
    same = [e for p, e in deepest if p == param]
    not_type = [e for e in same if _expected(e) is None]
    if not_type:
        return _one(not_type[0], param)
    expected = list(dict.fromkeys(_expected(e) for e in same))
    if len(expected) == 1:
        return _one(same[0], param)
    words = ", ".join(expected[:-1]) + " or " + expected[-1]
    return invalid_request(f"Invalid type for '{param}': expected one of {words}, but got {_got(same[0])} instead.",
                           param, "invalid_type")
