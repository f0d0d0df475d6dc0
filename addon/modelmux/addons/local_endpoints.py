"""Answers what modelmux serves itself, without any upstream connection:

- `GET /v1/models`: the mapped names and the Claude models they reach, from the config;
- `GET /v1/models/{id}`: that model if a chat request for it would be served, else 404 `model_not_found`;
- `GET /health`: liveness, which process answered (pid, worker index under `--workers`) and that process's
  relay counters (calls in progress, retries, failovers, open circuits);
- `GET /metrics`: Prometheus text (metrics.py);
- any path of ours that no API serves: an OpenAI-shaped 404 (or 405 for a wrong method on an API path). It is
  never forwarded to OpenAI: the app's key must not leave the machine.
"""

from __future__ import annotations

import os
import time
from urllib.parse import unquote

from mitmproxy import http

from ..apis import BY_PATH
from ..apis.answers import error_response, json_response
from ..metrics import CONTENT_TYPE as METRICS_TYPE
from ..translate.errors import OpenAIError, model_not_found, not_found_path
from .guard import fail_closed
from .runtime import Runtime
from .scope import is_ours, route_path

_STARTED = int(time.time())


def _model_object(name: str) -> dict:
    owner = "anthropic" if name.startswith("claude-") else "google" if name.startswith(("gemini-", "text-embedding-0",
                                                                                        "text-multilingual-")) \
        else "modelmux"
    return {"id": name, "object": "model", "created": _STARTED, "owned_by": owner}


class LocalEndpoints:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        snap = self.runtime.current
        if flow.response or snap is None or not is_ours(flow, snap.intercept_hosts):
            return
        path = route_path(flow)
        method = flow.request.method
        if path in BY_PATH:
            if method != "POST":
                flow.response = error_response(OpenAIError(405, f"Use POST for {path}.", "invalid_request_error",
                                                           None, "method_not_allowed"))
            return
        if method == "GET" and path == "/v1/metrics":
            flow.response = http.Response.make(200, self.runtime.metrics.render(), {"content-type": METRICS_TYPE})
        elif method == "GET" and path == "/v1/health":
            flow.response = json_response(200, {"status": "ok", "pid": os.getpid(), "worker": self.runtime.worker,
                                                "relay": self.runtime.relay.health(),
                                                "thinking_cache_entries": len(self.runtime.thinking),
                                                "token_refreshes": snap.tokens.refreshes})
        elif method == "GET" and path == "/v1/models":
            names = list(dict.fromkeys(snap.router.listed_models() + snap.router.listed_embedding_models()))
            body = {"object": "list", "data": [_model_object(m) for m in names]}
            flow.response = json_response(200, body)
        elif method == "GET" and path.startswith("/v1/models/"):
            name = unquote(path[len("/v1/models/"):])
            if snap.router.routable(name) or snap.router.embedding_routable(name):
                flow.response = json_response(200, _model_object(name))
            else:
                flow.response = error_response(model_not_found(name))
        else:
            flow.response = error_response(not_found_path(method, flow.request.path.split("?", 1)[0]))
