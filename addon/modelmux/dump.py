"""Translated exchanges as JSON lines: what the app sent, what Vertex got, what Vertex answered (the raw SSE
events for streams), what the app received (the chunks as sent), timings and outcome — one line each.

No headers are written, so neither the app's OpenAI key nor modelmux's Google token can appear; base64 payloads
(images, documents) are shortened. `modelmux pairs FILE` reads the file back.

The file holds prompts and answers: modelmux creates it readable by its owner only (0600); a file that already
exists keeps its mode (the operator's choice), with a warning when others can read it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger("modelmux")

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
        """Append to `path` from now on (None: stop dumping). Raises OSError when it cannot be opened, and then
        keeps writing where it wrote before."""
        new = Path(path).expanduser() if path else None
        if new == self.path:
            return
        file = _open_private(new) if new is not None else None
        with self._lock:
            old, self._file, self.path = self._file, file, new
        if old is not None:
            old.close()

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        line = json.dumps(shorten_payloads(record), ensure_ascii=False)
        with self._lock:
            if self._file is not None:  # not closed meanwhile
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            old, self._file, self.path = self._file, None, None
        if old is not None:
            old.close()


def _open_private(path: Path) -> TextIO:
    """`path` for appending, created 0600 (the umask can only take more away)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        file = os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise
    if mode & 0o077:
        log.warning("modelmux: the dump file %s is readable by others (mode %o) and holds prompts and answers: "
                    "chmod 600 it", path, mode)
    return file


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records
