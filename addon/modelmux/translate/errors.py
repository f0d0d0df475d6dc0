"""OpenAI-shaped errors, and Vertex/Anthropic errors translated into them. Pure: no I/O.

OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`. The SDKs pick their exception class from the
HTTP status and retry on 408/409/429/5xx honouring `retry-after` / `retry-after-ms`, so the status must be
OpenAI's for the same condition: a 429 stays a 429 (the seed turned it into a 500).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..decoding import Undecodable, decode

MAX_ERROR_BODY = 1 << 20  # bytes an upstream error body is decoded to at most (gzip)
MAX_RETRY_AFTER = 86400.0  # seconds: longer upstream retry-after values are passed on as a day


@dataclass(eq=False)  # not frozen: raising sets __traceback__
class OpenAIError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, "invalid_request_error", param, code)


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(404, f"The model `{model}` does not exist or you do not have access to it.",
                       "invalid_request_error", "model", "model_not_found")


def not_found_path(method: str, path: str) -> OpenAIError:
    return OpenAIError(404, f"Invalid URL ({method} {path}): modelmux serves /v1/chat/completions, /v1/embeddings and "
                            "/v1/models.", "invalid_request_error", None, "unknown_url")


# --- modelmux's own failures on the way to Vertex (no usable upstream answer): the relay's, all here ---------

def upstream_unreachable(region: str, detail: str) -> OpenAIError:
    return OpenAIError(502, f"modelmux could not reach Vertex AI in {region}: {detail}"[:400], "server_error", None,
                       "upstream_unavailable")


def upstream_timeout(region: str, kind: str, limit: float) -> OpenAIError:
    return OpenAIError(504, f"Vertex AI in {region} did not answer within {limit:g} s ({kind}).", "server_error",
                       None, "upstream_timeout")


def upstream_broken(detail: str) -> OpenAIError:
    return OpenAIError(502, f"Vertex AI's answer broke off or could not be read: {detail}"[:400], "server_error",
                       None, "bad_upstream_response")


def upstream_too_large(limit: int) -> OpenAIError:
    return OpenAIError(502, f"Vertex AI's answer is larger than modelmux accepts ({limit} bytes, decoded; the setting "
                            "bounds.max_upstream_bytes).", "server_error", None, "upstream_answer_too_large")


def credentials_unavailable(detail: str) -> OpenAIError:
    """No Google token at all (the token endpoint or the credentials failed): the operator's to fix, not the app's."""
    return OpenAIError(502, f"modelmux could not get a Google access token for Vertex AI: {detail} — check "
                            "auth.credentials_file / Application Default Credentials (modelmux doctor).",
                       "server_error", None, "vertex_auth_failed")


# Status → (OpenAI type, code) for statuses we pass through. Vertex's 401/403 are about modelmux's Google
# identity, never the app's OpenAI key: `invalid_api_key` would make the SDKs (and Codex) tell the user their key is
# wrong. A 401 becomes a 502 (the gateway's own credentials failed), a 403 keeps its status with a Vertex code.
_BY_STATUS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("server_error", "vertex_auth_failed"),
    403: ("permission_error", "vertex_permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout_error", "timeout"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("requests", "rate_limit_exceeded"),  # OpenAI's own 429 type for request-rate limits
}

_HINTS: dict[int, str] = {
    401: "Vertex AI rejected modelmux's Google credentials (not your OpenAI key): check modelmux's "
         "auth.credentials_file / Application Default Credentials and that the token is an OAuth access token "
         "(not an ID token).",
    403: "modelmux's Google identity lacks permission (not your OpenAI key): grant it roles/aiplatform.user "
         "(aiplatform.endpoints.predict) on the project, and enable the model in Vertex AI Model Garden.",
    404: "The model is not available here: check that it is enabled in Model Garden for this project and "
         "offered in this region (newer models are only on the global / us / eu endpoints).",
    429: "Vertex AI quota exhausted; retry after a pause or request more quota.",
}

# Anthropic error types → OpenAI status when the upstream status alone is ambiguous (e.g. mid-stream).
_ANTHROPIC_TYPES: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def decode_body(content: bytes, content_encoding: str | None = None) -> Any:
    """Parse an upstream error body: JSON, maybe gzip (real Vertex 429s sometimes are). None if unreadable."""
    data: bytes | None = content
    if (content_encoding and "gzip" in content_encoding.lower()) or content[:2] == b"\x1f\x8b":
        try:  # bounded: an error body is small, a bomb is not decoded whole
            data = decode(content, "gzip", MAX_ERROR_BODY)
        except Undecodable:
            return None
        if data is None:
            return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def _upstream_message(parsed: Any, raw: bytes) -> tuple[str | None, str | None]:
    """(message, kind) from Google (`{"error": {"message", "status"}}`, maybe in a list) or Anthropic
    (`{"type": "error", "error": {"type", "message"}}`) bodies."""
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        err = parsed["error"]
        message = err.get("message")
        kind = err.get("status") or err.get("type")
        return (str(message) if message is not None else None), (str(kind) if kind else None)
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):  # OAuth style
        return str(parsed.get("error_description") or parsed["error"]), parsed["error"]
    text = raw[:500].decode("utf-8", "replace").strip()
    return (text or None), None


def from_upstream(status: int, content: bytes, headers: dict[str, str] | None = None, *,
                  model: str | None = None, region: str | None = None) -> OpenAIError:
    """Translate a non-2xx Vertex answer into the OpenAI error with the same meaning (`content` as Vertex sent it,
    maybe gzip-encoded; `retry-after` read from `headers`)."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    parsed = decode_body(content, headers.get("content-encoding"))
    message, kind = _upstream_message(parsed, content)
    if status >= 500:
        out_status = 503 if status == 529 else status  # 529 is Anthropic-only; the SDKs retry 503
        err_type, code = "server_error", ("overloaded" if status == 529 or kind == "overloaded_error" else None)
    else:
        out_status = 502 if status == 401 else status if status in _BY_STATUS else 400
        err_type, code = _BY_STATUS.get(status, ("invalid_request_error", None))
    text = message or f"Vertex AI answered HTTP {status}"
    if kind and kind not in text:
        text = f"{text} ({kind})"
    hint = _HINTS.get(status)
    if status == 404 and model:
        hint = f"Model `{model}` was not found in region `{region}`. {hint}"
    full = f"Vertex AI: {text}" + (f" — {hint}" if hint else "")
    out_headers: dict[str, str] = {}
    if out_status == 429 or out_status >= 500:
        retry_after = retry_after_seconds(headers.get("retry-after"))
        if out_status == 429 and retry_after is None:
            retry_after = 1.0  # real Vertex 429s often carry none; the SDKs then back off on their own
        if retry_after is not None:
            out_headers["retry-after"] = str(max(1, round(retry_after)))
            out_headers["retry-after-ms"] = str(int(retry_after * 1000))
    return OpenAIError(out_status, full, err_type, None, code, out_headers)


def from_stream_error(event: Any) -> OpenAIError:
    """An Anthropic mid-stream `error` event → the OpenAI error it means."""
    err = event.get("error") if isinstance(event, dict) else None
    kind = err.get("type") if isinstance(err, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    status = _ANTHROPIC_TYPES.get(kind or "", 500)
    openai_type = "server_error" if status >= 500 else _BY_STATUS.get(status, ("invalid_request_error", None))[0]
    return OpenAIError(status, f"Vertex AI stream error: {message or 'unknown error'}" + (f" ({kind})" if kind else ""),
                       openai_type, None, kind)


def retry_after_seconds(value: str | None) -> float | None:
    """A `retry-after` header in seconds (the one parser: the relay's backoff and the client's error both use it)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP-date: rare from Google; let the SDK's own backoff decide
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)  # a huge value still means "later", never an overflow
