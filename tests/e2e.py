"""Shared set-up for end-to-end tests: a real emulator, real proxy processes, real openai SDK clients."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

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
retries: {{max_attempts: 4, backoff_initial_seconds: 0.05, backoff_max_seconds: 0.2}}  # quick, still exercised
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


def start_proxy(launcher: str, config: Path, confdir: Path, *extra: str) -> Proxy:
    regular, reverse = procs.free_port(), procs.free_port()
    modes = ["--mode", f"regular@{regular}", "--mode", f"reverse:https://api.openai.com@{reverse}"]
    if launcher == "mitmdump":
        argv = [str(procs.VENV_BIN / "mitmdump"), "-s", str(procs.ROOT / "addon" / "modelmux_addon.py"),
                "--listen-host", "127.0.0.1", "--set", f"confdir={confdir}", "--set", f"modelmux_config={config}",
                *modes]
    else:
        argv = [str(procs.VENV_BIN / "modelmux"), "run", "--config", str(config), "--confdir", str(confdir), *modes,
                *extra]
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


# --- fixtures for the modules that test both launchers (conftest.py makes them available everywhere) ---------

LAUNCHERS = ["mitmdump", "modelmux-run"]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    proc, url, key = procs.emulator(tmp_path_factory.mktemp("emulator"))
    yield Emulator(url), key
    proc.stop()


@pytest.fixture(scope="module", params=LAUNCHERS)
def proxy(request, emulator, tmp_path_factory):
    """A real `mitmdump -s addon/modelmux_addon.py` and a real `modelmux run`, in turn."""
    emu, key = emulator
    tmp = tmp_path_factory.mktemp(request.param)
    p = start_proxy(request.param, write_config(tmp / "modelmux.yaml", emu.url, key), tmp / "confdir")
    yield p
    p.proc.stop()
    assert_no_secrets(p.proc.output())


# --- helpers for the real-client tests (tests/test_clients_*.py) --------------------------------------------

# what a client process reads to find a proxy or a base URL; cleared so that only what a test sets applies
CLIENT_ENV_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
                   "no_proxy", "OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_PROXY", "NODE_USE_ENV_PROXY",
                   "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE")
CLIENT_KINDS_VIA_PROXY = ["https_proxy", "reverse"]  # the two ways an unmodified app reaches modelmux


@contextlib.contextmanager
def emulator_and_proxy(tmp: Path, launcher: str = "modelmux-run", *extra: str):
    """A fresh emulator and a proxy in front of it (default config); on exit both stop and the proxy's output is
    checked for secrets."""
    emu_proc, url, key = procs.emulator(tmp)
    try:
        p = start_proxy(launcher, write_config(tmp / "modelmux.yaml", url, key), tmp / "confdir", *extra)
        try:
            yield p, Emulator(url)
        finally:
            p.proc.stop()
    finally:
        emu_proc.stop()
    assert_no_secrets(p.proc.output())


def assert_no_secrets(output: str) -> None:
    """Nothing secret in what a proxy printed: not the app's key, not a Google token, not a private key."""
    for secret in (CLIENT_KEY, "ya29.", "PRIVATE KEY"):
        assert secret not in output, f"{secret!r} leaked into the proxy's output"


def client_env(kind: str, proxy: Proxy) -> dict[str, str]:
    """An environment for a client subprocess: this one without any proxy / base-URL / CA setting, plus
    HTTPS_PROXY and the CA bundle variables when `kind` is "https_proxy"."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV_VARS}
    if kind == "https_proxy":
        env.update(HTTPS_PROXY=f"http://127.0.0.1:{proxy.regular_port}", SSL_CERT_FILE=str(proxy.ca),
                   NODE_EXTRA_CA_CERTS=str(proxy.ca))
    return env


def use_client_env(kind: str, proxy: Proxy, monkeypatch) -> str | None:
    """Set this process's environment as an app pointed at modelmux has it; returns the base URL to pass (None in
    HTTPS_PROXY mode: the app keeps OpenAI's own URL and the proxy decrypts it with mitmproxy's CA)."""
    for var in CLIENT_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    if kind == "https_proxy":
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.regular_port}")
        monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca))
        return None
    port = proxy.reverse_port if kind == "reverse" else proxy.regular_port
    return f"http://127.0.0.1:{port}/v1"


def openai_client(kind: str, proxy: Proxy, monkeypatch, **kwargs):
    """An openai.OpenAI client for `kind` ("https_proxy", "reverse" or "direct"): no retries, a bounded timeout."""
    base_url = use_client_env(kind, proxy, monkeypatch)
    kwargs = {"api_key": CLIENT_KEY, "max_retries": 0, "timeout": 20, **kwargs}
    return openai.OpenAI(**({"base_url": base_url} if base_url else {}), **kwargs)


def stream_text(chunks: list[dict]) -> str:
    """The `content` of a stream of chunk dicts, joined."""
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def finish_reasons(chunks: list[dict]) -> list[str]:
    """Every non-null finish_reason of a stream of chunk dicts, in order."""
    return [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]


def streamed_tool_calls(chunks: list[dict]) -> list[dict]:
    """The tool calls of a stream of chunk dicts put together as a client does it, checking the shape clients rely
    on (pain 15): a new call's index is the next one (0, 1, …) and its first chunk carries id, type and name; later
    chunks of a call carry only its index and an argument fragment. Returns [{index, id, name, arguments,
    fragments}] with `fragments` the number of argument chunks."""
    calls: list[dict] = []
    for chunk in chunks:
        for choice in chunk["choices"]:
            for delta in choice["delta"].get("tool_calls") or []:
                index, function = delta["index"], delta.get("function") or {}
                if index == len(calls):
                    assert delta.get("id") and delta.get("type") == "function" and function.get("name"), delta
                    calls.append({"index": index, "id": delta["id"], "name": function["name"],
                                  "arguments": function.get("arguments") or "", "fragments": 0})
                    continue
                assert 0 <= index < len(calls), f"tool call index {index} before index {len(calls)}: {delta}"
                assert not ({"id", "type"} & delta.keys()) and "name" not in function, \
                    f"id/type/name repeated on a later chunk of call {index}: {delta}"
                calls[index]["arguments"] += function.get("arguments") or ""
                calls[index]["fragments"] += 1
    return calls
