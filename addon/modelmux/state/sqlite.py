"""The embedded backend: one SQLite file, shared by every modelmux process on the host that opens it.

- Off the event loop: each store has one worker thread that owns the connection; calls queue for it (at most
  `settings.max_pending`, else StateUnavailable at once) and each is bounded by `settings.deadline`.
- Several processes (`--workers N`, or separate instances on one host): WAL mode (readers never block the writer),
  every read-modify-write in one `BEGIN IMMEDIATE` transaction (the write lock is taken before the read, so two
  processes can never both take a bucket's last token), `busy_timeout` = `settings.timeout`; opening a new file
  that another process is switching to WAL is retried for as long.
- The file is created 0600 (its directory 0700 when it has to be made); WAL's side files get the same mode.
- Schema versioned with `PRAGMA user_version`; a file from a newer modelmux is refused, never rewritten.
- Housekeeping (expired rows, full buckets, spend past retention) runs at most once a minute, bounded per run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .base import (Admission, Bucket, BucketSpec, Chain, StateTooLarge, StateUnavailable, Store, StoredResponse, TokenCounts, UsageRow,
                   chain_from, day_of, month_of, owner_tag, refill)

log = logging.getLogger("modelmux")

SCHEMA_VERSION = 1
FILE_NAME = "modelmux-state.sqlite3"  # in the confdir when `state.url` is null
MAINTENANCE_EVERY = 60.0  # seconds (store clock)
MAINTENANCE_BATCH = 1000  # rows of each kind removed per housekeeping run at most
FULL_NEVER = 1e18  # full_at of a bucket that never refills
KV_KEYS_PER_QUERY = 500  # keys per `IN (…)` lookup
SETUP_RETRY_SECONDS = 0.02  # between attempts to open a file another process is setting up

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE responses (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            owner TEXT NOT NULL,
            previous_id TEXT,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            size INTEGER NOT NULL,
            data TEXT NOT NULL)""",
        "CREATE INDEX responses_expiry ON responses (expires_at)",
        """CREATE TABLE response_items (
            owner TEXT NOT NULL, item_id TEXT NOT NULL, seq INTEGER NOT NULL, position INTEGER NOT NULL,
            PRIMARY KEY (owner, item_id, seq)) WITHOUT ROWID""",
        "CREATE INDEX response_items_seq ON response_items (seq)",
        """CREATE TABLE response_totals (
            one INTEGER PRIMARY KEY CHECK (one = 1), count INTEGER NOT NULL, bytes INTEGER NOT NULL)""",
        "INSERT INTO response_totals VALUES (1, 0, 0)",
        """CREATE TABLE kv (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, ns TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
            expires_at REAL NOT NULL, UNIQUE (ns, key))""",
        "CREATE INDEX kv_expiry ON kv (expires_at)",
        """CREATE TABLE buckets (
            key TEXT PRIMARY KEY, tokens REAL NOT NULL, ts REAL NOT NULL, full_at REAL NOT NULL) WITHOUT ROWID""",
        "CREATE INDEX buckets_full ON buckets (full_at)",
        """CREATE TABLE spend (
            key TEXT NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL,
            requests INTEGER NOT NULL, input INTEGER NOT NULL, output INTEGER NOT NULL,
            cache_write INTEGER NOT NULL, cache_read INTEGER NOT NULL, nanos INTEGER NOT NULL,
            PRIMARY KEY (key, day, model)) WITHOUT ROWID""",
        "CREATE INDEX spend_day ON spend (day)",
    ],
}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, the lock taken before the first read."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # a failed COMMIT (busy) leaves the transaction open: never for good
            conn.execute("ROLLBACK")
        raise


@contextmanager
def _read(conn: sqlite3.Connection) -> Iterator[None]:
    """One consistent snapshot for several reads."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


class SQLiteStore(Store):
    backend = "sqlite"
    _errors = (sqlite3.Error, OSError, ValueError)

    def __init__(self, path: str | Path, settings: Any = None, **kw: Any):
        super().__init__(settings, **kw)
        self.path = Path(path).expanduser()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelmux-state")
        self._conn: sqlite3.Connection | None = None  # touched only on the executor's thread
        self._queued = 0
        self._queued_lock = threading.Lock()
        self._closed = False
        self._next_maintenance = float("-inf")

    def describe(self) -> str:
        return f"sqlite {self.path}"

    # --- the worker thread ----------------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise StateUnavailable(f"state store ({self.describe()}) is closed")
        with self._queued_lock:
            if self._queued >= self.settings.max_pending:
                raise StateUnavailable(f"state store ({self.describe()}) busy: {self._queued} operations queued")
            self._queued += 1
        abandoned = threading.Event()  # the caller gave up (its deadline): the work must not happen late
        future = self._executor.submit(self._in_thread, fn, args, abandoned)
        future.add_done_callback(self._dequeued)  # also when cancelled before it ran: the count always comes back
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            abandoned.set()
            future.cancel()
            raise

    def _dequeued(self, _future: Any) -> None:
        with self._queued_lock:
            self._queued -= 1

    def _in_thread(self, fn: Callable[..., Any], args: tuple[Any, ...], abandoned: threading.Event) -> Any:
        if abandoned.is_set():  # e.g. a token taken for a request already answered without it
            raise StateUnavailable("abandoned before it ran")
        return fn(self._connection(), *args)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, mode=0o700)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # before SQLite creates it with the umask's mode
        deadline = time.monotonic() + self.settings.timeout
        while True:
            try:
                self._conn = self._open()
                return self._conn
            except sqlite3.OperationalError as err:
                # Processes opening a new file at once both switch it to WAL: SQLite sees a lock upgrade deadlock
                # and answers one of them "locked" at once, without its busy timeout. Opening again then succeeds.
                if "locked" not in str(err) or time.monotonic() >= deadline:
                    raise
                time.sleep(SETUP_RETRY_SECONDS)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.settings.timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.settings.timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":  # e.g. a file system without shared memory: readers would block the writer
                raise sqlite3.OperationalError(f"{self.path} cannot use WAL mode (it is in {mode} mode)")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL: consistent after a crash; the last commits may be lost
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        with _write(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have done it
            if version > SCHEMA_VERSION:
                raise StateUnavailable(f"{self.path} holds state schema {version}, newer than this modelmux's "
                                       f"{SCHEMA_VERSION}: upgrade modelmux, or point state.url elsewhere")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _maintain(self, conn: sqlite3.Connection, now: float) -> None:
        """After the caller's own work has committed: a failure here is logged, never the caller's failure."""
        if now < self._next_maintenance:
            return
        try:
            with _write(conn):
                for seq, size in conn.execute("SELECT seq, size FROM responses WHERE expires_at <= ? LIMIT ?",
                                              (now, MAINTENANCE_BATCH)).fetchall():
                    self._drop(conn, seq, size)
                conn.execute("DELETE FROM kv WHERE seq IN (SELECT seq FROM kv WHERE expires_at <= ? LIMIT ?)",
                             (now, MAINTENANCE_BATCH))
                buckets = conn.execute("DELETE FROM buckets WHERE key IN "
                                       "(SELECT key FROM buckets WHERE full_at <= ? LIMIT ?)",
                                       (now, MAINTENANCE_BATCH)).rowcount
                oldest_day = day_of(now - self.settings.spend_retention_days * 86400.0)
                conn.execute("DELETE FROM spend WHERE day < ?", (oldest_day,))
        except sqlite3.Error as err:
            log.warning("modelmux: state housekeeping (%s) failed, retried with the next write: %s", self.path, err)
            return
        # a full batch of idle buckets (many client addresses): come back soon rather than in a minute
        self._next_maintenance = now + (MAINTENANCE_EVERY if buckets < MAINTENANCE_BATCH else 0.0)

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def _ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def _close(self) -> None:
        self._closed = True

        def close(conn: sqlite3.Connection) -> None:
            conn.close()
            self._conn = None
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, close, self._conn)
        self._executor.shutdown(wait=False)

    # --- responses ----------------------------------------------------------------------------------------------

    @staticmethod
    def _drop(conn: sqlite3.Connection, seq: int, size: int) -> None:
        conn.execute("DELETE FROM responses WHERE seq = ?", (seq,))
        conn.execute("DELETE FROM response_items WHERE seq = ?", (seq,))
        conn.execute("UPDATE response_totals SET count = count - 1, bytes = bytes - ?", (size,))

    async def _put_response(self, record: StoredResponse, now: float) -> None:
        data = _dumps(record.data())
        size = len(data.encode())
        if size > self.settings.response_max_bytes:
            raise StateTooLarge(f"the response is {size} bytes, more than state.response_max_mb allows")
        tag = owner_tag(record.owner)
        expires = record.created_at + self.settings.response_ttl
        items = [(tag, item["id"], pos) for pos, item in enumerate(record.input_items + record.output_items)]

        def put(conn: sqlite3.Connection) -> None:
            s = self.settings
            with _write(conn):
                old = conn.execute("SELECT seq, size FROM responses WHERE id = ?", (record.id,)).fetchone()
                if old:
                    self._drop(conn, *old)
                seq = conn.execute(
                    "INSERT INTO responses (id, owner, previous_id, created_at, expires_at, size, data) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (record.id, tag, record.previous_response_id, record.created_at, expires, size, data)).lastrowid
                conn.executemany("INSERT OR REPLACE INTO response_items VALUES (?, ?, ?, ?)",
                                 [(t, item_id, seq, pos) for t, item_id, pos in items])
                conn.execute("UPDATE response_totals SET count = count + 1, bytes = bytes + ?", (size,))
                count, total = conn.execute("SELECT count, bytes FROM response_totals").fetchone()
                while count > s.response_max_count or total > s.response_max_bytes:
                    oldest = conn.execute("SELECT seq, size FROM responses ORDER BY seq LIMIT 64").fetchall()
                    for old_seq, old_size in oldest:
                        if count <= s.response_max_count and total <= s.response_max_bytes:
                            break
                        self._drop(conn, old_seq, old_size)
                        count, total = count - 1, total - old_size
            self._maintain(conn, now)

        await self._run(put)

    @staticmethod
    def _row_record(response_id: str, row: tuple[Any, ...], owner: str | None) -> StoredResponse:
        _tag, previous_id, created_at, _expires, data = row
        d = json.loads(data)
        return StoredResponse(id=response_id, owner=owner, created_at=created_at, response=d["response"],
                              input_items=d["input_items"], output_items=d["output_items"],
                              previous_response_id=previous_id)

    @classmethod
    def _lookup(cls, conn: sqlite3.Connection, response_id: str, owner: str | None,
                now: float) -> StoredResponse | None:
        row = conn.execute("SELECT owner, previous_id, created_at, expires_at, data FROM responses WHERE id = ?",
                           (response_id,)).fetchone()
        if row is None or row[0] != owner_tag(owner) or row[3] <= now:
            return None
        return cls._row_record(response_id, row, owner)

    async def _get_response(self, response_id: str, owner: str | None, now: float) -> StoredResponse | None:
        return await self._run(self._lookup, response_id, owner, now)

    async def _delete_response(self, response_id: str, owner: str | None, now: float) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            with _write(conn):
                row = conn.execute("SELECT seq, size, owner, expires_at FROM responses WHERE id = ?",
                                   (response_id,)).fetchone()
                if row is None or row[2] != owner_tag(owner):
                    return False
                self._drop(conn, row[0], row[1])
                return row[3] > now  # an expired one was already gone for the client
        return await self._run(delete)

    async def _get_items(self, item_ids: list[str], owner: str | None, now: float) -> dict[str, dict[str, Any]]:
        tag = owner_tag(owner)

        def get(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
            found: dict[str, dict[str, Any]] = {}
            decoded: dict[int, list[dict[str, Any]]] = {}
            with _read(conn):
                for item_id in item_ids:
                    row = conn.execute(
                        "SELECT r.seq, i.position, r.data FROM response_items i JOIN responses r ON r.seq = i.seq "
                        "WHERE i.owner = ? AND i.item_id = ? AND r.expires_at > ? ORDER BY i.seq DESC LIMIT 1",
                        (tag, item_id, now)).fetchone()
                    if row is None:
                        continue
                    seq, position, data = row
                    if seq not in decoded:
                        d = json.loads(data)
                        decoded[seq] = d["input_items"] + d["output_items"]
                    found[item_id] = decoded[seq][position]
            return found
        return await self._run(get)

    async def _response_chain(self, response_id: str, owner: str | None, max_depth: int, now: float) -> Chain:
        def walk(conn: sqlite3.Connection) -> Chain:
            found: list[StoredResponse] = []
            current: str | None = response_id
            with _read(conn):
                while current is not None:
                    if len(found) >= max_depth:
                        return chain_from(found, "depth", current)
                    record = self._lookup(conn, current, owner, now)
                    if record is None:
                        return chain_from(found, "missing", current)
                    found.append(record)
                    current = record.previous_response_id
            return chain_from(found, "end", None)
        return await self._run(walk)

    # --- kv -------------------------------------------------------------------------------------------------------

    async def _kv_get(self, namespace: str, key: str, now: float) -> Any | None:
        return (await self._kv_get_many(namespace, [key], now)).get(key)

    async def _kv_get_many(self, namespace: str, keys: list[str], now: float) -> dict[str, Any]:
        def get(conn: sqlite3.Connection) -> dict[str, Any]:
            found: dict[str, Any] = {}
            with _read(conn):
                for start in range(0, len(keys), KV_KEYS_PER_QUERY):  # under SQLite's bound-variable limit
                    chunk = keys[start:start + KV_KEYS_PER_QUERY]
                    marks = ",".join("?" * len(chunk))
                    rows = conn.execute(f"SELECT key, value FROM kv WHERE ns = ? AND key IN ({marks}) "
                                        "AND expires_at > ?", (namespace, *chunk, now)).fetchall()
                    found.update((key, json.loads(value)) for key, value in rows)
            return found
        return await self._run(get)

    async def _kv_put(self, namespace: str, key: str, value: Any, ttl: float, max_entries: int, now: float) -> None:
        data = _dumps(value)

        def put(conn: sqlite3.Connection) -> None:
            with _write(conn):
                seq = conn.execute("INSERT OR REPLACE INTO kv (ns, key, value, expires_at) VALUES (?, ?, ?, ?)",
                                   (namespace, key, data, now + ttl)).lastrowid
                # the newest max_entries sequence numbers hold at most max_entries rows
                conn.execute("DELETE FROM kv WHERE ns = ? AND seq <= ?", (namespace, seq - max_entries))
            self._maintain(conn, now)
        await self._run(put)

    # --- buckets -------------------------------------------------------------------------------------------------

    @staticmethod
    def _apply(conn: sqlite3.Connection, key: str, capacity: float, rate: float, cost: float, now: float,
               mode: str) -> Bucket:
        """One bucket operation, inside the caller's write transaction."""
        row = conn.execute("SELECT tokens, ts FROM buckets WHERE key = ?", (key,)).fetchone()
        tokens, ts = refill(row[0] if row else None, row[1] if row else None, capacity, rate, now)
        allowed = mode == "charge" or tokens >= cost
        if mode == "charge" or (mode == "take" and allowed):
            tokens -= cost
        full_at = ts + (capacity - tokens) / rate if rate > 0 else FULL_NEVER
        conn.execute("INSERT OR REPLACE INTO buckets (key, tokens, ts, full_at) VALUES (?, ?, ?, ?)",
                     (key, tokens, ts, min(full_at, FULL_NEVER)))
        return Bucket(allowed, tokens, capacity, rate, cost)

    async def _bucket(self, key: str, capacity: float, rate: float, cost: float, now: float, mode: str) -> Bucket:
        def bucket(conn: sqlite3.Connection) -> Bucket:
            with _write(conn):
                result = self._apply(conn, key, capacity, rate, cost, now, mode)
            self._maintain(conn, now)
            return result
        return await self._run(bucket)

    async def _admit(self, buckets: list[BucketSpec], spend_key: str | None, budget_nanos: int | None,
                     now: float) -> Admission:
        month = month_of(now)

        def admit(conn: sqlite3.Connection) -> Admission:
            spent = None
            done: list[Bucket] = []
            with _write(conn):
                if spend_key is not None:
                    spent = conn.execute(
                        "SELECT COALESCE(SUM(nanos), 0) FROM spend WHERE key = ? AND day BETWEEN ? AND ?",
                        (spend_key, f"{month}-01", f"{month}-31")).fetchone()[0]
                    if budget_nanos is not None and spent >= budget_nanos:
                        return Admission(spent / 1e9, True, [])
                for b in buckets:
                    done.append(self._apply(conn, b.key, b.capacity, b.refill_per_second, b.cost, now, b.mode))
                    if not done[-1].allowed:
                        break
            self._maintain(conn, now)
            return Admission(None if spent is None else spent / 1e9, False, done)
        return await self._run(admit)

    # --- spend -----------------------------------------------------------------------------------------------------

    async def _add_spend(self, key: str, model: str, tokens: TokenCounts, nanos: int, requests: int,
                         now: float) -> None:
        row = (key, day_of(now), model, requests, tokens.input, tokens.output, tokens.cache_write, tokens.cache_read,
               nanos)

        def add(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO spend VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key, day, model) DO UPDATE SET "
                "requests = requests + excluded.requests, input = input + excluded.input, "
                "output = output + excluded.output, cache_write = cache_write + excluded.cache_write, "
                "cache_read = cache_read + excluded.cache_read, nanos = nanos + excluded.nanos", row)
            self._maintain(conn, now)
        await self._run(add)

    async def _month_spend(self, key: str, month: str) -> int:
        def get(conn: sqlite3.Connection) -> int:
            return conn.execute("SELECT COALESCE(SUM(nanos), 0) FROM spend WHERE key = ? AND day BETWEEN ? AND ?",
                                (key, f"{month}-01", f"{month}-31")).fetchone()[0]
        return await self._run(get)

    async def _usage(self, since_day: str | None, key: str | None) -> list[UsageRow]:
        def query(conn: sqlite3.Connection) -> list[UsageRow]:
            rows = conn.execute(
                "SELECT substr(day, 1, 7), key, model, SUM(requests), SUM(input), SUM(output), SUM(cache_write), "
                "SUM(cache_read), SUM(nanos) FROM spend WHERE (?1 IS NULL OR day >= ?1) AND (?2 IS NULL OR key = ?2) "
                "GROUP BY 1, 2, 3", (since_day, key)).fetchall()
            out = []
            for month, k, model, req, inp, outp, cw, cr, nanos in rows:
                row = UsageRow(month, k, model)
                row.add(req, inp, outp, cw, cr, nanos)
                out.append(row)
            return out
        return await self._run(query)

