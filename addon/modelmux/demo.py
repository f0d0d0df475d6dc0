"""`modelmux demo`: the whole path on this machine, no credentials needed.

Starts the emulator (with a fresh service-account key: real google-auth tokens) and `modelmux run` on free
loopback ports, sends a non-streamed and a streamed chat completion, a streamed Responses API request continued
with `previous_response_id`, and an embeddings request with the openai SDK through HTTPS_PROXY, and shows each step: the OpenAI request, the Vertex request, the Vertex answer (SSE events with their times) and
what the SDK received (chunks with their arrival times).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from .procs import EMULATOR_READY, PROXY_READY, Proc, free_port, wait_port

RULE = "─" * 100


def _section(title: str) -> None:
    print(f"\n{RULE}\n{title}\n{RULE}")


def _json(obj: Any, indent: int = 2) -> str:
    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    return textwrap.indent(text, "  ")


def _shorten(line: str, width: int = 150) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def _write_config(path: Path, emulator_url: str, key: Path) -> None:
    path.write_text(textwrap.dedent(f"""\
        vertex:
          project: modelmux-demo
          region: us-east5
          base_url: {emulator_url}        # the local emulator instead of https://us-east5-aiplatform.googleapis.com
        auth:
          credentials_file: {key}
        models:
          default: claude-sonnet-4-5@20250929
          map:
            gpt-4o: claude-sonnet-4-5@20250929
            gpt-4o-mini: claude-haiku-4-5@20251001
        intercept:
          hosts: [api.openai.com]
        """))


def _vertex_exchange(emulator_url: str) -> dict[str, Any]:
    import httpx

    with httpx.Client(trust_env=False, timeout=10) as http:
        return http.get(f"{emulator_url}/_emulator/requests").json()[-1]


def _show_vertex(entry: dict[str, Any]) -> None:
    _section(f"2. What modelmux sent to Vertex AI: POST {entry['path']}")
    shown = {k: v for k, v in entry["headers"].items() if k.lower() in ("authorization", "content-type", "accept")}
    print(_json(shown))
    print(_json(entry["body"]))
    response = entry.get("response") or {}
    if "events" in response:
        _section("3. What Vertex AI answered (Anthropic SSE events, ms after the request reached it)")
        for ev in response["events"]:
            print(_shorten(f"  {ev['t_ms']:8.1f} ms  {ev['event']:<20} {json.dumps(ev['data'], ensure_ascii=False)}"))
    elif "body" in response:
        _section(f"3. What Vertex AI answered (HTTP {entry['status']})")
        print(_json(response["body"]))


def run(pace_ms: float = 60.0) -> int:
    import openai

    with tempfile.TemporaryDirectory(prefix="modelmux-demo-") as tmp_name:
        tmp = Path(tmp_name)
        key = tmp / "service-account.json"
        emu = Proc([sys.executable, "-m", "modelmux.emulator", "--port", "0", "--pace-ms", str(pace_ms),
                    "--service-account-out", str(key)], EMULATOR_READY)
        proxy = None
        try:
            emulator_url = emu.match.group(1)
            config = tmp / "modelmux.yaml"
            _write_config(config, emulator_url, key)
            port = free_port()
            proxy = Proc([sys.executable, "-m", "modelmux.cli", "run", "--config", str(config),
                          "--listen-port", str(port), "--confdir", str(tmp / "confdir")], PROXY_READY)
            wait_port(port)
            ca = tmp / "confdir" / "mitmproxy-ca-cert.pem"
            print(f"emulator (Vertex AI + Google OAuth) at {emulator_url}; service-account key {key.name}")
            print(f"modelmux run listening on 127.0.0.1:{port}, ready {proxy.ready_after:.2f} s after start")
            print(f"client: openai-python {openai.__version__} with HTTPS_PROXY=http://127.0.0.1:{port} "
                  f"SSL_CERT_FILE={ca}")
            os.environ["HTTPS_PROXY"] = f"http://127.0.0.1:{port}"
            os.environ["SSL_CERT_FILE"] = str(ca)
            client = openai.OpenAI(api_key="sk-demo-not-a-real-key", max_retries=0, timeout=30)
            messages = [{"role": "system", "content": "You are a concise assistant."},
                        {"role": "user", "content": "Name three rivers in Europe, please"}]

            print(f"\n{'═' * 100}\nNON-STREAMED REQUEST\n{'═' * 100}")
            request = {"model": "gpt-4o", "messages": messages, "max_tokens": 64}
            _section("1. The app calls https://api.openai.com/v1/chat/completions with")
            print(_json(request))
            t0 = time.perf_counter()
            completion = client.chat.completions.create(**request)
            elapsed = (time.perf_counter() - t0) * 1000
            _show_vertex(_vertex_exchange(emulator_url))
            _section(f"4. What the app received ({elapsed:.1f} ms)")
            print(_json(completion.model_dump(exclude_none=True)))

            print(f"\n{'═' * 100}\nSTREAMED REQUEST (emulator paces events {pace_ms:g} ms apart)\n{'═' * 100}")
            request = {"model": "gpt-4o-mini", "messages": messages, "stream": True,
                       "stream_options": {"include_usage": True}}
            _section("1. The app calls https://api.openai.com/v1/chat/completions with")
            print(_json(request))
            arrivals: list[tuple[float, str]] = []
            t0 = time.perf_counter()
            for chunk in client.chat.completions.create(**request):
                arrivals.append(((time.perf_counter() - t0) * 1000,
                                 json.dumps(chunk.model_dump(exclude_none=True), ensure_ascii=False)))
            _show_vertex(_vertex_exchange(emulator_url))
            _section("4. What the app received (chunks, ms after it sent the request)")
            for t, line in arrivals:
                print(_shorten(f"  {t:8.1f} ms  {line}"))
            text = "".join(json.loads(line)["choices"][0]["delta"].get("content", "")
                           for _, line in arrivals if json.loads(line)["choices"])
            print(f"\n  assembled text: {text!r}")
            print(f"  first chunk after {arrivals[0][0]:.1f} ms, last after {arrivals[-1][0]:.1f} ms: "
                  f"streamed as it was generated")

            print(f"\n{'═' * 100}\nRESPONSES API, STREAMED (what Codex, the agents SDKs and the Vercel AI SDK call)"
                  f"\n{'═' * 100}")
            request = {"model": "gpt-4o", "instructions": "You are a concise assistant.",
                       "input": "Name a river in Spain", "stream": True}
            _section("1. The app calls https://api.openai.com/v1/responses with")
            print(_json(request))
            events: list[tuple[float, str]] = []
            t0 = time.perf_counter()
            for event in client.responses.create(**request):
                events.append(((time.perf_counter() - t0) * 1000,
                               json.dumps(event.model_dump(exclude_none=True), ensure_ascii=False)))
            _show_vertex(_vertex_exchange(emulator_url))
            _section("4. What the app received (Responses events, ms after it sent the request)")
            for t, line in events:
                print(_shorten(f"  {t:8.1f} ms  {line}"))
            first = json.loads(events[-1][1])["response"]["id"]
            follow = {"model": "gpt-4o", "previous_response_id": first, "input": "And one in Portugal?"}
            _section("5. The next turn sends only its new input, with previous_response_id")
            print(_json(follow))
            answer = client.responses.create(**follow)
            sent = _vertex_exchange(emulator_url)["body"]["messages"]
            print(f"  modelmux rebuilt the conversation from its store: {len(sent)} messages went to Vertex "
                  f"({', '.join(m['role'] for m in sent)})")
            print(f"  answer: {answer.output_text!r}")

            print(f"\n{'═' * 100}\nEMBEDDINGS (Vertex gemini-embedding-001)\n{'═' * 100}")
            result = client.embeddings.create(model="text-embedding-3-small", input=["Rhine", "Danube"])
            entry = _vertex_exchange(emulator_url)
            _section(f"2. What modelmux sent to Vertex AI: POST {entry['path']}")
            print(_json(entry["body"]))
            _section("4. What the app received")
            print(f"  {len(result.data)} vectors of {len(result.data[0].embedding)} floats "
                  f"(asked for base64 by the SDK, decoded by it), usage {result.usage.model_dump()}")
        finally:
            if proxy is not None:
                proxy.stop()
            emu.stop()
    return 0
