"""The reliable path to Vertex AI: retries, region failover, circuit breakers and timeouts, in a loopback relay.

mitmproxy cannot re-send a flow, and a response it streams comes from the one server connection it opened.
So the flow does not go to Vertex directly: it goes to this relay on 127.0.0.1, inside the modelmux process,
which makes the Vertex call (upstream_http.py) and may make it again — with backoff, in another region — until the
first byte of a usable answer exists. Only then does the answer flow back to mitmproxy, event by event, where
the stream translator runs as before. Once the first byte has gone to the client nothing is retried: a stream
cannot be restarted without the client seeing the answer twice. docs/reliability.md has the whole design and
its measured cost.

Cases:
- 2xx, or a 4xx that another attempt would not change (400, 403, 413, …): passed on as it is;
- 429, 500, 502, 503, 504, 529, connection failures, time-outs before the first byte: retried, failing over to
  the next region when there is one, backing off exponentially with full jitter and honouring `retry-after`,
  within `retries.max_attempts` and `retries.max_wait_seconds`;
- 404 (model not offered in that region): the next region, without counting against its health;
- 401: the token is refreshed once and the call repeated;
- a region with `circuit_breaker.failures` failures in `window_seconds` is skipped for `cooldown_seconds`,
  then one trial request decides; new requests go straight to a healthy region;
- no event for `timeouts.idle_seconds` mid-stream: an Anthropic `error` event (the client's SDK raises);
- the client going away closes the relay connection, which cancels the Vertex call.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from . import __version__
from .auth import AuthError, TokenProvider
from .config import CircuitBreakerConfig, RetryConfig, TimeoutsConfig
from .upstream_http import (ConnectTimeout, FirstByteTimeout, IdleTimeout, Response, UpstreamClient,
                            UpstreamError)

log = logging.getLogger("modelmux")

RETRYABLE = frozenset({429, 500, 502, 503, 504, 529})
PLAN_HEADER = "x-modelmux-plan"
USER_AGENT = f"modelmux/{__version__}"
# headers of the relay's answer that tell the addon what happened (removed before the client sees them)
REGION_HEADER, ATTEMPTS_HEADER, LOCAL_ERROR_HEADER = "x-modelmux-region", "x-modelmux-attempts", "x-modelmux-error"
_PASS_HEADERS = ("content-type", "content-encoding", "retry-after")
_HIGH_WATER = 64 * 1024  # bytes the relay may queue for mitmproxy before it waits


# --- policy (pure) ------------------------------------------------------------------------------------------

def backoff_delay(attempt: int, cfg: RetryConfig, retry_after: float | None, rng: random.Random) -> float:
    """Seconds to wait before attempt number `attempt + 1` (attempt ≥ 1): the upstream's `retry-after` when it
    gave one, else exponential backoff with full jitter (spreads a burst of clients apart)."""
    if retry_after is not None:
        return retry_after
    ceiling = min(cfg.backoff_max_seconds, cfg.backoff_initial_seconds * 2 ** (attempt - 1))
    return rng.uniform(0, ceiling)


class CircuitBreaker:
    """Per-region health. Closed: used. Open (too many recent failures): skipped until the cooldown ends, then
    one trial request (half-open) closes it again on success or reopens it on failure."""

    def __init__(self, cfg: CircuitBreakerConfig, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._open_until: dict[str, float] = {}
        self._trial: set[str] = set()

    def is_open(self, region: str) -> bool:
        until = self._open_until.get(region)
        if until is None:
            return False
        if self.clock() >= until and region not in self._trial:
            return False  # cooldown over: a trial may go
        return True

    def order(self, regions: list[str]) -> list[str]:
        """Healthy regions first, in configured order; open ones last (a last resort, not never)."""
        return [r for r in regions if not self.is_open(r)] + [r for r in regions if self.is_open(r)]

    def attempt(self, region: str) -> None:
        if region in self._open_until and self.clock() >= self._open_until[region]:
            self._trial.add(region)

    def success(self, region: str) -> None:
        self._failures.pop(region, None)
        self._open_until.pop(region, None)
        self._trial.discard(region)

    def failure(self, region: str) -> None:
        now = self.clock()
        recent = self._failures.setdefault(region, deque())
        recent.append(now)
        while recent and recent[0] < now - self.cfg.window_seconds:
            recent.popleft()
        if region in self._trial or len(recent) >= self.cfg.failures:
            if region not in self._open_until or region in self._trial:
                log.warning("modelmux: circuit open for region %s for %.0f s", region, self.cfg.cooldown_seconds)
            self._open_until[region] = now + self.cfg.cooldown_seconds
            self._trial.discard(region)
            recent.clear()

    def state(self) -> dict[str, str]:
        return {r: ("open" if self.is_open(r) else "half-open") for r in self._open_until}


# --- the relay ----------------------------------------------------------------------------------------------

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
    outcome: dict[str, object] = field(default_factory=dict)  # region, attempts, retried, failed_over


@dataclass
class Counters:
    retries: int = 0
    failovers: int = 0
    upstream_errors: int = 0
    active: int = 0  # Vertex calls in progress (waiting, retrying or streaming)


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
                self._server = await asyncio.start_server(self._serve_connection, "127.0.0.1", 0)
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
        token = secrets.token_urlsafe(18)
        self._plans[token] = plan
        return token

    def discard(self, token: str) -> None:
        self._plans.pop(token, None)

    # one connection from mitmproxy: HTTP/1.1, keep-alive, one request at a time
    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                token, _body = request
                plan = self._plans.pop(token, None)
                if plan is None:
                    await _write_simple(writer, 404, b'{"error": {"code": 404, "message": "unknown relay plan"}}')
                    continue
                # the client going away (mitmproxy closes this connection) cancels the Vertex call
                serve = asyncio.ensure_future(self._serve(plan, writer))
                gone = asyncio.ensure_future(reader.read(1))
                done, _ = await asyncio.wait({serve, gone}, return_when=asyncio.FIRST_COMPLETED)
                if serve not in done:
                    serve.cancel()
                    await asyncio.gather(serve, return_exceptions=True)
                    return
                gone.cancel()
                await asyncio.gather(gone, return_exceptions=True)
                if serve.exception() is not None or not serve.result():
                    return  # the answer could not be framed to the end: this connection is done
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def fetch(self, plan: Plan) -> tuple[int, dict[str, str], bytes]:
        """The whole answer of a non-streamed call, with the same retries: (status, headers, decoded body).
        Called from the request hook itself — no relay hop, no upstream connection for mitmproxy."""
        await self.ensure_started()
        self.counters.active += 1
        try:
            resp, error = await self._call(plan)
        finally:
            self.counters.active -= 1
        if resp is None:
            return error[0], {"content-type": "application/json", **_local_error_headers(plan)}, \
                _local_error_body(*error)
        try:
            body = resp.content if resp.is_stream_consumed else await resp.aread()
        except UpstreamError as err:
            return 502, {"content-type": "application/json", **_local_error_headers(plan)}, \
                _local_error_body(502, f"Vertex AI's answer broke off: {type(err).__name__}")
        finally:
            await resp.aclose()
        return resp.status_code, {**_passed_headers(resp, decoded=True), **_outcome(plan)}, body

    def health(self) -> dict[str, object]:
        return {"active_calls": self.counters.active, "pending_plans": len(self._plans),
                "retries": self.counters.retries, "failovers": self.counters.failovers,
                "upstream_errors": self.counters.upstream_errors, "circuits": self.breaker.state()}

    async def _serve(self, plan: Plan, writer: asyncio.StreamWriter) -> bool:
        """Make the call (with retries) and relay the answer. True when the connection can be reused."""
        self.counters.active += 1
        try:
            return await self._serve_counted(plan, writer)
        finally:
            self.counters.active -= 1

    async def _serve_counted(self, plan: Plan, writer: asyncio.StreamWriter) -> bool:
        resp, error = await self._call(plan)
        if resp is None:
            await _write_simple(writer, error[0], _local_error_body(*error), _local_error_headers(plan))
            return True
        try:
            return await _relay_response(resp, writer, plan)
        finally:
            await resp.aclose()

    async def _call(self, plan: Plan) -> tuple[Response | None, tuple[int, str]]:
        assert self._client is not None
        regions = self.breaker.order(list(plan.urls))
        cfg = plan.retries
        waited = 0.0
        last_error: tuple[int, str] = (502, "modelmux could not reach Vertex AI")
        last_response: Response | None = None
        refreshed = False
        region_i = 0
        for attempt in range(1, cfg.max_attempts + 1):
            region = regions[region_i % len(regions)]
            plan.outcome.update(region=region, attempts=attempt)
            self.breaker.attempt(region)
            retry_after: float | None = None
            try:
                token = await plan.tokens.token()
            except AuthError as err:
                return None, (500, f"modelmux could not authenticate to Vertex AI: {err}")
            headers = {"authorization": f"Bearer {token}", "content-type": "application/json",
                       "accept": "text/event-stream" if plan.stream else "application/json",
                       "accept-encoding": "identity" if plan.stream else "gzip, identity", "user-agent": USER_AGENT}
            try:
                resp = await self._client.post(plan.urls[region], headers, plan.body,
                                               connect_seconds=plan.timeouts.connect_seconds,
                                               first_byte_seconds=plan.timeouts.first_byte_seconds)
            except (ConnectTimeout, FirstByteTimeout) as err:
                self.breaker.failure(region)
                kind = "connect" if isinstance(err, ConnectTimeout) else "first byte"
                limit = plan.timeouts.connect_seconds if kind == "connect" else plan.timeouts.first_byte_seconds
                last_error, last_response = (504, f"Vertex AI in {region} did not answer within {limit:g} s "
                                                  f"({kind})."), None
            except UpstreamError as err:
                self.breaker.failure(region)
                last_error, last_response = (502, f"modelmux could not reach Vertex AI in {region}: {err}"[:400]), None
            else:
                status = resp.status_code
                if status == 401 and not refreshed:
                    await resp.aread()
                    await resp.aclose()
                    plan.tokens.invalidate()
                    refreshed = True
                    continue
                if status == 404 and len(regions) > 1 and region_i + 1 < len(regions):
                    await _keep(resp)
                    last_response = resp
                    region_i += 1  # not offered there: another region may have it
                    self.counters.failovers += 1
                    continue
                if status not in RETRYABLE:
                    if status < 500:
                        self.breaker.success(region)
                    resp.idle_seconds = plan.timeouts.idle_seconds  # from now on: the gap between events
                    return resp, last_error
                await _keep(resp)
                self.breaker.failure(region)
                self.counters.upstream_errors += 1
                last_response = resp
                retry_after = _seconds(resp.headers.get("retry-after"))
            if attempt == cfg.max_attempts:
                break
            # fail over at once when another region is healthy; back off before retrying the same one
            nxt = self.breaker.order(list(plan.urls))
            others = [r for r in nxt if r != region and not self.breaker.is_open(r)]
            if others:
                regions, region_i = [*others, *[r for r in nxt if r not in others]], 0
                self.counters.failovers += 1
                plan.outcome["failed_over"] = True
                continue
            delay = backoff_delay(attempt, cfg, retry_after, self.rng)
            if waited + delay > cfg.max_wait_seconds:
                break  # the client is better served by the error (and its retry-after) now
            self.counters.retries += 1
            plan.outcome["retried"] = True
            waited += delay
            await asyncio.sleep(delay)
        if last_response is not None:
            return last_response, last_error
        return None, last_error


def _local_error_body(status: int, message: str) -> bytes:
    """modelmux's own failure (no usable upstream answer), already in OpenAI's shape."""
    code = {502: "upstream_unavailable", 504: "upstream_timeout"}.get(status, "upstream_auth_failed")
    return json.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": code}}).encode()


def _status_line(status: int) -> str:
    try:
        return f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP/1.1 {status} Error"  # 529 and other non-standard codes


def _passed_headers(resp: Response, *, decoded: bool) -> dict[str, str]:
    """The upstream headers the addon needs; no content-encoding once the body has been decoded (aread)."""
    return {k: resp.headers[k] for k in _PASS_HEADERS
            if k in resp.headers and not (decoded and k == "content-encoding")}


def _local_error_headers(plan: Plan) -> dict[str, str]:
    """Marks modelmux's own OpenAI-shaped error, with what the attempts found."""
    return {LOCAL_ERROR_HEADER: "1", **_outcome(plan)}


def _outcome(plan: Plan) -> dict[str, str]:
    return {REGION_HEADER: str(plan.outcome.get("region", "")), ATTEMPTS_HEADER: str(plan.outcome.get("attempts", 0))}


async def _keep(resp: Response) -> None:
    """Read an error answer fully (it may become the final one) and free its connection."""
    await resp.aread()
    await resp.aclose()


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, bytes] | None:
    """One HTTP/1.1 request from mitmproxy: (plan token, body); None at a clean end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as err:
        if err.partial.strip():
            raise
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    body = await reader.readexactly(length) if length else b""
    return headers.get(PLAN_HEADER, ""), body


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


async def _write_simple(writer: asyncio.StreamWriter, status: int, body: bytes,
                        headers: dict[str, str] | None = None) -> None:
    head = [_status_line(status), "content-type: application/json", f"content-length: {len(body)}",
            *(f"{k}: {v}" for k, v in (headers or {}).items())]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()


async def _relay_response(resp: Response, writer: asyncio.StreamWriter, plan: Plan) -> bool:
    kept = resp.is_stream_consumed  # an error answer kept from an earlier attempt, already decoded
    head = [_status_line(resp.status_code), *(f"{k}: {v}" for k, v in _passed_headers(resp, decoded=kept).items()),
            *(f"{k}: {v}" for k, v in _outcome(plan).items())]
    if kept:
        body = resp.content
        writer.write(("\r\n".join([*head, f"content-length: {len(body)}"]) + "\r\n\r\n").encode() + body)
        await writer.drain()
        return True
    writer.write(("\r\n".join([*head, "transfer-encoding: chunked"]) + "\r\n\r\n").encode())
    try:
        # aiter_raw: the bytes as Vertex sent them, forwarded the moment each read returns (passthrough)
        pieces = resp.aiter_raw() if not plan.window else _gathered(resp.aiter_raw(), plan.window)
        async for piece in pieces:
            if piece:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                if writer.transport.get_write_buffer_size() > _HIGH_WATER:  # mitmproxy reading slower than Vertex
                    await writer.drain()
    except IdleTimeout:
        event = {"type": "error", "error": {"type": "timeout_error", "message":
                 f"Vertex AI sent nothing for {plan.timeouts.idle_seconds:g} s; the answer is incomplete."}}
        piece = f"\n\nevent: error\ndata: {json.dumps(event)}\n\n".encode()
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    except UpstreamError as err:
        # the upstream broke mid-answer: end our body cleanly; the translator reports the truncation
        log.warning("modelmux: Vertex AI stream broke: %s", type(err).__name__)
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True
