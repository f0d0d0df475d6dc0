"""Codex CLI (npm `@openai/codex`, in tests/node; its native binary comes from the platform package
`@openai/codex@<version>-linux-x64` that npm installs as an optional dependency) as a real client:
`codex exec --json` run non-interactively in a fresh CODEX_HOME, its JSONL events returned.

How Codex 0.171 finds its endpoint (verified against tests/responses_recorder.py):
- base URL: the `openai_base_url` config key (`-c openai_base_url="http://…/v1"`); the OPENAI_BASE_URL
  environment variable is NOT read any more (Codex then goes to api.openai.com);
- HTTPS_PROXY mode: `HTTPS_PROXY` plus `CODEX_CA_CERTIFICATE` (a PEM file of extra roots; SSL_CERT_FILE also
  works) — Codex keeps https://api.openai.com/v1 and speaks HTTP/2 to the proxy's TLS;
- the key: OPENAI_API_KEY (no `codex login` needed).
It first tries a WebSocket on GET /v1/responses; a 426 answer makes it fall back to POST at once, a 404, 405 or a
dropped connection only after 7 attempts (~6.5 s of backoff).

Everything that would leave loopback is switched off: analytics (OTLP metrics to ab.chatgpt.com), the update
check, and the plugin catalogue fetches (api.github.com, chatgpt.com).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import procs

CODEX = procs.ROOT / "tests" / "node" / "node_modules" / ".bin" / "codex"
# the model whose tool set is the classic one: exec_command (function) and apply_patch (custom, Lark grammar).
# Codex's default model (gpt-6.2-sol in 0.171) runs "code mode" instead: one custom tool `exec` (JavaScript, in
# namespace `functions`) listed in an `additional_tools` input item, not in `tools`.
CLASSIC_MODEL = "gpt-5.5"
QUIET = ("-c", "analytics.enabled=false", "-c", "check_for_update_on_startup=false",
         "--disable", "plugins", "--disable", "remote_plugin", "--disable", "plugin_discovery_prefetch",
         "--disable", "recommended_plugins")
# what a Codex process reads that the test must control
ENV_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
            "no_proxy", "OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_API_KEY", "CODEX_API_KEY", "CODEX_HOME",
            "CODEX_CA_CERTIFICATE", "SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS", "RUST_LOG")


@dataclass
class CodexRun:
    returncode: int
    events: list[dict]  # the --json lines, parsed
    stderr: str
    seconds: float
    workdir: Path

    def items(self, kind: str) -> list[dict]:
        """The completed items of one type (agent_message, command_execution, file_change, error, …)."""
        return [e["item"] for e in self.events if e.get("type") == "item.completed" and e["item"].get("type") == kind]

    def messages(self) -> list[str]:
        return [i["text"] for i in self.items("agent_message")]

    @property
    def completed(self) -> bool:
        return any(e.get("type") == "turn.completed" for e in self.events)

    def explain(self) -> str:
        return (f"codex exit {self.returncode} after {self.seconds:.1f}s; events: "
                f"{json.dumps(self.events)[:3000]}\nstderr: {self.stderr[-2000:]}")


def available() -> bool:
    return CODEX.exists()


def run_codex(prompt: str, tmp: Path, *, api_key: str, base_url: str | None = None, proxy: str | None = None,
              ca: Path | None = None, model: str | None = None, timeout: float = 90,
              config: dict[str, str] | None = None) -> CodexRun:
    """`codex exec --json PROMPT` in tmp/work with CODEX_HOME tmp/codex-home: approvals and the sandbox off (the
    test is the sandbox), no git repository needed, nothing persisted. Either base_url (…/v1) or proxy + ca."""
    home, work = tmp / "codex-home", tmp / "work"
    home.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(CODEX_HOME=str(home), OPENAI_API_KEY=api_key)
    argv = [str(CODEX), "exec", "--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
            "--ephemeral", "--color", "never", "-C", str(work), *QUIET]
    if base_url:
        argv += ["-c", f"openai_base_url={json.dumps(base_url)}"]
    if proxy:
        env["HTTPS_PROXY"] = proxy
        if ca:
            env["CODEX_CA_CERTIFICATE"] = str(ca)
    if model:
        argv += ["-m", model]
    for key, value in (config or {}).items():
        argv += ["-c", f"{key}={value}"]
    started = time.monotonic()
    # its own process group: the npm shim (node) runs the native binary as a child, and a timeout stops both
    proc = subprocess.Popen([*argv, prompt], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=work, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        stderr += f"\n[codex.py: killed after {timeout}s]"
    events = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            events.append(json.loads(line))
    return CodexRun(proc.returncode, events, stderr, time.monotonic() - started, work)
