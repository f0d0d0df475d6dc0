"""The reliable path to Vertex AI: retries, region failover, circuit breakers and timeouts, in a loopback relay.

mitmproxy cannot re-send a flow, and a response it streams comes from the one server connection it opened.
So a streamed flow does not go to Vertex directly: it goes to this relay on 127.0.0.1, inside the modelmux
process, which makes the Vertex call (upstream_http.py) and may make it again — with backoff, in another region —
until the first byte of a usable answer exists (upstream_policy.py decides each step). Only then does the answer
flow back to mitmproxy, event by event, where the stream translator runs. Once the first byte has gone to the
client nothing is retried: a stream cannot be restarted without the client seeing the answer twice. Non-streamed
calls need no hop: `fetch` runs the same loop from the request hook. docs/reliability.md has the whole design and
its measured cost.

The relay writes what happened (region, attempts, its own failure as an OpenAIError) into the request's
`Outcome`, which the exchange record holds; the only `x-modelmux-*` header is the plan token on the request from
mitmproxy to the relay. Cases beyond the policy's:
- no event for `timeouts.idle_seconds` mid-stream: an Anthropic `error` event (the client's SDK raises);
- with `Plan.keepalive`, a silence of that many seconds mid-stream gets an Anthropic `ping` event, which the
  translator may turn into something the client sees (long thinking must not trip a client's idle timeout);
- the client going away closes the relay connection, which cancels the Vertex call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import h11

from . import __version__
from .auth import AuthError, TokenProvider
from .config import CircuitBreakerConfig, RetryConfig, TimeoutsConfig
from .translate.errors import (OpenAIError, credentials_unavailable, retry_after_seconds, upstream_broken,
                               upstream_timeout, upstream_too_large, upstream_unreachable)
from .upstream_http import BodyTooLarge, ConnectTimeout, FirstByteTimeout, IdleTimeout, Response, UpstreamClient, UpstreamError
from .upstream_policy import ANSWERED, RETRYABLE_STATUS, TIMED_OUT, UNREACHABLE, CircuitBreaker, RetryPolicy, classify

log = logging.getLogger("modelmux")

PLAN_HEADER = "x-modelmux-plan"
USER_AGENT = f"modelmux/{__version__}"
_PASS_HEADERS = ("content-type", "content-encoding")
_HIGH_WATER = 64 * 1024  # bytes the relay may queue for mitmproxy before it waits
_MAX_HEAD = 64 * 1024  # the request head mitmproxy sends the relay is small; anything bigger is not ours
# a ping of the relay's own (not Vertex's), marked so the translators can tell a silence from Vertex's pings
_PING = b'event: ping\ndata: {"type": "ping", "modelmux_keepalive": true}\n\n'
MAX_PENDING_PLANS = 100_000  # plans mitmproxy has not fetched yet (each is one request in flight)


def _backlog() -> int:
    """The listen backlog of the relay's socket: a burst of streams all connect at once."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return max(1024, int(f.read()))
    except (OSError, ValueError):
        return socket.SOMAXCONN if socket.SOMAXCONN > 1024 else 4096


@dataclass
class Outcome:
    """What the relay did for one request; the exchange record holds the same object."""

    region: str | None = None  # the region of the last attempt
    attempts: int = 0
    retried: bool = False
    failed_over: bool = False
    error: OpenAIError | None = None  # modelmux's own failure: no usable answer from Vertex


@dataclass
class Plan:
    """One client request's way to Vertex: the URL per region, in preference order."""

    urls: dict[str, str]  # region → URL; dict order = configured order
    body: bytes
    stream: bool
    tokens: TokenProvider
    retries: RetryConfig
    timeouts: TimeoutsConfig
    window: float = 0.0  # streaming mode `buffered`: gather the reads of this many seconds into one write
    keepalive: float = 0.0  # mid-stream silence after which a `ping` event is sent (0: never)
    outcome: Outcome = field(default_factory=Outcome)


@dataclass
class Counters:
    retries: int = 0
    failovers: int = 0
    upstream_errors: int = 0
    active: int = 0  # Vertex calls in progress (waiting, retrying or streaming)


@dataclass(frozen=True)
class Answer:
    """A whole non-streamed answer from Vertex: its status, the headers the translator needs, the decoded body."""

    status: int
    headers: dict[str, str]
    body: bytes


class Relay:
    def __init__(self, breaker_cfg: CircuitBreakerConfig | None = None, *, rng: random.Random | None = None):
        self.breaker = CircuitBreaker(breaker_cfg or CircuitBreakerConfig())
        self.rng = rng or random.Random()
        self.counters = Counters()
        self._plans: dict[str, Plan] = {}
        self._server: asyncio.AbstractServer | None = None
        self._client: UpstreamClient | None = None
        self._starting: asyncio.Lock | None = None
        self.port = 0

    # lifecycle
    async def ensure_started(self) -> int:
        if self._server is not None:
            return self.port
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._server is None:
                # never through a proxy: the proxy's own HTTPS_PROXY often points at the proxy itself
                self._client = UpstreamClient()
                self._server = await asyncio.start_server(self._serve_connection, "127.0.0.1", 0,
                                                          backlog=_backlog(), limit=_MAX_HEAD)
                self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def register(self, plan: Plan) -> str:
        if len(self._plans) >= MAX_PENDING_PLANS:  # flows that died unseen: the oldest go first
            del self._plans[next(iter(self._plans))]
        token = secrets.token_urlsafe(18)
        self._plans[token] = plan
        return token

    def discard(self, token: str) -> None:
        self._plans.pop(token, None)

    def health(self) -> dict[str, object]:
        return {"active_calls": self.counters.active, "pending_plans": len(self._plans),
                "retries": self.counters.retries, "failovers": self.counters.failovers,
                "upstream_errors": self.counters.upstream_errors, "circuits": self.breaker.state()}

    # non-streamed: from the request hook itself
    async def fetch(self, plan: Plan) -> Answer | None:
        """The whole answer of a non-streamed call, with the same retries; None when there is none (then
        `plan.outcome.error` says why). No relay hop, no upstream connection for mitmproxy."""
        await self.ensure_started()
        self.counters.active += 1
        try:
            resp = await self._call(plan)
            if resp is None:
                return None
            try:
                body = await resp.aread()
            except UpstreamError as err:
                plan.outcome.error = _read_failure(err)
                return None
            finally:
                await resp.aclose()
            return Answer(resp.status_code, _passed_headers(resp, decoded=True), body)
        finally:
            self.counters.active -= 1

    # streamed: one connection from mitmproxy, HTTP/1.1 keep-alive, one request at a time
    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        try:
            while True:
                token = await _read_request(conn, reader)
                if token is None:
                    return
                plan = self._plans.pop(token, None)
                if plan is None:
                    body = b'{"error": {"message": "unknown relay plan", "type": "server_error"}}'
                    await _send(writer, conn, 404, {"content-type": "application/json"}, body)
                else:
                    # the client going away (mitmproxy closes this connection) cancels the Vertex call
                    serve = asyncio.ensure_future(self._serve(plan, conn, writer))
                    gone = asyncio.ensure_future(reader.read(1))
                    done, _ = await asyncio.wait({serve, gone}, return_when=asyncio.FIRST_COMPLETED)
                    if serve not in done:
                        serve.cancel()
                        await asyncio.gather(serve, return_exceptions=True)
                        return
                    gone.cancel()
                    await asyncio.gather(gone, return_exceptions=True)
                    if serve.exception() is not None:
                        return  # the answer could not be framed to the end: this connection is done
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _serve(self, plan: Plan, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        """Make the call (with retries) and relay the answer."""
        self.counters.active += 1
        try:
            try:
                resp = await self._call(plan)
            except Exception as bug:  # nothing sent yet: the client gets an OpenAI error, not mitmproxy's page
                log.error("modelmux: the relay failed before Vertex answered (%s)", type(bug).__name__)
                resp, plan.outcome.error = None, upstream_broken(type(bug).__name__)
            if resp is None:
                err = plan.outcome.error
                await _send(writer, conn, err.status, {"content-type": "application/json"}, err.body_bytes())
                return
            try:
                await _relay_response(resp, conn, writer, plan)
            finally:
                await resp.aclose()
        finally:
            self.counters.active -= 1

    async def _call(self, plan: Plan) -> Response | None:
        """Attempts until the policy stops: the answer to pass on, or None with `plan.outcome.error` set."""
        assert self._client is not None
        policy = RetryPolicy(plan.retries, list(plan.urls), self.breaker, self.rng)
        try:
            return await self._attempts(plan, policy)
        except BaseException:  # the client left (cancelled), a bug: a trial it held must not hold the region
            self.breaker.release(plan.outcome.region or "")
            raise

    async def _attempts(self, plan: Plan, policy: RetryPolicy) -> Response | None:
        outcome = plan.outcome
        region = policy.first()
        answer: Response | None = None
        while True:
            outcome.region, outcome.attempts = region, policy.attempts
            try:
                token = await plan.tokens.token()
            except AuthError as err:
                outcome.error = credentials_unavailable(str(err))
                self.breaker.release(region)
                return None
            headers = {"authorization": f"Bearer {token}", "content-type": "application/json",
                       "accept": "text/event-stream" if plan.stream else "application/json",
                       "accept-encoding": "identity" if plan.stream else "gzip, identity", "user-agent": USER_AGENT}
            answer, status, retry_after = None, None, None
            try:
                resp = await self._client.post(plan.urls[region], headers, plan.body,
                                               connect_seconds=plan.timeouts.connect_seconds,
                                               first_byte_seconds=plan.timeouts.first_byte_seconds)
            except (ConnectTimeout, FirstByteTimeout) as err:
                connect = isinstance(err, ConnectTimeout)
                kind = TIMED_OUT
                outcome.error = upstream_timeout(region, "connect" if connect else "first byte",
                                                 plan.timeouts.connect_seconds if connect
                                                 else plan.timeouts.first_byte_seconds)
            except UpstreamError as err:
                kind = UNREACHABLE
                outcome.error = upstream_unreachable(region, str(err))
            else:
                status = resp.status_code
                kind = classify(status)
                outcome.error = None
                if kind == ANSWERED:
                    policy.after(kind, status=status)  # tells the breaker: a trial that got here closes it
                    resp.idle_seconds = plan.timeouts.idle_seconds  # from now on: the gap between events
                    return resp
                try:
                    await resp.aread()  # an error answer: kept whole, it may become the final one
                except UpstreamError as err:
                    outcome.error = _read_failure(err)
                finally:
                    await resp.aclose()
                answer = resp if outcome.error is None else None
                retry_after = retry_after_seconds(resp.headers.get("retry-after"))
                if kind == RETRYABLE_STATUS:
                    self.counters.upstream_errors += 1
            step = policy.after(kind, status=status, retry_after=retry_after)
            outcome.retried, outcome.failed_over = policy.retried, policy.failed_over
            if step.region is None:
                return answer  # the last attempt's answer (an error Vertex gave), or None: its failure
            if step.refresh_token:
                plan.tokens.invalidate()
            elif step.kind == "failover":
                self.counters.failovers += 1
            elif step.kind == "retry":
                self.counters.retries += 1
            if step.delay:
                await asyncio.sleep(step.delay)
            region = step.region


def _read_failure(err: UpstreamError) -> OpenAIError:
    if isinstance(err, BodyTooLarge):
        return upstream_too_large(err.limit)
    return upstream_broken(f"{type(err).__name__}: {err}")


def _passed_headers(resp: Response, *, decoded: bool) -> dict[str, str]:
    """The upstream headers the addon needs; no content-encoding once the body has been decoded (aread)."""
    out = {k: resp.headers[k] for k in _PASS_HEADERS
           if k in resp.headers and not (decoded and k == "content-encoding")}
    if "retry-after" in resp.headers:
        out["retry-after"] = resp.headers["retry-after"]
    return out


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> str | None:
    """One request from mitmproxy, read to its end: its plan token; None at a clean end of the connection."""
    token: str | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data and conn.their_state is h11.IDLE:
                return None
            conn.receive_data(data)
            continue
        if type(event) is h11.Request:
            token = next((v.decode("latin-1") for k, v in event.headers if k == PLAN_HEADER.encode()), "")
        elif type(event) is h11.EndOfMessage:
            return token or ""
        elif type(event) is h11.ConnectionClosed:
            return None


async def _send(writer: asyncio.StreamWriter, conn: h11.Connection, status: int, headers: dict[str, str],
                body: bytes) -> None:
    head = [*headers.items(), ("content-length", str(len(body)))]
    writer.write(conn.send(h11.Response(status_code=status, headers=head, reason=_reason(status)))
                 + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
    await writer.drain()


def _reason(status: int) -> bytes:
    import http

    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Error"  # 529 and other non-standard codes


async def _gathered(pieces: AsyncIterator[bytes], window: float) -> AsyncIterator[bytes]:
    """The reads of `pieces` joined per window: the first read opens a window, everything that arrives before it
    closes leaves with it. Nothing waits longer than `window`; a failure still delivers what was gathered."""
    source = aiter(pieces)
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[bytes] | None = None
    try:
        while True:
            pending = pending or asyncio.ensure_future(anext(source))
            try:
                gathered = [await pending]
            except StopAsyncIteration:
                return
            pending = None
            closes = loop.time() + window
            while (left := closes - loop.time()) > 0:
                pending = asyncio.ensure_future(anext(source))
                done, _ = await asyncio.wait((pending,), timeout=left)
                if not done:
                    break  # still pending: it opens the next window
                piece, pending = pending, None
                try:
                    gathered.append(piece.result())
                except StopAsyncIteration:
                    yield b"".join(gathered)
                    return
                except Exception:  # the upstream broke: hand on what came before it, then the error
                    yield b"".join(gathered)
                    raise
            yield b"".join(gathered)
    finally:
        if pending is not None:
            pending.cancel()


async def _with_pings(pieces: AsyncIterator[bytes], every: float) -> AsyncIterator[bytes]:
    """`pieces`, with a `ping` event after each `every` seconds of silence between two events (never inside a
    half-sent one; the idle limit still applies)."""
    source = aiter(pieces)
    pending: asyncio.Future[bytes] | None = None
    between_events = True
    try:
        while True:
            pending = pending or asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait((pending,), timeout=every)
            if not done:
                if between_events:
                    yield _PING
                continue
            piece, pending = pending, None
            try:
                piece = piece.result()
            except StopAsyncIteration:
                return
            if piece:
                between_events = piece.endswith((b"\n\n", b"\r\n\r\n"))
            yield piece
    finally:
        if pending is not None:
            pending.cancel()


async def _relay_response(resp: Response, conn: h11.Connection, writer: asyncio.StreamWriter, plan: Plan) -> None:
    if resp.is_stream_consumed:  # an error answer kept from the last attempt, already decoded
        await _send(writer, conn, resp.status_code, _passed_headers(resp, decoded=True), resp.content)
        return
    head = list(_passed_headers(resp, decoded=False).items())  # no length: h11 frames the body chunked
    writer.write(conn.send(h11.Response(status_code=resp.status_code, headers=head, reason=_reason(resp.status_code))))
    try:
        # aiter_raw: the bytes as Vertex sent them, forwarded the moment each read returns (passthrough)
        pieces = resp.aiter_raw()
        if plan.window:
            pieces = _gathered(pieces, plan.window)
        if plan.keepalive:
            pieces = _with_pings(pieces, plan.keepalive)
        async for piece in pieces:
            if piece:
                writer.write(conn.send(h11.Data(data=piece)))
                if writer.transport.get_write_buffer_size() > _HIGH_WATER:  # mitmproxy reading slower than Vertex
                    await writer.drain()
    except IdleTimeout:
        event = {"type": "error", "error": {"type": "timeout_error", "message":
                 f"Vertex AI sent nothing for {plan.timeouts.idle_seconds:g} s; the answer is incomplete."}}
        writer.write(conn.send(h11.Data(data=f"\n\nevent: error\ndata: {json.dumps(event)}\n\n".encode())))
    except UpstreamError as err:
        # the upstream broke mid-answer: end our body cleanly; the translator reports the truncation
        log.warning("modelmux: Vertex AI stream broke: %s", type(err).__name__)
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


__all__ = ["Relay", "Plan", "Outcome", "Answer", "Counters", "PLAN_HEADER", "USER_AGENT"]
