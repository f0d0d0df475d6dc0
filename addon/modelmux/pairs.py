"""`modelmux pairs FILE`: a dump of translated exchanges (dump.py), readably: per exchange a header line (when,
model → Vertex model, region, status, timings), then the four bodies side by side in reading order — what the
app sent, what Vertex got, what Vertex answered, what the app received."""

from __future__ import annotations

import datetime
import json
import sys
import textwrap
from typing import Any

from .dump import read_pairs

WIDTH = 110
SHOWN_EVENTS = 6  # first and last few events / chunks of a stream unless --full


def _block(title: str, value: Any) -> str:
    text = json.dumps(value, indent=1, ensure_ascii=False) if not isinstance(value, str) else value
    return f"  ┌ {title}\n" + textwrap.indent(text, "  │ ")


def _events(items: list[Any], full: bool) -> list[Any]:
    if full or len(items) <= 2 * SHOWN_EVENTS:
        return items
    return [*items[:SHOWN_EVENTS], f"… {len(items) - 2 * SHOWN_EVENTS} more …", *items[-SHOWN_EVENTS:]]


def _compact(items: list[Any]) -> str:
    return "\n".join(json.dumps(x, ensure_ascii=False) if not isinstance(x, str) else x for x in items)


def render(record: dict[str, Any], full: bool = False) -> str:
    when = datetime.datetime.fromtimestamp(record["time"]).isoformat(timespec="milliseconds")
    t = record.get("timings") or {}
    timing = ", ".join(f"{k.removesuffix('_ms')} {v:.0f} ms" for k, v in t.items())
    head = (f"{when}  {record['model']} → {record['vertex_model']} ({record['region']})  "
            f"{'stream' if record['stream'] else 'json'}  {record['mode']}  status {record['status']}  "
            f"attempts {record.get('attempts')}  {timing}")
    parts = ["═" * WIDTH, head, "─" * WIDTH, _block("OpenAI request (from the app)", record["openai_request"]),
             _block(f"Vertex request  POST {record['vertex_request']['url']}", record["vertex_request"]["body"])]
    vr, orsp = record.get("vertex_response") or {}, record.get("openai_response") or {}
    if "events" in vr:
        parts.append(_block(f"Vertex response  {vr.get('status')}  {len(vr['events'])} SSE events",
                            _compact(_events(vr["events"], full))))
        parts.append(_block(f"OpenAI response (to the app)  {orsp.get('status')}  {len(orsp['chunks'])} chunks",
                            _compact(_events(orsp["chunks"], full))))
    else:
        parts.append(_block(f"Vertex response  {vr.get('status')}", vr.get("body")))
        parts.append(_block(f"OpenAI response (to the app)  {orsp.get('status')}", orsp.get("body")))
    return "\n".join(parts)


def show(path: str, *, status: int | None = None, model: str | None = None, full: bool = False) -> int:
    try:
        records = read_pairs(path)
    except (OSError, ValueError) as err:
        print(f"modelmux pairs: cannot read {path}: {err}", file=sys.stderr)
        return 1
    shown = [r for r in records if (status is None or r["status"] == status) and (model is None or r["model"] == model)]
    for r in shown:
        print(render(r, full))
    print(f"{len(shown)} of {len(records)} exchanges shown")
    return 0
