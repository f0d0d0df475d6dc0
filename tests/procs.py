"""Test launchers for real processes, on modelmux.procs."""

from __future__ import annotations

import sys
from pathlib import Path

from modelmux.procs import EMULATOR_READY, PROXY_READY, Proc, free_port, wait_port  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def emulator(tmp: Path, *extra: str) -> tuple[Proc, str, Path]:
    """The Vertex emulator with a fresh service-account key; returns (proc, base url, key file)."""
    key = tmp / "service-account.json"
    proc = Proc([sys.executable, "-m", "modelmux.emulator", "--port", "0", "--service-account-out", str(key), *extra],
                EMULATOR_READY, env={"PYTHONPATH": str(ROOT / "addon")}, cwd=ROOT)
    return proc, proc.match.group(1), key
