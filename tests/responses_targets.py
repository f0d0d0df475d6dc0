"""What the Responses API client tests talk to: modelmux (a real `modelmux run` in front of the emulator, as
tests/e2e.py starts it) — the default — or, with `--responses-via=recorder`, tests/responses_recorder.py standing
in for OpenAI, to prove the client drivers themselves work while modelmux does not serve /v1/responses yet.

Both look like an e2e.Proxy to the e2e helpers (`client_env`, `use_client_env`): in recorder mode the base URL
(reverse) kind reaches the recorder directly, and the HTTPS_PROXY kind goes through a plain mitmdump that decrypts
api.openai.com with its own CA and maps it onto the recorder — the same CA and proxy variables a client sets for
modelmux.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import procs
from e2e import Emulator, Proxy, emulator_and_proxy
from responses_recorder import Recorder

VIA = ("modelmux", "recorder")


@dataclass
class Target:
    via: str
    proxy: Proxy  # what e2e.client_env / use_client_env take
    emulator: Emulator | None = None  # modelmux only
    recorder: Recorder | None = None  # recorder only


@contextlib.contextmanager
def responses_target(via: str, tmp: Path):
    if via == "modelmux":
        with emulator_and_proxy(tmp) as (p, emu):
            yield Target(via, p, emulator=emu)
        return
    if via != "recorder":
        raise ValueError(f"--responses-via must be one of {VIA}")
    confdir = tmp / "mitm-confdir"
    with Recorder(ws_refusal="426", log_path=tmp / "recorder.jsonl") as rec:
        port = procs.free_port()
        mitm = procs.Proc([str(procs.VENV_BIN / "mitmdump"), "--listen-host", "127.0.0.1", "-p", str(port),
                           "--set", f"confdir={confdir}", "--set", "connection_strategy=lazy",
                           "--map-remote", f"|https://api.openai.com/|{rec.url}/"], procs.PROXY_READY, cwd=tmp)
        try:
            procs.wait_port(port)
            yield Target(via, Proxy(mitm, port, rec.server.server_address[1], confdir), recorder=rec)
        finally:
            mitm.stop()


def call(name: str, args: dict) -> str:
    """The prompt trigger that makes the fake model (the emulator's, and the recorder's) call tool `name` with
    exactly `args`."""
    return f"[[call:{name} {json.dumps(args)}]]"


def per_response(events: list[dict]) -> list[list[dict]]:
    """A run's raw events split into one stream per model call (each starts with response.created)."""
    streams: list[list[dict]] = []
    for event in events:
        if event["type"] == "response.created":
            streams.append([])
        assert streams, f"an event before response.created: {event['type']}"
        streams[-1].append(event)
    return streams
