"""Fault rules posted to `/_emulator/faults`: errors, delays, stalls, broken streams and dropped connections,
by endpoint, location, model and streaming.

A rule is `{"match": {...}, "action": ..., "count": N | null, <the action's parameters>}`. `match` keys:
`endpoint` (`model`: every model endpoint — rawPredict, streamRawPredict, count-tokens, embeddings' predict;
`token`: the OAuth token endpoint), `location`, `model` (the model segment of the URL: `count-tokens` for token
counting), `stream`. Actions: `status` (an error answer shaped like the service's: `status`, `array`, `gzip`,
`retry_after`), `delay` (`ms`, before anything is checked), `stall` (`after_events`, `ms`), `stream_error`
(`after_events`, `error_type`), `cut` (`after_events`), `close` (drop the connection on arrival). Rules are tried
in order; the first that applies with uses left fires, one per request. On the model endpoints `status` waits
for auth and a valid body (a translation bug still shows as a 400); `delay` and `close` fire on arrival.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import HttpError, anthropic_error, google_error, oauth_error
from .jsontypes import is_int, is_number
from .triggers import STREAM_ERRORS

MAX_FAULT_MS = 600_000
REQUIRED = object()  # an action parameter without a default
STREAM_ONLY_ACTIONS = frozenset({"stall", "stream_error", "cut"})
ON_ARRIVAL = frozenset({"close", "delay"})  # on the model endpoint the others wait for auth and a valid body
FAULT_MESSAGES = {
    429: "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model with base model: "
         "{base_model}. Please submit a quota increase request. "
         "https://cloud.google.com/vertex-ai/docs/generative-ai/quotas-genai.",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
    504: "Deadline expired before operation could complete.",
}
STREAM_ERROR_MESSAGES = {kind: message for _, kind, message in STREAM_ERRORS.values()}


def _status_code(value: object) -> int:
    if not is_int(value) or not 400 <= value <= 599:
        raise ValueError("must be an HTTP error status from 400 to 599")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _milliseconds(value: object) -> float:
    if not is_number(value) or not 0 <= value <= MAX_FAULT_MS:
        raise ValueError(f"must be a number of milliseconds from 0 to {MAX_FAULT_MS}")
    return float(value)


def _event_count(value: object) -> int:
    if not is_int(value) or value < 0:
        raise ValueError("must be an integer ≥ 0")
    return value


def _retry_after(value: object) -> int | None:
    if value is not None and (not is_int(value) or value < 0):
        raise ValueError("must be a whole number of seconds ≥ 0, or null for no header")
    return value


def _name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _endpoint(value: object) -> str:
    if value not in ("model", "token"):
        raise ValueError("must be 'model' or 'token'")
    return value


# action → parameter → (default, check)
ACTIONS: dict[str, dict[str, tuple[Any, Callable[[object], Any]]]] = {
    "status": {"status": (429, _status_code), "array": (False, _flag), "gzip": (False, _flag),
               "retry_after": (None, _retry_after)},
    "delay": {"ms": (REQUIRED, _milliseconds)},
    "stall": {"after_events": (0, _event_count), "ms": (REQUIRED, _milliseconds)},
    "stream_error": {"after_events": (0, _event_count), "error_type": ("overloaded_error", _name)},
    "cut": {"after_events": (0, _event_count)},
    "close": {},
}
MATCH_KEYS: dict[str, Callable[[object], Any]] = {"endpoint": _endpoint, "location": _name, "model": _name,
                                                   "stream": _flag}
MODEL_ONLY_KEYS = ("location", "model", "stream")


@dataclass(frozen=True)
class FaultTarget:
    """What a rule's `match` is compared with. Token requests have no location, model or method, so rules that
    name one never match them."""
    endpoint: str
    location: str | None = None
    model: str | None = None
    stream: bool | None = None
    publisher: str = "anthropic"  # not matched on: it shapes the answer

    @property
    def base_model(self) -> str:
        """The model as Vertex's quota messages name it: `anthropic-claude-sonnet-4-5`, `text-embedding-005`."""
        base = (self.model or "").partition("@")[0]
        return f"anthropic-{base}" if self.publisher == "anthropic" else base


@dataclass
class FaultRule:
    match: dict[str, Any]
    action: str
    count: int | None  # uses it was given; None: unlimited
    params: dict[str, Any]  # the action's parameters, defaults filled in
    fired: int = 0

    @property
    def remaining(self) -> int | None:
        return None if self.count is None else self.count - self.fired

    def applies_to(self, target: FaultTarget) -> bool:
        if self.remaining == 0 or (self.action in STREAM_ONLY_ACTIONS and not target.stream):
            return False
        return all(getattr(target, key) == value for key, value in self.match.items())

    def describe(self) -> dict[str, Any]:
        return {"match": self.match, "action": self.action, "count": self.count, **self.params,
                "fired": self.fired, "remaining": self.remaining}


def _checked(check: Callable[[object], Any], value: object, path: str) -> Any:
    try:
        return check(value)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def parse_rule(raw: object, path: str) -> FaultRule:
    """A rule from its JSON; ValueError naming the first problem."""
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a rule must be a JSON object")
    action = raw.get("action")
    if action not in ACTIONS:
        raise ValueError(f"{path}.action: must be one of {', '.join(ACTIONS)}")
    spec = ACTIONS[action]
    unknown = sorted(set(raw) - {"match", "action", "count"} - set(spec))
    if unknown:
        raise ValueError(f"{path}.{unknown[0]}: not a parameter of action '{action}'")
    if "count" not in raw:  # no default: a forgotten count would mean one use to some, every request to others
        raise ValueError(f"{path}.count: required (a number of requests, or null for unlimited)")
    count = raw["count"]
    if count is not None and (not is_int(count) or count < 1):
        raise ValueError(f"{path}.count: must be an integer ≥ 1, or null for unlimited")
    params = {}
    for name, (default, check) in spec.items():
        if name in raw:
            params[name] = _checked(check, raw[name], f"{path}.{name}")
        elif default is REQUIRED:
            raise ValueError(f"{path}.{name}: required by action '{action}'")
        else:
            params[name] = default
    match = _parse_match(raw.get("match", {}), f"{path}.match")
    _check_reachable(match, action, path)
    return FaultRule(match, action, count, params)


def _parse_match(raw: object, path: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: must be a JSON object")
    for key in raw:
        if key not in MATCH_KEYS:
            raise ValueError(f"{path}.{key}: unknown; match on {', '.join(MATCH_KEYS)}")
    return {key: _checked(MATCH_KEYS[key], value, f"{path}.{key}") for key, value in raw.items()}


def _check_reachable(match: dict[str, Any], action: str, path: str) -> None:
    """Refuse a rule that could never fire: it is surely a mistake in the test that posts it."""
    token = match.get("endpoint") == "token"
    named = [key for key in MODEL_ONLY_KEYS if key in match]
    if token and named:
        raise ValueError(f"{path}.match.{named[0]}: the token endpoint has none; it applies to the model endpoint")
    if action in STREAM_ONLY_ACTIONS and (token or match.get("stream") is False):
        raise ValueError(f"{path}.action: '{action}' applies only to streamed model requests")


class Faults:
    """Fault rules, tried in order: the first that applies to a request, with uses left, fires."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []

    def add(self, payload: object) -> None:
        """Append `{"rules": [...]}`: all of them, or none when one is bad (ValueError)."""
        if not isinstance(payload, dict) or set(payload) != {"rules"} or not isinstance(payload["rules"], list):
            raise ValueError('expected {"rules": [rule, ...]}')
        self._rules.extend([parse_rule(raw, f"rules[{i}]") for i, raw in enumerate(payload["rules"])])

    def claim(self, target: FaultTarget, actions: frozenset[str]) -> FaultRule | None:
        """The rule that fires for this request, if its action is one of `actions`, with one use spent. Finding
        and spending happen in one step of the event loop, so concurrent requests never share a use."""
        rule = next((r for r in self._rules if r.applies_to(target)), None)
        if rule is None or rule.action not in actions:
            return None
        rule.fired += 1
        return rule

    def describe(self) -> list[dict[str, Any]]:
        return [rule.describe() for rule in self._rules]

    def clear(self) -> None:
        self._rules.clear()


def status_answer(rule: FaultRule, target: FaultTarget) -> HttpError:
    """A `status` rule's answer, shaped like the service at `target` sends it."""
    params = rule.params
    status = params["status"]
    if target.endpoint == "token":
        error = ("internal_failure", "Internal failure") if status >= 500 else ("invalid_request",
                                                                                 f"Injected HTTP {status}")
        err = oauth_error(*error, status=status)
    elif status == 529 and target.publisher == "anthropic":  # the model layer's overload, in Anthropic's shape
        err = anthropic_error(529, "overloaded_error", "Overloaded")
    else:
        template = FAULT_MESSAGES.get(status, f"Injected HTTP {status}")
        err = google_error(status, template.format(base_model=target.base_model))
    if params["array"]:
        err.body = [err.body]
    if params["retry_after"] is not None:
        err.headers["Retry-After"] = str(params["retry_after"])
    err.gzipped = params["gzip"]
    return err


def faulted_events(events: list[tuple[str, dict]], rule: FaultRule | None) -> list[tuple[str, dict]]:
    """The events left by a `cut` or `stream_error` rule. The fault always comes before message_stop, however
    large after_events is."""
    if rule is None or rule.action not in ("cut", "stream_error"):
        return events
    kept = events[:min(rule.params["after_events"], len(events) - 1)]
    if rule.action == "cut":
        return kept
    kind = rule.params["error_type"]
    return kept + [("error", {"type": "error", "error": {
        "type": kind, "message": STREAM_ERROR_MESSAGES.get(kind, "Injected stream error")}})]


def stall_point(events: list[tuple[str, dict]], rule: FaultRule | None) -> tuple[int, float] | None:
    """(index of the event a `stall` rule holds back, seconds), also before message_stop at the latest."""
    if rule is None or rule.action != "stall":
        return None
    return min(rule.params["after_events"], len(events) - 1), rule.params["ms"] / 1000
