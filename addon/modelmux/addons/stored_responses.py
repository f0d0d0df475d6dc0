"""The Responses API's reads of stored state, answered locally from the store (state/), and its WebSocket.

Cases (the client key's own responses only; another key's are "not found"):
- `GET /v1/responses/{id}` (`include[]=reasoning.encrypted_content` keeps the sealed reasoning): the stored
  Response; `stream=true` (replaying a background response) → 400, modelmux runs no background responses;
- `DELETE /v1/responses/{id}` → `{"id", "object": "response", "deleted": true}`;
- `GET /v1/responses/{id}/input_items` (`after`, `limit` 1…100, `order` asc|desc, `include[]`) → a list page;
- `POST /v1/responses/{id}/cancel` → 400: only background responses can be cancelled, and there are none;
- an unknown, deleted, expired or `store: false` id → OpenAI's 404; the store unreachable → 503, quickly;
- `GET /v1/responses` asking for a WebSocket (Codex tries that first) → 426 Upgrade Required, which makes Codex
  use HTTP at once (any other refusal costs it ~6.5 s of retries).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs

from mitmproxy import http

from ..apis.answers import error_response, json_response
from ..limits import unavailable_error
from ..state import InvalidArgument, StateUnavailable
from ..translate.errors import OpenAIError, invalid_request
from ..translate.responses.response import public_items, without_encrypted
from .guard import fail_closed
from .client_auth import KEY_NAME
from .runtime import Runtime
from .scope import is_ours, route_path

log = logging.getLogger("modelmux")

_ONE = re.compile(r"^/v1/responses/([^/]+)$")
_ITEMS = re.compile(r"^/v1/responses/([^/]+)/input_items$")
_CANCEL = re.compile(r"^/v1/responses/([^/]+)/cancel$")
ENCRYPTED = "reasoning.encrypted_content"


def not_found(response_id: str) -> OpenAIError:
    return OpenAIError(404, f"Response with id '{response_id}' not found.", "invalid_request_error", None, None)


class StoredResponses:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        snap = self.runtime.current
        if flow.response or snap is None or not is_ours(flow, snap.intercept_hosts):
            return
        path, method = route_path(flow), flow.request.method
        if not path.startswith("/v1/responses"):
            return
        if path == "/v1/responses" and method == "GET" and "websocket" in flow.request.headers.get("upgrade", "").lower():
            flow.response = http.Response.make(
                426, b'{"error": {"message": "modelmux serves the Responses API over HTTP (POST /v1/responses), not '
                     b'WebSocket.", "type": "invalid_request_error", "param": null, "code": "websocket_not_supported"}}',
                {"content-type": "application/json", "connection": "close"})
            return
        owner = flow.metadata.get(KEY_NAME)
        query = parse_qs(flow.request.path.partition("?")[2])
        try:
            if (m := _ONE.match(path)) and method in ("GET", "DELETE"):
                flow.response = await (self._get(m[1], owner, query) if method == "GET" else self._delete(m[1], owner))
            elif (m := _ITEMS.match(path)) and method == "GET":
                flow.response = await self._items(m[1], owner, query)
            elif (m := _CANCEL.match(path)) and method == "POST":
                flow.response = error_response(invalid_request(
                    "Only responses created with background: true can be cancelled; modelmux runs none.",
                    code="unsupported_parameter"))
        except StateUnavailable as err:
            log.warning("modelmux: stored responses are unavailable: %s", err)
            flow.response = error_response(unavailable_error())
        except OpenAIError as err:
            flow.response = error_response(err)

    async def _get(self, response_id: str, owner: str | None, query: dict[str, list[str]]) -> http.Response:
        if query.get("stream", ["false"])[-1].lower() == "true":
            raise invalid_request("Only background responses can be streamed again; modelmux runs none.",
                                  param="stream", code="unsupported_parameter")
        await self.runtime.archive.settled(response_id)
        record = await self.runtime.store.get_response(response_id, owner)
        if record is None:
            raise not_found(response_id)
        include = _include(query)
        return json_response(200, record.response if ENCRYPTED in include else without_encrypted(record.response))

    async def _delete(self, response_id: str, owner: str | None) -> http.Response:
        await self.runtime.archive.settled(response_id)
        if not await self.runtime.store.delete_response(response_id, owner):
            raise not_found(response_id)
        return json_response(200, {"id": response_id, "object": "response", "deleted": True})

    async def _items(self, response_id: str, owner: str | None, query: dict[str, list[str]]) -> http.Response:
        limit_text = query.get("limit", ["20"])[-1]
        if not re.fullmatch(r"\d{1,4}", limit_text) or not 1 <= int(limit_text) <= 100:
            raise invalid_request("Invalid 'limit': integer below minimum value (1) or above maximum value (100).",
                                  param="limit", code="invalid_value")
        order = query.get("order", ["desc"])[-1]
        if order not in ("asc", "desc"):
            raise invalid_request(f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.", param="order",
                                  code="invalid_value")
        await self.runtime.archive.settled(response_id)
        try:
            page = await self.runtime.store.list_input_items(response_id, owner, after=query.get("after", [None])[-1],
                                                             limit=int(limit_text), order=order)
        except InvalidArgument as err:
            raise invalid_request(str(err), param=err.param, code="invalid_value") from None
        if page is None:
            raise not_found(response_id)
        body = page.body()
        body["data"] = public_items(body["data"], ENCRYPTED in _include(query))
        return json_response(200, body)


def _include(query: dict[str, list[str]]) -> set[str]:
    return set(query.get("include[]", []) + query.get("include", []))
