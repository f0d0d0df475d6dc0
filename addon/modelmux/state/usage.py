"""`modelmux usage [--since DATE] [--key NAME] [--json]`: spend and tokens per month, key and model, read from the
state store the configuration names (the same one the proxy writes: `state.url`, or the confdir's SQLite file)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ..config import ConfigError, load_config
from . import open_store
from .base import StateUnavailable, UsageRow

COLUMNS = ("month", "key", "model", "requests", "input", "output", "cache write", "cache read", "USD")


def parse_since(text: str) -> dt.date:
    """YYYY-MM-DD, or YYYY-MM for the first of that month."""
    try:
        return dt.date.fromisoformat(text if len(text) > 7 else text + "-01")
    except ValueError:
        raise ValueError(f"not a date (YYYY-MM-DD or YYYY-MM): {text}") from None


def format_rows(rows: list[UsageRow]) -> str:
    if not rows:
        return "no usage recorded"
    table = [list(COLUMNS)]
    for r in rows:
        table.append([r.month, r.key, r.model, f"{r.requests:,}", f"{r.input_tokens:,}", f"{r.output_tokens:,}",
                      f"{r.cache_write_tokens:,}", f"{r.cache_read_tokens:,}", f"{r.usd:,.6f}"])
    total = sum(r.usd for r in rows)
    table.append(["total", "", "", f"{sum(r.requests for r in rows):,}", f"{sum(r.input_tokens for r in rows):,}",
                  f"{sum(r.output_tokens for r in rows):,}", f"{sum(r.cache_write_tokens for r in rows):,}",
                  f"{sum(r.cache_read_tokens for r in rows):,}", f"{total:,.6f}"])
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = []
    for row in table:
        cells = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


async def _rows(config_file: str, confdir: Path, since: dt.date | None, key: str | None) -> list[UsageRow]:
    config = load_config(config_file)
    store = open_store(config.state, confdir)
    try:
        return await store.usage(since=since, key=key)
    finally:
        await store.close()


def run(config_file: str, confdir: Path, since: str | None, key: str | None, as_json: bool = False) -> int:
    try:
        since_date = parse_since(since) if since else None
        rows = asyncio.run(_rows(config_file, confdir, since_date, key))
    except (ValueError, ConfigError, StateUnavailable) as err:
        print(f"modelmux usage: {err}", file=sys.stderr)
        return 1
    print(json.dumps([asdict(r) for r in rows], indent=2) if as_json else format_rows(rows))
    return 0
