"""The HTTP answers modelmux makes itself: JSON bodies, OpenAI-shaped errors, SSE bodies."""

from __future__ import annotations

import json

from mitmproxy import http

from ..translate.errors import OpenAIError

SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> http.Response:
    return http.Response.make(status, json.dumps(body).encode(), {"content-type": "application/json", **(headers or {})})


def error_response(err: OpenAIError) -> http.Response:
    return json_response(err.status, err.body(), err.headers)


def sse_response(body: bytes) -> http.Response:
    return http.Response.make(200, body, SSE_HEADERS)
