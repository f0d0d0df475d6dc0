"""Per-client rate limits and monthly budgets, decided against the shared state store (modelmux/state), so every
process sharing `state.url` counts against the same numbers.

Before the upstream call, `Limiter.check(client)`, in one atomic store call (`Store.admit`: one round trip):
1. budget (`monthly_usd`, per client key): the key's spend this calendar month (UTC) ≥ its budget → 429
   `insufficient_quota` (with `x-should-retry: false`: waiting does not help);
2. tokens (`tokens_per_minute`): a bucket of that many tokens refilling over a minute must not be in debt
   (checked, not taken: what an answer uses is only known when it ends) → else 429 `rate_limit_exceeded`;
3. requests (`requests_per_minute`): one token taken atomically from the request bucket → else 429
   `rate_limit_exceeded`.
Every answer carries OpenAI's headers for the limits that apply: `x-ratelimit-{limit,remaining,reset}-requests`
and `-tokens` (reset in OpenAI's duration format: "6m0s", "1m30s", "120ms"); a 429 also `retry-after` (whole
seconds, rounded up) and `retry-after-ms`, which the OpenAI SDKs' back-off honours.

After the answer (a stream: when it ends), `Limiter.settle(client, model, tokens)`: the answer's tokens are charged
to the token bucket — it may go negative, so the next request waits until it is paid back (one answer can
overshoot a limit, as with Envoy's and Portkey's token limits) — and its cost (pricing.py) is added to the spend
counters of (key, model, day).

The store unavailable (StateUnavailable): requests are served without limits or budgets (fail open) — a log line at
most once a second and `on_fail_open(what)` for a metric — unless `state.fail_closed`, then a 503. Spend that could
not be recorded is logged the same way (it is lost: never retried later, never double-counted).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .pricing import cost, price_for
from .state.base import Bucket, BucketSpec, StateUnavailable, Store, TokenCounts
from .state.observe import RateLimitedLog
from .translate.errors import OpenAIError

log = logging.getLogger("modelmux.limits")

NO_KEY_SPEND = "anonymous"  # spend of a deployment without client keys: one row per model, not per address


@dataclass(frozen=True)
class ClientLimits:
    """What applies to one client: `name` keys its buckets (a client key's name, else "addr:<address>"),
    `spend_key` its spend counters (the key's name, else NO_KEY_SPEND)."""

    name: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    monthly_usd: float | None = None
    spend_key: str = NO_KEY_SPEND

    @classmethod
    def for_key(cls, entry: Any, config: Any) -> ClientLimits:
        """A `security.client_keys` entry (config.ClientKey): its own limits, else the defaults."""
        return cls(name=entry.name,
                   requests_per_minute=entry.limit("requests_per_minute", config.limits.requests_per_minute),
                   tokens_per_minute=entry.limit("tokens_per_minute", config.limits.tokens_per_minute),
                   monthly_usd=entry.limit("monthly_usd", config.budgets.monthly_usd),
                   spend_key=entry.name)

    @classmethod
    def for_address(cls, address: str, config: Any) -> ClientLimits:
        """No client keys configured: limits per client address; budgets need keys."""
        return cls(name=f"addr:{address}", requests_per_minute=config.limits.requests_per_minute,
                   tokens_per_minute=config.limits.tokens_per_minute)

    @property
    def limited(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None or self.monthly_usd is not None


@dataclass
class Decision:
    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)  # for the answer, allowed or not
    error: OpenAIError | None = None  # the answer when not allowed
    degraded: bool = False  # the store was unavailable: served without limits


@dataclass
class Settlement:
    headers: dict[str, str]  # the token headers after the charge (a non-streamed answer may still carry them)
    usd: float
    price_source: str  # pricing.price_for's: "table", "config", "family:…", "unknown:…" (worth a log line)
    recorded: bool  # False: the store was unavailable, this spend is lost


def duration(seconds: float) -> str:
    """OpenAI's `x-ratelimit-reset-*` format (Go's durations): "120ms", "8.64s", "1m30s", "6m0s", "1h0m0s";
    rounded up to the millisecond, so a client that waits that long finds its token."""
    ms = 0 if seconds <= 0 else math.ceil(round(seconds * 1000, 6))
    if ms == 0:
        return "0s"  # as Go writes a zero duration
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


def _bucket_headers(kind: str, limit: int, bucket: Bucket) -> dict[str, str]:
    return {f"x-ratelimit-limit-{kind}": str(limit), f"x-ratelimit-remaining-{kind}": str(bucket.remaining),
            f"x-ratelimit-reset-{kind}": duration(bucket.reset_seconds)}


def _retry_headers(seconds: float) -> dict[str, str]:
    return {"retry-after": str(max(1, math.ceil(seconds))), "retry-after-ms": str(max(1, math.ceil(seconds * 1000)))}


def _next_month(now: float) -> str:
    d = dt.datetime.fromtimestamp(now, dt.UTC)
    return (dt.date(d.year + 1, 1, 1) if d.month == 12 else dt.date(d.year, d.month + 1, 1)).isoformat()


def rate_limited(client: ClientLimits, kind: str, limit: int, bucket: Bucket, requested: int,
                 headers: dict[str, str]) -> OpenAIError:
    """OpenAI's 429 for a rate limit (type `requests` or `tokens`, code `rate_limit_exceeded`)."""
    unit = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
    wait = bucket.seconds_until(requested)
    used = limit - math.floor(bucket.tokens)  # a token bucket in debt has used more than its limit
    message = (f"Rate limit reached for {client.name} on {unit}: Limit {limit}, Used {used}, Requested {requested}. "
               f"Please try again in {duration(wait)}.")
    return OpenAIError(429, message, kind, None, "rate_limit_exceeded", {**headers, **_retry_headers(wait)})


def insufficient_quota(client: ClientLimits, spent: float, now: float) -> OpenAIError:
    message = (f"You exceeded your current quota: {client.spend_key} has spent ${spent:.2f} of its "
               f"${client.monthly_usd:.2f} monthly budget (budgets.monthly_usd); it renews on {_next_month(now)} "
               "(UTC).")
    return OpenAIError(429, message, "insufficient_quota", None, "insufficient_quota", {"x-should-retry": "false"})


def unavailable_error() -> OpenAIError:
    """503 for a request that needs the state store while it is unavailable (stored responses, or any request
    with `state.fail_closed`)."""
    return OpenAIError(503, "modelmux's state store is unavailable; retry shortly.", "server_error", None,
                       "state_unavailable", {"retry-after": "1", "retry-after-ms": "1000"})


class Limiter:
    def __init__(self, store: Store, *, fail_closed: bool = False, prices: Any = None,
                 on_fail_open: Callable[[str], None] | None = None, clock: Callable[[], float] = time.time,
                 log_every: RateLimitedLog | None = None):
        self.store = store
        self.fail_closed = fail_closed
        self.prices = prices  # budgets.prices
        self.on_fail_open = on_fail_open
        self.clock = clock
        self.log_every = log_every or RateLimitedLog(log)
        self.pending = PendingSpend()
        self._flushing = asyncio.Lock()

    def _unavailable(self, what: str, err: StateUnavailable) -> None:
        if self.on_fail_open is not None:
            self.on_fail_open(what)
        consequence = "refusing requests (state.fail_closed)" if (self.fail_closed and what == "check") else (
            "serving without rate limits and budgets" if what == "check" else "this answer's usage is not counted")
        self.log_every.warning(f"{err}; {consequence}")

    async def check(self, client: ClientLimits) -> Decision:
        if not client.limited:
            return Decision(True)
        now = self.clock()
        try:
            return await self._check(client, now)
        except StateUnavailable as err:
            self._unavailable("check", err)
            if self.fail_closed:
                return Decision(False, error=unavailable_error(), degraded=True)
            return Decision(True, degraded=True)

    async def _check(self, client: ClientLimits, now: float) -> Decision:
        specs, limits = [], []
        if client.tokens_per_minute is not None:  # first: a refusal for tokens must not cost a request token
            tpm = client.tokens_per_minute
            specs.append(BucketSpec(f"tpm:{client.name}", tpm, tpm / 60.0, 1, consume=False))
            limits.append(("tokens", tpm))
        if client.requests_per_minute is not None:
            rpm = client.requests_per_minute
            specs.append(BucketSpec(f"rpm:{client.name}", rpm, rpm / 60.0, 1))
            limits.append(("requests", rpm))
        budget = client.monthly_usd
        if budget is not None:  # what this process spent and has not written yet counts too
            budget -= self.pending.usd(client.spend_key)
        admission = await self.store.admit(specs, spend_key=client.spend_key if budget is not None else None,
                                           budget_usd=budget, now=now)
        if admission.over_budget:
            spent = (admission.spent_usd or 0.0) + self.pending.usd(client.spend_key)
            return Decision(False, error=insufficient_quota(client, spent, now))
        headers: dict[str, str] = {}
        for (kind, limit), bucket in zip(limits, admission.buckets):
            headers.update(_bucket_headers(kind, limit, bucket))
            if not bucket.allowed:
                return Decision(False, headers, rate_limited(client, kind, limit, bucket, 1, headers))
        return Decision(True, headers)

    async def settle(self, client: ClientLimits, model: str, tokens: TokenCounts, *,
                     region: str | None = None, buffered: bool = False) -> Settlement:
        """Charge an answer's tokens and record its spend. Never raises for the store. `buffered`: the spend
        joins this process's pending spend, written by `flush` (one write per key, model and day each time,
        however many answers: recording spend costs a request almost nothing); the tokens are charged at once."""
        now = self.clock()
        usd = cost(model, tokens, region=region, overrides=self.prices)
        source = price_for(model, self.prices)[1]
        headers: dict[str, str] = {}
        recorded = True
        tpm = client.tokens_per_minute
        try:
            if tpm is not None:
                used = tokens.input + tokens.cache_write + tokens.cache_read + tokens.output
                bucket = await self.store.charge(f"tpm:{client.name}", tpm, tpm / 60.0, used, now=now)
                headers = _bucket_headers("tokens", tpm, bucket)
        except StateUnavailable as err:
            self._unavailable("settle", err)
        if buffered:
            self.pending.add(client.spend_key, model, tokens, usd, now)
            return Settlement(headers, usd, source, recorded)
        try:
            await self.store.add_spend(client.spend_key, model, tokens, usd, now=now)
        except StateUnavailable as err:
            recorded = False
            self._unavailable("settle", err)
        return Settlement(headers, usd, source, recorded)

    async def flush(self) -> None:
        """Write the pending spend: a row whose write was tried and failed is logged and dropped (it may have been
        written: never counted twice); while the store is known to be down, rows stay pending."""
        async with self._flushing:  # one at a time: the last flush at shutdown waits for one under way
            rows = self.pending.take()
            kept: dict[tuple[str, str, str], _PendingRow] = {}
            try:
                while rows:
                    slot = next(iter(rows))
                    if self.store.known_down:  # no write would be tried: kept for the next flush
                        kept[slot] = rows.pop(slot)
                        continue
                    row = rows[slot]  # still counted by `usd` while its write is under way
                    try:
                        await self.store.add_spend(slot[0], slot[1], row.tokens, row.usd, now=row.at,
                                                   requests=row.requests)
                    except StateUnavailable as err:
                        self._unavailable("settle", err)
                    except Exception:  # one bad row never costs the others
                        log.exception("modelmux: spend of %s could not be written", slot[0])
                    finally:
                        del rows[slot]  # tried: it may have been written, so it is never sent again
            finally:  # what was not tried is pending again
                self.pending.put_back(rows, kept)


@dataclass
class _PendingRow:
    tokens: TokenCounts
    usd: float
    requests: int
    at: float

    def absorb(self, tokens: TokenCounts, usd: float, requests: int) -> None:
        t = self.tokens
        self.tokens = TokenCounts(t.input + tokens.input, t.output + tokens.output,
                                  t.cache_write + tokens.cache_write, t.cache_read + tokens.cache_read)
        self.usd += usd
        self.requests += requests


class PendingSpend:
    """Spend of this process not written yet, summed per (key, model, day); its total per key counts against the
    key's budget here at once (other processes see it once it is written)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str], _PendingRow] = {}
        self._writing: list[dict[tuple[str, str, str], _PendingRow]] = []  # taken, their writes not done yet

    def add(self, key: str, model: str, tokens: TokenCounts, usd: float, now: float) -> None:
        slot = (key, model, dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat())
        row = self._rows.get(slot)
        if row is None:
            self._rows[slot] = _PendingRow(tokens, usd, 1, now)
        else:
            row.absorb(tokens, usd, 1)

    def usd(self, key: str) -> float:
        """This process's spend for `key` that a budget check cannot read from the store yet (being written too)."""
        return sum(r.usd for rows in (self._rows, *self._writing) for (k, _, _), r in rows.items() if k == key)

    def take(self) -> dict[tuple[str, str, str], _PendingRow]:
        rows, self._rows = self._rows, {}
        self._writing.append(rows)
        return rows

    def put_back(self, taken: dict[tuple[str, str, str], _PendingRow],
                 kept: dict[tuple[str, str, str], _PendingRow]) -> None:
        """The end of a flush of `taken`: what is left of it, and the rows it `kept`, are pending again."""
        self._writing = [rows for rows in self._writing if rows is not taken]
        for rows in (taken, kept):
            for slot, row in rows.items():
                mine = self._rows.get(slot)
                if mine is None:
                    self._rows[slot] = row
                else:
                    mine.absorb(row.tokens, row.usd, row.requests)

    def __len__(self) -> int:
        return len(self._rows)
