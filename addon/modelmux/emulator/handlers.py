"""The HTTP side: the routes Vertex AI and Google's token endpoint serve, and the emulator's admin routes.

Every model endpoint takes a request through the same steps (ModelEndpoint.admitted): count it, fire an on-arrival
fault rule (`delay`, `close`), check the access token, apply the endpoint's routing and body rules, then fire the
fault rule for a request that passed them; each request is kept in the request log.
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import tornado.iostream
import tornado.web

from . import embeddings
from .claude_models import CLAUDE_MODELS, vertex_id
from .credentials import GOOGLE_TOKEN_URI, JWT_BEARER_GRANT, Authority
from .errors import HttpError, InvalidRequest, anthropic_error, google_error, model_not_found, oauth_error
from .faults import ACTIONS, ON_ARRIVAL, Faults, FaultRule, FaultTarget, faulted_events, stall_point, status_answer
from .model import PromptCache, cache_prefix, count_input_tokens, generate, message_json, new_message_id, sse_events
from .rules import validate_body, validate_count_tokens_body
from .settings import Settings, apply_settings
from .triggers import TriggerError, find_calls, find_triggers, injected_error, injected_status, text_triggers

MAX_BODY_BYTES = 30 * 1024 * 1024  # Vertex's request cap
REQUEST_LOG_SIZE = 200
LOGGED_BODY_BYTES = 8 * 1024 * 1024  # larger bodies are logged as null: 200 of them could exhaust memory
LOGGED_EMBEDDING_VALUES = 65_536  # an embeddings answer with more is logged with its `values` as null, likewise

T = TypeVar("T")


@dataclass
class Stats:
    model_requests: collections.Counter[str] = field(default_factory=collections.Counter)  # by location
    token_requests: int = 0
    faults_fired: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"model_requests": dict(self.model_requests), "token_requests": self.token_requests,
                "faults_fired": self.faults_fired}


@dataclass
class State:
    settings: Settings
    authority: Authority
    token_uri: str
    request_log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=REQUEST_LOG_SIZE))
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))  # signs thinking blocks
    prompt_cache: PromptCache = field(default_factory=PromptCache)
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    pausing: set[asyncio.Task] = field(default_factory=set)  # handlers inside pause()

    async def pause(self, seconds: float) -> bool:
        """Sleep; False, early, when the emulator stops: a stalled or delayed request must not hold up SIGTERM."""
        task = asyncio.current_task()
        assert task is not None
        self.pausing.add(task)
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
            return False
        except TimeoutError:
            return True
        finally:
            self.pausing.discard(task)


class BaseHandler(tornado.web.RequestHandler):
    def initialize(self, state: State) -> None:
        self.state = state

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None, gzipped: bool = False) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        data = json.dumps(body, ensure_ascii=False).encode()
        if gzipped:  # whatever the client's Accept-Encoding says, as Vertex's 429s sometimes come
            self.set_header("Content-Encoding", "gzip")
            data = gzip.compress(data)
        self.finish(data)

    def send_error_answer(self, err: HttpError) -> None:
        self.send_json(err.status, err.body, err.headers, err.gzipped)

    def claim_fault(self, target: FaultTarget, actions: frozenset[str]) -> FaultRule | None:
        rule = self.state.faults.claim(target, actions)
        if rule:
            self.state.stats.faults_fired += 1
        return rule

    async def apply_on_arrival(self, rule: FaultRule) -> bool:
        """Carry out a `close` or `delay` rule; False when the request ends here, its connection dropped."""
        if rule.action == "delay" and await self.state.pause(rule.params["ms"] / 1000):
            return True
        self.drop_connection()
        return False

    def drop_connection(self) -> None:
        """End the TCP connection, with no answer or mid-answer: the client sees the server disconnect."""
        self.request.connection.close()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # tornado's own errors (unknown route, wrong method, a bug here) in Google's shape, not HTML
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(google_error(status_code, self._reason).body))


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


class TokenHandler(BaseHandler):
    """POST /token, like https://oauth2.googleapis.com/token."""

    async def post(self) -> None:
        self.state.stats.token_requests += 1
        target = FaultTarget("token")
        fault = self.claim_fault(target, frozenset(ACTIONS))  # before the JWT checks: an outage knows no grants
        if fault and fault.action == "status":
            self.send_error_answer(status_answer(fault, target))
            return
        if fault and not await self.apply_on_arrival(fault):
            return
        arg = self.get_body_argument
        grant = arg("grant_type", "")
        try:
            if grant == JWT_BEARER_GRANT:
                answer = self.state.authority.grant_jwt(arg("assertion", ""), self._audiences())
            elif grant == "refresh_token":
                answer = self.state.authority.grant_refresh(arg("client_id", ""), arg("client_secret", ""),
                                                            arg("refresh_token", ""), arg("scope", ""))
            else:
                raise oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant}")
        except HttpError as err:
            self.send_error_answer(err)
            return
        self.set_header("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate")
        self.send_json(200, answer)

    def _audiences(self) -> list[str]:
        # google-auth (2.x) always signs aud = Google's token URL, whatever the key file's token_uri says; other
        # clients use the token_uri they post to, as this emulator advertised it or as they named it (`localhost`)
        return [GOOGLE_TOKEN_URI, self.state.token_uri,
                f"{self.request.protocol}://{self.request.host}{self.request.path}"]


_NOT_JSON = object()


class ModelEndpoint(BaseHandler):
    """What every model endpoint shares: the request log, auth, fault rules (see `admitted`)."""

    def prepare(self) -> None:
        try:
            self.parsed: Any = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError):
            self.parsed = _NOT_JSON
        headers = dict(self.request.headers)
        if "Authorization" in headers:
            headers["Authorization"] = "Bearer <redacted>"
        small = len(self.request.body) <= LOGGED_BODY_BYTES
        logged_body = self.parsed if small and self.parsed is not _NOT_JSON else None
        self.log_entry = {"path": self.request.path, "method": self.request.method, "headers": headers,
                          "authorized": False, "body": logged_body, "status": None, "response": None,
                          "fault": None}
        self.state.request_log.append(self.log_entry)
        self.started = time.monotonic()

    def on_finish(self) -> None:
        if self.log_entry["fault"] != "close":  # a closed connection got no status
            self.log_entry["status"] = self.get_status()

    def claim_fault(self, target: FaultTarget, actions: frozenset[str]) -> FaultRule | None:
        rule = super().claim_fault(target, actions)
        if rule:
            self.log_entry["fault"] = rule.action
        return rule

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None, gzipped: bool = False) -> None:
        self.log_entry["response"] = {"body": self.loggable(body)}
        super().send_json(status, body, headers, gzipped)

    def loggable(self, body: Any) -> Any:
        """The answer as the request log keeps it."""
        return body

    async def admitted(self, target: FaultTarget, check: Callable[[], T]) -> tuple[T, FaultRule | None] | None:
        """Take the request through arrival faults, auth and `check` (the endpoint's routing and body rules,
        raising HttpError), then claim the fault rule for a request that passed them. (check's result, the rule
        still to carry out), or None when the request has been answered (or dropped) already."""
        self.state.stats.model_requests[target.location] += 1
        early = self.claim_fault(target, ON_ARRIVAL)
        if early and not await self.apply_on_arrival(early):
            return None
        try:
            self._authorize()
            checked = check()
        except HttpError as err:
            self.send_error_answer(err)
            return None
        # one rule per request; a rule that did not fire on arrival fires only for a request that passed the checks
        fault = None if early else self.claim_fault(target, frozenset(ACTIONS) - ON_ARRIVAL)
        if fault and fault.action == "status":
            self.send_error_answer(status_answer(fault, target))
            return None
        return checked, fault

    def _authorize(self) -> None:
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        self.state.authority.check_access(token.strip() if scheme.lower() == "bearer" else "")
        self.log_entry["authorized"] = True

    def claude_body(self, validate: Callable[[object], dict]) -> dict:
        """The body, checked by `validate` (a rules.py function); the Anthropic error for a broken rule."""
        if len(self.request.body) > MAX_BODY_BYTES:
            raise anthropic_error(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
        if self.parsed is _NOT_JSON:
            raise anthropic_error(400, "invalid_request_error", "There was an error parsing the body: not JSON")
        try:
            return validate(self.parsed)
        except InvalidRequest as err:
            raise anthropic_error(400, "invalid_request_error", str(err)) from None


class ClaudeHandler(ModelEndpoint):
    """POST …/publishers/anthropic/models/{model}:rawPredict | :streamRawPredict."""

    async def post(self, project: str, location: str, model: str, method: str) -> None:
        streaming = method == "streamRawPredict"
        target = FaultTarget("model", location, model, streaming)
        admitted = await self.admitted(target, lambda: self._checked(project, location, model, streaming))
        if admitted is None:
            return
        body, fault = admitted
        cache = self.state.prompt_cache.use(cache_prefix(body, model))
        gen = generate(body, self.state.secret, new_message_id(), cache)
        if streaming:
            await self._stream(sse_events(gen, model), fault)
        else:
            self.send_json(200, message_json(gen, model))

    def _checked(self, project: str, location: str, model: str, streaming: bool) -> dict:
        if model not in CLAUDE_MODELS:
            raise model_not_found(project, location, "anthropic", model)
        body = self.claude_body(lambda parsed: validate_body(parsed, model, streaming, self.state.secret))
        fault = injected_error(find_triggers(body), streaming)
        if fault:
            raise fault
        try:
            find_calls(body)
        except TriggerError as err:
            raise anthropic_error(400, "invalid_request_error", str(err)) from None
        return body

    async def _stream(self, events: list[tuple[str, dict]], fault: FaultRule | None) -> None:
        """Send the events, paced, as a streamed fault rule alters them."""
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        events = faulted_events(events, fault)
        stall = stall_point(events, fault)
        sent: list[dict] = []
        self.log_entry["response"] = {"events": sent}
        try:
            for i, (name, data) in enumerate(events):
                if not await self._wait_before(i, stall):
                    self.drop_connection()  # the emulator is stopping
                    return
                frame = f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
                for part in split_inside_character(frame.encode()):
                    self.write(part)
                    await self.flush()
                sent.append({"t_ms": round((time.monotonic() - self.started) * 1000, 1), "event": name,
                             "data": data})
        except tornado.iostream.StreamClosedError:
            return  # the client went away: stop generating

    async def _wait_before(self, i: int, stall: tuple[int, float] | None) -> bool:
        """A stall rule's silence, then the pacing, before event i; False when the emulator is stopping."""
        if stall and i == stall[0]:
            await self.flush()  # the 200 and its headers go out even when the stall comes before any event
            if not await self.state.pause(stall[1]):
                return False
        pace = self.state.settings.pace_ms
        return not (i and pace > 0) or await self.state.pause(pace / 1000)


def split_inside_character(frame: bytes) -> list[bytes]:
    """The frame in two writes cut inside its first multi-byte character, if any: networks split anywhere, and
    clients must put UTF-8 back together."""
    at = next((i for i, byte in enumerate(frame) if byte >= 0x80), None)
    return [frame] if at is None else [frame[:at + 1], frame[at + 1:]]


class CountTokensHandler(ModelEndpoint):
    """POST …/publishers/anthropic/models/count-tokens:rawPredict: Anthropic's count_tokens body (with `model`,
    a Vertex or first-party id) → `{"input_tokens": N}`, N as the fake model counts input for `usage` (cache
    aside). Not served on the `global` location (404, as for a model Vertex does not offer there)."""

    async def post(self, project: str, location: str) -> None:
        target = FaultTarget("model", location, "count-tokens", False)
        admitted = await self.admitted(target, lambda: self._checked(project, location))
        if admitted is not None:
            self.send_json(200, {"input_tokens": count_input_tokens(admitted[0])})

    def _checked(self, project: str, location: str) -> dict:
        if location == "global":
            raise model_not_found(project, location, "anthropic", "count-tokens")
        body = self.claude_body(validate_count_tokens_body)
        if vertex_id(body["model"]) is None:
            raise model_not_found(project, location, "anthropic", body["model"])
        fault = injected_error(find_triggers(body), streaming=False)
        if fault:
            raise fault
        return body


class EmbeddingsHandler(ModelEndpoint):
    """POST …/publishers/google/models/{model}:predict for the text-embedding models (embeddings.py)."""

    async def post(self, project: str, location: str, model: str) -> None:
        target = FaultTarget("model", location, model, False, publisher="google")
        admitted = await self.admitted(target, lambda: self._checked(project, location, model))
        if admitted is not None:
            (texts, dimension), _ = admitted
            self.send_json(200, embeddings.predict(model, texts, dimension))

    def _checked(self, project: str, location: str, model: str) -> tuple[list[embeddings.Text], int]:
        if model not in embeddings.EMBEDDING_MODELS:
            raise model_not_found(project, location, "google", model)
        if len(self.request.body) > MAX_BODY_BYTES:
            raise google_error(400, f"Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes.")
        if self.parsed is _NOT_JSON:
            raise google_error(400, "Invalid JSON payload received. Unexpected token.")
        limit = (self.state.settings.gemini_embedding_instances if model == embeddings.GEMINI_EMBEDDING
                 else embeddings.MAX_INSTANCES)
        try:
            texts, dimension = embeddings.check_request(self.parsed, model, limit)
        except InvalidRequest as err:
            raise google_error(400, str(err)) from None
        status = text_triggers(" ".join(text.content for text in texts)).status
        if status is not None:
            raise injected_status(status)
        return texts, dimension

    def loggable(self, body: Any) -> Any:
        predictions = body.get("predictions") if isinstance(body, dict) else None
        if not predictions or sum(len(p["embeddings"]["values"]) for p in predictions) <= LOGGED_EMBEDDING_VALUES:
            return body
        return {**body, "predictions": [{"embeddings": {**p["embeddings"], "values": None}} for p in predictions]}


class RequestsHandler(BaseHandler):
    """GET / DELETE /_emulator/requests: the last model requests, for tests."""

    def get(self) -> None:
        self.send_json(200, list(self.state.request_log))

    def delete(self) -> None:
        self.state.request_log.clear()
        self.send_json(200, {"ok": True})


class SettingsHandler(BaseHandler):
    """GET / POST /_emulator/settings: pace_ms (delay between SSE events), token_ttl (seconds),
    gemini_embedding_instances (gemini-embedding-001's instances per request)."""

    def get(self) -> None:
        self.send_json(200, asdict(self.state.settings))

    def post(self) -> None:
        try:
            apply_settings(self.state.settings, json.loads(self.request.body))
        except (ValueError, TypeError) as err:
            self.send_json(400, {"error": str(err)})
            return
        self.send_json(200, asdict(self.state.settings))


class FaultsHandler(BaseHandler):
    """GET / POST / DELETE /_emulator/faults: list the fault rules (with `fired`, `remaining`), append
    `{"rules": [...]}`, remove them all."""

    def get(self) -> None:
        self.send_json(200, {"rules": self.state.faults.describe()})

    def post(self) -> None:
        try:
            self.state.faults.add(json.loads(self.request.body))
        except ValueError as err:
            self.send_json(400, {"error": str(err)})
            return
        self.get()

    def delete(self) -> None:
        self.state.faults.clear()
        self.send_json(200, {"ok": True})


class StatsHandler(BaseHandler):
    """GET / DELETE /_emulator/stats: model-endpoint requests by location, token requests, fault rules fired."""

    def get(self) -> None:
        self.send_json(200, self.state.stats.as_json())

    def delete(self) -> None:
        self.state.stats = Stats()
        self.send_json(200, {"ok": True})


class HealthHandler(BaseHandler):
    def get(self) -> None:
        self.send_json(200, {"ok": True})


# Tornado percent-decodes the groups, so `claude-sonnet-4-5%4020250929` arrives as `…@…`.
_MODELS = r"/v1/projects/([^/]+)/locations/([^/]+)/publishers"
_COLON = r"(?::|%3A|%3a)"
COUNT_TOKENS_ROUTE = rf"{_MODELS}/anthropic/models/count-tokens{_COLON}rawPredict"
CLAUDE_ROUTE = rf"{_MODELS}/anthropic/models/([^/:]+?){_COLON}(rawPredict|streamRawPredict)"
EMBEDDINGS_ROUTE = rf"{_MODELS}/google/models/([^/:]+?){_COLON}predict"


def make_app(state: State) -> tornado.web.Application:
    args = {"state": state}
    return tornado.web.Application(
        [(r"/token", TokenHandler, args), (COUNT_TOKENS_ROUTE, CountTokensHandler, args),  # before CLAUDE_ROUTE
         (CLAUDE_ROUTE, ClaudeHandler, args), (EMBEDDINGS_ROUTE, EmbeddingsHandler, args),
         (r"/_emulator/requests", RequestsHandler, args), (r"/_emulator/settings", SettingsHandler, args),
         (r"/_emulator/faults", FaultsHandler, args), (r"/_emulator/stats", StatsHandler, args),
         (r"/_emulator/health", HealthHandler, args)],
        default_handler_class=NotFoundHandler, default_handler_args=args,
        compress_response=False)  # Vertex's answers are never gzipped
