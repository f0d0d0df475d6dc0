"""Per-client rate limits and monthly budgets on every translated API call (limits.py decides, against the state
store shared by every process on `state.url`), and the spend each answer costs.

Cases:
- a `POST` to an API of ours (chat, responses, embeddings…): the client is its key's entry in
  `security.client_keys` (its own limits, else `limits` / `budgets`), else its address (limits only); over a
  limit → OpenAI's 429 (`rate_limit_exceeded` with `retry-after`, or `insufficient_quota` for a spent budget),
  answered before any upstream call; the store unreachable → served without limits (a log line at most once a
  second, `modelmux_state_errors_total`), or 503 with `state.fail_closed`;
- the answer (allowed or not) carries OpenAI's `x-ratelimit-*` headers for the limits that apply
  (`RateLimitHeaders`, placed after Translate, which rebuilds a stream's headers);
- each translated exchange, when it ends (a stream: when its last event is out): its tokens charged to the
  token bucket at once and its cost (pricing.py) added to the spend of (key, model, day) — summed in the process
  and written once a second (a budget counts this process's pending spend at once, other processes' within a
  second) — `modelmux usage` reads it, `/metrics` has `modelmux_spend_usd_total{key, model}`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mitmproxy import http

from ..apis import BY_PATH
from ..apis.answers import error_response
from ..limits import ClientLimits, Limiter
from ..pricing import tokens_from_anthropic
from .guard import fail_closed
from .client_auth import KEY_NAME
from .runtime import Runtime
from .scope import is_ours, route_path

log = logging.getLogger("modelmux")

HEADERS = "modelmux_ratelimit"  # flow metadata: the x-ratelimit-* headers for the answer (plain strings)
FLUSH_SECONDS = 1.0  # pending spend is written this often (one write per key, model and day)


class RateLimits:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self._clients: dict[str, ClientLimits] = {}  # flow id → who is charged when its exchange ends
        self._limiter: Limiter | None = None
        self._settling: set[asyncio.Task] = set()
        self._flusher: asyncio.Task | None = None
        runtime.exchange_ended.append(self._ended)
        runtime.closing.append(self._finish)

    def limiter(self) -> Limiter:
        snap = self.runtime.current
        store = self.runtime.store
        cfg = snap.config
        if self._limiter is None or self._limiter.store is not store or self._limiter.prices is not cfg.budgets.prices \
                or self._limiter.fail_closed != cfg.state.fail_closed:
            old = self._limiter
            self._limiter = Limiter(store, fail_closed=cfg.state.fail_closed, prices=cfg.budgets.prices,
                                    on_fail_open=self.runtime.metrics.state_error)
            if old is not None and old.store is store:
                self._limiter.pending = old.pending  # a reload keeps what was spent and not yet written
            elif old is not None:
                self._background(old.flush())
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_every())
        return self._limiter

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            if self._limiter is not None and len(self._limiter.pending):
                try:
                    await asyncio.shield(self._limiter.flush())  # stopping this loop never cuts a write short
                except asyncio.CancelledError:
                    raise
                except Exception:  # the writing must go on
                    log.exception("modelmux: writing spend failed")

    def _background(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        snap = self.runtime.current
        if flow.response or snap is None or flow.request.method != "POST" or not is_ours(flow, snap.intercept_hosts):
            return
        if route_path(flow) not in BY_PATH:
            return
        client = _client(flow, snap.config)
        if not client.limited:
            return
        decision = await self.limiter().check(client)
        if decision.headers:
            flow.metadata[HEADERS] = decision.headers
        if not decision.allowed:
            flow.response = error_response(decision.error)
            return
        self._clients[flow.id] = client

    def error(self, flow: http.HTTPFlow) -> None:
        self._clients.pop(flow.id, None)  # an exchange that never started (it would have been recorded)

    def forget(self, flow: http.HTTPFlow) -> None:
        """After Translate's answer: a request answered without an exchange (a 400 from its API, a stored
        response's read) is not charged, and its entry must not stay behind."""
        self._clients.pop(flow.id, None)

    def _ended(self, flow: http.HTTPFlow, ex: Any) -> None:
        snap = self.runtime.current
        if snap is None:
            return
        client = self._clients.pop(flow.id, None) or _client(flow, snap.config)
        tokens = ex.tokens
        if tokens is None or not (tokens.input or tokens.output or tokens.cache_read or tokens.cache_write):
            return  # nothing was used (an error before any answer)
        counts = tokens_from_anthropic({"input_tokens": tokens.input, "output_tokens": tokens.output,
                                        "cache_read_input_tokens": tokens.cache_read,
                                        "cache_creation_input_tokens": tokens.cache_write})
        self._background(self._settle(client, ex, counts))

    async def _settle(self, client: ClientLimits, ex: Any, counts: Any) -> None:
        settlement = await self.limiter().settle(client, ex.vertex_model, counts, region=ex.served_region,
                                                 buffered=True)
        if settlement.usd:
            self.runtime.metrics.spend.labels(client.spend_key, ex.model_label).inc(settlement.usd)
        if settlement.price_source.startswith(("unknown:", "family:")):
            log.info("modelmux: no list price for %s; priced as %s (budgets.prices overrides)", ex.vertex_model,
                     settlement.price_source)

    async def _finish(self) -> None:
        """At shutdown (Runtime.close, before the store closes): settle what ended, write what was spent."""
        if self._flusher is not None:
            self._flusher.cancel()  # a flush under way goes on (shielded); the last one below waits for it
        if self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)
        if self._limiter is not None:
            await self._limiter.flush()  # nothing spent is left unwritten at a clean stop


class RateLimitHeaders:
    """Puts the x-ratelimit-* headers RateLimits decided on the answer, streamed or not (after Translate), and
    tells RateLimits when a flow's answer is complete."""

    def __init__(self, limits: RateLimits | None = None):
        self.limits = limits

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and (headers := flow.metadata.get(HEADERS)):
            flow.response.headers.update(headers)

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and not flow.response.stream and (headers := flow.metadata.get(HEADERS)):
            for k, v in headers.items():
                flow.response.headers.setdefault(k, v)  # a 429's own headers (retry-after) stay
        if self.limits is not None:
            self.limits.forget(flow)


def _client(flow: http.HTTPFlow, config: Any) -> ClientLimits:
    name = flow.metadata.get(KEY_NAME)
    if name is not None:
        entry = next((e for e in config.security.clients if e.name == name), None)
        if entry is not None:
            return ClientLimits.for_key(entry, config)
    return ClientLimits.for_address(flow.client_conn.peername[0] if flow.client_conn.peername else "unknown", config)
