"""LiteLLM's proxy as a comparison column in scripts/bench.py, configured for the same Vertex emulator.

LiteLLM is not a modelmux dependency (it pins its own versions of httpx, pydantic, …), so it lives in a
separate venv that bench.py finds on its own:

    /root/.pyenv/versions/3.12.1/bin/python -m venv .bench-venv   # git-ignored
    .bench-venv/bin/pip install 'litellm[proxy,google]==1.106.12'

`[google]` brings google-auth, which LiteLLM's vertex_ai provider needs to turn the service-account key into
an access token. The key is the emulator's (`--service-account-out`): its `token_uri` is the emulator's
/token, and `api_base` sends the model calls to the emulator, so LiteLLM makes the same Vertex calls as
modelmux, with the same token exchange.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "addon"))

from modelmux.procs import Proc, free_port  # noqa: E402

READY = r"Uvicorn running on (http://\S+)"


def find_litellm(explicit: str | None) -> str | None:
    """The `litellm` executable: --litellm, else the bench venv, else PATH."""
    if explicit:
        return explicit if Path(explicit).is_file() else None
    local = ROOT / ".bench-venv" / "bin" / "litellm"
    return str(local) if local.is_file() else shutil.which("litellm")


def start_litellm(exe: str, tmp: Path, emu_url: str, key_file: Path, project: str, region: str,
                  vertex_model: str, alias: str) -> tuple[Proc, str, str]:
    """Start LiteLLM's proxy serving `alias` as vertex_ai/`vertex_model` on the emulator; returns the process,
    its base URL and the key clients must send."""
    master_key = "sk-bench-" + secrets.token_hex(16)  # LiteLLM refuses to start without one
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {alias}\n"
        "    litellm_params:\n"
        f"      model: vertex_ai/{vertex_model}\n"
        f"      vertex_project: {project}\n"
        f"      vertex_location: {region}\n"
        f"      vertex_credentials: '{key_file}'\n"
        f"      api_base: '{emu_url}'\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "general_settings:\n"
        f"  master_key: {master_key}\n")
    port = free_port()
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price list at start-up (no internet)
           "LITELLM_TELEMETRY": "False", "NO_PROXY": "*"}
    proc = Proc([exe, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)], READY, env=env,
                timeout=120, cwd=tmp)  # cwd: LiteLLM reads a .env from there
    return proc, f"http://127.0.0.1:{port}", master_key


def litellm_version(exe: str) -> str:
    python = Path(exe).parent / "python"
    if not python.is_file():
        return "?"
    import subprocess
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return out.stdout.strip() or "?"
