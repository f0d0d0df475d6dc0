"""A local fake of Claude on Vertex AI and of Google's OAuth token endpoint, for tests and benchmarks.

It behaves like the real services where modelmux depends on them: Google-shaped auth and routing errors,
Anthropic-shaped body errors (the rules in docs' Vertex notes), Anthropic's SSE framing. Replies are
deterministic: "You said: " plus the last user message, one "token" per whitespace-separated word; calls to the
tools the user names (inputs valid against their schemas); "Tool results: …" after tool results; a signed thinking
block when thinking is on; prompt-cache usage for cache_control prefixes; and the faults switched on by markers
such as `[[status:429]]` in the last user turn (see Triggers). Fault rules posted to `/_emulator/faults` inject
errors, delays, stalls, broken streams and dropped connections by endpoint, location, model and method (see Faults);
`/_emulator/stats` counts the requests.

Run it with `python -m modelmux.emulator --port 0 --service-account-out sa.json`; embed it with `await start()`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import functools
import gzip
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import signal
import string
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from . import models

DEFAULT_PROJECT = "modelmux-emulator"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
CLOCK_SKEW = 60  # seconds Google tolerates on a JWT's iat / exp
MAX_JWT_LIFETIME = 3600
MAX_BODY_BYTES = 30 * 1024 * 1024  # Vertex's request cap
REQUEST_LOG_SIZE = 200
MAX_PACE_MS = 60_000
LOGGED_BODY_BYTES = 8 * 1024 * 1024  # larger bodies are logged as null: 200 of them could exhaust memory

log = logging.getLogger(__name__)


# --- errors --------------------------------------------------------------------------------------------------

class HttpError(Exception):
    """An error answer: HTTP status plus the JSON body the real service sends (gzipped if `gzipped`)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None, gzipped: bool = False):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.gzipped = gzipped


_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                  405: "UNIMPLEMENTED", 409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
                  499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
                  504: "DEADLINE_EXCEEDED"}


def google_error(code: int, message: str) -> HttpError:
    return HttpError(code, {"error": {"code": code, "message": message, "status": _GOOGLE_STATUS.get(code, "UNKNOWN")}})


def anthropic_error(status: int, kind: str, message: str) -> HttpError:
    return HttpError(status, {"type": "error", "error": {"type": kind, "message": message}})


def oauth_error(error: str, description: str, status: int = 400) -> HttpError:
    return HttpError(status, {"error": error, "error_description": description})


class InvalidRequest(Exception):
    """A body rule was broken; the argument is the message the Anthropic API would send."""


UNAUTHENTICATED_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid "
    "authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.")


# --- credentials ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrustedKey:
    email: str
    public_key: rsa.RSAPublicKey


def new_service_account(project: str, token_uri: str) -> dict[str, str]:
    """A service-account key file's content, with a fresh RSA-2048 key, shaped like the ones IAM hands out."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    email = f"modelmux@{project}.iam.gserviceaccount.com"
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": "".join(secrets.choice(string.digits[1:]) for _ in range(21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email.replace('@', '%40')}",
        "universe_domain": "googleapis.com",
    }


def new_authorized_user(token_uri: str) -> dict[str, str]:
    """What `gcloud auth application-default login` writes, with this emulator's token endpoint."""
    return {
        "type": "authorized_user",
        "client_id": f"{secrets.randbelow(10**12):012d}-emulator.apps.googleusercontent.com",
        "client_secret": "GOCSPX-" + secrets.token_urlsafe(21),
        "refresh_token": "1//emu-" + secrets.token_urlsafe(48),
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    }


def trusted_key(info: dict[str, Any]) -> tuple[str, TrustedKey]:
    """(private_key_id, key) of a service-account key file's content."""
    try:
        private = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        kid, email = info["private_key_id"], info["client_email"]
    except (KeyError, AttributeError, ValueError, TypeError) as err:
        raise ValueError(f"not a service-account key: {type(err).__name__}: {err}") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError("not a service-account key: the private key is not RSA")
    return kid, TrustedKey(email, private.public_key())


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass
class Settings:
    """What can change while the emulator runs (`POST /_emulator/settings`)."""
    pace_ms: float = 0.0
    token_ttl: int = 3600


@dataclass(frozen=True)
class IssuedToken:
    expires_at: float  # time.monotonic()
    scopes: frozenset[str]


class Authority:
    """The token endpoint's memory: trusted keys and refresh tokens in, access tokens out."""

    def __init__(self, settings: Settings, accept_tokens: Iterable[str] = ()):
        self._settings = settings
        self._keys: dict[str, TrustedKey] = {}
        self._refresh_clients: dict[str, tuple[str, str]] = {}  # refresh_token → (client_id, client_secret)
        self._static = frozenset(accept_tokens)
        self._issued: dict[str, IssuedToken] = {}

    def trust_service_account(self, info: dict[str, Any]) -> None:
        kid, key = trusted_key(info)
        self._keys[kid] = key

    def trust_authorized_user(self, info: dict[str, str]) -> None:
        self._refresh_clients[info["refresh_token"]] = (info["client_id"], info["client_secret"])

    def grant_jwt(self, assertion: str, audiences: list[str]) -> dict[str, Any]:
        return self._issue(self._verify_assertion(assertion, audiences))

    def grant_refresh(self, client_id: str, client_secret: str, refresh_token: str, scope: str) -> dict[str, Any]:
        client = self._refresh_clients.get(refresh_token)
        if client is None:
            raise oauth_error("invalid_grant", "Bad Request")
        if client != (client_id, client_secret):
            raise oauth_error("invalid_client", "Unauthorized", status=401)
        return self._issue(frozenset(scope.split()) or frozenset({CLOUD_PLATFORM_SCOPE}))

    def check_access(self, token: str) -> None:
        """Raise the Google error Vertex answers for a missing, unknown, expired or under-scoped token."""
        if token in self._static:
            return
        issued = self._issued.get(token)
        if issued is None or issued.expires_at <= time.monotonic():
            err = google_error(401, UNAUTHENTICATED_MESSAGE)
            err.headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
            raise err
        if CLOUD_PLATFORM_SCOPE not in issued.scopes:
            raise google_error(403, "Request had insufficient authentication scopes.")

    def _issue(self, scopes: frozenset[str]) -> dict[str, Any]:
        now = time.monotonic()
        self._issued = {t: i for t, i in self._issued.items() if i.expires_at > now}  # forget expired tokens
        token = "ya29.emu-" + secrets.token_urlsafe(32)
        ttl = self._settings.token_ttl
        self._issued[token] = IssuedToken(now + ttl, scopes)
        return {"access_token": token, "expires_in": ttl, "token_type": "Bearer"}

    def _verify_assertion(self, assertion: str, audiences: list[str]) -> frozenset[str]:
        """Check a service account's signed JWT the way oauth2.googleapis.com does; return its scopes."""
        try:
            header_part, payload_part, signature_part = assertion.split(".")
            header = json.loads(_b64url_decode(header_part))
            claims = json.loads(_b64url_decode(payload_part))
            signature = _b64url_decode(signature_part)
        except (ValueError, binascii.Error):
            raise oauth_error("invalid_grant", "Invalid JWT: Malformed.") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise oauth_error("invalid_grant", "Invalid JWT: Malformed.")
        if claims.get("iss") not in {key.email for key in self._keys.values()}:
            raise oauth_error("invalid_grant", "Invalid grant: account not found")
        key = self._keys.get(header.get("kid"))
        if header.get("alg") != "RS256" or key is None or key.email != claims["iss"]:
            raise oauth_error("invalid_grant", "Invalid JWT Signature.")
        try:
            key.public_key.verify(signature, f"{header_part}.{payload_part}".encode(), padding.PKCS1v15(),
                                  hashes.SHA256())
        except InvalidSignature:
            raise oauth_error("invalid_grant", "Invalid JWT Signature.") from None
        if not _reasonable_times(claims.get("iat"), claims.get("exp")):
            raise oauth_error("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                               "reasonable timeframe. Check your iat and exp values in the JWT claim.")
        if claims.get("aud") not in audiences:
            raise oauth_error("invalid_grant", f"Invalid JWT: Failed audience check. The right audience is "
                                               f"{audiences[0]}")
        scope = claims.get("scope")
        if not isinstance(scope, str) or not scope.split():
            raise oauth_error("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        return frozenset(scope.split())


def _reasonable_times(iat: object, exp: object) -> bool:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (iat, exp)):
        return False
    now = time.time()
    return iat - CLOCK_SKEW <= now < exp + CLOCK_SKEW and 0 < exp - iat <= MAX_JWT_LIFETIME


# --- body rules ----------------------------------------------------------------------------------------------

ALLOWED_KEYS = ("anthropic_version", "messages", "system", "max_tokens", "temperature", "top_p", "top_k",
                "stop_sequences", "stream", "metadata", "tools", "tool_choice", "thinking")
VERSIONS = ("vertex-2023-10-16", "2026-10-21")
NO_SAMPLING_VERSION = "2026-10-21"
SAMPLING_KEYS = ("temperature", "top_p", "top_k")
BLOCK_TYPES = ("text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking", "document")
TOOL_RESULT_BLOCK_TYPES = ("text", "image", "document")
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
TOOL_CHOICE_TYPES = ("auto", "any", "tool", "none")
ROLE_OF_BLOCK = {"tool_use": "assistant", "thinking": "assistant", "redacted_thinking": "assistant",
                 "tool_result": "user"}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PHONE = re.compile(r"^\+?[\d\s().-]+$")
MIN_THINKING_BUDGET = 1024
MAX_CACHE_BREAKPOINTS = 4


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _options(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _require(obj: dict, key: str, path: str) -> Any:
    if key not in obj:
        raise InvalidRequest(f"{path}{key}: Field required")
    return obj[key]


def _check_string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{path}: Input should be a valid string")
    return value


def _check_dict(value: object, path: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{path}: Input should be a valid dictionary")
    return value


def _check_list(value: object, path: str) -> list:
    if not isinstance(value, list):
        raise InvalidRequest(f"{path}: Input should be a valid list")
    return value


def _check_text(text: str, owner: str) -> None:
    if not text:
        raise InvalidRequest(f"{owner}: text content blocks must be non-empty")
    if not text.strip():
        raise InvalidRequest(f"{owner}: text content blocks must contain non-whitespace text")


def validate_body(body: object, model: str, streaming: bool, secret: bytes) -> dict:
    """Apply Vertex's rules for a Claude request body; raise InvalidRequest with the API's message. `secret`
    signs this emulator's thinking blocks."""
    if not isinstance(body, dict):
        raise InvalidRequest("Input should be a valid dictionary or object to extract fields from")
    for key in body:
        if key not in ALLOWED_KEYS:
            raise InvalidRequest(f"{key}: Extra inputs are not permitted")
    _check_version(body)
    _check_max_tokens(body, model)
    _check_messages(body)
    _check_system(body)
    _check_sampling(body, model)
    _check_stop_sequences(body)
    _check_stream(body, streaming)
    _check_metadata(body)
    _check_tools(body)
    _check_thinking(body)
    _check_cache_control(body)
    _check_signatures(body["messages"], secret)
    return body


def _check_version(body: dict) -> None:
    if _require(body, "anthropic_version", "") not in VERSIONS:
        raise InvalidRequest(f"anthropic_version: Input should be {_options(VERSIONS)}")


def _check_max_tokens(body: dict, model: str) -> None:
    value = _require(body, "max_tokens", "")
    if not _is_int(value):
        raise InvalidRequest("max_tokens: Input should be a valid integer")
    if value < 1:
        raise InvalidRequest("max_tokens: Input should be greater than or equal to 1")
    cap = models.output_cap(model)
    if value > cap:
        raise InvalidRequest(f"max_tokens: {value} > {cap}, which is the maximum allowed number of output tokens "
                             f"for {models.first_party_id(model)}")


def _blocks(content: str | list) -> list:
    """A message's content as blocks: a string is shorthand for one text block."""
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _check_messages(body: dict) -> None:
    messages = _check_list(_require(body, "messages", ""), "messages")
    if not messages:
        raise InvalidRequest("messages: at least one message is required")
    for i, message in enumerate(messages):
        path = f"messages.{i}"
        _check_dict(message, path)
        for key in message:
            if key not in ("role", "content"):
                raise InvalidRequest(f"{path}.{key}: Extra inputs are not permitted")
        role = _require(message, "role", f"{path}.")
        if role not in ("user", "assistant"):
            raise InvalidRequest(f"{path}.role: Input should be 'user' or 'assistant'")
        content = _require(message, "content", f"{path}.")
        if not isinstance(content, (str, list)):
            raise InvalidRequest(f"{path}.content: Input should be a valid string or list")
        if content == []:
            raise InvalidRequest(f"{path}.content: List should have at least 1 item after validation, not 0")
        for j, block in enumerate(_blocks(content)):
            _check_block(block, f"{path}.content.{j}", role, BLOCK_TYPES)
    _check_tool_pairing(messages)


def _check_block(block: object, path: str, role: str, allowed: tuple[str, ...]) -> None:
    kind = _check_dict(block, path).get("type")
    if kind not in allowed:
        raise InvalidRequest(f"{path}: Input tag '{kind}' found using 'type' does not match any of the expected "
                             f"tags: {', '.join(repr(t) for t in allowed)}")
    if ROLE_OF_BLOCK.get(kind, role) != role:
        raise InvalidRequest(f"{path}.type: `{kind}` blocks are only allowed in {ROLE_OF_BLOCK[kind]} messages")
    _BLOCK_CHECKS[kind](block, path, role)


def _check_text_block(block: dict, path: str, role: str) -> None:
    _check_text(_check_string(_require(block, "text", f"{path}."), f"{path}.text"), "messages")


def _check_source(block: dict, path: str, kinds: tuple[str, ...], media_types: tuple[str, ...]) -> dict:
    source = _check_dict(_require(block, "source", f"{path}."), f"{path}.source")
    kind = source.get("type")
    if kind == "url":
        raise InvalidRequest(f"{path}.source: URL sources are not supported on Vertex AI; "
                             f"send the data base64-encoded")
    if kind not in kinds:
        raise InvalidRequest(f"{path}.source.type: Input should be {_options(kinds)}")
    if kind == "base64":
        if source.get("media_type") not in media_types:
            raise InvalidRequest(f"{path}.source.media_type: Input should be {_options(media_types)}")
        data = _check_string(_require(source, "data", f"{path}.source."), f"{path}.source.data")
        try:
            base64.b64decode(data, validate=True)
        except binascii.Error:
            raise InvalidRequest(f"{path}.source.data: Input should be valid base64") from None
    return source


def _check_image_block(block: dict, path: str, role: str) -> None:
    _check_source(block, path, ("base64",), IMAGE_MEDIA_TYPES)


def _check_document_block(block: dict, path: str, role: str) -> None:
    source = _check_source(block, path, ("base64", "text", "content"), ("application/pdf",))
    if source["type"] == "text":
        _check_string(_require(source, "data", f"{path}.source."), f"{path}.source.data")


def _check_tool_use_block(block: dict, path: str, role: str) -> None:
    tool_id = _check_string(_require(block, "id", f"{path}."), f"{path}.id")
    if not TOOL_ID.fullmatch(tool_id):
        raise InvalidRequest(f"{path}.id: String should match pattern '{TOOL_ID.pattern}'")
    name = _check_string(_require(block, "name", f"{path}."), f"{path}.name")
    if not TOOL_NAME.fullmatch(name):
        raise InvalidRequest(f"{path}.name: String should match pattern '{TOOL_NAME.pattern}'")
    _check_dict(_require(block, "input", f"{path}."), f"{path}.input")


def _check_tool_result_block(block: dict, path: str, role: str) -> None:
    tool_id = _check_string(_require(block, "tool_use_id", f"{path}."), f"{path}.tool_use_id")
    if not TOOL_ID.fullmatch(tool_id):
        raise InvalidRequest(f"{path}.tool_use_id: String should match pattern '{TOOL_ID.pattern}'")
    content = block.get("content", "")
    if isinstance(content, list):
        for k, inner in enumerate(content):
            _check_block(inner, f"{path}.content.{k}", role, TOOL_RESULT_BLOCK_TYPES)
    elif not isinstance(content, str):
        raise InvalidRequest(f"{path}.content: Input should be a valid string or list")


def _check_thinking_block(block: dict, path: str, role: str) -> None:
    _check_string(_require(block, "thinking", f"{path}."), f"{path}.thinking")
    _check_string(_require(block, "signature", f"{path}."), f"{path}.signature")


def _check_redacted_thinking_block(block: dict, path: str, role: str) -> None:
    _check_string(_require(block, "data", f"{path}."), f"{path}.data")


_BLOCK_CHECKS: dict[str, Callable[[dict, str, str], None]] = {
    "text": _check_text_block,
    "image": _check_image_block,
    "document": _check_document_block,
    "tool_use": _check_tool_use_block,
    "tool_result": _check_tool_result_block,
    "thinking": _check_thinking_block,
    "redacted_thinking": _check_redacted_thinking_block,
}


def _ids(message: dict, kind: str, key: str) -> list[str]:
    return [b[key] for b in _blocks(message["content"]) if b["type"] == kind]


def _check_tool_pairing(messages: list[dict]) -> None:
    """Every tool_result answers a tool_use of the turn just before; every tool_use is answered in the next."""
    for i, message in enumerate(messages):
        if message["role"] == "user":
            previous = messages[i - 1] if i > 0 and messages[i - 1]["role"] == "assistant" else None
            asked = set(_ids(previous, "tool_use", "id")) if previous else set()
            for j, block in enumerate(_blocks(message["content"])):
                if block["type"] == "tool_result" and block["tool_use_id"] not in asked:
                    raise InvalidRequest(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block['tool_use_id']}. Each `tool_result` block must have a corresponding `tool_use` "
                        f"block in the previous message.")
        elif i + 1 < len(messages):
            follower = messages[i + 1]
            answered = set(_ids(follower, "tool_result", "tool_use_id")) if follower["role"] == "user" else set()
            missing = [t for t in _ids(message, "tool_use", "id") if t not in answered]
            if missing:
                raise InvalidRequest(
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block "
                    f"in the next message.")


def _check_system(body: dict) -> None:
    if "system" not in body or isinstance(body["system"], str):
        return
    for j, block in enumerate(_check_list(body["system"], "system")):
        if _check_dict(block, f"system.{j}").get("type") != "text":
            raise InvalidRequest(f"system.{j}.type: Input should be 'text'")
        _check_text(_check_string(_require(block, "text", f"system.{j}."), f"system.{j}.text"), "system")


def _check_sampling(body: dict, model: str) -> None:
    present = [key for key in SAMPLING_KEYS if key in body]
    if present and body["anthropic_version"] == NO_SAMPLING_VERSION:
        raise InvalidRequest(f"{present[0]}: Extra inputs are not permitted "
                             f"(anthropic_version {NO_SAMPLING_VERSION} has no sampling parameters)")
    for key in ("temperature", "top_p"):
        if key in body:
            value = body[key]
            if not _is_number(value):
                raise InvalidRequest(f"{key}: Input should be a valid number")
            if value < 0:
                raise InvalidRequest(f"{key}: Input should be greater than or equal to 0")
            if value > 1:
                raise InvalidRequest(f"{key}: Input should be less than or equal to 1")
    if "top_k" in body and (not _is_int(body["top_k"]) or body["top_k"] < 0):
        raise InvalidRequest("top_k: Input should be a valid integer greater than or equal to 0")
    if "temperature" in body and "top_p" in body and models.rejects_temperature_with_top_p(model):
        raise InvalidRequest("`temperature` and `top_p` cannot both be specified for this model. "
                             "Please use only one.")


def _check_stop_sequences(body: dict) -> None:
    for k, stop in enumerate(_check_list(body.get("stop_sequences", []), "stop_sequences")):
        if not _check_string(stop, f"stop_sequences.{k}").strip():
            raise InvalidRequest("stop_sequences: each stop sequence must contain non-whitespace characters")


def _check_stream(body: dict, streaming: bool) -> None:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: Input should be a valid boolean")
    if streaming and not stream:
        raise InvalidRequest("stream: streamRawPredict requires `\"stream\": true`")
    if stream and not streaming:
        raise InvalidRequest("stream: `\"stream\": true` requires streamRawPredict, not rawPredict")


def _looks_personal(user_id: str) -> bool:
    digits = sum(c.isdigit() for c in user_id)
    return bool(EMAIL.search(user_id)) or (PHONE.match(user_id) is not None and 7 <= digits <= 15)


def _check_metadata(body: dict) -> None:
    if "metadata" not in body:
        return
    metadata = _check_dict(body["metadata"], "metadata")
    for key in metadata:
        if key != "user_id":
            raise InvalidRequest(f"metadata.{key}: Extra inputs are not permitted")
    user_id = metadata.get("user_id")
    if user_id is None:
        return
    if _looks_personal(_check_string(user_id, "metadata.user_id")):
        raise InvalidRequest("metadata.user_id: user_id must not contain personally identifying information "
                             "such as an email address or phone number")


def _check_tools(body: dict) -> None:
    names: set[str] = set()
    for k, tool in enumerate(_check_list(body.get("tools", []), "tools")):
        path = f"tools.{k}"
        name = _check_string(_require(_check_dict(tool, path), "name", f"{path}."), f"{path}.name")
        if not TOOL_NAME.fullmatch(name):
            raise InvalidRequest(f"{path}.name: String should match pattern '{TOOL_NAME.pattern}'")
        if name in names:
            raise InvalidRequest("tools: Tool names must be unique.")
        names.add(name)
        if tool.get("type", "custom") == "custom":
            _check_dict(_require(tool, "input_schema", f"{path}."), f"{path}.input_schema")
    if "tool_choice" in body:
        choice = _check_dict(body["tool_choice"], "tool_choice")
        if choice.get("type") not in TOOL_CHOICE_TYPES:
            raise InvalidRequest(f"tool_choice.type: Input should be {_options(TOOL_CHOICE_TYPES)}")
        if choice["type"] == "tool":
            _check_string(_require(choice, "name", "tool_choice."), "tool_choice.name")


def _check_thinking(body: dict) -> None:
    if "thinking" not in body:
        return
    thinking = _check_dict(body["thinking"], "thinking")
    if thinking.get("type") not in ("enabled", "disabled"):
        raise InvalidRequest("thinking.type: Input should be 'enabled' or 'disabled'")
    if thinking["type"] == "disabled":
        return
    budget = _require(thinking, "budget_tokens", "thinking.enabled.")
    if not _is_int(budget) or budget < MIN_THINKING_BUDGET:
        raise InvalidRequest(f"thinking.enabled.budget_tokens: Input should be greater than or equal to "
                             f"{MIN_THINKING_BUDGET}")
    if body["max_tokens"] <= budget:
        raise InvalidRequest("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                             "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
                             "#max-tokens-and-context-window-size")
    if body.get("tool_choice", {}).get("type") in ("any", "tool"):
        raise InvalidRequest("Thinking may not be enabled when tool_choice forces tool use.")
    _check_thinking_kept(body["messages"])


def _check_thinking_kept(messages: list[dict]) -> None:
    """In a tool loop with thinking on, the assistant turn that called the tools must start with its thinking."""
    last = messages[-1]
    if last["role"] != "user" or not _ids(last, "tool_result", "tool_use_id"):
        return
    i = len(messages) - 2  # the tool-calling turn (tool pairing already checked it is an assistant turn)
    first = _blocks(messages[i]["content"])[0]["type"]
    if first not in ("thinking", "redacted_thinking"):
        raise InvalidRequest(
            f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`. When "
            f"`thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the "
            f"lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from "
            f"previous turns. To avoid this requirement, disable `thinking`. Please consult our documentation at "
            f"https://docs.claude.com/en/docs/build-with-claude/extended-thinking")


def _cache_controls(body: dict) -> Iterator[tuple[str, object]]:
    """(path, cache_control) of every tool, system block, message block and tool-result block that has one."""
    def marks(blocks: list, path: str) -> Iterator[tuple[str, object]]:
        for j, block in enumerate(blocks):
            if block.get("cache_control") is not None:
                yield f"{path}.{j}", block["cache_control"]
            if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
                yield from marks(block["content"], f"{path}.{j}.content")

    yield from marks(body.get("tools", []), "tools")
    if isinstance(body.get("system"), list):
        yield from marks(body["system"], "system")
    for i, message in enumerate(body["messages"]):
        yield from marks(_blocks(message["content"]), f"messages.{i}.content")


def _check_cache_control(body: dict) -> None:
    found = list(_cache_controls(body))
    for path, control in found:
        if _check_dict(control, f"{path}.cache_control").get("type") != "ephemeral":
            raise InvalidRequest(f"{path}.cache_control.type: Input should be 'ephemeral'")
    if len(found) > MAX_CACHE_BREAKPOINTS:
        raise InvalidRequest(f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
                             f"Found {len(found)}.")


def _check_signatures(messages: list[dict], secret: bytes) -> None:
    """Thinking blocks come back exactly as this emulator signed them (redacted ones are opaque: taken as is)."""
    for i, message in enumerate(messages):
        for j, block in enumerate(_blocks(message["content"])):
            if block["type"] == "thinking" and not hmac.compare_digest(
                    block["signature"].encode(), sign_thinking(secret, block["thinking"]).encode()):
                raise InvalidRequest(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")


# --- the fake model ------------------------------------------------------------------------------------------

UNICODE_SAMPLE = "héllo 世界 🎉 ünïcödé"
REFUSAL_TEXT = "I can't help with that."
FRAGMENT_SIZES = (5, 7, 2, 6, 3)  # tool JSON streams in pieces of these lengths, cut anywhere like the real API's
MAX_SCHEMA_DEPTH = 8  # below this, objects get only their required properties: recursive schemas end
MAX_REF_HOPS = 32
FORMAT_EXAMPLES = {"date-time": "2025-01-01T12:00:00Z", "date": "2025-01-01", "time": "12:00:00Z",
                   "email": "someone@example.com", "uri": "https://example.com/", "hostname": "example.com",
                   "uuid": "123e4567-e89b-42d3-a456-426614174000", "ipv4": "192.0.2.1", "ipv6": "2001:db8::1"}
STREAM_ERRORS = {"overloaded": (529, "overloaded_error", "Overloaded"),
                 "api": (500, "api_error", "Internal server error")}
INJECTED_STATUS = re.compile(r"\[\[status:(\d{3})\]\]")
INJECTED_STREAM_ERROR = re.compile(r"\[\[stream-error:([a-z]+)\]\]")
PROMPT_CACHE_SIZE = 1000


@dataclass(frozen=True)
class Triggers:
    """Switches written into the last user turn (its text or its tool results), so that tests can drive them
    through an unmodified client: `[[refusal]]`, `[[pause]]`, `[[unicode]]`, `[[vertex-event]]`, `[[cut]]`,
    `[[stream-error:overloaded|api]]`, `[[status:N]]` (400 ≤ N ≤ 599)."""
    refusal: bool = False
    pause: bool = False
    unicode: bool = False
    vertex_event: bool = False
    cut: bool = False
    stream_error: str | None = None  # a STREAM_ERRORS key
    status: int | None = None


def _last_user(body: dict) -> dict:
    return next((m for m in reversed(body["messages"]) if m["role"] == "user"), {"content": []})


def find_triggers(body: dict) -> Triggers:
    text = " ".join(_texts(_last_user(body)["content"]))
    statuses = [int(code) for code in INJECTED_STATUS.findall(text) if 400 <= int(code) <= 599]
    errors = [kind for kind in INJECTED_STREAM_ERROR.findall(text) if kind in STREAM_ERRORS]
    return Triggers(refusal="[[refusal]]" in text, pause="[[pause]]" in text, unicode="[[unicode]]" in text,
                    vertex_event="[[vertex-event]]" in text, cut="[[cut]]" in text,
                    stream_error=errors[0] if errors else None, status=statuses[0] if statuses else None)


def injected_error(triggers: Triggers, streaming: bool) -> HttpError | None:
    """The error answer a trigger asks for instead of a reply, if any."""
    if triggers.status is not None:
        err = google_error(triggers.status, f"Injected error {triggers.status}")
        if triggers.status == 429:
            err.body = [err.body]  # real Vertex 429s come wrapped in an array, without retry-after
        return err
    if triggers.stream_error and not streaming:
        return anthropic_error(*STREAM_ERRORS[triggers.stream_error])
    return None


# JSON schema → a valid value (what the fake model passes to a tool)

def value_for_schema(schema: Any, root: Any, name: str = "value", depth: int = 0) -> Any:
    """A value `schema` accepts ($refs resolved against `root`). Every listed property gets one (only the required
    ones deeper than MAX_SCHEMA_DEPTH); strings are "<name>-value". Honours type, properties, required, items,
    prefixItems, enum, const, $ref, allOf, anyOf / oneOf (the first branch), numeric bounds, multipleOf, lengths,
    item counts and common formats; not pattern, not, if / then, uniqueItems or dependencies."""
    schema = _resolved(schema, root)
    if depth > 4 * MAX_SCHEMA_DEPTH:
        return None  # only a schema without any finite instance gets this deep
    if "allOf" in schema:
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        parts = [_resolved(part, root) for part in schema["allOf"]]
        return value_for_schema(functools.reduce(_merged, parts, rest), root, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            rest = {k: v for k, v in schema.items() if k != key}
            return value_for_schema(_merged(rest, _resolved(schema[key][0], root)), root, name, depth + 1)
    kind = _schema_type(schema)
    if kind == "object":
        return _object_value(schema, root, depth)
    if kind == "array":
        return _array_value(schema, root, name, depth)
    if kind in ("integer", "number"):
        return _number_value(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string_value(schema, name)


def _resolved(schema: Any, root: Any) -> dict:
    """The schema as a dict, its `$ref` chain followed (a $ref's siblings kept, as JSON Schema 2019+ reads them)."""
    for _ in range(MAX_REF_HOPS):
        if not isinstance(schema, dict):
            return {}  # `true`, or nonsense: anything goes
        ref = schema.get("$ref")
        if not isinstance(ref, str):
            return schema
        schema = _merged(_pointer(root, ref), {k: v for k, v in schema.items() if k != "$ref"})
    return {}


def _pointer(root: Any, ref: str) -> dict:
    """The target of a local reference like `#/$defs/Point` or `#/definitions/Point`; {} when there is none."""
    if not ref.startswith("#"):
        return {}
    node = root
    for part in filter(None, ref[1:].split("/")):
        node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _merged(a: dict, b: dict) -> dict:
    """Both schemas' keywords in one, with properties and required added up (enough for allOf and $ref siblings)."""
    merged = {**a, **b}
    if "properties" in a or "properties" in b:
        merged["properties"] = {**a.get("properties", {}), **b.get("properties", {})}
    if "required" in a or "required" in b:
        merged["required"] = [*a.get("required", []), *b.get("required", [])]
    return merged


def _schema_type(schema: dict) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null" if kind else None)
    if isinstance(kind, str):
        return kind
    keys = schema.keys()  # untyped: guess from the keywords present
    if keys & {"properties", "required", "additionalProperties"}:
        return "object"
    if keys & {"items", "prefixItems", "minItems", "maxItems"}:
        return "array"
    if keys & {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}:
        return "number"
    return "string"


def _object_value(schema: dict, root: Any, depth: int) -> dict:
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = [key for key in schema.get("required", []) if isinstance(key, str)]
    listed = [] if depth > MAX_SCHEMA_DEPTH else list(properties)
    extra = schema.get("additionalProperties")
    extra = extra if isinstance(extra, dict) else {}  # for required keys not among the properties
    return {key: value_for_schema(properties.get(key, extra), root, key, depth + 1)
            for key in dict.fromkeys(listed + required)}


def _array_value(schema: dict, root: Any, name: str, depth: int) -> list:
    items = schema.get("items")
    prefix = schema.get("prefixItems") or (items if isinstance(items, list) else [])
    rest = items if isinstance(items, dict) else {}
    count = max(len(prefix), schema.get("minItems", 0), 0 if depth > MAX_SCHEMA_DEPTH else 1)
    if _is_int(schema.get("maxItems")):
        count = min(count, schema["maxItems"])
    return [value_for_schema(prefix[i] if i < len(prefix) else rest, root, name, depth + 1) for i in range(count)]


def _number_value(schema: dict, integer: bool) -> int | float:
    """42 or 4.5 when the bounds allow it, else the fitting candidate (a bound, next to one, between two) nearest
    to it: 42 clamped into [minimum, maximum], for instance."""
    preferred = 42 if integer else 4.5
    bounds = [schema.get(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")]
    bounds = [b for b in bounds if _is_number(b)]
    guesses = [preferred, *bounds, *(b + d for b in bounds for d in (1, -1)),
               *((a + b) / 2 for a in bounds for b in bounds)]
    step = schema.get("multipleOf")
    if _is_number(step) and step > 0:
        guesses = [r(g / step) * step for g in guesses for r in (math.ceil, math.floor)]
    if integer:
        guesses = [r(g) for g in guesses for r in (math.ceil, math.floor)]
    fitting = [g for g in guesses if _within(schema, g)]
    return min(fitting, key=lambda g: abs(g - preferred)) if fitting else preferred


def _within(schema: dict, value: float) -> bool:
    low, high = schema.get("minimum"), schema.get("maximum")
    open_low, open_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if open_low is True:  # draft 4: a flag on minimum
        low, open_low = None, low
    if open_high is True:
        high, open_high = None, high
    step = schema.get("multipleOf")
    return ((not _is_number(low) or value >= low) and (not _is_number(high) or value <= high)
            and (not _is_number(open_low) or value > open_low) and (not _is_number(open_high) or value < open_high)
            and (not _is_number(step) or step <= 0 or (value / step).is_integer()))


def _string_value(schema: dict, name: str) -> str:
    text = FORMAT_EXAMPLES.get(schema.get("format"), f"{name}-value")
    if _is_int(schema.get("minLength")):
        text = text.ljust(schema["minLength"], "x")
    return text[:schema["maxLength"]] if _is_int(schema.get("maxLength")) else text


# composing the answer

@dataclass
class Reply:
    """The whole answer the fake model "wants" to give, before max_tokens and stop sequences cut it."""
    blocks: list[dict]  # content blocks as a JSON answer carries them
    stop_reason: str


def new_message_id() -> str:
    return "msg_vrtx_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))


def tool_use_id(message_id: str, index: int) -> str:
    """`toolu_` + 24 letters and digits, unique per message (derived from its id, to keep generate() pure)."""
    number = int.from_bytes(hashlib.sha256(f"{message_id}/{index}".encode()).digest(), "big")
    alphabet = string.ascii_letters + string.digits
    return "toolu_" + "".join(alphabet[number // len(alphabet) ** k % len(alphabet)] for k in range(24))


def sign_thinking(secret: bytes, thinking: str) -> str:
    return base64.b64encode(hmac.new(secret, thinking.encode(), hashlib.sha256).digest()).decode()


def tools_to_call(body: dict, said: str) -> tuple[list[dict], bool]:
    """(the tools the fake model calls, whether it announces them first) for a turn without tool results."""
    tools = body.get("tools", [])
    choice = body.get("tool_choice", {"type": "auto"})
    if not tools or choice["type"] == "none":
        return [], False
    if choice["type"] == "tool":
        chosen = [t for t in tools if t["name"] == choice["name"]]
    else:
        named = sorted((t for t in tools if t["name"] in said), key=lambda t: said.index(t["name"]))
        chosen = named if choice["type"] == "auto" else (named or tools)[:1]
    if choice.get("disable_parallel_tool_use") is True:
        chosen = chosen[:1]
    return chosen, choice["type"] == "auto"


def _result_text(block: dict) -> str:
    content = block.get("content", "")
    parts = [content] if isinstance(content, str) else [
        inner["text"] if inner["type"] == "text" else f"[{inner['type']}]" for inner in content]
    text = " ".join(parts)
    return f"error: {text}" if block.get("is_error") is True else text


def _tool_use(tool: dict, message_id: str, index: int) -> dict:
    schema = tool.get("input_schema", {})
    arguments = value_for_schema(schema, schema)
    return {"type": "tool_use", "id": tool_use_id(message_id, index), "name": tool["name"],
            "input": arguments if isinstance(arguments, dict) else {}}


def compose_reply(body: dict, secret: bytes, message_id: str) -> Reply:
    """What the fake model answers: an optional thinking block, then a refusal, the tool results it got, tool
    calls for the tools named in the last user text, or "You said: <that text>" (see Triggers for the switches)."""
    content = _last_user(body)["content"]
    said = " ".join(b["text"] for b in _blocks(content) if b["type"] == "text")
    results = [b for b in _blocks(content) if b["type"] == "tool_result"]
    triggers = find_triggers(body)
    blocks = []
    if body.get("thinking", {}).get("type") == "enabled":
        thought = " ".join(("Thinking about: " + ("the tool results" if results else said)).split())
        blocks.append({"type": "thinking", "thinking": thought, "signature": sign_thinking(secret, thought)})
    tail = " " + UNICODE_SAMPLE if triggers.unicode else ""
    finish = "pause_turn" if triggers.pause else "end_turn"
    if triggers.refusal:
        return Reply(blocks + [{"type": "text", "text": REFUSAL_TEXT + tail}], "refusal")
    if results:
        text = "Tool results: " + " | ".join(_result_text(r) for r in results)
        return Reply(blocks + [{"type": "text", "text": text + tail}], finish)
    tools, announce = ([], False) if triggers.pause else tools_to_call(body, said)
    if tools:
        if announce:
            blocks.append({"type": "text", "text": f"I will call {', '.join(t['name'] for t in tools)}.{tail}"})
        return Reply(blocks + [_tool_use(t, message_id, k) for k, t in enumerate(tools)], "tool_use")
    return Reply(blocks + [{"type": "text", "text": " ".join(("You said: " + said).split()) + tail}], finish)


# cutting and framing

@dataclass
class OutputBlock:
    """One content block as the two answer forms carry it: whole (JSON) or as SSE start + deltas."""
    start: dict
    deltas: list[dict]
    final: dict
    tokens: int  # output tokens: one per delta, the signature aside


@dataclass(frozen=True)
class CacheUse:
    """Input tokens the prompt cache wrote or read for one request."""
    created: int = 0
    read: int = 0


@dataclass
class Generation:
    id: str
    blocks: list[OutputBlock]
    stop_reason: str
    stop_sequence: str | None
    input_tokens: int  # beyond the cached prefix
    output_tokens: int
    cache: CacheUse
    triggers: Triggers


def _texts(content: str | list) -> Iterator[str]:
    for block in _blocks(content):
        if block["type"] == "text":
            yield block["text"]
        elif block["type"] == "tool_result":
            yield from _texts(block.get("content", ""))


def _input_units(body: dict) -> list[tuple[Any, int, bool]]:
    """(cache key part, words, carries cache_control) of each tool, system block and message block, in the order
    the prompt cache reads them. Only text counts as input words, so tools weigh nothing."""
    units = [(tool, 0, tool.get("cache_control") is not None) for tool in body.get("tools", [])]
    system = body.get("system", [])
    for block in _blocks(system) if system else []:
        units.append((block, len(block["text"].split()), block.get("cache_control") is not None))
    for message in body["messages"]:
        for block in _blocks(message["content"]):
            words = sum(len(text.split()) for text in _texts([block]))
            units.append(([message["role"], block], words, _marked(block)))
    return units


def _marked(block: dict) -> bool:
    inner = block.get("content") if block["type"] == "tool_result" else None
    return block.get("cache_control") is not None or (isinstance(inner, list) and any(map(_marked, inner)))


def count_input_tokens(body: dict) -> int:
    return sum(words for _, words, _ in _input_units(body))


def cache_prefix(body: dict, model: str) -> tuple[str, int] | None:
    """(key, words) of the cacheable prefix: everything up to the last block with cache_control; None without."""
    units = _input_units(body)
    marked = [i for i, (_, _, has_mark) in enumerate(units) if has_mark]
    if not marked:
        return None
    covered = units[:marked[-1] + 1]
    canonical = json.dumps([model, [part for part, _, _ in covered]], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest(), sum(words for _, words, _ in covered)


class PromptCache:
    """The prefixes seen lately: the first sighting writes the cache, later ones read it. Least recently used
    prefixes are forgotten first."""

    def __init__(self, size: int = PROMPT_CACHE_SIZE):
        self._size = size
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    def use(self, prefix: tuple[str, int] | None) -> CacheUse:
        if prefix is None:
            return CacheUse()
        key, words = prefix
        if key in self._seen:
            self._seen.move_to_end(key)
            return CacheUse(read=words)
        self._seen[key] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return CacheUse(created=words)


def _first_stop(text: str, stops: list[str]) -> tuple[str, int] | None:
    found = [(text.find(s), s) for s in stops if s in text]
    if not found:
        return None
    at, stop = min(found)
    return stop, at


def _fragments(text: str) -> list[str]:
    """Tool JSON in pieces of at most 7 characters, cut anywhere (inside strings too), as the API streams it;
    an empty input is one empty piece."""
    pieces: list[str] = []
    at = 0
    while at < len(text):
        size = FRAGMENT_SIZES[len(pieces) % len(FRAGMENT_SIZES)]
        pieces.append(text[at:at + size])
        at += size
    return pieces or [""]


def _pieces(block: dict) -> list[str]:
    """A block's output tokens: words (with the whitespace after them) or tool JSON fragments."""
    if block["type"] == "tool_use":
        return _fragments(json.dumps(block["input"], ensure_ascii=False) if block["input"] else "")
    return re.findall(r"\s*\S+\s*", block["thinking"] if block["type"] == "thinking" else block["text"])


def _output_block(whole: dict, pieces: list[str], complete: bool, secret: bytes) -> OutputBlock:
    """The block as far as `pieces` go (all of them when `complete`)."""
    text = "".join(pieces)
    if whole["type"] == "text":
        return OutputBlock({"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in pieces],
                           {"type": "text", "text": text}, len(pieces))
    if whole["type"] == "thinking":
        signature = whole["signature"] if complete else sign_thinking(secret, text)  # a cut thought, as sent
        deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces]
        return OutputBlock({"type": "thinking", "thinking": ""},
                           deltas + [{"type": "signature_delta", "signature": signature}],
                           {"type": "thinking", "thinking": text, "signature": signature}, len(pieces))
    start = {**whole, "input": {}}
    return OutputBlock(start, [{"type": "input_json_delta", "partial_json": p} for p in pieces],
                       whole if complete else start, len(pieces))  # cut JSON does not parse: input stays {}


def generate(body: dict, secret: bytes, message_id: str, cache: CacheUse = CacheUse()) -> Generation:
    """Cut compose_reply()'s answer to max_tokens (one token per delta) or before the first stop sequence (in
    text blocks)."""
    reply = compose_reply(body, secret, message_id)
    budget = body["max_tokens"]
    stops = body.get("stop_sequences", [])
    blocks: list[OutputBlock] = []
    stop_reason, stop_sequence = reply.stop_reason, None
    for whole in reply.blocks:
        hit = _first_stop(whole["text"], stops) if whole["type"] == "text" else None
        if hit:
            stop_sequence, cut = hit
            whole, stop_reason = {**whole, "text": whole["text"][:cut]}, "stop_sequence"
        pieces = _pieces(whole)
        if len(pieces) > budget:
            stop_reason, stop_sequence = "max_tokens", None
            if budget:
                blocks.append(_output_block(whole, pieces[:budget], False, secret))
            break
        blocks.append(_output_block(whole, pieces, True, secret))
        budget -= len(pieces)
        if hit:
            break
    input_tokens = count_input_tokens(body) - cache.created - cache.read
    return Generation(message_id, blocks, stop_reason, stop_sequence, input_tokens,
                      sum(b.tokens for b in blocks), cache, find_triggers(body))


def _usage(gen: Generation, output_tokens: int) -> dict[str, int]:
    return {"input_tokens": gen.input_tokens, "output_tokens": output_tokens,
            "cache_creation_input_tokens": gen.cache.created, "cache_read_input_tokens": gen.cache.read}


def message_json(gen: Generation, model: str) -> dict:
    return {"id": gen.id, "type": "message", "role": "assistant", "model": models.first_party_id(model),
            "content": [b.final for b in gen.blocks], "stop_reason": gen.stop_reason,
            "stop_sequence": gen.stop_sequence, "usage": _usage(gen, gen.output_tokens)}


def _after_deltas(events: list[tuple[str, dict]], count: int) -> int:
    """The position just after the count-th content delta, or before message_delta when there are fewer."""
    seen = 0
    for i, (name, _) in enumerate(events):
        if name == "message_delta":
            return i
        if name == "content_block_delta":
            seen += 1
            if seen == count:
                return i + 1
    return len(events)


def sse_events(gen: Generation, model: str) -> list[tuple[str, dict]]:
    """(event name, data) pairs in Anthropic's streaming order, with the triggered stream faults."""
    start = {**message_json(gen, model), "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": _usage(gen, 1)}
    events = [("message_start", {"type": "message_start", "message": start}), ("ping", {"type": "ping"})]
    for index, block in enumerate(gen.blocks):
        events.append(("content_block_start",
                       {"type": "content_block_start", "index": index, "content_block": block.start}))
        events.extend(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
                      for d in block.deltas)
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": gen.stop_reason, "stop_sequence": gen.stop_sequence},
                                     "usage": {"output_tokens": gen.output_tokens}}))
    events.append(("message_stop", {"type": "message_stop"}))
    triggers = gen.triggers
    if triggers.vertex_event:  # Vertex's own events appear among Anthropic's; clients must skip them
        events.insert(_after_deltas(events, 1), ("vertex_event", {"type": "vertex_event", "foo": 1}))
    if triggers.stream_error:
        _, kind, message = STREAM_ERRORS[triggers.stream_error]
        events = events[:_after_deltas(events, 2)] + [
            ("error", {"type": "error", "error": {"type": kind, "message": message}})]
    elif triggers.cut:  # the upstream drops: the body ends with no message_stop
        events = events[:_after_deltas(events, 2)]
    return events


# --- fault injection -----------------------------------------------------------------------------------------

MAX_FAULT_MS = 600_000
REQUIRED = object()  # an action parameter without a default
STREAM_ONLY_ACTIONS = frozenset({"stall", "stream_error", "cut"})
ON_ARRIVAL = frozenset({"close", "delay"})  # on the model endpoint the others wait for auth and a valid body
FAULT_MESSAGES = {
    429: "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model with base model: "
         "anthropic-{model}. Please submit a quota increase request. "
         "https://cloud.google.com/vertex-ai/docs/generative-ai/quotas-genai.",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
    504: "Deadline expired before operation could complete.",
}
STREAM_ERROR_MESSAGES = {kind: message for _, kind, message in STREAM_ERRORS.values()}


def _status_code(value: object) -> int:
    if not _is_int(value) or not 400 <= value <= 599:
        raise ValueError("must be an HTTP error status from 400 to 599")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _milliseconds(value: object) -> float:
    if not _is_number(value) or not 0 <= value <= MAX_FAULT_MS:
        raise ValueError(f"must be a number of milliseconds from 0 to {MAX_FAULT_MS}")
    return float(value)


def _event_count(value: object) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError("must be an integer ≥ 0")
    return value


def _retry_after(value: object) -> int | None:
    if value is not None and (not _is_int(value) or value < 0):
        raise ValueError("must be a whole number of seconds ≥ 0, or null for no header")
    return value


def _name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _endpoint(value: object) -> str:
    if value not in ("model", "token"):
        raise ValueError("must be 'model' or 'token'")
    return value


# action → parameter → (default, check)
ACTIONS: dict[str, dict[str, tuple[Any, Callable[[object], Any]]]] = {
    "status": {"status": (429, _status_code), "array": (False, _flag), "gzip": (False, _flag),
               "retry_after": (None, _retry_after)},
    "delay": {"ms": (REQUIRED, _milliseconds)},
    "stall": {"after_events": (0, _event_count), "ms": (REQUIRED, _milliseconds)},
    "stream_error": {"after_events": (0, _event_count), "error_type": ("overloaded_error", _name)},
    "cut": {"after_events": (0, _event_count)},
    "close": {},
}
MATCH_KEYS: dict[str, Callable[[object], Any]] = {"endpoint": _endpoint, "location": _name, "model": _name,
                                                   "stream": _flag}
MODEL_ONLY_KEYS = ("location", "model", "stream")


@dataclass(frozen=True)
class FaultTarget:
    """What a rule's `match` is compared with. Token requests have no location, model or method, so rules that
    name one never match them."""
    endpoint: str
    location: str | None = None
    model: str | None = None
    stream: bool | None = None


@dataclass
class FaultRule:
    match: dict[str, Any]
    action: str
    count: int | None  # uses it was given; None: unlimited
    params: dict[str, Any]  # the action's parameters, defaults filled in
    fired: int = 0

    @property
    def remaining(self) -> int | None:
        return None if self.count is None else self.count - self.fired

    def applies_to(self, target: FaultTarget) -> bool:
        if self.remaining == 0 or (self.action in STREAM_ONLY_ACTIONS and not target.stream):
            return False
        return all(getattr(target, key) == value for key, value in self.match.items())

    def describe(self) -> dict[str, Any]:
        return {"match": self.match, "action": self.action, "count": self.count, **self.params,
                "fired": self.fired, "remaining": self.remaining}


def _checked(check: Callable[[object], Any], value: object, path: str) -> Any:
    try:
        return check(value)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def parse_rule(raw: object, path: str) -> FaultRule:
    """A rule from its JSON; ValueError naming the first problem."""
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a rule must be a JSON object")
    action = raw.get("action")
    if action not in ACTIONS:
        raise ValueError(f"{path}.action: must be one of {', '.join(ACTIONS)}")
    spec = ACTIONS[action]
    unknown = sorted(set(raw) - {"match", "action", "count"} - set(spec))
    if unknown:
        raise ValueError(f"{path}.{unknown[0]}: not a parameter of action '{action}'")
    if "count" not in raw:  # no default: a forgotten count would mean one use to some, every request to others
        raise ValueError(f"{path}.count: required (a number of requests, or null for unlimited)")
    count = raw["count"]
    if count is not None and (not _is_int(count) or count < 1):
        raise ValueError(f"{path}.count: must be an integer ≥ 1, or null for unlimited")
    params = {}
    for name, (default, check) in spec.items():
        if name in raw:
            params[name] = _checked(check, raw[name], f"{path}.{name}")
        elif default is REQUIRED:
            raise ValueError(f"{path}.{name}: required by action '{action}'")
        else:
            params[name] = default
    match = _parse_match(raw.get("match", {}), f"{path}.match")
    _check_reachable(match, action, path)
    return FaultRule(match, action, count, params)


def _parse_match(raw: object, path: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: must be a JSON object")
    for key in raw:
        if key not in MATCH_KEYS:
            raise ValueError(f"{path}.{key}: unknown; match on {', '.join(MATCH_KEYS)}")
    return {key: _checked(MATCH_KEYS[key], value, f"{path}.{key}") for key, value in raw.items()}


def _check_reachable(match: dict[str, Any], action: str, path: str) -> None:
    """Refuse a rule that could never fire: it is surely a mistake in the test that posts it."""
    token = match.get("endpoint") == "token"
    named = [key for key in MODEL_ONLY_KEYS if key in match]
    if token and named:
        raise ValueError(f"{path}.match.{named[0]}: the token endpoint has none; it applies to the model endpoint")
    if action in STREAM_ONLY_ACTIONS and (token or match.get("stream") is False):
        raise ValueError(f"{path}.action: '{action}' applies only to streamed model requests")


class Faults:
    """Fault rules, tried in order: the first that applies to a request, with uses left, fires."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []

    def add(self, payload: object) -> None:
        """Append `{"rules": [...]}`: all of them, or none when one is bad (ValueError)."""
        if not isinstance(payload, dict) or set(payload) != {"rules"} or not isinstance(payload["rules"], list):
            raise ValueError('expected {"rules": [rule, ...]}')
        self._rules.extend([parse_rule(raw, f"rules[{i}]") for i, raw in enumerate(payload["rules"])])

    def claim(self, target: FaultTarget, actions: frozenset[str]) -> FaultRule | None:
        """The rule that fires for this request, if its action is one of `actions`, with one use spent. Finding
        and spending happen in one step of the event loop, so concurrent requests never share a use."""
        rule = next((r for r in self._rules if r.applies_to(target)), None)
        if rule is None or rule.action not in actions:
            return None
        rule.fired += 1
        return rule

    def describe(self) -> list[dict[str, Any]]:
        return [rule.describe() for rule in self._rules]

    def clear(self) -> None:
        self._rules.clear()


def status_answer(rule: FaultRule, target: FaultTarget) -> HttpError:
    """A `status` rule's answer, shaped like the service at `target` sends it."""
    params = rule.params
    status = params["status"]
    if target.endpoint == "token":
        error = ("internal_failure", "Internal failure") if status >= 500 else ("invalid_request",
                                                                                 f"Injected HTTP {status}")
        err = oauth_error(*error, status=status)
    elif status == 529:  # the model layer's overload, in Anthropic's shape
        err = anthropic_error(529, "overloaded_error", "Overloaded")
    else:
        template = FAULT_MESSAGES.get(status, f"Injected HTTP {status}")
        err = google_error(status, template.format(model=(target.model or "").partition("@")[0]))
    if params["array"]:
        err.body = [err.body]
    if params["retry_after"] is not None:
        err.headers["Retry-After"] = str(params["retry_after"])
    err.gzipped = params["gzip"]
    return err


def faulted_events(events: list[tuple[str, dict]], rule: FaultRule | None) -> list[tuple[str, dict]]:
    """The events left by a `cut` or `stream_error` rule. The fault always comes before message_stop, however
    large after_events is."""
    if rule is None or rule.action not in ("cut", "stream_error"):
        return events
    kept = events[:min(rule.params["after_events"], len(events) - 1)]
    if rule.action == "cut":
        return kept
    kind = rule.params["error_type"]
    return kept + [("error", {"type": "error", "error": {
        "type": kind, "message": STREAM_ERROR_MESSAGES.get(kind, "Injected stream error")}})]


def stall_point(events: list[tuple[str, dict]], rule: FaultRule | None) -> tuple[int, float] | None:
    """(index of the event a `stall` rule holds back, seconds), also before message_stop at the latest."""
    if rule is None or rule.action != "stall":
        return None
    return min(rule.params["after_events"], len(events) - 1), rule.params["ms"] / 1000


@dataclass
class Stats:
    model_requests: collections.Counter[str] = field(default_factory=collections.Counter)  # by location
    token_requests: int = 0
    faults_fired: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"model_requests": dict(self.model_requests), "token_requests": self.token_requests,
                "faults_fired": self.faults_fired}


# --- HTTP ----------------------------------------------------------------------------------------------------

@dataclass
class State:
    settings: Settings
    authority: Authority
    token_uri: str
    request_log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=REQUEST_LOG_SIZE))
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))  # signs thinking blocks
    prompt_cache: PromptCache = field(default_factory=PromptCache)
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    pausing: set[asyncio.Task] = field(default_factory=set)  # handlers inside pause()

    async def pause(self, seconds: float) -> bool:
        """Sleep; False, early, when the emulator stops: a stalled or delayed request must not hold up SIGTERM."""
        task = asyncio.current_task()
        assert task is not None
        self.pausing.add(task)
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
            return False
        except TimeoutError:
            return True
        finally:
            self.pausing.discard(task)


class BaseHandler(tornado.web.RequestHandler):
    def initialize(self, state: State) -> None:
        self.state = state

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None, gzipped: bool = False) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        data = json.dumps(body, ensure_ascii=False).encode()
        if gzipped:  # whatever the client's Accept-Encoding says, as Vertex's 429s sometimes come
            self.set_header("Content-Encoding", "gzip")
            data = gzip.compress(data)
        self.finish(data)

    def send_error_answer(self, err: HttpError) -> None:
        self.send_json(err.status, err.body, err.headers, err.gzipped)

    def claim_fault(self, target: FaultTarget, actions: frozenset[str]) -> FaultRule | None:
        rule = self.state.faults.claim(target, actions)
        if rule:
            self.state.stats.faults_fired += 1
        return rule

    async def apply_on_arrival(self, rule: FaultRule) -> bool:
        """Carry out a `close` or `delay` rule; False when the request ends here, its connection dropped."""
        if rule.action == "delay" and await self.state.pause(rule.params["ms"] / 1000):
            return True
        self.drop_connection()
        return False

    def drop_connection(self) -> None:
        """End the TCP connection, with no answer or mid-answer: the client sees the server disconnect."""
        self.request.connection.close()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # tornado's own errors (unknown route, wrong method, a bug here) in Google's shape, not HTML
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(google_error(status_code, self._reason).body))


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


class TokenHandler(BaseHandler):
    """POST /token, like https://oauth2.googleapis.com/token."""

    async def post(self) -> None:
        self.state.stats.token_requests += 1
        target = FaultTarget("token")
        fault = self.claim_fault(target, frozenset(ACTIONS))  # before the JWT checks: an outage knows no grants
        if fault and fault.action == "status":
            self.send_error_answer(status_answer(fault, target))
            return
        if fault and not await self.apply_on_arrival(fault):
            return
        arg = self.get_body_argument
        grant = arg("grant_type", "")
        try:
            if grant == JWT_BEARER_GRANT:
                answer = self.state.authority.grant_jwt(arg("assertion", ""), self._audiences())
            elif grant == "refresh_token":
                answer = self.state.authority.grant_refresh(arg("client_id", ""), arg("client_secret", ""),
                                                            arg("refresh_token", ""), arg("scope", ""))
            else:
                raise oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant}")
        except HttpError as err:
            self.send_error_answer(err)
            return
        self.set_header("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate")
        self.send_json(200, answer)

    def _audiences(self) -> list[str]:
        # google-auth (2.x) always signs aud = Google's token URL, whatever the key file's token_uri says; other
        # clients use the token_uri they post to, as this emulator advertised it or as they named it (`localhost`)
        return [GOOGLE_TOKEN_URI, self.state.token_uri,
                f"{self.request.protocol}://{self.request.host}{self.request.path}"]


_NOT_JSON = object()


class ModelHandler(BaseHandler):
    """POST …/publishers/anthropic/models/{model}:rawPredict | :streamRawPredict."""

    def prepare(self) -> None:
        try:
            self.parsed: Any = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError):
            self.parsed = _NOT_JSON
        headers = dict(self.request.headers)
        if "Authorization" in headers:
            headers["Authorization"] = "Bearer <redacted>"
        small = len(self.request.body) <= LOGGED_BODY_BYTES
        logged_body = self.parsed if small and self.parsed is not _NOT_JSON else None
        self.log_entry = {"path": self.request.path, "method": self.request.method, "headers": headers,
                          "authorized": False, "body": logged_body, "status": None, "response": None,
                          "fault": None}
        self.state.request_log.append(self.log_entry)
        self.started = time.monotonic()

    def on_finish(self) -> None:
        if self.log_entry["fault"] != "close":  # a closed connection got no status
            self.log_entry["status"] = self.get_status()

    def claim_fault(self, target: FaultTarget, actions: frozenset[str]) -> FaultRule | None:
        rule = super().claim_fault(target, actions)
        if rule:
            self.log_entry["fault"] = rule.action
        return rule

    async def post(self, project: str, location: str, model: str, method: str) -> None:
        streaming = method == "streamRawPredict"
        self.state.stats.model_requests[location] += 1
        target = FaultTarget("model", location, model, streaming)
        early = self.claim_fault(target, ON_ARRIVAL)
        if early and not await self.apply_on_arrival(early):
            return
        try:
            self._authorize()
            if model not in models.OUTPUT_CAPS:
                raise google_error(404, f"Publisher Model `projects/{project}/locations/{location}/publishers/"
                                        f"anthropic/models/{model}` not found.")
            body = self._validated(model, streaming)
            fault = injected_error(find_triggers(body), streaming)
            if fault:
                raise fault
        except HttpError as err:
            self.send_error_answer(err)
            return
        # one rule per request; a rule that did not fire on arrival fires only for a request that passed the checks
        fault = None if early else self.claim_fault(target, frozenset(ACTIONS) - ON_ARRIVAL)
        if fault and fault.action == "status":
            self.send_error_answer(status_answer(fault, target))
            return
        cache = self.state.prompt_cache.use(cache_prefix(body, model))
        gen = generate(body, self.state.secret, new_message_id(), cache)
        if streaming:
            await self._stream(sse_events(gen, model), fault)
        else:
            self.send_json(200, message_json(gen, model))

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None, gzipped: bool = False) -> None:
        self.log_entry["response"] = {"body": body}
        super().send_json(status, body, headers, gzipped)

    def _authorize(self) -> None:
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        self.state.authority.check_access(token.strip() if scheme.lower() == "bearer" else "")
        self.log_entry["authorized"] = True

    def _validated(self, model: str, streaming: bool) -> dict:
        if len(self.request.body) > MAX_BODY_BYTES:
            raise anthropic_error(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
        if self.parsed is _NOT_JSON:
            raise anthropic_error(400, "invalid_request_error", "There was an error parsing the body: not JSON")
        try:
            return validate_body(self.parsed, model, streaming, self.state.secret)
        except InvalidRequest as err:
            raise anthropic_error(400, "invalid_request_error", str(err)) from None

    async def _stream(self, events: list[tuple[str, dict]], fault: FaultRule | None) -> None:
        """Send the events, paced, as a streamed fault rule alters them."""
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        events = faulted_events(events, fault)
        stall = stall_point(events, fault)
        sent: list[dict] = []
        self.log_entry["response"] = {"events": sent}
        try:
            for i, (name, data) in enumerate(events):
                if not await self._wait_before(i, stall):
                    self.drop_connection()  # the emulator is stopping
                    return
                frame = f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
                for part in _split_inside_character(frame.encode()):
                    self.write(part)
                    await self.flush()
                sent.append({"t_ms": round((time.monotonic() - self.started) * 1000, 1), "event": name,
                             "data": data})
        except tornado.iostream.StreamClosedError:
            return  # the client went away: stop generating

    async def _wait_before(self, i: int, stall: tuple[int, float] | None) -> bool:
        """A stall rule's silence, then the pacing, before event i; False when the emulator is stopping."""
        if stall and i == stall[0]:
            await self.flush()  # the 200 and its headers go out even when the stall comes before any event
            if not await self.state.pause(stall[1]):
                return False
        pace = self.state.settings.pace_ms
        return not (i and pace > 0) or await self.state.pause(pace / 1000)


def _split_inside_character(frame: bytes) -> list[bytes]:
    """The frame in two writes cut inside its first multi-byte character, if any: networks split anywhere, and
    clients must put UTF-8 back together."""
    at = next((i for i, byte in enumerate(frame) if byte >= 0x80), None)
    return [frame] if at is None else [frame[:at + 1], frame[at + 1:]]


class RequestsHandler(BaseHandler):
    """GET / DELETE /_emulator/requests: the last model requests, for tests."""

    def get(self) -> None:
        self.send_json(200, list(self.state.request_log))

    def delete(self) -> None:
        self.state.request_log.clear()
        self.send_json(200, {"ok": True})


class SettingsHandler(BaseHandler):
    """GET / POST /_emulator/settings: pace_ms (delay between SSE events) and token_ttl (seconds)."""

    def get(self) -> None:
        self.send_json(200, asdict(self.state.settings))

    def post(self) -> None:
        try:
            changes = json.loads(self.request.body)
            _apply_settings(self.state.settings, changes)
        except (ValueError, TypeError) as err:
            self.send_json(400, {"error": str(err)})
            return
        self.send_json(200, asdict(self.state.settings))


def _apply_settings(settings: Settings, changes: object) -> None:
    if not isinstance(changes, dict):
        raise ValueError("settings must be a JSON object")
    unknown = set(changes) - {"pace_ms", "token_ttl"}
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    pace, ttl = changes.get("pace_ms", settings.pace_ms), changes.get("token_ttl", settings.token_ttl)
    if not _is_number(pace) or not 0 <= pace <= MAX_PACE_MS:
        raise ValueError(f"pace_ms must be a number from 0 to {MAX_PACE_MS}")
    if not _is_int(ttl) or ttl < 1:
        raise ValueError("token_ttl must be an integer ≥ 1")
    settings.pace_ms, settings.token_ttl = float(pace), ttl


class FaultsHandler(BaseHandler):
    """GET / POST / DELETE /_emulator/faults: list the fault rules (with `fired`, `remaining`), append
    `{"rules": [...]}`, remove them all."""

    def get(self) -> None:
        self.send_json(200, {"rules": self.state.faults.describe()})

    def post(self) -> None:
        try:
            self.state.faults.add(json.loads(self.request.body))
        except ValueError as err:
            self.send_json(400, {"error": str(err)})
            return
        self.get()

    def delete(self) -> None:
        self.state.faults.clear()
        self.send_json(200, {"ok": True})


class StatsHandler(BaseHandler):
    """GET / DELETE /_emulator/stats: model requests by location, token requests, fault rules fired."""

    def get(self) -> None:
        self.send_json(200, self.state.stats.as_json())

    def delete(self) -> None:
        self.state.stats = Stats()
        self.send_json(200, {"ok": True})


class HealthHandler(BaseHandler):
    def get(self) -> None:
        self.send_json(200, {"ok": True})


# Tornado percent-decodes the groups, so `claude-sonnet-4-5%4020250929` arrives as `…@…`.
MODEL_ROUTE = (r"/v1/projects/([^/]+)/locations/([^/]+)/publishers/anthropic/models/([^/:]+?)"
               r"(?::|%3A|%3a)(rawPredict|streamRawPredict)")


def make_app(state: State) -> tornado.web.Application:
    args = {"state": state}
    return tornado.web.Application(
        [(r"/token", TokenHandler, args), (MODEL_ROUTE, ModelHandler, args),
         (r"/_emulator/requests", RequestsHandler, args), (r"/_emulator/settings", SettingsHandler, args),
         (r"/_emulator/faults", FaultsHandler, args), (r"/_emulator/stats", StatsHandler, args),
         (r"/_emulator/health", HealthHandler, args)],
        default_handler_class=NotFoundHandler, default_handler_args=args,
        compress_response=False)  # Vertex's Claude answers are never gzipped


def _url_host(host: str) -> str:
    """The host a client uses to reach a server bound to `host`."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _write_private_json(path: str, data: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds a private key
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None


class Emulator:
    """A running emulator: `url`, `port`, `token_uri`, the credentials it trusts; `await stop()`."""

    def __init__(self, server: tornado.httpserver.HTTPServer, port: int, url: str, state: State,
                 service_account: dict[str, str], authorized_user: dict[str, str]):
        self._server = server
        self.port = port
        self.url = url
        self.state = state
        self.token_uri = state.token_uri
        self.service_account = service_account
        self.authorized_user = authorized_user

    async def stop(self) -> None:
        self._server.stop()
        self.state.stopping.set()
        pausing = set(self.state.pausing)
        if pausing:  # stalled and delayed handlers wake, drop their connections and end: nothing left to cancel
            await asyncio.wait(pausing, timeout=5)
        try:
            await asyncio.wait_for(self._server.close_all_connections(), timeout=5)
        except TimeoutError:
            log.warning("some connections did not close within 5 s")


async def start(host: str = "127.0.0.1", port: int = 0, *, pace_ms: float = 0.0, token_ttl: int = 3600,
                project: str = DEFAULT_PROJECT, service_account_out: str | None = None,
                authorized_user_out: str | None = None, trust: Iterable[str] = (),
                accept_tokens: Iterable[str] = ()) -> Emulator:
    """Serve on the running loop. Always mints a service account and an authorized user it trusts
    (`Emulator.service_account`, `.authorized_user`), written to the given files."""
    settings = Settings()
    _apply_settings(settings, {"pace_ms": pace_ms, "token_ttl": token_ttl})
    authority = Authority(settings, accept_tokens)
    for path in trust:
        try:
            authority.trust_service_account(_read_json(path))
        except ValueError as err:
            raise ValueError(f"cannot trust {path}: {err}") from None
    sockets = tornado.netutil.bind_sockets(port, address=host)
    port = sockets[0].getsockname()[1]
    url = f"http://{_url_host(host)}:{port}"
    state = State(settings, authority, token_uri=f"{url}/token")
    service_account = new_service_account(project, state.token_uri)
    authorized_user = new_authorized_user(state.token_uri)
    authority.trust_service_account(service_account)
    authority.trust_authorized_user(authorized_user)
    try:
        if service_account_out:
            _write_private_json(service_account_out, service_account)
        if authorized_user_out:
            _write_private_json(authorized_user_out, authorized_user)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    server = tornado.httpserver.HTTPServer(make_app(state), max_body_size=2 * MAX_BODY_BYTES)
    server.add_sockets(sockets)
    return Emulator(server, port, url, state, service_account, authorized_user)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: a free port)")
    parser.add_argument("--pace-ms", type=float, default=0.0, help="delay between SSE events, milliseconds")
    parser.add_argument("--project", default=DEFAULT_PROJECT, help="project id of the generated service account")
    parser.add_argument("--service-account-out", metavar="FILE",
                        help="write a service-account key (trusted by this emulator) to FILE")
    parser.add_argument("--authorized-user-out", metavar="FILE",
                        help="write authorized-user credentials (accepted by this emulator) to FILE")
    parser.add_argument("--trust", metavar="FILE", action="append", default=[],
                        help="also trust this service-account key file (repeatable)")
    parser.add_argument("--accept-token", metavar="TOKEN", action="append", default=[],
                        help="accept this static access token on the model endpoints (repeatable)")
    parser.add_argument("--token-ttl", type=int, default=3600, help="lifetime of issued access tokens, seconds")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT / SIGTERM. Prints one `listening on URL` line to stdout when ready."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    try:
        emulator = await start(args.host, args.port, pace_ms=args.pace_ms, token_ttl=args.token_ttl,
                               project=args.project, service_account_out=args.service_account_out,
                               authorized_user_out=args.authorized_user_out, trust=args.trust,
                               accept_tokens=args.accept_token)
    except (OSError, ValueError) as err:
        print(f"modelmux emulator: {err}", file=sys.stderr)
        return 1
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    print(f"modelmux emulator listening on {emulator.url}", flush=True)
    await stopping.wait()
    await emulator.stop()
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m modelmux.emulator",
                                      description="A local fake of Claude on Vertex AI and Google's token endpoint.")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
