"""`fail_closed`: a request hook that raises never lets its flow go on unanswered.

mitmproxy logs a hook's exception and carries on: the flow would go upstream as the app sent it — to
api.openai.com with the app's key, past the client-key check — and under `mitmdump -s` every addon after the one
that failed would be skipped (redaction included). A hook wrapped here answers the flow with an OpenAI-shaped 500
instead (a CONNECT: refused), and the log names the addon and the exception's type, never the request's values.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable

from mitmproxy import http

from ..apis.answers import error_response
from ..translate.errors import OpenAIError

log = logging.getLogger("modelmux")


def _refuse(addon: object, hook: str, flow: http.HTTPFlow, err: Exception) -> None:
    log.error("modelmux: %s.%s failed (%s); the request is answered with a 500, not sent on",
              type(addon).__name__, hook, type(err).__name__)
    if flow.response is None:
        flow.response = error_response(OpenAIError(
            500, f"modelmux failed to handle the request ({type(addon).__name__}: {type(err).__name__}); "
                 "see the proxy's log", "server_error", None, "modelmux_error"))


def fail_closed(hook: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(hook):
        @functools.wraps(hook)
        async def guarded_async(self: object, flow: http.HTTPFlow) -> None:
            try:
                await hook(self, flow)
            except Exception as err:
                _refuse(self, hook.__name__, flow, err)
        return guarded_async

    @functools.wraps(hook)
    def guarded(self: object, flow: http.HTTPFlow) -> None:
        try:
            hook(self, flow)
        except Exception as err:
            _refuse(self, hook.__name__, flow, err)
    return guarded
