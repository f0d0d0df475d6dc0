"""The shared backend: one Redis (`redis://` or `rediss://`, with a password in the URL) for every modelmux process
that names it, through the `redis` package's asyncio client.

- Every key is under `modelmux:`. Each multi-step change is one Lua script (a request's whole limit check too) (EVALSHA; the client reloads a script
  Redis lost in a restart): a token bucket's refill-and-take is atomic, so two replicas can never both take the
  last token. Keys a script touches share one hash tag (`{resp}`, `{kv:NS}`, `{rl:KEY}`), as Redis Cluster would
  need; Cluster itself is not supported (scripts also touch keys they derive) — use one primary (managed Redis,
  Sentinel-fronted, …).
- TTLs on every record (responses: until they expire; buckets: until full again; thinking: its TTL; spend:
  `spend_retention_days`). Redis must not evict keys on its own (`maxmemory-policy noeviction` or a `volatile-*`
  policy): the response store keeps its own count and byte totals and evicts its oldest first.
- Bounded: connect and read timeouts (`state.connect_timeout_seconds`, `state.timeout_seconds`), a connection
  pool of `state.max_connections` per process (waiting for a free one at most `timeout_seconds`), one retry of a
  command whose connection broke (a Redis that restarted answers the next call, without re-creating the store).
- Records are stamped and expired with the store's clock (Redis' TTLs use Redis' own): the replicas' clocks
  should agree to within a second (NTP).
"""

from __future__ import annotations

import asyncio

import datetime as dt
import hashlib
import json
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .base import (Admission, Bucket, BucketSpec, Chain, StateTooLarge, Store, StoredResponse, TokenCounts, UsageRow, chain_from, day_of,
                   month_of, owner_tag)

P = "modelmux:"
RESP = P + "{resp}:"  # responses: one hash tag, so the scripts that evict and walk chains see one slot
ITEM_HOLDERS = 16  # responses remembered per item id (newest first) for item_reference look-ups
BUCKET_IDLE_TTL_MS = 30 * 86400 * 1000  # a bucket that never refills (rate 0) is forgotten after this

_PUT_RESPONSE = """
local id = ARGV[1]
local function drop(victim)
  local size = redis.call('HGET', KEYS[3], victim)
  if size then
    redis.call('DECRBY', KEYS[4], size)
    redis.call('HDEL', KEYS[3], victim)
  end
  redis.call('ZREM', KEYS[2], victim)
  local held = redis.call('HGET', ARGV[12] .. victim, 'i')  -- its item indexes: an evicted response leaves none
  if held then
    for _, key in ipairs(cjson.decode(held)) do redis.call('ZREM', key, victim) end
  end
  redis.call('DEL', ARGV[12] .. victim)
end
drop(id)
local item_keys = {}
for i = 5, #KEYS do table.insert(item_keys, KEYS[i]) end
redis.call('HSET', KEYS[1], 'o', ARGV[2], 'p', ARGV[3], 'c', ARGV[4], 'x', ARGV[5], 'd', ARGV[7],
           'i', cjson.encode(item_keys))
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('ZADD', KEYS[2], ARGV[5], id)
redis.call('HSET', KEYS[3], id, ARGV[6])
redis.call('INCRBY', KEYS[4], ARGV[6])
for i = 5, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[13], id)
  redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -(tonumber(ARGV[14]) + 1))
  redis.call('PEXPIRE', KEYS[i], ARGV[8])
end
for _, victim in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[9], 'LIMIT', 0, 100)) do
  drop(victim)
end
local max_count, max_bytes, evicted = tonumber(ARGV[10]), tonumber(ARGV[11]), 0
while evicted < 10000 do
  if redis.call('ZCARD', KEYS[2]) <= max_count and tonumber(redis.call('GET', KEYS[4]) or '0') <= max_bytes then
    break
  end
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #oldest == 0 then break end
  drop(oldest[1])
  evicted = evicted + 1
end
return evicted
"""

_DELETE_RESPONSE = """
local r = redis.call('HMGET', KEYS[1], 'o', 'x')
if not r[1] or r[1] ~= ARGV[2] then return 0 end
local size = redis.call('HGET', KEYS[3], ARGV[1])
if size then
  redis.call('DECRBY', KEYS[4], size)
  redis.call('HDEL', KEYS[3], ARGV[1])
end
redis.call('ZREM', KEYS[2], ARGV[1])
local held = redis.call('HGET', KEYS[1], 'i')
if held then
  for _, key in ipairs(cjson.decode(held)) do redis.call('ZREM', key, ARGV[1]) end
end
redis.call('DEL', KEYS[1])
if tonumber(r[2]) <= tonumber(ARGV[3]) then return 0 end
return 1
"""

# out: id, previous, created, data for each response found (newest first), then the stop reason and its id
_CHAIN = """
local out, id, n, max_depth, now = {}, ARGV[4], 0, tonumber(ARGV[3]), tonumber(ARGV[5])
while true do
  if n >= max_depth then
    table.insert(out, 'depth'); table.insert(out, id); return out
  end
  local r = redis.call('HMGET', ARGV[1] .. id, 'o', 'p', 'c', 'x', 'd')
  if not r[1] or r[1] ~= ARGV[2] or tonumber(r[4]) <= now then
    table.insert(out, 'missing'); table.insert(out, id); return out
  end
  table.insert(out, id); table.insert(out, r[2]); table.insert(out, r[3]); table.insert(out, r[5])
  n = n + 1
  if r[2] == '' then
    table.insert(out, 'end'); table.insert(out, ''); return out
  end
  id = r[2]
end
"""

_KV_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #popped, 2 do redis.call('DEL', ARGV[5] .. popped[i]) end
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

# The twin of base.refill plus take / check / charge; numbers travel as strings (%.17g keeps a double exact).
_BUCKET_FUNCTION = """
local function bucket(key, capacity, rate, cost, now, mode, idle_ttl)
  local b = redis.call('HMGET', key, 't', 's')
  local tokens, ts = tonumber(b[1]), tonumber(b[2])
  if tokens == nil or ts == nil then
    tokens, ts = capacity, now
  elseif now > ts then
    tokens, ts = tokens + (now - ts) * rate, now
  end
  if tokens > capacity then tokens = capacity end
  local allowed = 0
  if mode == 'charge' or tokens >= cost then allowed = 1 end
  if mode == 'charge' or (mode == 'take' and allowed == 1) then tokens = tokens - cost end
  redis.call('HSET', key, 't', string.format('%.17g', tokens), 's', string.format('%.17g', ts))
  local ttl = idle_ttl
  if rate > 0 then ttl = math.min(ttl, math.ceil((capacity - tokens) / rate * 1000) + 1000) end
  redis.call('PEXPIRE', key, ttl)
  return allowed, string.format('%.17g', tokens)
end
"""

_BUCKET = _BUCKET_FUNCTION + """
local allowed, tokens = bucket(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
                               ARGV[5], tonumber(ARGV[6]))
return {allowed, tokens}
"""

# KEYS: the month's spend hash, then the buckets; ARGV: spend field ('' = none), budget in nanos ('' = none), now,
# idle ttl, then capacity, rate, cost, mode per bucket. Out: spent, over budget (0/1), allowed and tokens per bucket.
_ADMIT = _BUCKET_FUNCTION + """
local spent = 0
if ARGV[1] ~= '' then spent = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') end
local out = {string.format('%.17g', spent)}
if ARGV[2] ~= '' and spent >= tonumber(ARGV[2]) then
  table.insert(out, 1)
  return out
end
table.insert(out, 0)
local now, idle_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 2, #KEYS do
  local a = 4 + (i - 2) * 4
  local allowed, tokens = bucket(KEYS[i], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), now,
                                 ARGV[a + 4], idle_ttl)
  table.insert(out, allowed)
  table.insert(out, tokens)
  if allowed == 0 then return out end
end
return out
"""

_SPEND_FIELDS = ("r", "i", "o", "w", "c", "n")  # requests, input, output, cache write, cache read, nano-USD

# KEYS: the day's hash, the month's hash, the index of days; ARGV: "KEY\tMODEL\t", the six counts, the key, the
# retention in seconds, the day, its ordinal, the oldest ordinal kept.
_SPEND = """
local names = {'r', 'i', 'o', 'w', 'c', 'n'}
for i = 1, 6 do
  if ARGV[i + 1] ~= '0' then redis.call('HINCRBY', KEYS[1], ARGV[1] .. names[i], ARGV[i + 1]) end
end
redis.call('HINCRBY', KEYS[2], ARGV[8], ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[9])
redis.call('EXPIRE', KEYS[2], ARGV[9])
redis.call('ZADD', KEYS[3], ARGV[11], ARGV[10])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[12])
return 1
"""


def _short(value: str) -> str:
    """A key part the client may choose, kept short."""
    return value if len(value) <= 120 else "h:" + hashlib.sha256(value.encode()).hexdigest()


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def where(url: str) -> str:
    """HOST:PORT/DB of a redis URL, without user or password."""
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}/{db}"


class RedisStore(Store):
    backend = "redis"
    _errors = (RedisError, OSError, ValueError)

    def __init__(self, url: str, settings: Any = None, **kw: Any):
        super().__init__(settings, **kw)
        s = self.settings
        self._where = where(url)
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=s.max_connections, timeout=s.timeout, socket_connect_timeout=s.connect_timeout,
            socket_timeout=s.timeout, health_check_interval=0,
            # one retry for a pooled connection Redis closed (a restart); never after a time-out, when the
            # script may have run: a spend or token-bucket script sent twice would count twice
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
        self._client = aioredis.Redis(connection_pool=pool)
        self._put_script = self._client.register_script(_PUT_RESPONSE)
        self._delete_script = self._client.register_script(_DELETE_RESPONSE)
        self._chain_script = self._client.register_script(_CHAIN)
        self._kv_script = self._client.register_script(_KV_PUT)
        self._bucket_script = self._client.register_script(_BUCKET)
        self._admit_script = self._client.register_script(_ADMIT)
        self._spend_script = self._client.register_script(_SPEND)

    def describe(self) -> str:
        return f"redis {self._where}"

    async def _ping(self) -> None:
        await self._client.ping()

    async def _reset(self) -> None:
        # a restarted Redis leaves every idle pooled connection dead; one retry would meet another dead one
        try:
            await asyncio.wait_for(self._client.connection_pool.disconnect(inuse_connections=False), 1)
        except (asyncio.TimeoutError, *self._errors):
            pass

    async def _close(self) -> None:
        await self._client.aclose()
        await self._client.connection_pool.disconnect()

    # --- responses ----------------------------------------------------------------------------------------------

    async def _put_response(self, record: StoredResponse, now: float) -> None:
        s = self.settings
        data = json.dumps(record.data(), separators=(",", ":"), ensure_ascii=False)
        size = len(data.encode())
        if size > s.response_max_bytes:
            raise StateTooLarge(f"the response is {size} bytes, more than state.response_max_mb allows")
        tag = owner_tag(record.owner)
        expires_ms = _ms(record.created_at + s.response_ttl)
        item_keys = list(dict.fromkeys(f"{RESP}i:{tag}:{_short(item['id'])}"
                                       for item in record.input_items + record.output_items))
        keys = [f"{RESP}r:{record.id}", RESP + "idx", RESP + "sizes", RESP + "bytes", *item_keys]
        args = [record.id, tag, record.previous_response_id or "", repr(record.created_at), expires_ms, size, data,
                max(1, expires_ms - _ms(now)), _ms(now), s.response_max_count, s.response_max_bytes, RESP + "r:",
                _ms(record.created_at), ITEM_HOLDERS]
        await self._put_script(keys=keys, args=args)

    @staticmethod
    def _record(response_id: str, owner: str | None, previous: Any, created: Any, data: Any) -> StoredResponse:
        d = json.loads(data)
        return StoredResponse(id=response_id, owner=owner, created_at=float(created), response=d["response"],
                              input_items=d["input_items"], output_items=d["output_items"],
                              previous_response_id=_text(previous) or None)

    async def _get_response(self, response_id: str, owner: str | None, now: float) -> StoredResponse | None:
        o, p, c, x, d = await self._client.hmget(f"{RESP}r:{response_id}", "o", "p", "c", "x", "d")
        if o is None or _text(o) != owner_tag(owner) or int(x) <= _ms(now):
            return None
        return self._record(response_id, owner, p, c, d)

    async def _delete_response(self, response_id: str, owner: str | None, now: float) -> bool:
        keys = [f"{RESP}r:{response_id}", RESP + "idx", RESP + "sizes", RESP + "bytes"]
        return bool(await self._delete_script(keys=keys, args=[response_id, owner_tag(owner), _ms(now)]))

    async def _get_items(self, item_ids: list[str], owner: str | None, now: float) -> dict[str, dict[str, Any]]:
        tag = owner_tag(owner)
        async with self._client.pipeline(transaction=False) as pipe:
            for item_id in item_ids:
                pipe.zrevrange(f"{RESP}i:{tag}:{_short(item_id)}", 0, ITEM_HOLDERS - 1)
            holders = [[_text(h) for h in found] for found in await pipe.execute()]
        candidates = list(dict.fromkeys(h for found in holders for h in found))
        if not candidates:
            return {}
        async with self._client.pipeline(transaction=False) as pipe:
            for rid in candidates:
                pipe.hmget(f"{RESP}r:{rid}", "o", "x", "d")
            rows = dict(zip(candidates, await pipe.execute()))
        items_of: dict[str, dict[str, dict[str, Any]]] = {}
        found: dict[str, dict[str, Any]] = {}
        for item_id, holding in zip(item_ids, holders):
            for rid in holding:  # newest first
                o, x, d = rows[rid]
                if o is None or _text(o) != tag or int(x) <= _ms(now):
                    continue
                if rid not in items_of:
                    parsed = json.loads(d)
                    items_of[rid] = {i["id"]: i for i in parsed["input_items"] + parsed["output_items"]}
                if item_id in items_of[rid]:
                    found[item_id] = items_of[rid][item_id]
                    break
        return found

    async def _response_chain(self, response_id: str, owner: str | None, max_depth: int, now: float) -> Chain:
        out = await self._chain_script(keys=[f"{RESP}r:{response_id}"],
                                       args=[RESP + "r:", owner_tag(owner), max_depth, response_id, _ms(now)])
        *rows, stop, stop_id = out
        found = [self._record(_text(rows[i]), owner, rows[i + 1], rows[i + 2], rows[i + 3])
                 for i in range(0, len(rows), 4)]
        return chain_from(found, _text(stop), _text(stop_id) or None)

    # --- kv -------------------------------------------------------------------------------------------------------

    @staticmethod
    def _kv_prefix(namespace: str) -> str:
        return f"{P}{{kv:{namespace}}}:"

    async def _kv_get(self, namespace: str, key: str, now: float) -> Any | None:
        return (await self._kv_get_many(namespace, [key], now)).get(key)

    async def _kv_get_many(self, namespace: str, keys: list[str], now: float) -> dict[str, Any]:
        prefix = self._kv_prefix(namespace) + "k:"
        values = await self._client.mget([prefix + _short(k) for k in keys])
        found = {}
        for key, raw in zip(keys, values):
            if raw is None:
                continue
            expires, _, data = raw.partition(b" ")
            if int(expires) > _ms(now):
                found[key] = json.loads(data)
        return found

    async def _kv_put(self, namespace: str, key: str, value: Any, ttl: float, max_entries: int, now: float) -> None:
        prefix = self._kv_prefix(namespace)
        member = _short(key)
        data = f"{_ms(now + ttl)} " + json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        await self._kv_script(keys=[prefix + "k:" + member, prefix + "idx"],
                              args=[data, max(1, _ms(ttl)), _ms(now), max_entries, prefix + "k:", member,
                                    _ms(now + ttl)])

    # --- buckets -------------------------------------------------------------------------------------------------

    async def _bucket(self, key: str, capacity: float, rate: float, cost: float, now: float, mode: str) -> Bucket:
        allowed, tokens = await self._bucket_script(
            keys=[f"{P}{{rl:{key}}}"], args=[repr(float(capacity)), repr(float(rate)), repr(float(cost)),
                                             repr(float(now)), mode, BUCKET_IDLE_TTL_MS])
        return Bucket(bool(allowed), float(tokens), capacity, rate, cost)

    async def _admit(self, buckets: list[BucketSpec], spend_key: str | None, budget_nanos: int | None,
                     now: float) -> Admission:
        keys = [f"{P}spend:m:{month_of(now)}", *(f"{P}{{rl:{b.key}}}" for b in buckets)]
        args: list[Any] = [spend_key or "", "" if budget_nanos is None else budget_nanos, repr(float(now)),
                           BUCKET_IDLE_TTL_MS]
        for b in buckets:
            args += [repr(float(b.capacity)), repr(float(b.refill_per_second)), repr(float(b.cost)), b.mode]
        out = await self._admit_script(keys=keys, args=args)
        spent = None if spend_key is None else float(out[0]) / 1e9
        done = [Bucket(bool(out[2 + 2 * i]), float(out[3 + 2 * i]), b.capacity, b.refill_per_second, b.cost)
                for i, b in enumerate(buckets) if 3 + 2 * i < len(out)]
        return Admission(spent, bool(out[1]), done)

    # --- spend ------------------------------------------------------------------------------------------------------

    async def _add_spend(self, key: str, model: str, tokens: TokenCounts, nanos: int, requests: int,
                         now: float) -> None:
        if "\t" in key or "\t" in model:
            raise ValueError("a spend key or model must not contain a tab")
        day, month = day_of(now), month_of(now)
        retention = self.settings.spend_retention_days * 86400
        ordinal = dt.date.fromisoformat(day).toordinal()
        values = (requests, tokens.input, tokens.output, tokens.cache_write, tokens.cache_read, nanos)
        await self._spend_script(
            keys=[f"{P}spend:d:{day}", f"{P}spend:m:{month}", f"{P}spend:days"],
            args=[f"{key}\t{model}\t", *(str(int(v)) for v in values), key, retention, day, ordinal,
                  ordinal - self.settings.spend_retention_days])

    async def _month_spend(self, key: str, month: str) -> int:
        value = await self._client.hget(f"{P}spend:m:{month}", key)
        return int(value) if value is not None else 0

    async def _usage(self, since_day: str | None, key: str | None) -> list[UsageRow]:
        low = dt.date.fromisoformat(since_day).toordinal() if since_day else "-inf"
        days = [_text(d) for d in await self._client.zrangebyscore(f"{P}spend:days", low, "+inf")]
        async with self._client.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.hgetall(f"{P}spend:d:{day}")
            tables = await pipe.execute()
        rows: dict[tuple[str, str, str], UsageRow] = {}
        for day, table in zip(days, tables):
            counts: dict[tuple[str, str], dict[str, int]] = {}
            for field, value in table.items():
                k, model, f = _text(field).split("\t")
                if key is None or k == key:
                    counts.setdefault((k, model), {})[f] = int(value)
            for (k, model), c in counts.items():
                row = rows.setdefault((day[:7], k, model), UsageRow(day[:7], k, model))
                row.add(*(c.get(f, 0) for f in _SPEND_FIELDS))
        return list(rows.values())
