"""Prometheus metrics of the translated exchanges, built with prometheus-client on a registry of our own (two
proxies in one process, or tests, never share series). Served at `GET /metrics` on the proxy's listener.

Several processes (`modelmux run --workers N`, docs/scaling.md): with PROMETHEUS_MULTIPROC_DIR set, every
process writes its values to prometheus-client's files in that directory and `render` sums them over all
processes, dead ones included for counters and histograms (the live-stream gauge counts live processes only).
The relay's and the token provider's counts, plain integers read at scrape time in one process, are then
copied into real counters by their increase since the last copy: when an exchange ends and when this process
is scraped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily

if TYPE_CHECKING:
    from .exchange import Exchange

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, relay_counters: Callable[[], dict[str, Any]], token_refreshes: Callable[[], int]):
        self.registry = CollectorRegistry()
        # `model` is a configured name or "other" (vertex.Router.label): never a client-chosen value
        self.requests = Counter("modelmux_requests", "Translated requests answered, by API, model, status and mode",
                                ["api", "model", "status", "mode", "stream"], registry=self.registry)
        self.latency = Histogram("modelmux_request_duration_seconds", "From request received to answer complete",
                                 ["model", "stream"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("modelmux_time_to_first_chunk_seconds", "From request received to first chunk sent",
                              ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.tokens = Counter("modelmux_tokens", "Tokens by kind (input, output, cache_read, cache_write)",
                              ["model", "kind"], registry=self.registry)
        self.local_errors = Counter("modelmux_local_errors", "Requests modelmux answered itself with an error, "
                                    "never sent upstream (bad input, unknown model or path, client key)",
                                    ["status", "code"], registry=self.registry)
        # `key`: a configured client key's name (or "anonymous"); `model`: a configured name or "other"
        self.spend = Counter("modelmux_spend_usd", "What the answers cost at Vertex list prices (pricing.py), by "
                             "client key and model", ["key", "model"], registry=self.registry)
        self.state_errors = Counter("modelmux_state_errors", "Failed calls to the state store (state.url), by operation",
                                    ["op"], registry=self.registry)
        self.active_streams = Gauge("modelmux_active_streams", "Streams being relayed now", registry=self.registry,
                                    multiprocess_mode="livesum")
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self._copied: _CopiedUpstreamCounters | None = None
        if self.multiprocess:
            self._copied = _CopiedUpstreamCounters(self.registry, relay_counters, token_refreshes)
        else:
            self.registry.register(_UpstreamCollector(relay_counters, token_refreshes))

    def state_error(self, op: str) -> None:
        self.state_errors.labels(op).inc()  # `op`: one of the store's fixed operation names

    def observe(self, ex: Exchange, status: int, mode: str) -> None:
        model, stream = ex.model_label, str(ex.stream).lower()
        self.requests.labels(ex.api, model, str(status), mode, stream).inc()
        if ex.done is not None:
            self.latency.labels(model, stream).observe(max(0.0, ex.done - ex.received))
        if ex.first_chunk is not None:
            self.ttft.labels(model).observe(max(0.0, ex.first_chunk - ex.received))
        t = ex.tokens
        if t is not None:
            for kind, n in (("input", t.input), ("output", t.output), ("cache_read", t.cache_read),
                            ("cache_write", t.cache_write)):
                if n:
                    self.tokens.labels(model, kind).inc(n)
        if self._copied is not None:
            self._copied.copy()

    def render(self) -> bytes:
        if self._copied is None:
            return generate_latest(self.registry)
        self._copied.copy()
        everyone = CollectorRegistry()
        multiprocess.MultiProcessCollector(everyone)
        return generate_latest(everyone)


class _UpstreamCollector:
    """Counters kept by the relay and the token provider, read at scrape time."""

    def __init__(self, relay_counters: Callable[[], dict[str, Any]], token_refreshes: Callable[[], int]):
        self.relay_counters = relay_counters
        self.token_refreshes = token_refreshes

    def collect(self):
        c = self.relay_counters()
        for name, key, text in (("modelmux_upstream_retries", "retries", "Vertex calls repeated after a backoff"),
                                ("modelmux_upstream_failovers", "failovers", "Vertex calls moved to another region"),
                                ("modelmux_upstream_errors", "upstream_errors", "Retryable errors Vertex answered")):
            yield CounterMetricFamily(name, text, value=c[key])
        yield CounterMetricFamily("modelmux_token_refreshes", "Google access tokens fetched",
                                  value=self.token_refreshes())


class _CopiedUpstreamCounters:
    """With several processes: the same counters as _UpstreamCollector, as real counters (summed over processes),
    advanced by what the relay's and the token provider's counts grew since the last copy. A count that went
    down (a new token provider after a config reload) restarts from zero, as Prometheus treats a reset."""

    _RELAY = (("modelmux_upstream_retries", "retries", "Vertex calls repeated after a backoff"),
              ("modelmux_upstream_failovers", "failovers", "Vertex calls moved to another region"),
              ("modelmux_upstream_errors", "upstream_errors", "Retryable errors Vertex answered"))

    def __init__(self, registry: CollectorRegistry, relay_counters: Callable[[], dict[str, Any]],
                 token_refreshes: Callable[[], int]):
        self.relay_counters = relay_counters
        self.token_refreshes = token_refreshes
        self.counters = {key: Counter(name, text, registry=registry) for name, key, text in self._RELAY}
        self.counters["token_refreshes"] = Counter("modelmux_token_refreshes", "Google access tokens fetched",
                                                   registry=registry)
        self.seen = dict.fromkeys(self.counters, 0)

    def copy(self) -> None:
        relay = self.relay_counters()
        now = {key: relay[key] for _, key, _ in self._RELAY}
        now["token_refreshes"] = self.token_refreshes()
        for key, value in now.items():
            grown = value - self.seen[key] if value >= self.seen[key] else value
            if grown:
                self.counters[key].inc(grown)
            self.seen[key] = value
