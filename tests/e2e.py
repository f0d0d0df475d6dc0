"""Shared set-up for end-to-end tests: a real emulator, real proxy processes, real openai SDK clients."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx

import procs

CLIENT_KEY = "sk-e2e-client-secret-0123456789"  # must never reach Vertex, a log or an error


def write_config(path: Path, emulator_url: str, key: Path, **extra_models: str) -> Path:
    path.write_text(f"""
vertex:
  project: e2e-project
  region: us-east5
  base_url: {emulator_url}
auth:
  credentials_file: {key}
models:
  default: claude-sonnet-4-5@20250929
  map:
    gpt-4o: claude-sonnet-4-5@20250929
    gpt-4o-mini: claude-haiku-4-5@20251001
{''.join(f'    {k}: {v}{chr(10)}' for k, v in extra_models.items())}
intercept:
  hosts: [api.openai.com]
""")
    return path


@dataclass
class Proxy:
    proc: procs.Proc
    regular_port: int
    reverse_port: int
    confdir: Path

    @property
    def ca(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"


def start_proxy(launcher: str, config: Path, confdir: Path) -> Proxy:
    regular, reverse = procs.free_port(), procs.free_port()
    modes = ["--mode", f"regular@{regular}", "--mode", f"reverse:https://api.openai.com@{reverse}"]
    if launcher == "mitmdump":
        argv = [str(procs.VENV_BIN / "mitmdump"), "-s", str(procs.ROOT / "addon" / "modelmux_addon.py"),
                "--listen-host", "127.0.0.1", "--set", f"confdir={confdir}", "--set", f"modelmux_config={config}",
                *modes]
    else:
        argv = [str(procs.VENV_BIN / "modelmux"), "run", "--config", str(config), "--confdir", str(confdir), *modes]
    proc = procs.Proc(argv, procs.PROXY_READY, cwd=procs.ROOT)
    procs.wait_port(regular)
    procs.wait_port(reverse)
    return Proxy(proc, regular, reverse, confdir)


class Emulator:
    def __init__(self, url: str):
        self.url = url
        self._http = httpx.Client(base_url=url, trust_env=False, timeout=10)

    def requests(self) -> list[dict]:
        return self._http.get("/_emulator/requests").json()

    def last_request(self) -> dict:
        return self.requests()[-1]

    def clear(self) -> None:
        self._http.delete("/_emulator/requests")

    def set_pace(self, ms: float) -> None:
        self._http.post("/_emulator/settings", content=json.dumps({"pace_ms": ms}))
