"""The deployment's sealing keys (translate/responses/sealing.py): from `responses.sealing_key` (and the previous
keys still to be opened), else one generated once into the confdir — created 0600 and atomically, so several
processes on one host (`--workers`) agree on it; replicas on other hosts must be given the same key in config."""

from __future__ import annotations

import os
from pathlib import Path

from .translate.responses.sealing import generate_key, parse_key

FILE_NAME = "modelmux-sealing.key"


def sealing_keys(cfg, confdir: str | Path) -> list[bytes]:
    """[the key that seals, then the ones only opened]."""
    first = parse_key(cfg.sealing_key) if cfg.sealing_key else _generated(Path(confdir).expanduser() / FILE_NAME)
    return [first, *(parse_key(k) for k in cfg.previous_sealing_keys)]


def _generated(path: Path) -> bytes:
    if path.exists():
        return parse_key(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(generate_key().hex() + "\n")
    try:
        os.link(tmp, path)  # fails if another process made it first: theirs wins, and is whole
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return parse_key(path.read_text())
