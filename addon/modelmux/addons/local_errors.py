"""Counts the errors modelmux answers itself — bad input (400), a wrong client key (401), an unknown model or
path (404), a wrong method (405) — in `modelmux_local_errors_total{status, code}`.

Cases: a flow of ours whose answer was made locally (no upstream connection, no translated exchange) and is
an error. Translated exchanges are counted by Translate, whatever their outcome; other hosts' traffic never.
"""

from __future__ import annotations

import json

from mitmproxy import http

from .runtime import Runtime
from .scope import is_ours
from .translate import is_translated


class LocalErrors:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def response(self, flow: http.HTTPFlow) -> None:
        snap = self.runtime.current
        resp = flow.response
        if snap is None or resp is None or resp.status_code < 400:
            return
        if is_translated(flow) or not is_ours(flow, snap.intercept_hosts):
            return  # a translated exchange (counted by Translate), or not ours
        self.runtime.metrics.local_errors.labels(str(resp.status_code), _code(resp.content)).inc()


def _code(body: bytes | None) -> str:
    try:
        return str(json.loads(body or b"")["error"]["code"] or "")
    except (ValueError, KeyError, TypeError):
        return ""
