"""What the relay does next after each attempt at a Vertex call: pure decisions, no I/O, no sleeping.

`RetryPolicy` is told how each attempt ended and answers with the next step — try again (where, after how long,
with a fresh token?) or stop (pass the last answer on, or report the last failure). The relay (upstream.py)
carries the steps out. `CircuitBreaker` keeps each region's health across requests. Both take injected clocks
and random sources, so tests drive them without waiting.

Rules (docs/reliability.md):
- a 2xx, or a 4xx another attempt would not change (400, 403, 413, a second 401, …): passed on at once;
- 429, 500, 502, 503, 504, 529, connection failures and time-outs before the first byte: another attempt, in
  another healthy region at once when there is one, else in the same region after exponential backoff with full
  jitter (Vertex's `retry-after` wins), within `retries.max_attempts` and `retries.max_wait_seconds`;
- 404 (model not offered in that region): the next region, without counting against the region's health;
- 401: the token is refreshed and the call repeated once — the refresh is not an attempt, so `max_attempts: 1`
  still gets its one real answer;
- what is reported at the end is always the last attempt's outcome, never an earlier one.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .config import CircuitBreakerConfig, RetryConfig

log = logging.getLogger("modelmux")

RETRYABLE = frozenset({429, 500, 502, 503, 504, 529})

# how an attempt ended
ANSWERED = "answered"  # a status that is final: passed on
RETRYABLE_STATUS = "retryable"
NOT_IN_REGION = "not_in_region"  # 404
UNAUTHORIZED = "unauthorized"  # 401
UNREACHABLE = "unreachable"  # no connection, or the answer broke off before its headers
TIMED_OUT = "timed_out"  # connect or first byte


def classify(status: int) -> str:
    if status == 401:
        return UNAUTHORIZED
    if status == 404:
        return NOT_IN_REGION
    return RETRYABLE_STATUS if status in RETRYABLE else ANSWERED


def backoff_delay(attempt: int, cfg: RetryConfig, retry_after: float | None, rng: random.Random) -> float:
    """Seconds to wait before attempt number `attempt + 1` (attempt ≥ 1): the upstream's `retry-after` when it
    gave one, else exponential backoff with full jitter (spreads a burst of clients apart)."""
    if retry_after is not None:
        return retry_after
    ceiling = min(cfg.backoff_max_seconds, cfg.backoff_initial_seconds * 2 ** (attempt - 1))
    return rng.uniform(0, ceiling)


class CircuitBreaker:
    """Per-region health. Closed: used. Open (too many recent failures): skipped until the cooldown ends, then
    one trial request (half-open) closes it again on success or reopens it on failure. A trial that ends neither
    way (its client left, the region answered 404 or refused the token) frees the region for the next trial;
    one that is never heard of again expires after a cooldown, so a region is never left open for good."""

    def __init__(self, cfg: CircuitBreakerConfig, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._open_until: dict[str, float] = {}
        self._trial: dict[str, float] = {}  # region → when its trial began

    def _trial_running(self, region: str, now: float) -> bool:
        began = self._trial.get(region)
        return began is not None and now - began < self.cfg.cooldown_seconds

    def is_open(self, region: str) -> bool:
        until = self._open_until.get(region)
        if until is None:
            return False
        now = self.clock()
        if now >= until and not self._trial_running(region, now):
            return False  # cooldown over: a trial may go
        return True

    def order(self, regions: list[str]) -> list[str]:
        """Healthy regions first, in configured order; open ones last (a last resort, not never)."""
        return [r for r in regions if not self.is_open(r)] + [r for r in regions if self.is_open(r)]

    def attempt(self, region: str) -> None:
        now = self.clock()
        if region in self._open_until and now >= self._open_until[region] and not self._trial_running(region, now):
            self._trial[region] = now

    def release(self, region: str) -> None:
        """The attempt ended saying nothing of the region's health: another may try it."""
        self._trial.pop(region, None)

    def success(self, region: str) -> None:
        self._failures.pop(region, None)
        self._open_until.pop(region, None)
        self._trial.pop(region, None)

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
            self._trial.pop(region, None)
            recent.clear()

    def state(self) -> dict[str, str]:
        return {r: ("open" if self.is_open(r) else "half-open") for r in self._open_until}


@dataclass(frozen=True)
class Step:
    """The next thing to do. `region` None: stop (the relay passes the last answer on, or its failure)."""

    region: str | None
    delay: float = 0.0  # seconds to wait first
    refresh_token: bool = False
    kind: str = ""  # "retry" (same region after backoff), "failover" (another region), "refresh", "" (stop)


STOP = Step(None)


class RetryPolicy:
    """One request's way through its regions. `first()` names the first region; `after(outcome, …)` takes how
    that attempt ended and returns the next step. `attempts` counts real attempts (a token refresh is none)."""

    def __init__(self, cfg: RetryConfig, regions: list[str], breaker: CircuitBreaker, rng: random.Random):
        self.cfg = cfg
        self.configured = list(regions)
        self.breaker = breaker
        self.rng = rng
        self.attempts = 0
        self.waited = 0.0
        self.retried = False
        self.failed_over = False
        self._regions = breaker.order(self.configured)
        self._at = 0
        self._refreshed = False

    def first(self) -> str:
        return self._start(self._regions[0])

    def after(self, outcome: str, *, status: int | None = None, retry_after: float | None = None) -> Step:
        """`status`: the answer's, when there was one; `retry-after`: Vertex's, in seconds."""
        region = self._regions[self._at]
        if outcome == UNAUTHORIZED:
            if self._refreshed:
                self.breaker.release(region)
                return STOP  # a fresh token was refused too: the 401 is the answer
            self._refreshed = True
            self.attempts -= 1  # the refused token's attempt does not count: the same attempt again
            return Step(self._start(region), refresh_token=True, kind="refresh")
        if outcome == ANSWERED:
            if status is None or status < 500:  # a final 5xx (501, …) says nothing good about the region
                self.breaker.success(region)
            else:
                self.breaker.release(region)
            return STOP
        if outcome == NOT_IN_REGION:
            self.breaker.release(region)
            if self._at + 1 >= len(self._regions) or self.attempts >= self.cfg.max_attempts:
                return STOP
            self._at += 1  # not offered there: another region may have it; no mark against this one's health
            self.failed_over = True
            return Step(self._start(self._regions[self._at]), kind="failover")
        self.breaker.failure(region)  # retryable status, unreachable, timed out
        if self.attempts >= self.cfg.max_attempts:
            return STOP
        ordered = self.breaker.order(self.configured)
        healthy = [r for r in ordered if r != region and not self.breaker.is_open(r)]
        if healthy:  # fail over at once: no reason to wait while another region is healthy
            self._regions, self._at = [*healthy, *[r for r in ordered if r not in healthy]], 0
            self.failed_over = True
            return Step(self._start(self._regions[0]), kind="failover")
        delay = backoff_delay(self.attempts, self.cfg, retry_after, self.rng)
        if self.waited + delay > self.cfg.max_wait_seconds:
            return STOP  # the client is better served by the error (and its retry-after) now
        self.waited += delay
        self.retried = True
        return Step(self._start(region), delay=delay, kind="retry")

    def _start(self, region: str) -> str:
        self.attempts += 1
        self.breaker.attempt(region)
        return region
