"""The emulator as the emulator's tests drive it: a real `python -m modelmux.emulator` process (module-scoped),
an httpx client, a real google-auth token, valid Claude bodies, fault rules."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.oauth2 import service_account

from modelmux.auth import HttpxRequest

ADDON_DIR = Path(__file__).resolve().parents[1] / "addon"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
MODEL = "claude-sonnet-4-5@20250929"
STATIC_TOKEN = "static-test-token"
START_TIMEOUT = 10.0


# --- fixtures ------------------------------------------------------------------------------------------------

@dataclass
class Running:
    proc: subprocess.Popen
    url: str
    stderr_path: Path
    service_account_path: Path
    authorized_user_path: Path

    def model_url(self, model: str = MODEL, method: str = "rawPredict", location: str = "us-east5") -> str:
        return (f"{self.url}/v1/projects/p1/locations/{location}/publishers/anthropic/models/{model}:{method}")


def launch(tmp: Path, *extra: str) -> Running:
    sa, au, err = tmp / "sa.json", tmp / "au.json", tmp / "stderr.txt"
    env = {**os.environ, "PYTHONPATH": str(ADDON_DIR)}
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelmux.emulator", "--port", "0", "--service-account-out", str(sa),
             "--authorized-user-out", str(au), *extra],
            stdout=subprocess.PIPE, stderr=stderr, env=env, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    match = re.fullmatch(r"modelmux emulator listening on (http://127\.0\.0\.1:\d+)\n", line)
    if not match:
        stop(proc)
        pytest.fail(f"emulator did not start: {line!r} {err.read_text()}")
    return Running(proc, match.group(1), err, sa, au)


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        raise


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = launch(tmp_path_factory.mktemp("emulator"), "--accept-token", STATIC_TOKEN)
    yield running
    stop(running.proc)


@pytest.fixture(scope="module")
def client(emu: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, trust_env=False, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def token(emu: Running) -> str:
    creds = service_account.Credentials.from_service_account_file(str(emu.service_account_path), scopes=SCOPES)
    creds.refresh(HttpxRequest())
    return creds.token


def body(**changes: Any) -> dict:
    """A valid request body; a change to `DROP` removes the key."""
    base = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 100,
            "messages": [{"role": "user", "content": "hello there world"}]}
    merged = {**base, **changes}
    return {k: v for k, v in merged.items() if v is not DROP}


DROP = object()


def call(client: httpx.Client, emu: Running, payload: Any, token: str | None, **url: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(emu.model_url(**url), content=json.dumps(payload), headers=headers)


def user(content: Any) -> dict:
    return {"role": "user", "content": content}


@pytest.fixture
def faults(client: httpx.Client) -> Iterator[Callable[..., list[dict]]]:
    """Post fault rules (returns the listing); the rules and stats start empty, and the rules go afterwards."""
    def add(*rules: dict) -> list[dict]:
        resp = client.post("/_emulator/faults", json={"rules": list(rules)})
        assert resp.status_code == 200, resp.text
        return resp.json()["rules"]

    client.delete("/_emulator/faults")
    client.delete("/_emulator/stats")
    yield add
    client.delete("/_emulator/faults")


def rules(client: httpx.Client) -> list[dict]:
    return client.get("/_emulator/faults").json()["rules"]
