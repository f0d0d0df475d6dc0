"""The Vertex AI / Google OAuth emulator, run as a real subprocess and driven over HTTP with real google-auth."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import os
import socket
import subprocess
import sys
import time
import types
from typing import Any

import google.auth._exponential_backoff
import google.auth.crypt
import google.auth.exceptions
import google.auth.jwt
import google.oauth2.credentials
import httpx
import jsonschema
import pytest
from emulator_helpers import client, emu, faults, token  # noqa: F401  (fixtures)
from emulator_helpers import ADDON_DIR, DROP, MODEL, SCOPES, STATIC_TOKEN, Running, body, call, launch, rules, stop
from emulator_helpers import user
from google.oauth2 import service_account

from modelmux.auth import HttpxRequest
from modelmux.emulator import credentials, errors, handlers, model, schema_values, server

# --- OAuth token endpoint ------------------------------------------------------------------------------------

def test_service_account_refresh_gets_a_working_token(client, emu, token):
    assert token.startswith("ya29.emu-")
    assert call(client, emu, body(), token).status_code == 200


def _assertion(info: dict, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": info["client_email"], "aud": f"{info['token_uri']}", "iat": now, "exp": now + 3600,
               "scope": SCOPES[0], **claims}
    signer = google.auth.crypt.RSASigner.from_service_account_info(info)
    return google.auth.jwt.encode(signer, payload).decode()


def _jwt_grant(client: httpx.Client, assertion: str) -> httpx.Response:
    return client.post("/token", data={"grant_type": credentials.JWT_BEARER_GRANT, "assertion": assertion})


def _other_key_info(info: dict) -> dict:
    fresh = credentials.new_service_account("elsewhere", info["token_uri"])
    return {**info, "private_key": fresh["private_key"]}


def test_untrusted_key_is_rejected_by_google_auth(emu):
    info = json.loads(emu.service_account_path.read_text())
    creds = service_account.Credentials.from_service_account_info(_other_key_info(info), scopes=SCOPES)
    with pytest.raises(google.auth.exceptions.RefreshError, match="Invalid JWT Signature"):
        creds.refresh(HttpxRequest())


@pytest.mark.parametrize("case, description", [
    ("untrusted key", "Invalid JWT Signature."),
    ("unknown kid", "Invalid JWT Signature."),
    ("wrong audience", "Invalid JWT: Failed audience check. The right audience is https://oauth2.googleapis.com/token"),
    ("too long-lived", "Invalid JWT: Token must be a short-lived token"),
    ("expired", "Invalid JWT: Token must be a short-lived token"),
    ("issued in the future", "Invalid JWT: Token must be a short-lived token"),
    ("unknown issuer", "Invalid grant: account not found"),
])
def test_bad_assertions_are_rejected(client, emu, case, description):
    info = json.loads(emu.service_account_path.read_text())
    now = int(time.time())
    assertion = {
        "untrusted key": lambda: _assertion(_other_key_info(info)),
        "unknown kid": lambda: _assertion({**info, "private_key_id": "0" * 40}),
        "wrong audience": lambda: _assertion(info, aud="https://example.com/token"),
        "too long-lived": lambda: _assertion(info, exp=now + 7200),
        "expired": lambda: _assertion(info, iat=now - 4000, exp=now - 400),
        "issued in the future": lambda: _assertion(info, iat=now + 600, exp=now + 1200),
        "unknown issuer": lambda: _assertion(info, iss="someone@else.iam.gserviceaccount.com"),
    }[case]()
    resp = _jwt_grant(client, assertion)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"
    assert resp.json()["error_description"].startswith(description)


def test_assertion_without_scope_is_invalid_scope(client, emu):
    info = json.loads(emu.service_account_path.read_text())
    assertion = _assertion(info)
    claims = google.auth.jwt.decode(assertion, verify=False)
    del claims["scope"]
    signer = google.auth.crypt.RSASigner.from_service_account_info(info)
    resp = _jwt_grant(client, google.auth.jwt.encode(signer, claims).decode())
    assert (resp.status_code, resp.json()["error"]) == (400, "invalid_scope")


def test_token_with_another_scope_is_forbidden(client, emu):
    info = json.loads(emu.service_account_path.read_text())
    resp = _jwt_grant(client, _assertion(info, scope="https://www.googleapis.com/auth/userinfo.email"))
    other = resp.json()["access_token"]
    answer = call(client, emu, body(), other)
    assert answer.status_code == 403
    assert answer.json()["error"]["status"] == "PERMISSION_DENIED"


def test_authorized_user_refresh(emu, client):
    info = json.loads(emu.authorized_user_path.read_text())
    assert info["type"] == "authorized_user" and info["token_uri"] == f"{emu.url}/token"
    # from_authorized_user_info always uses Google's token_uri, so build the credentials with ours
    creds = google.oauth2.credentials.Credentials(
        None, refresh_token=info["refresh_token"], client_id=info["client_id"],
        client_secret=info["client_secret"], token_uri=info["token_uri"])
    creds.refresh(HttpxRequest())
    assert call(client, emu, body(), creds.token).status_code == 200

    bad = client.post("/token", data={"grant_type": "refresh_token", "client_id": info["client_id"],
                                      "client_secret": info["client_secret"], "refresh_token": "1//nope"})
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid_grant", "error_description": "Bad Request"})


def test_service_account_key_file_format(emu):
    info = json.loads(emu.service_account_path.read_text())
    assert info["type"] == "service_account"
    assert info["project_id"] == "modelmux-emulator"
    assert info["client_email"] == "modelmux@modelmux-emulator.iam.gserviceaccount.com"
    assert info["token_uri"] == f"{emu.url}/token"
    assert info["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert emu.service_account_path.stat().st_mode & 0o077 == 0


def test_expired_token_is_rejected(client, emu):
    client.post("/_emulator/settings", json={"token_ttl": 1})
    try:
        info = json.loads(emu.service_account_path.read_text())
        granted = _jwt_grant(client, _assertion(info)).json()
    finally:
        client.post("/_emulator/settings", json={"token_ttl": 3600})
    assert granted["expires_in"] == 1
    assert call(client, emu, body(), granted["access_token"]).status_code == 200
    time.sleep(1.1)
    assert call(client, emu, body(), granted["access_token"]).status_code == 401


# --- auth and routing on the model endpoints -----------------------------------------------------------------

GOOGLE_401 = {"error": {"code": 401, "message": errors.UNAUTHENTICATED_MESSAGE, "status": "UNAUTHENTICATED"}}


@pytest.mark.parametrize("bearer", [None, "ya29.forged", ""])
def test_missing_or_bad_token_is_401(client, emu, bearer):
    resp = call(client, emu, body(), bearer)
    assert resp.status_code == 401
    assert resp.json() == GOOGLE_401


def test_static_accepted_token(client, emu):
    assert call(client, emu, body(), STATIC_TOKEN).status_code == 200


def test_auth_is_checked_before_model_and_body(client, emu):
    assert call(client, emu, {"bad": 1}, None, model="claude-nope@1").status_code == 401


def test_unknown_model_is_404(client, emu, token):
    resp = call(client, emu, body(), token, model="claude-nope@20990101", location="europe-west1")
    assert resp.status_code == 404
    assert resp.json() == {"error": {"code": 404, "status": "NOT_FOUND", "message":
                                     "Publisher Model `projects/p1/locations/europe-west1/publishers/anthropic/"
                                     "models/claude-nope@20990101` not found."}}


def test_percent_encoded_model_id(client, emu, token):
    resp = call(client, emu, body(), token, model="claude-sonnet-4-5%4020250929")
    assert resp.status_code == 200
    assert resp.json()["model"] == "claude-sonnet-4-5-20250929"


def test_unknown_path_is_google_404(client):
    resp = client.get("/v1/nothing")
    assert resp.status_code == 404
    assert resp.json()["error"]["status"] == "NOT_FOUND"


# --- body rules ----------------------------------------------------------------------------------------------

def _tool_loop(call_id: str = "toolu_1", answer_id: str = "toolu_1", thinking: bool = False) -> list[dict]:
    first = [{"type": "thinking", "thinking": "hmm", "signature": "sig"}] if thinking else []
    return [user("weather?"),
            {"role": "assistant", "content": first + [{"type": "tool_use", "id": call_id, "name": "weather",
                                                       "input": {}}]},
            user([{"type": "tool_result", "tool_use_id": answer_id, "content": "sunny"}])]


IMAGE_B64 = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
LOOP_TOOLS = [{"name": "weather", "input_schema": {"type": "object"}}]  # what _tool_loop calls
THINKING = {"type": "enabled", "budget_tokens": 1024}

BODY_RULES: list[tuple[str, Any, str]] = [
    ("not an object", [], "Input should be a valid dictionary"),
    ("model key", body(model="claude"), "model: Extra inputs are not permitted"),
    ("unknown key", body(n=2), "n: Extra inputs are not permitted"),
    ("no version", body(anthropic_version=DROP), "anthropic_version: Field required"),
    ("bad version", body(anthropic_version="bedrock-2023-05-31"), "anthropic_version: Input should be"),
    ("2026 temperature", body(anthropic_version="2026-10-21", temperature=1), "temperature: Extra inputs"),
    ("2026 top_k", body(anthropic_version="2026-10-21", top_k=5), "top_k: Extra inputs"),
    ("no max_tokens", body(max_tokens=DROP), "max_tokens: Field required"),
    ("max_tokens 0", body(max_tokens=0), "max_tokens: Input should be greater than or equal to 1"),
    ("max_tokens string", body(max_tokens="5"), "max_tokens: Input should be a valid integer"),
    ("max_tokens over cap", body(max_tokens=64001),
     "max_tokens: 64001 > 64000, which is the maximum allowed number of output tokens for claude-sonnet-4-5-20250929"),
    ("no messages", body(messages=DROP), "messages: Field required"),
    ("empty messages", body(messages=[]), "messages: at least one message is required"),
    ("bad role", body(messages=[{"role": "system", "content": "x"}]), "messages.0.role: Input should be"),
    ("empty string", body(messages=[user("")]), "messages: text content blocks must be non-empty"),
    ("empty list", body(messages=[user([])]), "messages.0.content: List should have at least 1 item"),
    ("empty text block", body(messages=[user([{"type": "text", "text": ""}])]),
     "messages: text content blocks must be non-empty"),
    ("whitespace text", body(messages=[user([{"type": "text", "text": " \n"}])]),
     "messages: text content blocks must contain non-whitespace text"),
    ("unknown block", body(messages=[user([{"type": "audio"}])]), "messages.0.content.0: Input tag 'audio'"),
    ("image url", body(messages=[user([{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}])]),
     "messages.0.content.0.source: URL sources are not supported"),
    ("image media type",
     body(messages=[user([{"type": "image", "source": {**IMAGE_B64, "media_type": "image/bmp"}}])]),
     "messages.0.content.0.source.media_type"),
    ("document url", body(messages=[user([{"type": "document", "source": {"type": "url", "url": "https://x"}}])]),
     "messages.0.content.0.source: URL sources are not supported"),
    ("system empty block", body(system=[{"type": "text", "text": ""}]),
     "system: text content blocks must be non-empty"),
    ("system non-text", body(system=[{"type": "image", "source": IMAGE_B64}]), "system.0.type: Input should be 'text'"),
    ("temperature > 1", body(temperature=1.5), "temperature: Input should be less than or equal to 1"),
    ("temperature string", body(temperature="hot"), "temperature: Input should be a valid number"),
    ("top_p > 1", body(top_p=2), "top_p: Input should be less than or equal to 1"),
    ("temperature and top_p", body(temperature=0.5, top_p=0.9),
     "`temperature` and `top_p` cannot both be specified for this model. Please use only one."),
    ("stop_sequences string", body(stop_sequences="END"), "stop_sequences: Input should be a valid list"),
    ("whitespace stop", body(stop_sequences=["END", " \n"]), "stop_sequences: each stop sequence must contain"),
    ("user_id email", body(metadata={"user_id": "ann@example.com"}), "metadata.user_id:"),
    ("user_id phone", body(metadata={"user_id": "+1 (555) 123-4567"}), "metadata.user_id:"),
    ("tool name", body(tools=[{"name": "fs.read", "input_schema": {"type": "object"}}]),
     "tools.0.name: String should match pattern"),
    ("tool_use id", body(messages=_tool_loop("functions.search:0", "functions.search:0")),
     "messages.1.content.0.id: String should match pattern"),
    ("orphan tool_result", body(messages=[user("hi"), {"role": "assistant", "content": "hello"},
                                          user([{"type": "tool_result", "tool_use_id": "toolu_2"}])]),
     "messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_2"),
    ("unanswered tool_use", body(messages=_tool_loop()[:2] + [user("go on")]),
     "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1"),
    ("stream on rawPredict", body(stream=True), "stream:"),
    ("thinking budget", body(thinking={"type": "enabled", "budget_tokens": 500}),
     "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"),
    ("thinking over max_tokens", body(thinking=THINKING, max_tokens=1024), "`max_tokens` must be greater than"),
    ("thinking forced tool", body(thinking=THINKING, max_tokens=2000, tool_choice={"type": "any"}),
     "Thinking may not be enabled when tool_choice forces tool use."),
    ("tool blocks without tools", body(messages=_tool_loop()),
     "Requests which include `tool_use` or `tool_result` blocks must define tools."),
    ("thinking dropped in tool loop",
     body(thinking=THINKING, max_tokens=2000, messages=_tool_loop(), tools=LOOP_TOOLS),
     "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`"),
    ("forged thinking signature", body(messages=_tool_loop(thinking=True), tools=LOOP_TOOLS),
     "messages.1.content.0: Invalid `signature` in `thinking` block"),
    ("cache_control type", body(system=[{"type": "text", "text": "x", "cache_control": {"type": "forever"}}]),
     "system.0.cache_control.type: Input should be 'ephemeral'"),
    ("five cache breakpoints", body(system=[{"type": "text", "text": f"s{k}", "cache_control": {"type": "ephemeral"}}
                                            for k in range(5)]),
     "A maximum of 4 blocks with cache_control may be provided. Found 5."),
]


@pytest.mark.parametrize("payload, message", [(p, m) for _, p, m in BODY_RULES], ids=[n for n, _, _ in BODY_RULES])
def test_body_rule(client, emu, token, payload, message):
    resp = call(client, emu, payload, token)
    assert resp.status_code == 400, resp.text
    answer = resp.json()
    assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["message"].startswith(message), answer["error"]["message"]


def test_stream_flag_required_on_stream_endpoint(client, emu, token):
    resp = call(client, emu, body(), token, method="streamRawPredict")
    assert resp.status_code == 400 and resp.json()["error"]["message"].startswith("stream:")


@pytest.mark.parametrize("payload", [
    body(temperature=0.5, top_p=0.9),  # allowed together on an older model
    body(messages=_tool_loop(), tools=LOOP_TOOLS),
    body(thinking=THINKING, max_tokens=2000, tools=LOOP_TOOLS,  # redacted thinking is opaque: taken as is
         messages=[user("weather?"), {"role": "assistant", "content": [
             {"type": "redacted_thinking", "data": "opaque"},
             {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}]},
             user([{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}])]),
    body(messages=[user([{"type": "image", "source": IMAGE_B64}, {"type": "text", "text": "what is it"}])]),
    body(system="be brief", stop_sequences=["x"], metadata={"user_id": "3f2a9c"}, top_k=3,
         tools=[{"name": "weather", "input_schema": {"type": "object"}}], tool_choice={"type": "auto"}),
])
def test_valid_bodies_are_accepted(client, emu, token, payload):
    resp = call(client, emu, payload, token, model="claude-3-5-haiku@20241022")
    assert resp.status_code == 200, resp.text


def test_oversized_request_is_413(client, emu, token):
    huge = body(messages=[user("x" * handlers.MAX_BODY_BYTES)])
    resp = call(client, emu, huge, token)
    assert resp.status_code == 413
    assert resp.json()["error"]["type"] == "request_too_large"


# --- the emulator's own model table ------------------------------------------------------------------------

@pytest.mark.parametrize("model, cap", [
    ("claude-3-5-haiku@20241022", 8_192), ("claude-opus-4-1@20250805", 32_000),
    ("claude-haiku-4-5@20251001", 64_000), ("claude-sonnet-4-6", 64_000), ("claude-opus-4-6", 128_000),
    ("claude-sonnet-5", 128_000)])
def test_output_cap_per_model(client, emu, token, model, cap):
    assert call(client, emu, body(max_tokens=cap), token, model=model).status_code == 200
    over = call(client, emu, body(max_tokens=cap + 1), token, model=model)
    assert over.status_code == 400
    assert over.json()["error"]["message"] == (f"max_tokens: {cap + 1} > {cap}, which is the maximum allowed number "
                                               f"of output tokens for {model.replace('@', '-')}")


@pytest.mark.parametrize("model, exclusive", [
    ("claude-3-7-sonnet@20250219", False), ("claude-sonnet-4@20250514", False), ("claude-opus-4@20250514", False),
    ("claude-opus-4-1@20250805", True), ("claude-haiku-4-5@20251001", True), ("claude-opus-4-8", True)])
def test_temperature_with_top_p_per_model(client, emu, token, model, exclusive):
    resp = call(client, emu, body(temperature=0.5, top_p=0.9), token, model=model)
    assert resp.status_code == (400 if exclusive else 200), resp.text
    assert call(client, emu, body(temperature=0.5), token, model=model).status_code == 200


def test_emulator_imports_nothing_of_the_product():
    """An independent oracle: loading the whole emulator pulls in no other modelmux module (no shared tables)."""
    code = ("import sys, modelmux.emulator.server, modelmux.emulator.cli\n"
            "print(sorted(m for m in sys.modules\n"
            "             if m.split('.')[0] == 'modelmux' and m.split('.')[1:2] != ['emulator']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": str(ADDON_DIR)}, check=True).stdout
    assert out.strip() == "['modelmux']"  # the package itself (its __init__ holds only the version)


def test_modelmux_parser_does_not_load_the_emulator_server():
    code = ("import sys, modelmux.cli\n"
            "args = modelmux.cli.build_parser().parse_args(\n"
            "    ['emulator', '--port', '5', '--gemini-embedding-instances', '1'])\n"
            "print(args.port, args.gemini_embedding_instances)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('tornado', 'cryptography', 'modelmux.emulator.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": str(ADDON_DIR)}, check=True).stdout.splitlines()
    assert out == ["5 1", "['modelmux.emulator.cli', 'modelmux.emulator.jsontypes', 'modelmux.emulator.settings']"]


# --- replies -------------------------------------------------------------------------------------------------

def test_non_streamed_reply(client, emu, token):
    payload = body(system=[{"type": "text", "text": "Be brief."}],
                   messages=[user("first question"), {"role": "assistant", "content": "an answer"},
                             user([{"type": "text", "text": "hello"}, {"type": "text", "text": "big  world"}])])
    resp = call(client, emu, payload, token, model="claude-opus-4-5@20251101")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    answer = resp.json()
    assert re.fullmatch(r"msg_vrtx_[A-Za-z0-9]{24}", answer.pop("id"))
    assert answer == {
        "type": "message", "role": "assistant", "model": "claude-opus-4-5-20251101",
        "content": [{"type": "text", "text": "You said: hello big world"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 2 + 2 + 2 + 3, "output_tokens": 5,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}


def test_stop_sequence_cuts_before_it(client, emu, token):
    answer = call(client, emu, body(stop_sequences=["zzz", "there"]), token).json()
    assert answer["content"] == [{"type": "text", "text": "You said: hello "}]
    assert (answer["stop_reason"], answer["stop_sequence"]) == ("stop_sequence", "there")
    assert answer["usage"]["output_tokens"] == 3


def test_max_tokens_cuts_words(client, emu, token):
    answer = call(client, emu, body(max_tokens=3), token).json()
    assert answer["content"] == [{"type": "text", "text": "You said: hello "}]  # the first 3 deltas, unchanged
    assert (answer["stop_reason"], answer["stop_sequence"]) == ("max_tokens", None)
    assert answer["usage"]["output_tokens"] == 3


def _events(raw: str) -> list[tuple[str, dict]]:
    assert raw.endswith("\n\n")
    events = []
    for chunk in raw[:-2].split("\n\n"):
        name_line, data_line = chunk.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        events.append((name_line[7:], json.loads(data_line[6:])))
    return events


def test_streamed_framing(client, emu, token):
    resp = client.post(emu.model_url(method="streamRawPredict"), json=body(stream=True),
                       headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert "content-encoding" not in resp.headers
    events = _events(resp.text)
    names = [n for n, _ in events]
    assert names == ["message_start", "ping", "content_block_start"] + ["content_block_delta"] * 5 + [
        "content_block_stop", "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert re.fullmatch(r"msg_vrtx_[A-Za-z0-9]{24}", start["id"])
    assert (start["content"], start["stop_reason"], start["model"]) == ([], None, "claude-sonnet-4-5-20250929")
    assert start["usage"] == {"input_tokens": 3, "output_tokens": 1, "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": 0}
    assert events[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert [d["text"] for d in deltas] == ["You ", "said: ", "hello ", "there ", "world"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert events[-2][1] == {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": {"output_tokens": 5}}


def test_streamed_max_tokens(client, emu, token):
    resp = call(client, emu, body(stream=True, max_tokens=2), token, method="streamRawPredict")
    events = _events(resp.text)
    assert [d["delta"]["text"] for n, d in events if n == "content_block_delta"] == ["You ", "said: "]
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"


def test_pacing_spreads_events(client, emu, token):
    assert client.post("/_emulator/settings", json={"pace_ms": 100}).json()["pace_ms"] == 100
    try:
        arrivals = []
        with client.stream("POST", emu.model_url(method="streamRawPredict"), json=body(stream=True, max_tokens=1),
                           headers={"Authorization": f"Bearer {token}"}) as resp:
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    arrivals.append(time.monotonic())
    finally:
        client.post("/_emulator/settings", json={"pace_ms": 0})
    assert len(arrivals) == 7
    assert arrivals[-1] - arrivals[0] >= 0.3
    logged = client.get("/_emulator/requests").json()[-1]["response"]["events"]
    assert [e["event"] for e in logged][:2] == ["message_start", "ping"] and len(logged) == 7
    assert logged[-1]["t_ms"] - logged[0]["t_ms"] >= 300


def test_client_disconnect_mid_stream(client, emu, token):
    client.post("/_emulator/settings", json={"pace_ms": 50})
    try:
        with client.stream("POST", emu.model_url(method="streamRawPredict"), json=body(stream=True),
                           headers={"Authorization": f"Bearer {token}"}) as resp:
            next(resp.iter_raw())
        time.sleep(0.3)  # the emulator notices on its next write
    finally:
        client.post("/_emulator/settings", json={"pace_ms": 0})
    assert client.get("/_emulator/health").json() == {"ok": True}
    assert "Traceback" not in emu.stderr_path.read_text()


# --- the fake model: tools, thinking, prompt cache, faults ---------------------------------------------------

WEATHER = {"name": "weather", "description": "Weather at a place", "input_schema": {
    "type": "object", "required": ["city"], "properties": {
        "city": {"type": "string", "minLength": 12}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14}, "hourly": {"type": "boolean"}}}}
SEARCH = {"name": "search", "input_schema": {"type": "object", "properties": {
    "query": {"type": "string"}, "filters": {"$ref": "#/$defs/Filters"}},
    "$defs": {"Filters": {"type": "object", "properties": {"sites": {"type": "array", "items": {"type": "string"},
                                                                     "minItems": 2}}}}}}
PING = {"name": "ping", "input_schema": {"type": "object"}}
TOOLS = [WEATHER, SEARCH, PING]
SCHEMAS = {t["name"]: t["input_schema"] for t in TOOLS}
TOOL_ID = r"toolu_[A-Za-z0-9]{24}"


def _stream(client: httpx.Client, emu: Running, token: str, payload: dict) -> httpx.Response:
    return call(client, emu, {**payload, "stream": True}, token, method="streamRawPredict")


def _assemble(events: list[tuple[str, dict]]) -> dict:
    """The message a streaming client rebuilds from the events, the way the anthropic SDK does."""
    message: dict = {}
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "message_start":
            message = data["message"]
        elif name == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, delta = message["content"][data["index"]], data["delta"]
            if delta["type"] == "input_json_delta":
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
            else:
                key = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "signature"}[
                    delta["type"]]
                block[key] = block.get(key, "") + delta[key]
        elif name == "content_block_stop" and data["index"] in partial:
            message["content"][data["index"]]["input"] = json.loads(partial[data["index"]] or "{}")
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"]["output_tokens"] = data["usage"]["output_tokens"]
    return message


def _answer(client: httpx.Client, emu: Running, token: str, payload: dict, stream: bool) -> dict:
    """The message as the JSON answer carries it, or as rebuilt from the streamed answer."""
    resp = _stream(client, emu, token, payload) if stream else call(client, emu, payload, token)
    assert resp.status_code == 200, resp.text
    return _assemble(_events(resp.text)) if stream else resp.json()


def _comparable(message: dict) -> dict:
    """The message with its random ids blanked: two answers to one request then compare equal."""
    return json.loads(re.sub(r"\b(msg_vrtx|toolu)_[A-Za-z0-9]{24}\b", r"\1_ID", json.dumps(message)))


def _deltas(events: list[tuple[str, dict]], kind: str) -> list[dict]:
    return [d["delta"] for n, d in events if n == "content_block_delta" and d["delta"]["type"] == kind]


@pytest.mark.parametrize("schema, expected", [
    ({"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string"}, "count": {"type": "integer"}, "ratio": {"type": "number"},
        "ok": {"type": "boolean"}, "tags": {"type": "array", "items": {"type": "string"}},
        "at": {"type": "object", "properties": {"lat": {"type": "number"}}}, "nothing": {"type": "null"}}},
     {"city": "city-value", "count": 42, "ratio": 4.5, "ok": True, "tags": ["tags-value"], "at": {"lat": 4.5},
      "nothing": None}),
    ({"type": "object", "properties": {"unit": {"type": "string", "enum": ["c", "f"]}, "v": {"const": 3}}},
     {"unit": "c", "v": 3}),
    ({"type": "object", "properties": {
        "a": {"type": "integer", "minimum": 100}, "b": {"type": "integer", "maximum": 10},
        "c": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "d": {"type": "integer", "minimum": 1, "maximum": 5, "multipleOf": 2},
        "e": {"type": "integer", "minimum": 1, "maximum": 14}, "f": {"type": "number", "minimum": -3, "maximum": 0},
        "s": {"type": "string", "minLength": 12}, "t": {"type": "string", "maxLength": 3}}},
     {"a": 100, "b": 10, "c": 0.5, "d": 4, "e": 14, "f": 0, "s": "s-valuexxxxx", "t": "t-v"}),
    ({"type": "object", "properties": {
        "three": {"type": "array", "items": {"type": "integer"}, "minItems": 3},
        "none": {"type": "array", "maxItems": 0}, "pair": {"type": "array", "prefixItems": [
            {"type": "string"}, {"type": "boolean"}]}}},
     {"three": [42, 42, 42], "none": [], "pair": ["pair-value", True]}),
    ({"type": "object", "properties": {"p": {"$ref": "#/$defs/Point"}, "q": {"$ref": "#/definitions/Q"}},
      "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "integer"}}}},
      "definitions": {"Q": {"type": "string", "enum": ["q1"]}}},
     {"p": {"x": 42}, "q": "q1"}),
    ({"type": "object", "properties": {  # pydantic's Optional, a oneOf, an allOf around a $ref
        "a": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "b": {"oneOf": [{"type": "integer", "minimum": 50}, {"type": "string"}]},
        "c": {"allOf": [{"$ref": "#/$defs/C"}], "description": "a C"}},
      "$defs": {"C": {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]}}},
     {"a": "a-value", "b": 50, "c": {"on": True}}),
    ({"type": "object"}, {}),
    ({"type": "object", "properties": {"n": {"type": ["null", "integer"]}, "when": {"type": "string",
                                                                                   "format": "date-time"}}},
     {"n": 42, "when": "2025-01-01T12:00:00Z"}),
    ({"type": "object", "required": ["k"], "additionalProperties": {"type": "integer"}}, {"k": 42}),
    ({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object", "properties": {
        "n": {"type": "integer", "minimum": 42, "exclusiveMinimum": True}}}, {"n": 43}),
    ({"type": "object", "properties": {"tree": {"$ref": "#/$defs/Node"}}, "$defs": {"Node": {  # recursive
        "type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}}},
     None),
], ids=["every property", "enum const", "bounds", "arrays", "refs", "anyOf oneOf allOf", "no properties",
        "type list and format", "required only", "draft 4", "recursive"])
def test_value_for_schema(schema, expected):
    value = schema_values.value_for_schema(schema, schema)
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator(schema, format_checker=validator.FORMAT_CHECKER).validate(value)
    if expected is not None:
        assert value == expected


def test_generate_is_pure():
    payload = body(tools=TOOLS, thinking=THINKING, max_tokens=2000, messages=[user("weather and search")])
    once, twice = (model.generate(payload, b"secret", "msg_vrtx_fixed") for _ in range(2))
    assert once == twice
    assert once.blocks[2].final["id"] != once.blocks[3].final["id"]


@pytest.mark.parametrize("choice, said, names, intro", [
    (DROP, "search the web, then the weather", ["search", "weather"], "I will call search, weather."),
    ({"type": "auto"}, "ping and weather", ["ping", "weather"], "I will call ping, weather."),
    ({"type": "auto", "disable_parallel_tool_use": True}, "search, weather", ["search"], "I will call search."),
    ({"type": "auto"}, "hello there", [], None),
    ({"type": "any"}, "the weather or a search", ["weather"], None),
    ({"type": "any"}, "hello there", ["weather"], None),
    ({"type": "tool", "name": "ping"}, "weather?", ["ping"], None),
    ({"type": "none"}, "weather?", [], None),
], ids=["absent", "auto", "auto not parallel", "auto no names", "any named", "any unnamed", "tool", "none"])
def test_tool_choice(client, emu, token, choice, said, names, intro):
    answer = call(client, emu, body(tools=TOOLS, tool_choice=choice, messages=[user(said)]), token).json()
    uses = [b for b in answer["content"] if b["type"] == "tool_use"]
    texts = [b["text"] for b in answer["content"] if b["type"] == "text"]
    assert [u["name"] for u in uses] == names
    if names:
        assert answer["stop_reason"] == "tool_use"
        assert texts == ([intro] if intro else [])
        assert answer["content"][-len(uses):] == uses  # text first, then the calls
    else:
        assert (answer["stop_reason"], texts) == ("end_turn", [f"You said: {said}"])
    for use in uses:
        assert re.fullmatch(TOOL_ID, use["id"])
        jsonschema.validate(use["input"], SCHEMAS[use["name"]])
    assert len({u["id"] for u in uses}) == len(uses)


def test_tool_inputs_fill_every_property(client, emu, token):
    answer = call(client, emu, body(tools=TOOLS, messages=[user("weather, search")]), token).json()
    inputs = {b["name"]: b["input"] for b in answer["content"] if b["type"] == "tool_use"}
    assert inputs == {"weather": {"city": "city-valuexx", "unit": "celsius", "days": 14, "hourly": True},
                      "search": {"query": "query-value", "filters": {"sites": ["sites-value", "sites-value"]}}}


STREAM_CASES = {
    "text": body(),
    "tools": body(tools=TOOLS, messages=[user("search and ping and weather")]),
    "thinking and tools": body(tools=TOOLS, thinking=THINKING, max_tokens=2000, messages=[user("weather please")]),
    "forced tool": body(tools=TOOLS, tool_choice={"type": "tool", "name": "search"}),
    "tool results": body(messages=_tool_loop(), tools=LOOP_TOOLS),
    "unicode": body(messages=[user("[[unicode]] please")]),
    "forced after results": body(tools=TOOLS, tool_choice={"type": "any"}, messages=_tool_loop()),
    "call triggers": body(tools=TOOLS, messages=[user('[[call:search {"query": "a \\"quoted\\" ]] é"}]] and '
                                                      '[[call:ping]]')]),
}


@pytest.mark.parametrize("payload", STREAM_CASES.values(), ids=STREAM_CASES.keys())
def test_streamed_answer_rebuilds_the_json_answer(client, emu, token, payload):
    events = _events(_stream(client, emu, token, payload).text)
    answer = call(client, emu, payload, token).json()
    assert _comparable(_assemble(events)) == _comparable(answer)
    counted = [d for n, d in events if n == "content_block_delta" and d["delta"]["type"] != "signature_delta"]
    assert answer["usage"]["output_tokens"] == len(counted)  # one token per delta, the signature aside


def test_streamed_tool_calls(client, emu, token):
    events = _events(_stream(client, emu, token, STREAM_CASES["tools"]).text)
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts[0] == {"type": "text", "text": ""}
    assert [(s["type"], s["name"], s["input"]) for s in starts[1:]] == [
        ("tool_use", "search", {}), ("tool_use", "ping", {}), ("tool_use", "weather", {})]
    assert all(re.fullmatch(TOOL_ID, s["id"]) and set(s) == {"type", "id", "name", "input"} for s in starts[1:])
    by_block: dict[int, list[str]] = {}
    for name, data in events:
        if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta":
            by_block.setdefault(data["index"], []).append(data["delta"]["partial_json"])
    search, ping, weather = by_block[1], by_block[2], by_block[3]
    assert ping == [""]  # no arguments: one empty fragment, as the real API sends
    for fragments in (search, weather):
        assert len(fragments) > 3 and all(0 < len(f) <= 7 for f in fragments)
        assert any(f.count('"') % 2 for f in fragments)  # cut inside strings too
    jsonschema.validate(json.loads("".join(weather)), WEATHER["input_schema"])
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_tool_results_are_echoed(client, emu, token):
    uses = [{"type": "tool_use", "id": f"toolu_{k}", "name": "weather", "input": {}} for k in range(3)]
    results = [{"type": "tool_result", "tool_use_id": "toolu_0", "content": "sunny"},
               {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True, "content": "no such city"},
               {"type": "tool_result", "tool_use_id": "toolu_2", "content": [
                   {"type": "text", "text": "a map"}, {"type": "image", "source": IMAGE_B64}]}]
    payload = body(tools=TOOLS, messages=[user("weather x3"), {"role": "assistant", "content": uses},
                                          user(results)])
    for stream in (False, True):
        answer = _answer(client, emu, token, payload, stream)
        assert answer["content"] == [{"type": "text", "text": "Tool results: sunny | error: no such city | a map "
                                                              "[image]"}]
        assert answer["stop_reason"] == "end_turn"


def _loop(*turns: tuple[str, list[dict]]) -> list[dict]:
    """A conversation: the user's ask, then for each turn the tools the assistant called and their results."""
    messages = [user(turns[0][0])]
    for k, (_, called) in enumerate(turns):
        uses = [{"type": "tool_use", "id": f"toolu_{k}_{j}", "name": tool["name"], "input": {}}
                for j, tool in enumerate(called)]
        messages += [{"role": "assistant", "content": uses},
                     user([{"type": "tool_result", "tool_use_id": u["id"], "content": "done"} for u in uses])]
    return messages


@pytest.mark.parametrize("choice, history, called", [
    ({"type": "any"}, [("weather?", [WEATHER])], "search"),  # the first tool not called since the user's text
    ({"type": "any"}, [("go", [WEATHER]), ("", [SEARCH])], "ping"),
    ({"type": "any"}, [("go", [WEATHER, SEARCH]), ("", [PING])], "weather"),  # all called: the first one
    ({"type": "any", "disable_parallel_tool_use": True}, [("go", [SEARCH])], "weather"),
    ({"type": "tool", "name": "weather"}, [("weather?", [WEATHER])], "weather"),  # forced: the same tool again
], ids=["any", "any, two called", "any, all called", "any, not parallel", "tool"])
def test_forced_tool_choice_calls_a_tool_after_tool_results(client, emu, token, choice, history, called):
    payload = body(tools=TOOLS, tool_choice=choice, messages=_loop(*history))
    for stream in (False, True):
        answer = _answer(client, emu, token, payload, stream)
        assert answer["stop_reason"] == "tool_use"
        [use] = answer["content"]  # no text before a forced call, as Claude
        assert use["type"] == "tool_use" and use["name"] == called
        jsonschema.validate(use["input"], SCHEMAS[called])


def test_tools_called_before_the_users_last_text_count_again(client, emu, token):
    messages = _loop(("go", [WEATHER])) + [{"role": "assistant", "content": "Done."}, user("and again")]
    answer = call(client, emu, body(tools=TOOLS, tool_choice={"type": "any"}, messages=messages), token).json()
    assert [b["name"] for b in answer["content"]] == ["weather"]  # a new ask: as without tool results
    results_and_text = _loop(("go", [WEATHER]))
    results_and_text[-1]["content"].append({"type": "text", "text": "now the search"})
    answer = call(client, emu, body(tools=TOOLS, tool_choice={"type": "any"}, messages=results_and_text),
                  token).json()
    assert [b["name"] for b in answer["content"]] == ["search"]  # named in the turn's own text


def test_forced_tool_loop_ends_on_the_tool_not_yet_called(client, emu, token):
    """An agent that must call a tool each turn and stops at its final-answer tool (pydantic-ai's output tool,
    LangChain's structured output) ends in two turns, not at its step limit."""
    lookup = {"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
    final = {"name": "final_answer", "input_schema": {"type": "object", "required": ["answer"],
                                                      "properties": {"answer": {"type": "string"}}}}
    messages = [user("look it up, then answer")]
    for step in range(1, 6):
        answer = call(client, emu, body(tools=[lookup, final], tool_choice={"type": "any"}, messages=messages),
                      token).json()
        [use] = answer["content"]
        if use["name"] == "final_answer":
            break
        messages += [{"role": "assistant", "content": answer["content"]},
                     user([{"type": "tool_result", "tool_use_id": use["id"], "content": "42"}])]
    assert (step, use["input"]) == (2, {"answer": "answer-value"})


def test_auto_after_tool_results_still_answers_in_text(client, emu, token):
    answer = call(client, emu, body(tools=TOOLS, tool_choice={"type": "auto"}, messages=_loop(("ping", [PING]))),
                  token).json()
    assert (answer["content"], answer["stop_reason"]) == ([{"type": "text", "text": "Tool results: done"}], "end_turn")


SHELL = {"name": "shell", "input_schema": {"type": "object", "required": ["command"], "properties": {
    "command": {"type": "array", "items": {"type": "string"}}, "workdir": {"type": "string"}}}}
APPLY_PATCH = {"name": "apply_patch", "input_schema": {"type": "object", "required": ["input"],
                                                       "properties": {"input": {"type": "string"}}}}
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+say \"hi\" ]] [[call:shell]]\n*** End Patch\n"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "streamed"])
def test_call_trigger_dictates_the_input(client, emu, token, stream):
    text = (f'please [[call:shell {{"command": ["echo", "hi"]}}]] then '
            f'[[call:apply_patch\n{json.dumps({"input": PATCH})} ]]')  # whitespace around the JSON
    answer = _answer(client, emu, token, body(tools=[SHELL, APPLY_PATCH], messages=[user(text)]), stream)
    intro, shell, patch = answer["content"]
    assert intro == {"type": "text", "text": "I will call shell, apply_patch."}
    assert (shell["name"], shell["input"]) == ("shell", {"command": ["echo", "hi"]})
    assert (patch["name"], patch["input"]) == ("apply_patch", {"input": PATCH})  # `]]` and a trigger inside: data
    assert re.fullmatch(TOOL_ID, shell["id"]) and shell["id"] != patch["id"]
    assert answer["stop_reason"] == "tool_use"


def test_call_trigger_input_is_not_checked_against_the_schema(client, emu, token):
    answer = call(client, emu, body(tools=[SHELL], tool_choice={"type": "any"},
                                    messages=[user('[[call:shell {"cmd": 1}]]')]), token).json()
    assert answer["content"] == [{"type": "tool_use", "id": answer["content"][0]["id"], "name": "shell",
                                  "input": {"cmd": 1}}]  # forced: no text first
    bare = call(client, emu, body(tools=[SHELL], messages=[user("[[call:shell]]")]), token).json()
    assert bare["content"][1]["input"] == {"command": ["command-value"], "workdir": "workdir-value"}


def test_call_trigger_loop_ends_after_the_tool_result(client, emu, token):
    """Codex's loop: the trigger calls the tool, its result comes back (the trigger is no longer in the latest
    user text) and the model answers; a later user turn with a trigger calls again."""
    ask = user('run it [[call:shell {"command": ["echo", "hi"]}]]')
    first = call(client, emu, body(tools=[SHELL], messages=[ask]), token).json()
    use = first["content"][-1]
    result = user([{"type": "tool_result", "tool_use_id": use["id"], "content": "hi\n"}])
    history = [ask, {"role": "assistant", "content": first["content"]}, result]
    second = call(client, emu, body(tools=[SHELL], messages=history), token).json()
    assert (second["content"], second["stop_reason"]) == ([{"type": "text", "text": "Tool results: hi\n"}],
                                                          "end_turn")
    later = history + [{"role": "assistant", "content": second["content"]},
                       user('[[call:shell {"command": ["ls"]}]]')]
    third = call(client, emu, body(tools=[SHELL], messages=later), token).json()
    assert third["content"][-1]["input"] == {"command": ["ls"]}


def test_call_trigger_only_in_the_latest_user_text(client, emu, token):
    """After a compaction the client keeps the user's message and a summary follows it in the same turn: the
    trigger (and the tool it names) is no longer in the latest text, so the call is not made again."""
    ask = 'run it [[call:shell {"command": ["echo", "hi"]}]]'
    kept = body(tools=[SHELL], messages=[user([{"type": "text", "text": ask},
                                               {"type": "text", "text": "Summary: the command ran."}])])
    answer = call(client, emu, kept, token).json()
    assert answer["content"] == [{"type": "text", "text": f"You said: {ask} Summary: the command ran."}]
    named = body(tools=[SHELL], messages=[user([{"type": "text", "text": "use shell"},
                                                {"type": "text", "text": "then stop"}])])
    assert call(client, emu, named, token).json()["stop_reason"] == "end_turn"
    latest = body(tools=[SHELL], messages=[user([{"type": "text", "text": "context"}, {"type": "text", "text": ask}])])
    assert call(client, emu, latest, token).json()["content"][-1]["input"] == {"command": ["echo", "hi"]}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "streamed"])
def test_a_request_to_summarise_the_conversation_gets_a_summary(client, emu, token, stream):
    """A client compacting its history asks for a summary of the conversation (under tool_choice none, with its
    tools still listed): the fake model answers one, with the tool results and no trigger left in it."""
    ask = user('run it [[call:shell {"command": ["echo", "hi"]}]]')
    first = call(client, emu, body(tools=[SHELL], messages=[ask]), token).json()
    use = first["content"][-1]
    history = [ask, {"role": "assistant", "content": first["content"]},
               user([{"type": "tool_result", "tool_use_id": use["id"], "content": "hi [[call:shell]]"},
                     {"type": "text", "text": "Write a summary of the conversation above."}])]
    answer = _answer(client, emu, token, body(tools=[SHELL], tool_choice={"type": "none"}, messages=history), stream)
    assert answer["content"] == [{"type": "text", "text": "Summary: 1 user message(s), 1 tool call(s); tool results: "
                                                          "hi [call:shell]]."}]
    assert answer["stop_reason"] == "end_turn"
    plain = call(client, emu, body(messages=[user("Summarize this conversation, please.")]), token).json()
    assert plain["content"][0]["text"] == "Summary: 0 user message(s), 0 tool call(s)."
    other = call(client, emu, body(messages=[user("a summary of the news")]), token).json()
    assert other["content"][0]["text"].startswith("You said:")


def test_call_trigger_in_a_tool_result_is_data(client, emu, token):
    loop = _loop(("go", [SHELL]))
    loop[-1]["content"][0]["content"] = '[[call:shell {"command": ["again"]}]]'
    answer = call(client, emu, body(tools=[SHELL], messages=loop), token).json()
    assert answer["content"] == [{"type": "text", "text": 'Tool results: [[call:shell {"command": ["again"]}]]'}]


def test_pause_wins_over_a_call_trigger(client, emu, token):
    answer = call(client, emu, body(tools=[SHELL], messages=[user("[[call:shell]] [[pause]]")]), token).json()
    assert (answer["content"][0]["type"], answer["stop_reason"]) == ("text", "pause_turn")


@pytest.mark.parametrize("said, changes, problem", [
    ("[[call:nope]]", {}, "emulator trigger [[call:nope]]: the request has no tool 'nope' (its tools: shell)"),
    ("[[call:shell]]", {"tools": DROP}, "emulator trigger [[call:shell]]: the request has no tool 'shell' "
                                        "(its tools: none)"),
    ('[[call:shell {"command": [}]]', {}, "emulator trigger [[call:shell …]]: the input is not JSON"),
    ("[[call:shell [1] ]]", {}, "emulator trigger [[call:shell …]]: the input must be a JSON object, not list"),
    ('[[call:shell {"a": 1} x]]', {}, "emulator trigger [[call:shell …]]: expected `]]` after the JSON input"),
    ('[[call:shell{"a": 1}]]', {}, "emulator trigger [[call:shell: expected `]]`, or a space and a JSON object"),
    ("[[call:shell]]", {"tool_choice": {"type": "none"}}, "emulator trigger [[call:shell]]: tool_choice none"),
    ("[[call:shell]]", {"tools": [SHELL, PING], "tool_choice": {"type": "tool", "name": "ping"}},
     "emulator trigger [[call:shell]]: tool_choice forces tool 'ping'"),
    ("[[call:shell]] [[call:shell]]", {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
     "emulator trigger: 2 [[call:…]] triggers, but disable_parallel_tool_use allows one call"),
], ids=["unknown tool", "no tools", "bad JSON", "not an object", "no closing", "no space", "choice none",
        "choice another tool", "not parallel"])
def test_bad_call_trigger_is_400(client, emu, token, said, changes, problem):
    payload = body(**{"tools": [SHELL], **changes, "messages": [user(said)]})
    for stream in (False, True):
        resp = _stream(client, emu, token, payload) if stream else call(client, emu, payload, token)
        assert resp.status_code == 400
        error = resp.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"].startswith(problem), error


def test_thinking_round_trip(client, emu, token):
    ask = user("what is the weather in Paris")
    first = call(client, emu, body(tools=TOOLS, thinking=THINKING, max_tokens=2000, messages=[ask]), token).json()
    thinking, intro, use = first["content"]
    assert thinking["thinking"] == "Thinking about: what is the weather in Paris"
    assert len(base64.b64decode(thinking["signature"], validate=True)) == 32
    assert (intro["text"], use["name"], first["stop_reason"]) == ("I will call weather.", "weather", "tool_use")

    def follow_up(kept: dict) -> httpx.Response:
        turn = {"role": "assistant", "content": [kept, intro, use]}
        result = user([{"type": "tool_result", "tool_use_id": use["id"], "content": "18C"}])
        return call(client, emu, body(tools=TOOLS, thinking=THINKING, max_tokens=2000,
                                      messages=[ask, turn, result]), token)

    second = follow_up(thinking)
    assert second.status_code == 200, second.text
    assert [b.get("thinking") or b.get("text") for b in second.json()["content"]] == [
        "Thinking about: the tool results", "Tool results: 18C"]
    forged = follow_up({**thinking, "thinking": thinking["thinking"] + "!"})
    assert forged.status_code == 400
    assert forged.json()["error"] == {"type": "invalid_request_error",
                                      "message": "messages.1.content.0: Invalid `signature` in `thinking` block"}


def test_streamed_thinking_block(client, emu, token):
    events = _events(_stream(client, emu, token, body(thinking=THINKING, max_tokens=2000)).text)
    assert events[2][1]["content_block"] == {"type": "thinking", "thinking": ""}
    block = [d["delta"] for n, d in events if n == "content_block_delta" and d["index"] == 0]
    assert [d["type"] for d in block] == ["thinking_delta"] * 5 + ["signature_delta"]
    assert "".join(d.get("thinking", "") for d in block) == "Thinking about: hello there world"
    assert events[3 + len(block)] == ("content_block_stop", {"type": "content_block_stop", "index": 0})


def test_max_tokens_cuts_tool_json_and_thinking(client, emu, token):
    forced = body(tools=TOOLS, tool_choice={"type": "tool", "name": "weather"}, max_tokens=3)
    answer = call(client, emu, forced, token).json()
    assert (answer["stop_reason"], answer["usage"]["output_tokens"]) == ("max_tokens", 3)
    assert [(b["type"], b["input"]) for b in answer["content"]] == [("tool_use", {})]  # cut JSON does not parse
    events = _events(_stream(client, emu, token, forced).text)
    assert "".join(d["partial_json"] for d in _deltas(events, "input_json_delta")) == '{"city": "city'
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"

    long_ask = user(" ".join(f"w{k}" for k in range(1100)))  # thinking longer than max_tokens
    answer = call(client, emu, body(thinking=THINKING, max_tokens=1025, messages=[long_ask]), token).json()
    [thought] = answer["content"]
    assert (answer["stop_reason"], len(thought["thinking"].split())) == ("max_tokens", 1025)
    again = body(messages=[long_ask, {"role": "assistant", "content": [thought]}, user("go on")])
    assert call(client, emu, again, token).status_code == 200  # the cut thought is signed as sent


def test_prompt_cache_creation_then_read(client, emu, token):
    rules = {"type": "text", "text": f"Stable rules number {time.time_ns()}", "cache_control": {"type": "ephemeral"}}
    payload = body(system=[rules, {"type": "text", "text": "not cached"}], tools=[{**PING, "cache_control": {
        "type": "ephemeral"}}])
    first = call(client, emu, payload, token).json()["usage"]
    assert first == {"input_tokens": 2 + 3, "output_tokens": 5, "cache_creation_input_tokens": 4,
                     "cache_read_input_tokens": 0}
    events = _events(_stream(client, emu, token, {**payload, "messages": [user("another question")]}).text)
    assert events[0][1]["message"]["usage"] == {"input_tokens": 2 + 2, "output_tokens": 1,
                                                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4}
    changed = {**payload, "system": [{**rules, "text": rules["text"] + "!"}]}
    assert call(client, emu, changed, token).json()["usage"]["cache_creation_input_tokens"] == 4
    on_message = body(messages=[user([{"type": "text", "text": f"long doc {time.time_ns()}",
                                        "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "q?"}])])
    usages = [call(client, emu, on_message, token).json()["usage"] for _ in range(2)]
    assert [(u["cache_creation_input_tokens"], u["cache_read_input_tokens"], u["input_tokens"]) for u in usages] == [
        (3, 0, 1), (0, 3, 1)]


def test_prompt_cache_is_bounded():
    cache = model.PromptCache(size=2)
    assert [cache.use((key, 5)) for key in "abca"] == [model.CacheUse(created=5)] * 4  # a was forgotten
    assert cache.use(("a", 5)) == model.CacheUse(read=5)
    assert cache.use(None) == model.CacheUse()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "streamed"])
def test_refusal_pause_and_unicode_triggers(client, emu, token, stream):
    refused = _answer(client, emu, token, body(messages=[user("do it [[refusal]]")]), stream)
    assert (refused["content"], refused["stop_reason"]) == ([{"type": "text", "text": "I can't help with that."}],
                                                            "refusal")
    paused = _answer(client, emu, token, body(tools=TOOLS, messages=[user("weather [[pause]]")]), stream)
    assert (paused["content"], paused["stop_reason"]) == ([{"type": "text", "text": "You said: weather [[pause]]"}],
                                                          "pause_turn")
    payload = body(messages=[user("[[unicode]] hi")])
    resp = _stream(client, emu, token, payload) if stream else call(client, emu, payload, token)
    assert "世界".encode() in resp.content  # raw UTF-8, not \u escapes
    assert _answer(client, emu, token, payload, stream)["content"][0]["text"] == (
        "You said: [[unicode]] hi héllo 世界 🎉 ünïcödé")


def test_streamed_frames_are_split_inside_a_character():
    assert handlers.split_inside_character("data: é!".encode()) == [b"data: \xc3", b"\xa9!"]
    assert handlers.split_inside_character(b"data: plain") == [b"data: plain"]


def test_vertex_event_trigger(client, emu, token):
    payload = body(messages=[user("[[vertex-event]] hi")])
    events = _events(_stream(client, emu, token, payload).text)
    names = [n for n, _ in events]
    at = names.index("vertex_event")
    assert events[at][1] == {"type": "vertex_event", "foo": 1}
    assert names[at - 1] == names[at + 1] == "content_block_delta" and names[-1] == "message_stop"
    assert call(client, emu, payload, token).json()["content"][0]["text"] == "You said: [[vertex-event]] hi"


def test_stream_error_trigger(client, emu, token):
    payload = body(messages=[user("[[stream-error:overloaded]] go")])
    resp = _stream(client, emu, token, payload)
    events = _events(resp.text)
    assert resp.status_code == 200
    assert [n for n, _ in events] == ["message_start", "ping", "content_block_start", "content_block_delta",
                                      "content_block_delta", "error"]
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert events[-1][1] == overloaded
    resp = call(client, emu, payload, token)
    assert (resp.status_code, resp.json()) == (529, overloaded)


def test_cut_trigger(client, emu, token):
    payload = body(messages=[user("[[cut]] go")])
    events = _events(_stream(client, emu, token, payload).text)  # the body ends, complete, before message_stop
    assert [n for n, _ in events] == ["message_start", "ping", "content_block_start", "content_block_delta",
                                      "content_block_delta"]
    answer = call(client, emu, payload, token).json()
    assert (answer["content"][0]["text"], answer["stop_reason"]) == ("You said: [[cut]] go", "end_turn")


@pytest.mark.parametrize("code, status", [(429, "RESOURCE_EXHAUSTED"), (500, "INTERNAL"), (503, "UNAVAILABLE"),
                                          (403, "PERMISSION_DENIED"), (404, "NOT_FOUND"),
                                          (400, "INVALID_ARGUMENT")])
def test_status_trigger(client, emu, token, code, status):
    error = {"error": {"code": code, "message": f"Injected error {code}", "status": status}}
    for stream in (False, True):
        payload = body(messages=[user(f"please [[status:{code}]]")])
        resp = _stream(client, emu, token, payload) if stream else call(client, emu, payload, token)
        assert resp.status_code == code
        assert resp.json() == ([error] if code == 429 else error)
        assert "retry-after" not in resp.headers


def test_triggers_in_tool_results(client, emu, token):
    loop = _tool_loop()
    loop[-1]["content"][0]["content"] = "[[status:503]]"
    assert call(client, emu, body(messages=loop, tools=LOOP_TOOLS), token).status_code == 503


# --- token counting ----------------------------------------------------------------------------------------

def count_url(emu: Running, location: str = "us-east5", colon: str = ":") -> str:
    return f"{emu.url}/v1/projects/p1/locations/{location}/publishers/anthropic/models/count-tokens{colon}rawPredict"


def count_body(**changes: Any) -> dict:
    """A valid count-tokens body (Anthropic's count_tokens, with `model`); a change to DROP removes the key."""
    merged = {"anthropic_version": "vertex-2023-10-16", "model": MODEL,
              "messages": [user("hello there world")], **changes}
    return {k: v for k, v in merged.items() if v is not DROP}


def count(client: httpx.Client, emu: Running, payload: Any, token: str | None = STATIC_TOKEN,
          **url: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(count_url(emu, **url), content=json.dumps(payload), headers=headers)


COUNTED = {
    "text": {},
    "system and tools": {"system": [{"type": "text", "text": "Be very brief."}], "tools": TOOLS,
                         "tool_choice": {"type": "auto"}},
    "tool loop": {"messages": _tool_loop(), "system": "two words", "tools": LOOP_TOOLS},
    "thinking loop": {"thinking": THINKING, "tools": LOOP_TOOLS, "messages": [
        user("weather?"), {"role": "assistant", "content": [
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
        user([{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C sun"}]}])]},
    "cache marks": {"system": [{"type": "text", "text": f"cached rules {time.time_ns()}",
                                "cache_control": {"type": "ephemeral"}}]},
}


@pytest.mark.parametrize("changes", COUNTED.values(), ids=COUNTED.keys())
def test_count_tokens_counts_as_usage_does(client, emu, token, changes):
    resp = count(client, emu, count_body(**changes), token)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    counted = resp.json()
    thinking = {"max_tokens": 2000} if "thinking" in changes else {}
    generated = call(client, emu, body(**{k: v for k, v in changes.items()}, **thinking), token).json()["usage"]
    total = (generated["input_tokens"] + generated["cache_creation_input_tokens"]
             + generated["cache_read_input_tokens"])
    assert counted == {"input_tokens": total} and total > 0


@pytest.mark.parametrize("model", ["claude-sonnet-4-5-20250929", "claude-opus-4-6", "claude-3-5-haiku@20241022"])
def test_count_tokens_takes_vertex_and_first_party_ids(client, emu, model):
    assert count(client, emu, count_body(model=model)).json() == {"input_tokens": 3}


def test_count_tokens_percent_encoded_colon(client, emu):
    resp = client.post(count_url(emu, colon="%3A"), json=count_body(),
                       headers={"Authorization": f"Bearer {STATIC_TOKEN}"})
    assert resp.json() == {"input_tokens": 3}


COUNT_RULES: list[tuple[str, Any, str]] = [
    ("not an object", [], "Input should be a valid dictionary"),
    ("max_tokens", count_body(max_tokens=100), "max_tokens: Extra inputs are not permitted"),
    ("stream", count_body(stream=True), "stream: Extra inputs are not permitted"),
    ("temperature", count_body(temperature=0.5), "temperature: Extra inputs are not permitted"),
    ("no model", count_body(model=DROP), "model: Field required"),
    ("model not a string", count_body(model=5), "model: Input should be a valid string"),
    ("no version", count_body(anthropic_version=DROP), "anthropic_version: Field required"),
    ("no messages", count_body(messages=DROP), "messages: Field required"),
    ("empty text", count_body(messages=[user("")]), "messages: text content blocks must be non-empty"),
    ("orphan tool_result", count_body(messages=[user([{"type": "tool_result", "tool_use_id": "toolu_9"}])]),
     "messages.0.content.0: unexpected `tool_use_id`"),
    ("image url", count_body(messages=[user([{"type": "image", "source": {"type": "url", "url": "https://x"}}])]),
     "messages.0.content.0.source: URL sources are not supported"),
    ("tool name", count_body(tools=[{"name": "a.b", "input_schema": {}}]), "tools.0.name: String should match"),
    ("thinking budget", count_body(thinking={"type": "enabled", "budget_tokens": 10}),
     "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"),
    ("thinking forced tool", count_body(thinking=THINKING, tools=TOOLS, tool_choice={"type": "any"}),
     "Thinking may not be enabled when tool_choice forces tool use."),
    ("system block", count_body(system=[{"type": "text", "text": " "}]), "system: text content blocks must contain"),
]


@pytest.mark.parametrize("payload, message", [(p, m) for _, p, m in COUNT_RULES], ids=[n for n, _, _ in COUNT_RULES])
def test_count_tokens_body_rule(client, emu, payload, message):
    resp = count(client, emu, payload)
    assert resp.status_code == 400, resp.text
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "invalid_request_error"
    assert resp.json()["error"]["message"].startswith(message), resp.json()


def test_count_tokens_not_json_is_400(client, emu):
    resp = client.post(count_url(emu), content=b"{", headers={"Authorization": f"Bearer {STATIC_TOKEN}"})
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


def test_count_tokens_unknown_model_is_404(client, emu):
    resp = count(client, emu, count_body(model="claude-nope-1"), location="europe-west1")
    assert (resp.status_code, resp.json()) == (404, {"error": {"code": 404, "status": "NOT_FOUND", "message": (
        "Publisher Model `projects/p1/locations/europe-west1/publishers/anthropic/models/claude-nope-1` not found.")}})


def test_count_tokens_is_not_on_global(client, emu):
    resp = count(client, emu, count_body(), location="global")
    assert (resp.status_code, resp.json()) == (404, {"error": {"code": 404, "status": "NOT_FOUND", "message": (
        "Publisher Model `projects/p1/locations/global/publishers/anthropic/models/count-tokens` not found.")}})
    assert count(client, emu, count_body(), location="us").status_code == 200  # multi-region endpoints have it


@pytest.mark.parametrize("bearer", [None, "ya29.forged"])
def test_count_tokens_auth_comes_first(client, emu, bearer):
    for location in ("us-east5", "global"):
        resp = count(client, emu, {"not": "valid"}, bearer, location=location)
        assert (resp.status_code, resp.json()) == (401, GOOGLE_401)


def test_count_tokens_with_a_real_token(client, emu, token):
    assert count(client, emu, count_body(), token).json() == {"input_tokens": 3}


def test_count_tokens_status_trigger(client, emu):
    resp = count(client, emu, count_body(messages=[user("hi [[status:429]]")]))
    assert (resp.status_code, resp.json()) == (429, [{"error": {"code": 429, "message": "Injected error 429",
                                                               "status": "RESOURCE_EXHAUSTED"}}])
    # a call trigger is the generating endpoints' business: counting does not look at it
    assert count(client, emu, count_body(messages=[user("[[call:nope]]")])).json() == {"input_tokens": 1}


def test_count_tokens_faults(client, emu, faults):
    faults({"match": {"model": MODEL}, "action": "status", "count": None},  # rawPredict's model: not count-tokens
           {"match": {"model": "count-tokens"}, "action": "status", "status": 429, "retry_after": 3, "count": 1},
           {"match": {"model": "count-tokens", "location": "us-east5"}, "action": "close", "count": 1})
    assert count(client, emu, count_body(max_tokens=1)).status_code == 400  # a bad body shows first
    limited = count(client, emu, count_body())
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "3")
    assert "base model: anthropic-count-tokens." in limited.json()["error"]["message"]
    with pytest.raises(httpx.RemoteProtocolError):
        count(client, emu, count_body())
    assert count(client, emu, count_body()).json() == {"input_tokens": 3}
    assert [r["fired"] for r in rules(client)] == [0, 1, 1]
    assert client.get("/_emulator/stats").json()["model_requests"] == {"us-east5": 4}


def test_count_tokens_in_the_request_log(client, emu):
    client.delete("/_emulator/requests")
    count(client, emu, count_body())
    [entry] = client.get("/_emulator/requests").json()
    assert entry["path"].endswith("/publishers/anthropic/models/count-tokens:rawPredict")
    assert (entry["status"], entry["authorized"], entry["body"]) == (200, True, count_body())
    assert entry["response"] == {"body": {"input_tokens": 3}}


# --- admin ---------------------------------------------------------------------------------------------------

def test_request_log_redacts_token(client, emu, token):
    assert client.delete("/_emulator/requests").status_code == 200
    call(client, emu, body(), token)
    call(client, emu, body(), "ya29.forged")
    log = client.get("/_emulator/requests").json()
    assert [(e["status"], e["authorized"]) for e in log] == [(200, True), (401, False)]
    first = log[0]
    assert first["path"] == "/v1/projects/p1/locations/us-east5/publishers/anthropic/models/" + MODEL + ":rawPredict"
    assert (first["method"], first["body"]) == ("POST", body())
    assert first["headers"]["Authorization"] == "Bearer <redacted>"
    assert token not in json.dumps(log) and "ya29.forged" not in json.dumps(log)
    assert first["response"]["body"]["content"] == [{"type": "text", "text": "You said: hello there world"}]
    assert log[1]["response"]["body"] == GOOGLE_401
    client.delete("/_emulator/requests")
    assert client.get("/_emulator/requests").json() == []


def test_settings_endpoint(client):
    assert client.get("/_emulator/settings").json() == {"pace_ms": 0, "token_ttl": 3600,
                                                        "gemini_embedding_instances": 250}
    for bad in ({"pace_ms": -1}, {"speed": 1}, {"gemini_embedding_instances": 0},
                {"gemini_embedding_instances": 251}, {"gemini_embedding_instances": True}):
        assert client.post("/_emulator/settings", json=bad).status_code == 400, bad
    assert client.get("/_emulator/settings").json()["gemini_embedding_instances"] == 250


# --- process -------------------------------------------------------------------------------------------------

def test_in_process_start_andstop():
    async def scenario() -> tuple[int, str]:
        running = await server.start(accept_tokens=[STATIC_TOKEN])
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
                resp = await c.post(
                    f"{running.url}/v1/projects/p/locations/global/publishers/anthropic/models/{MODEL}:rawPredict",
                    json=body(), headers={"Authorization": f"Bearer {STATIC_TOKEN}"})
        finally:
            await running.stop()
        return resp.status_code, running.token_uri

    status, token_uri = asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert status == 200
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/token", token_uri)


def test_trusted_key_and_clean_sigterm(tmp_path):
    own = credentials.new_service_account("trusted-project", "http://unused/token")
    trusted = tmp_path / "trusted.json"
    trusted.write_text(json.dumps(own))
    running = launch(tmp_path, "--trust", str(trusted))
    try:
        creds = service_account.Credentials.from_service_account_info(
            {**own, "token_uri": f"{running.url}/token"}, scopes=SCOPES)
        creds.refresh(HttpxRequest())
        assert creds.token.startswith("ya29.emu-")
    finally:
        assert stop(running.proc) == 0
    assert "Traceback" not in running.stderr_path.read_text()


# --- fault rules and stats -----------------------------------------------------------------------------------

def _call(client: httpx.Client, emu: Running, stream: bool, location: str = "us-east5") -> httpx.Response:
    method = "streamRawPredict" if stream else "rawPredict"
    return call(client, emu, body(stream=stream or DROP), STATIC_TOKEN, method=method, location=location)


def _timed_events(client: httpx.Client, emu: Running) -> tuple[float, list[tuple[float, str]]]:
    """(seconds to the response headers, [(seconds to each event, its name)]) of a streamed call."""
    start = time.monotonic()
    with client.stream("POST", emu.model_url(method="streamRawPredict"), json=body(stream=True),
                       headers={"Authorization": f"Bearer {STATIC_TOKEN}"}) as resp:
        headers_after = time.monotonic() - start
        assert resp.status_code == 200
        events = [(time.monotonic() - start, line[7:]) for line in resp.iter_lines() if line.startswith("event: ")]
    return headers_after, events


def test_fault_rules_api(client, faults):
    listed = faults({"match": {"location": "us-east5", "stream": True}, "action": "cut", "count": 2},
                    {"action": "status", "count": None})
    assert listed == [
        {"match": {"location": "us-east5", "stream": True}, "action": "cut", "count": 2, "after_events": 0,
         "fired": 0, "remaining": 2},
        {"match": {}, "action": "status", "count": None, "status": 429, "array": False, "gzip": False,
         "retry_after": None, "fired": 0, "remaining": None}]
    faults({"action": "close", "count": 1})
    assert [r["action"] for r in rules(client)] == ["cut", "status", "close"]  # appended
    assert client.delete("/_emulator/faults").json() == {"ok": True}
    assert rules(client) == []


@pytest.mark.parametrize("rule, problem", [
    ({"action": "explode", "count": 1}, "rules[1].action: must be one of status, delay, stall"),
    ({"action": "status"}, "rules[1].count: required"),
    ({"action": "status", "count": 0}, "rules[1].count: must be an integer ≥ 1, or null"),
    ({"action": "status", "count": 1, "status": 200}, "rules[1].status: must be an HTTP error status"),
    ({"action": "status", "count": 1, "ms": 5}, "rules[1].ms: not a parameter of action 'status'"),
    ({"action": "status", "count": 1, "retry_after": "soon"}, "rules[1].retry_after: must be a whole number"),
    ({"action": "delay", "count": 1}, "rules[1].ms: required by action 'delay'"),
    ({"action": "stall", "count": 1, "ms": -1}, "rules[1].ms: must be a number of milliseconds"),
    ({"action": "cut", "count": 1, "after_events": 1.5}, "rules[1].after_events: must be an integer ≥ 0"),
    ({"action": "close", "count": 1, "match": {"region": "x"}}, "rules[1].match.region: unknown"),
    ({"action": "close", "count": 1, "match": {"endpoint": "models"}}, "rules[1].match.endpoint: must be 'model'"),
    ({"action": "close", "count": 1, "match": {"endpoint": "token", "location": "us-east5"}},
     "rules[1].match.location: the token endpoint has none"),
    ({"action": "cut", "count": 1, "match": {"stream": False}}, "rules[1].action: 'cut' applies only to streamed"),
    ({"action": "stall", "ms": 1, "count": 1, "match": {"endpoint": "token"}}, "rules[1].action: 'stall' applies"),
    ("close", "rules[1]: a rule must be a JSON object"),
])
def test_bad_fault_rules_are_400(client, faults, rule, problem):
    resp = client.post("/_emulator/faults", json={"rules": [{"action": "close", "count": 1}, rule]})
    assert resp.status_code == 400
    assert resp.json()["error"].startswith(problem), resp.json()
    assert rules(client) == []  # all or nothing


def test_bad_fault_payload_is_400(client, faults):
    for payload in (b"[", b'[{"action": "close"}]', b'{"rules": {}}', b'{"rules": [], "more": 1}'):
        assert client.post("/_emulator/faults", content=payload).status_code == 400


@pytest.mark.parametrize("stream", [False, True], ids=["json", "streamed"])
def test_status_fault(client, emu, faults, stream):
    faults({"action": "status", "status": 503, "count": 1},
           {"action": "status", "status": 529, "retry_after": 7, "count": 1})
    first, second, third = (_call(client, emu, stream) for _ in range(3))
    assert (first.status_code, first.json()) == (503, {"error": {
        "code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}})
    assert "retry-after" not in first.headers and "content-encoding" not in first.headers
    assert (second.status_code, second.json()) == (529, {"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}})
    assert second.headers["retry-after"] == "7"
    assert third.status_code == 200
    assert [r["remaining"] for r in rules(client)] == [0, 0]


def test_gzipped_array_429(client, emu, faults):
    faults({"action": "status", "array": True, "gzip": True, "count": 1})
    with client.stream("POST", emu.model_url(), json=body(), headers={
            "Authorization": f"Bearer {STATIC_TOKEN}", "Accept-Encoding": "identity"}) as resp:
        raw = b"".join(resp.iter_raw())
    assert (resp.status_code, resp.headers["content-encoding"]) == (429, "gzip")
    assert "retry-after" not in resp.headers
    [error] = json.loads(gzip.decompress(raw))
    assert error["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert error["error"]["message"].startswith("Quota exceeded for aiplatform.googleapis.com/online_prediction_"
                                                "requests_per_base_model with base model: anthropic-claude-sonnet-4-5.")


def test_faults_wait_for_auth_and_a_valid_body(client, emu, token, faults):
    faults({"action": "status", "count": 1})
    assert call(client, emu, body(max_tokens=0), token).status_code == 400  # the translation bug shows
    assert call(client, emu, body(), "ya29.forged").status_code == 401
    assert rules(client)[0]["fired"] == 0
    assert call(client, emu, body(), token).status_code == 429
    faults({"action": "close", "count": 1})  # close (like delay) fires on arrival, before the checks
    with pytest.raises(httpx.RemoteProtocolError):
        call(client, emu, {"not": "valid"}, None)
    log = client.get("/_emulator/requests").json()
    assert [(e["status"], e["fault"]) for e in log[-4:]] == [(400, None), (401, None), (429, "status"),
                                                             (None, "close")]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "streamed"])
def test_close_fault(client, emu, faults, stream):
    faults({"match": {"stream": stream}, "action": "close", "count": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        _call(client, emu, stream)
    assert _call(client, emu, stream).status_code == 200


def test_delay_fault(client, emu, faults):
    faults({"action": "delay", "ms": 300, "count": 2})
    start = time.monotonic()
    assert _call(client, emu, False).json()["content"][0]["text"] == "You said: hello there world"
    assert time.monotonic() - start >= 0.3
    headers_after, events = _timed_events(client, emu)
    assert headers_after >= 0.3 and events[-1][1] == "message_stop"
    start = time.monotonic()
    assert _call(client, emu, False).status_code == 200 and time.monotonic() - start < 0.3  # used up


def test_stall_fault_keeps_pacing(client, emu, faults):
    client.post("/_emulator/settings", json={"pace_ms": 20})
    try:
        faults({"action": "stall", "after_events": 3, "ms": 400, "count": 1},
               {"action": "stall", "ms": 400, "count": 1})
        assert _call(client, emu, False).status_code == 200  # streamed only: not spent here
        _, events = _timed_events(client, emu)
        headers_after, stalled_at_start = _timed_events(client, emu)
    finally:
        client.post("/_emulator/settings", json={"pace_ms": 0})
    assert [name for _, name in events] == [name for _, name in stalled_at_start]
    assert events[-1][1] == "message_stop"
    assert events[3][0] - events[2][0] >= 0.4
    logged = [e["t_ms"] for e in client.get("/_emulator/requests").json()[-2]["response"]["events"]]
    gaps = [b - a for a, b in zip(logged, logged[1:])]  # as sent: the client's reads blur 20 ms steps
    assert gaps[2] >= 400 and all(20 <= gap < 400 for i, gap in enumerate(gaps) if i != 2)
    assert headers_after < 0.3 <= stalled_at_start[0][0]  # the 200 came first, then the silence


def test_stream_error_fault(client, emu, faults):
    faults({"action": "stream_error", "after_events": 4, "count": 1},
           {"action": "stream_error", "error_type": "api_error", "count": 1})
    assert _call(client, emu, False).status_code == 200  # streamed only
    events = _events(_call(client, emu, True).text)
    assert [n for n, _ in events] == ["message_start", "ping", "content_block_start", "content_block_delta",
                                      "error"]
    assert events[-1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    resp = _call(client, emu, True)
    assert resp.status_code == 200
    assert _events(resp.text) == [("error", {"type": "error", "error": {"type": "api_error",
                                                                        "message": "Internal server error"}})]


def test_cut_fault(client, emu, faults):
    faults({"action": "cut", "after_events": 5, "count": 1}, {"action": "cut", "after_events": 99, "count": 1})
    cut_early, cut_late = ([n for n, _ in _events(_call(client, emu, True).text)] for _ in range(2))
    assert cut_early == ["message_start", "ping", "content_block_start", "content_block_delta",
                         "content_block_delta"]
    assert cut_late[-2:] == ["content_block_stop", "message_delta"]  # never message_stop
    assert _events(_call(client, emu, True).text)[-1][0] == "message_stop"


def test_rules_match_in_order(client, emu, faults):
    faults({"match": {"location": "europe-west1"}, "action": "status", "status": 503, "count": None},
           {"match": {"endpoint": "model", "stream": True}, "action": "status", "status": 500, "count": None},
           {"match": {"model": "claude-opus-4-5@20251101"}, "action": "status", "status": 429, "count": None},
           {"match": {"endpoint": "token"}, "action": "status", "status": 502, "count": None})
    assert _call(client, emu, False).status_code == 200
    assert _call(client, emu, False, location="europe-west1").status_code == 503
    assert _call(client, emu, True, location="europe-west1").status_code == 503  # the first rule wins
    assert _call(client, emu, True).status_code == 500
    opus = call(client, emu, body(), STATIC_TOKEN, model="claude-opus-4-5%4020251101")
    assert opus.status_code == 429 and "base model: anthropic-claude-opus-4-5." in opus.json()["error"]["message"]
    token = client.post("/token", data={"grant_type": "refresh_token"})
    assert (token.status_code, token.json()) == (502, {"error": "internal_failure",
                                                       "error_description": "Internal failure"})
    assert [r["fired"] for r in rules(client)] == [2, 1, 1, 1]


def test_counts_are_exact_under_concurrency(emu, client, faults):
    faults({"match": {"location": "asia-northeast1"}, "action": "delay", "ms": 200, "count": 20},
           {"match": {"location": "asia-northeast1"}, "action": "status", "count": 10})

    async def burst() -> list[int]:
        async with httpx.AsyncClient(trust_env=False, timeout=10, limits=httpx.Limits(max_connections=40)) as c:
            url = emu.model_url(location="asia-northeast1")
            headers = {"Authorization": f"Bearer {STATIC_TOKEN}"}
            answers = await asyncio.gather(*(c.post(url, json=body(), headers=headers) for _ in range(40)))
        return [a.status_code for a in answers]

    statuses = asyncio.run(asyncio.wait_for(burst(), timeout=10))
    assert sorted(statuses) == [200] * 30 + [429] * 10  # the 20 delayed answered normally
    assert [(r["fired"], r["remaining"]) for r in rules(client)] == [(20, 0), (10, 0)]
    assert client.get("/_emulator/stats").json() == {"model_requests": {"asia-northeast1": 40}, "token_requests": 0,
                                                     "faults_fired": 30}


def test_token_endpoint_outage_is_a_refresh_error(emu, client, faults, monkeypatch):
    # google-auth tries a token request 3 times on a 5xx, after ~1 s and ~2 s: its backoff runs 100 times faster
    monkeypatch.setattr(google.auth._exponential_backoff, "time",
                        types.SimpleNamespace(sleep=lambda seconds: time.sleep(seconds / 100)))
    faults({"match": {"endpoint": "token"}, "action": "status", "status": 503, "count": None})
    creds = service_account.Credentials.from_service_account_file(str(emu.service_account_path), scopes=SCOPES)
    with pytest.raises(google.auth.exceptions.RefreshError, match="internal_failure") as caught:
        creds.refresh(HttpxRequest())
    assert caught.value.retryable
    assert _call(client, emu, False).status_code == 200  # the model endpoint is unaffected
    assert client.get("/_emulator/stats").json()["token_requests"] == 3

    client.delete("/_emulator/faults")
    faults({"match": {"endpoint": "token"}, "action": "status", "status": 500, "count": 2})
    creds.refresh(HttpxRequest())  # a short outage: google-auth's third try gets through
    assert creds.token.startswith("ya29.emu-")
    faults({"match": {"endpoint": "token"}, "action": "close", "count": 1})
    with pytest.raises(google.auth.exceptions.TransportError, match="RemoteProtocolError"):
        creds.refresh(HttpxRequest())  # modelmux's transport reports a dropped connection as google-auth expects


def test_stats(client, emu, faults):
    assert client.get("/_emulator/stats").json() == {"model_requests": {}, "token_requests": 0, "faults_fired": 0}
    faults({"action": "status", "count": 1})
    _call(client, emu, False)
    _call(client, emu, True, location="global")
    call(client, emu, body(), None, location="global")  # refused requests count too
    client.post("/token", data={"grant_type": "nonsense"})
    assert client.get("/_emulator/stats").json() == {"model_requests": {"us-east5": 1, "global": 2},
                                                     "token_requests": 1, "faults_fired": 1}
    assert client.delete("/_emulator/stats").json() == {"ok": True}
    assert client.get("/_emulator/stats").json() == {"model_requests": {}, "token_requests": 0, "faults_fired": 0}


def test_sigterm_with_stalled_and_delayed_requests(tmp_path):
    running = launch(tmp_path, "--accept-token", STATIC_TOKEN)
    try:
        with httpx.Client(base_url=running.url, trust_env=False, timeout=5) as admin:
            admin.post("/_emulator/faults", json={"rules": [
                {"match": {"stream": True}, "action": "stall", "after_events": 2, "ms": 60_000, "count": 1},
                {"match": {"location": "global"}, "action": "delay", "ms": 60_000, "count": 1}]}).raise_for_status()
            path = running.model_url(location="global").removeprefix(running.url)
            with socket.create_connection(("127.0.0.1", httpx.URL(running.url).port), timeout=5) as delayed, \
                    admin.stream("POST", running.model_url(method="streamRawPredict"), json=body(stream=True),
                                 headers={"Authorization": f"Bearer {STATIC_TOKEN}"}) as stalled:
                delayed.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}".encode())
                events = (line for line in stalled.iter_lines() if line.startswith("event: "))
                assert [next(events), next(events)] == ["event: message_start", "event: ping"]
                deadline = time.monotonic() + 5
                while admin.get("/_emulator/stats").json()["model_requests"].get("global") != 1:
                    assert time.monotonic() < deadline, "the delayed request did not arrive"
                    time.sleep(0.02)
                start = time.monotonic()
                assert stop(running.proc) == 0
                assert time.monotonic() - start < 2
                with pytest.raises(httpx.RemoteProtocolError):  # the stream ends without its last chunk
                    list(events)
                assert delayed.recv(100) == b""  # closed without an answer
    finally:
        if running.proc.poll() is None:
            stop(running.proc)
    assert "Traceback" not in running.stderr_path.read_text()
