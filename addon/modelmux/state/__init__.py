"""State that outlives a request and is shared by every modelmux process naming the same `state.url`: stored
Responses API responses, thinking signatures, rate-limit buckets and spend counters (docs/scaling.md, "State").

    store = open_store(config.state, confdir)   # SQLiteStore (default: a file in the confdir) or RedisStore
    await store.take("rpm:team-a", capacity=60, refill_per_second=1.0)

Every failure of the backend is a `StateUnavailable`, raised within `state.connect_timeout_seconds +
state.timeout_seconds`; base.py has the interface and its guarantees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import (Admission, Bucket, BucketSpec, Chain, InvalidArgument, ItemsPage, StateTooLarge, StateUnavailable, Store, StoredResponse,
                   StoreSettings, TokenCounts, UsageRow)
from .observe import RateLimitedLog
from .sqlite import FILE_NAME, SQLiteStore

__all__ = ["Admission", "Bucket", "BucketSpec", "Chain", "InvalidArgument", "ItemsPage", "RateLimitedLog", "StateTooLarge", "StateUnavailable",
           "Store", "StoreSettings", "StoredResponse", "TokenCounts", "UsageRow", "open_store", "sqlite_path"]


def sqlite_path(url: str | None, confdir: str | Path) -> Path:
    """The SQLite file a `state.url` names: null → FILE_NAME in the confdir; "sqlite:///abs/path" → /abs/path;
    "sqlite://rel/path" → relative to the confdir; "~" is expanded."""
    confdir = Path(confdir).expanduser()
    if url is None:
        return confdir / FILE_NAME
    path = Path(url[len("sqlite://"):]).expanduser()
    return path if path.is_absolute() else confdir / path


def open_store(cfg: Any, confdir: str | Path, **kw: Any) -> Store:
    """The store `cfg` (config.StateConfig) names. Nothing is opened yet: the first call connects (and a failure
    then is a StateUnavailable). `kw`: clock, monotonic, on_error (see base.Store)."""
    settings = StoreSettings.from_config(cfg)
    url = cfg.url
    if url is not None and url.split("://", 1)[0].lower() in ("redis", "rediss"):
        from .redis_store import RedisStore  # the redis package is only imported when it is used

        return RedisStore(url, settings, **kw)
    return SQLiteStore(sqlite_path(url, confdir), settings, **kw)
