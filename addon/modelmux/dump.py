"""Translated exchanges as JSON lines: what the app sent, what Vertex got, what Vertex answered (the raw SSE
events for streams), what the app received (the chunks as sent), timings and outcome — one line each.

No headers are written, so neither the app's OpenAI key nor modelmux's Google token can appear; base64 payloads
(images, documents) are shortened. `modelmux pairs FILE` reads the file back.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any, TextIO

MAX_CAPTURE = 4 * 1024 * 1024  # per direction of one stream: a runaway answer must not eat the memory
_DATA_URL = re.compile(r"(data:[^;,]+;base64,)[A-Za-z0-9+/=\s]{64,}")


def shorten_payloads(value: Any) -> Any:
    """Base64 image and document data → a note of its size (the dump is for reading, not for replaying)."""
    if isinstance(value, dict):
        if value.get("type") == "base64" and isinstance(value.get("data"), str) and len(value["data"]) > 64:
            return {**value, "data": f"<{len(value['data'])} base64 characters>"}
        return {k: shorten_payloads(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shorten_payloads(v) for v in value]
    if isinstance(value, str) and "base64," in value:
        return _DATA_URL.sub(lambda m: f"{m.group(1)}<{len(m.group(0)) - len(m.group(1))} characters>", value)
    return value


def shorten_vectors(value: Any) -> Any:
    """Embedding vectors → their first numbers and a note of their length (a 3072-number vector per input would make
    one dump line megabytes long); base64 vectors → a note of their size."""
    if isinstance(value, dict):
        return {k: (f"<{len(v)} base64 characters>" if k == "embedding" and isinstance(v, str) and len(v) > 64
                    else shorten_vectors(v)) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) > 16 and all(type(v) in (int, float) for v in value[:16]):
            return [*value[:8], f"<{len(value)} numbers>"]
        return [shorten_vectors(v) for v in value]
    return value


class DumpWriter:
    def __init__(self) -> None:
        self.path: Path | None = None
        self._file: TextIO | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def open(self, path: str | None) -> None:
        if path and self.path == Path(path).expanduser():
            return
        self.close()
        if path:
            self.path = Path(path).expanduser()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        line = json.dumps(shorten_payloads(record), ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self.path = None, None


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records
