"""The state store's interface, its records and the behaviour both backends share.

One `Store` holds everything that must outlive a request or be shared between modelmux processes: stored Responses
API responses with their items, thinking signatures (a small key → JSON map), rate-limit token buckets and spend
counters. `SQLiteStore` (sqlite.py) and `RedisStore` (redis_store.py) implement the `_`-prefixed primitives; the
public methods here check arguments, bound every call in time and turn every backend failure into
`StateUnavailable`, so a caller can fail open (limits, budgets, thinking) or answer 503 (stored responses).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

ITEMS_LIMIT_DEFAULT = 20  # OpenAI's default page size for input items
ITEMS_LIMIT_MAX = 100
CHAIN_MAX_DEPTH = 1000  # previous_response_id links followed at most
KEY_MAX_CHARS = 256  # longer bucket / kv / item keys are refused (callers hash what may be longer)


class StateUnavailable(Exception):
    """The store cannot answer now (unreachable, too slow, locked, broken). The message names the backend and the
    reason, never a password."""


class StateTooLarge(ValueError):
    """A record larger than the store may ever hold (`state.response_max_mb`)."""


class InvalidArgument(ValueError):
    """An argument the client chose is not acceptable; `param` names it as OpenAI would."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class StoreSettings:
    """The store's bounds; `from_config` maps `state:` onto them."""

    connect_timeout: float = 0.5
    timeout: float = 0.5
    retry_seconds: float = 1.0
    max_connections: int = 32
    response_ttl: float = 30 * 86400.0
    response_max_count: int = 100_000
    response_max_bytes: int = 512 * 1024 * 1024
    thinking_ttl: float = 86400.0
    thinking_max_entries: int = 100_000
    spend_retention_days: int = 400
    max_pending: int = 1024  # SQLite: operations queued for its thread at most

    @classmethod
    def from_config(cls, cfg: Any) -> StoreSettings:
        return cls(connect_timeout=cfg.connect_timeout_seconds, timeout=cfg.timeout_seconds,
                   retry_seconds=cfg.retry_seconds, max_connections=cfg.max_connections,
                   response_ttl=cfg.response_ttl_days * 86400.0, response_max_count=cfg.response_max_count,
                   response_max_bytes=int(cfg.response_max_mb * 1024 * 1024),
                   thinking_ttl=cfg.thinking_ttl_hours * 3600.0, thinking_max_entries=cfg.thinking_max_entries,
                   spend_retention_days=cfg.spend_retention_days)

    @property
    def deadline(self) -> float:
        """Every operation answers or fails within this many seconds (a call may have to connect first)."""
        return self.connect_timeout + self.timeout


@dataclass(frozen=True)
class StoredResponse:
    """A stored Responses API response. `response` is the Response object as GET /v1/responses/{id} returns it;
    `input_items` and `output_items` are that turn's items, each with its `id`, in order (output items may carry
    what a continuation needs beyond the public object, e.g. sealed thinking); `owner` is the client key's name
    (None when no keys are configured): only the same owner reads it."""

    id: str
    owner: str | None
    created_at: float
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    output_items: list[dict[str, Any]]
    previous_response_id: str | None = None

    def data(self) -> dict[str, Any]:
        return {"response": self.response, "input_items": self.input_items, "output_items": self.output_items}


@dataclass(frozen=True)
class ItemsPage:
    """One page of GET /v1/responses/{id}/input_items."""

    data: list[dict[str, Any]]
    has_more: bool

    @property
    def first_id(self) -> str | None:
        return self.data[0]["id"] if self.data else None

    @property
    def last_id(self) -> str | None:
        return self.data[-1]["id"] if self.data else None

    def body(self) -> dict[str, Any]:
        return {"object": "list", "data": self.data, "first_id": self.first_id, "last_id": self.last_id,
                "has_more": self.has_more}


@dataclass(frozen=True)
class Chain:
    """A conversation rebuilt from `previous_response_id` links: `responses` oldest first, ending with the one asked
    for. `missing_id`: a link that is not (or no longer) stored, where the walk stopped; `truncated`: the walk
    stopped at the depth bound. A caller must not treat either as a complete history."""

    responses: list[StoredResponse]
    missing_id: str | None = None
    truncated: bool = False

    @property
    def complete(self) -> bool:
        return self.missing_id is None and not self.truncated


@dataclass(frozen=True)
class Bucket:
    """A token bucket after one `take` or `charge`. `tokens` may be negative after a charge (the next request
    waits until it is paid back)."""

    allowed: bool
    tokens: float
    capacity: float
    refill_per_second: float
    cost: float

    @property
    def remaining(self) -> int:
        return max(0, int(self.tokens))

    def seconds_until(self, need: float) -> float:
        """Until the bucket holds `need` tokens (inf if it never refills)."""
        if self.tokens >= need:
            return 0.0
        if self.refill_per_second <= 0:
            return float("inf")
        return (need - self.tokens) / self.refill_per_second

    @property
    def reset_seconds(self) -> float:
        """Until the bucket is full again (OpenAI's `x-ratelimit-reset-*`)."""
        return self.seconds_until(self.capacity)

    @property
    def retry_after(self) -> float:
        """0 when allowed; else until `cost` tokens are there."""
        return 0.0 if self.allowed else self.seconds_until(self.cost)


@dataclass(frozen=True)
class BucketSpec:
    """One bucket of an `admit` call; `consume=False` only checks that `cost` tokens are there."""

    key: str
    capacity: float
    refill_per_second: float
    cost: float = 1.0
    consume: bool = True

    @property
    def mode(self) -> str:
        return "take" if self.consume else "check"


@dataclass(frozen=True)
class Admission:
    """What `admit` found: the month's spend of the key (None when no budget was asked), whether it is over the
    budget (then no bucket was touched), and the buckets in order up to and including the first refused one."""

    spent_usd: float | None
    over_budget: bool
    buckets: list[Bucket]

    @property
    def allowed(self) -> bool:
        return not self.over_budget and all(b.allowed for b in self.buckets)


def refill(tokens: float | None, ts: float | None, capacity: float, rate: float, now: float) -> tuple[float, float]:
    """The bucket's tokens at `now` (a bucket never seen is full). A clock that went back (another replica's,
    slightly behind) refills nothing and keeps the later timestamp. The Lua script in redis_store.py is this
    function's twin."""
    if tokens is None or ts is None:
        return float(capacity), now
    if now > ts:
        tokens += (now - ts) * rate
        ts = now
    return min(float(capacity), tokens), ts


@dataclass(frozen=True)
class TokenCounts:
    """Tokens of one answer, each counted once: `input` excludes cached tokens (Anthropic's `input_tokens`)."""

    input: int = 0
    output: int = 0
    cache_write: int = 0
    cache_read: int = 0


@dataclass
class UsageRow:
    """Spend and tokens of one key and model in one month (UTC), from the days asked for."""

    month: str
    key: str
    model: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    usd: float = 0.0

    def add(self, requests: int, inp: int, out: int, cw: int, cr: int, nanos: int) -> None:
        self.requests += requests
        self.input_tokens += inp
        self.output_tokens += out
        self.cache_write_tokens += cw
        self.cache_read_tokens += cr
        self.usd = round(self.usd + nanos / 1e9, 9)


def day_of(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d")


def month_of(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m")


def usd_to_nanos(usd: float) -> int:
    """Spend is counted in integer nano-dollars: exact sums (a float total drifts over millions of additions)."""
    return int(round(usd * 1e9))


def owner_tag(owner: str | None) -> str:
    return "-" if owner is None else "k:" + owner


def _check_key(key: str, what: str = "key") -> None:
    if not isinstance(key, str) or not key or len(key) > KEY_MAX_CHARS:
        raise ValueError(f"a state {what} must be a non-empty string of at most {KEY_MAX_CHARS} characters")


def _check_items(items: list[dict[str, Any]], what: str) -> None:
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise ValueError(f"{what}[{i}] has no id: give every stored item one (as OpenAI does)")
        _check_key(item["id"], "item id")


def page_items(items: list[dict[str, Any]], after: str | None, limit: int, order: str) -> ItemsPage:
    """OpenAI's list semantics: `order` desc (newest first, the default) or asc; the page starts after the item
    whose id is `after`."""
    ordered = items if order == "asc" else items[::-1]
    start = 0
    if after is not None:
        for i, item in enumerate(ordered):
            if item.get("id") == after:
                start = i + 1
                break
        else:
            raise InvalidArgument(f"No input item with id '{after}' in this response.", "after")
    page = ordered[start:start + limit]
    return ItemsPage(data=page, has_more=start + limit < len(ordered))


class Store:
    """The store's public interface; a backend implements the `_`-prefixed methods.

    Every public method is bounded by `settings.deadline` and raises `StateUnavailable` for any backend failure.
    After a failure, calls fail at once for `settings.retry_seconds` (so an outage costs each request nothing),
    then the next call tries again: reconnection is automatic. `on_error(op)` is called once per failure (a
    metric hook; `op` is one of a fixed set of operation names). `clock` gives the time records are stamped
    and expired with (tests inject one); `monotonic` times the fail-fast window.
    """

    backend = "?"
    _errors: tuple[type[BaseException], ...] = (OSError, ValueError)  # ValueError: a record that does not decode

    def __init__(self, settings: StoreSettings | None = None, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 on_error: Callable[[str], None] | None = None):
        self.settings = settings or StoreSettings()
        self.clock = clock
        self.monotonic = monotonic
        self.on_error = on_error
        self._down_until = float("-inf")
        self._last_error = ""

    # --- the guard every call goes through -------------------------------------------------------------------

    def describe(self) -> str:
        """Where the store is, for logs (no password)."""
        return self.backend

    async def _guard(self, op: str, call: Callable[[], Awaitable[T]], *, probe: bool = False) -> T:
        if not probe and self.monotonic() < self._down_until:
            raise StateUnavailable(f"state store ({self.describe()}) unavailable: {self._last_error}")
        try:
            result = await asyncio.wait_for(call(), self.settings.deadline)
        except (StateUnavailable, StateTooLarge, InvalidArgument):
            raise
        except asyncio.TimeoutError:
            await self._reset()
            self._failed(op, f"no answer within {self.settings.deadline:g} s")
        except self._errors as err:
            await self._reset()
            self._failed(op, f"{type(err).__name__}: {err}")
        self._down_until = float("-inf")
        return result

    @property
    def known_down(self) -> bool:
        """Whether the last call failed within `retry_seconds` (calls fail at once until then): no round trip."""
        return self.monotonic() < self._down_until

    async def _reset(self) -> None:
        """After a failure: drop what may be broken (a backend's idle connections), so the next call starts afresh."""

    def _failed(self, op: str, reason: str) -> None:
        self._last_error = reason[:300]
        self._down_until = self.monotonic() + self.settings.retry_seconds
        if self.on_error is not None:
            self.on_error(op)
        raise StateUnavailable(f"state store ({self.describe()}) unavailable: {self._last_error}") from None

    # --- lifecycle ----------------------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Raises StateUnavailable unless the store answers now (a health probe: ignores the fail-fast window)."""
        await self._guard("ping", self._ping, probe=True)

    async def health(self) -> dict[str, Any]:
        """For /health: never raises."""
        started = time.perf_counter()
        try:
            await self.ping()
        except StateUnavailable as err:
            return {"backend": self.backend, "ok": False, "error": str(err)}
        return {"backend": self.backend, "ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 3)}

    async def close(self) -> None:
        await self._close()

    # --- (a) the Responses API response store -------------------------------------------------------------------

    async def put_response(self, record: StoredResponse) -> None:
        """Store (or replace) a response; it expires `response_ttl` after `created_at`. Past `response_max_count`
        responses or `response_max_bytes` in all, the oldest are evicted first."""
        _check_key(record.id, "response id")
        _check_items(record.input_items, "input_items")
        _check_items(record.output_items, "output_items")
        await self._guard("put_response", lambda: self._put_response(record, self.clock()))

    async def get_response(self, response_id: str, owner: str | None) -> StoredResponse | None:
        """The response, or None when it is unknown, expired, deleted or another owner's."""
        if not _valid_key(response_id):
            return None
        return await self._guard("get_response", lambda: self._get_response(response_id, owner, self.clock()))

    async def delete_response(self, response_id: str, owner: str | None) -> bool:
        """True if it was there (and this owner's) and is now gone, with its items."""
        if not _valid_key(response_id):
            return False
        return await self._guard("delete_response", lambda: self._delete_response(response_id, owner, self.clock()))

    async def list_input_items(self, response_id: str, owner: str | None, *, after: str | None = None,
                               limit: int = ITEMS_LIMIT_DEFAULT, order: str = "desc") -> ItemsPage | None:
        """A page of the response's input items (None: no such response for this owner). InvalidArgument for a
        bad `limit` (1..100), `order` (asc|desc) or an `after` that is not one of its items."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= ITEMS_LIMIT_MAX:
            raise InvalidArgument(f"limit must be an integer between 1 and {ITEMS_LIMIT_MAX}.", "limit")
        if order not in ("asc", "desc"):
            raise InvalidArgument("order must be 'asc' or 'desc'.", "order")
        record = await self.get_response(response_id, owner)
        if record is None:
            return None
        return page_items(record.input_items, after, limit, order)

    async def get_items(self, item_ids: list[str], owner: str | None) -> dict[str, dict[str, Any]]:
        """The stored items (input or output of any of this owner's live responses) with these ids, by id; ids not
        found are absent from the result (an `item_reference` to one is the caller's 4xx). The newest response
        holding an id wins."""
        wanted = list(dict.fromkeys(i for i in item_ids if _valid_key(i)))
        if not wanted:
            return {}
        return await self._guard("get_items", lambda: self._get_items(wanted, owner, self.clock()))

    async def response_chain(self, response_id: str, owner: str | None, *,
                             max_depth: int = CHAIN_MAX_DEPTH) -> Chain:
        """The response and those its `previous_response_id` links lead to, oldest first (empty `responses` with
        `missing_id == response_id` when the first one is not there)."""
        if not _valid_key(response_id):
            return Chain([], missing_id=response_id)
        return await self._guard("response_chain",
                                 lambda: self._response_chain(response_id, owner, max(1, max_depth), self.clock()))

    # --- (b) a small key → JSON map with a TTL (thinking signatures) -------------------------------------------

    async def kv_get(self, namespace: str, key: str) -> Any | None:
        if not _valid_key(key):
            return None
        return await self._guard("kv_get", lambda: self._kv_get(namespace, key, self.clock()))

    async def kv_get_many(self, namespace: str, keys: list[str]) -> dict[str, Any]:
        wanted = list(dict.fromkeys(k for k in keys if _valid_key(k)))
        if not wanted:
            return {}
        return await self._guard("kv_get", lambda: self._kv_get_many(namespace, wanted, self.clock()))

    async def kv_put(self, namespace: str, key: str, value: Any, ttl: float, max_entries: int) -> None:
        """Keep `value` (JSON) for `ttl` seconds; past `max_entries` in the namespace the oldest go first."""
        _check_key(key)
        await self._guard("kv_put", lambda: self._kv_put(namespace, key, value, ttl, max_entries, self.clock()))

    # --- (c) rate-limit token buckets ---------------------------------------------------------------------------

    async def take(self, key: str, capacity: float, refill_per_second: float, cost: float = 1.0,
                   now: float | None = None, *, consume: bool = True) -> Bucket:
        """Atomically: refill the bucket to `now`, then take `cost` tokens if it holds them (allowed) or take
        nothing (refused). `consume=False` only checks. Two processes can never both take the last token."""
        _check_key(key)
        _check_bucket(capacity, refill_per_second, cost)
        at = self.clock() if now is None else now
        return await self._guard("take", lambda: self._bucket(key, capacity, refill_per_second, cost, at,
                                                               "take" if consume else "check"))

    async def charge(self, key: str, capacity: float, refill_per_second: float, cost: float,
                     now: float | None = None) -> Bucket:
        """Count after the fact: take `cost` tokens whether or not they are there (the bucket may go negative, so
        the next request waits until it is paid back). Always `allowed`."""
        _check_key(key)
        _check_bucket(capacity, refill_per_second, cost)
        at = self.clock() if now is None else now
        return await self._guard("charge", lambda: self._bucket(key, capacity, refill_per_second, cost, at, "charge"))

    async def admit(self, buckets: list[BucketSpec], *, spend_key: str | None = None,
                    budget_usd: float | None = None, now: float | None = None) -> Admission:
        """A request's whole limit check in one atomic step (one round trip): the month's spend of `spend_key`
        against `budget_usd` first (over it: nothing else is touched), then each bucket in order as `take` would,
        stopping at the first refused one (so a refusal by a later limit costs no token of an earlier one)."""
        for b in buckets:
            _check_key(b.key)
            _check_bucket(b.capacity, b.refill_per_second, b.cost)
        if spend_key is not None:
            _check_key(spend_key)
        at = self.clock() if now is None else now
        budget = None if budget_usd is None else usd_to_nanos(budget_usd)
        return await self._guard("admit", lambda: self._admit(buckets, spend_key, budget, at))

    # --- (d) spend counters ---------------------------------------------------------------------------------------

    async def add_spend(self, key: str, model: str, tokens: TokenCounts, usd: float, now: float | None = None,
                        *, requests: int = 1) -> None:
        """Add one answer's tokens and cost to (key, model, day); the month's total of the key grows with it."""
        _check_key(key)
        _check_key(model, "model")
        at = self.clock() if now is None else now
        nanos = usd_to_nanos(usd)
        await self._guard("add_spend", lambda: self._add_spend(key, model, tokens, nanos, requests, at))

    async def month_spend(self, key: str, now: float | None = None) -> float:
        """USD the key spent in the calendar month (UTC) of `now`."""
        _check_key(key)
        month = month_of(self.clock() if now is None else now)
        return await self._guard("month_spend", lambda: self._month_spend(key, month)) / 1e9

    async def usage(self, since: dt.date | None = None, key: str | None = None) -> list[UsageRow]:
        """Spend and tokens per (month, key, model), counting the days from `since` (inclusive; all kept days if
        None), for one key or all; sorted by month, key, model."""
        since_day = since.isoformat() if since is not None else None
        rows = await self._guard("usage", lambda: self._usage(since_day, key))
        return sorted(rows, key=lambda r: (r.month, r.key, r.model))

    # --- what a backend implements -------------------------------------------------------------------------------

    async def _ping(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    async def _put_response(self, record: StoredResponse, now: float) -> None:
        raise NotImplementedError

    async def _get_response(self, response_id: str, owner: str | None, now: float) -> StoredResponse | None:
        raise NotImplementedError

    async def _delete_response(self, response_id: str, owner: str | None, now: float) -> bool:
        raise NotImplementedError

    async def _get_items(self, item_ids: list[str], owner: str | None, now: float) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    async def _response_chain(self, response_id: str, owner: str | None, max_depth: int, now: float) -> Chain:
        raise NotImplementedError

    async def _kv_get(self, namespace: str, key: str, now: float) -> Any | None:
        raise NotImplementedError

    async def _kv_get_many(self, namespace: str, keys: list[str], now: float) -> dict[str, Any]:
        raise NotImplementedError

    async def _kv_put(self, namespace: str, key: str, value: Any, ttl: float, max_entries: int, now: float) -> None:
        raise NotImplementedError

    async def _bucket(self, key: str, capacity: float, rate: float, cost: float, now: float, mode: str) -> Bucket:
        raise NotImplementedError

    async def _admit(self, buckets: list[BucketSpec], spend_key: str | None, budget_nanos: int | None,
                     now: float) -> Admission:
        raise NotImplementedError

    async def _add_spend(self, key: str, model: str, tokens: TokenCounts, nanos: int, requests: int,
                         now: float) -> None:
        raise NotImplementedError

    async def _month_spend(self, key: str, month: str) -> int:
        raise NotImplementedError

    async def _usage(self, since_day: str | None, key: str | None) -> list[UsageRow]:
        raise NotImplementedError


def _valid_key(key: Any) -> bool:
    return isinstance(key, str) and 0 < len(key) <= KEY_MAX_CHARS


def _check_bucket(capacity: float, rate: float, cost: float) -> None:
    if not capacity > 0 or rate < 0 or cost < 0:
        raise ValueError("a bucket needs capacity > 0, refill_per_second >= 0 and cost >= 0")


def chain_from(found: list[StoredResponse], stop: str, last_prev: str | None) -> Chain:
    """Build a Chain from records found newest first. `stop`: "end" (the oldest has no previous), "missing"
    (`last_prev` is not stored) or "depth"."""
    found = found[::-1]
    if stop == "missing":
        return Chain(found, missing_id=last_prev)
    return Chain(found, truncated=stop == "depth")

