"""The Responses API on Vertex Claude: `POST /v1/responses` (streamed or not), `/v1/responses/compact` and
`/v1/responses/input_tokens`, through the same relay, record, metrics and dump as chat.

prepare: parse and validate (translate/responses/request.py: bad input → OpenAI 400 before any upstream call);
route the model; rebuild the conversation a `previous_response_id` continues (the whole stored chain — an unknown
or deleted id is a 400 `previous_response_not_found`, never a silent fresh start) and resolve `item_reference`s
from the store (the client key's own responses only); open sealed reasoning and compaction items with the
deployment key; fetch and inline image URLs. The store unreachable → 503 `state_unavailable` (within the store's
bounded timeouts), never a 2xx with history lost.

The answer: a `Response` (translate/responses/response.py) or its event stream (translate/responses/stream.py);
with `store` (the default) it is kept with its input items for `GET /v1/responses/{id}`, `input_items`,
`previous_response_id` and `item_reference` (addons/stored_responses.py serves the reads). A stream's record is
written when it ends; a request continuing it that arrives first waits for that write in this process, and looks
again briefly when another process may still be writing it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from mitmproxy import http

from ..exchange import Exchange
from ..images import fetch_images
from ..limits import unavailable_error
from ..state import StateUnavailable, StoredResponse
from ..translate.errors import OpenAIError, invalid_request, model_not_found
from ..translate.request import claude_tool_id, inline_images
from ..translate.responses.request import (ResponsesRequest, as_compaction, conversation_items, parse_responses_request,
                                           references, to_vertex_body)
from ..translate.response import thinking_to_keep
from ..translate.responses.response import compact_resource, to_response
from ..translate.responses.stream import ResponsesStreamTranslator
from ..vertex import UnknownModel
from .answers import json_response
from .base import Client, Prepared

log = logging.getLogger("modelmux")

NAME = "responses"
PATH = "/v1/responses"
MAX_CHAIN = 1000  # responses one previous_response_id chain may span (the store's bound on a walk)
LOOK_AGAIN = (0.05, 0.1, 0.2)  # seconds between looks for a previous response another process may be writing


class Archive:
    """The store's writes of this process that have not finished yet, by response id: a request continuing a
    stream that just ended waits for its record instead of finding nothing. (A stream's answer has gone out when
    its write runs: a write that fails is logged; a non-streamed answer is only sent once it is stored, else 503.)"""

    def __init__(self) -> None:
        self.pending: dict[str, asyncio.Task] = {}

    def write(self, store: Any, record: StoredResponse) -> None:
        task = asyncio.get_running_loop().create_task(_put(store, record))
        self.pending[record.id] = task
        task.add_done_callback(lambda _: self.pending.pop(record.id, None))

    async def settled(self, response_id: str) -> None:
        task = self.pending.get(response_id)
        if task is not None:
            await asyncio.shield(task)


async def _put(store: Any, record: StoredResponse) -> None:
    try:
        await store.put_response(record)
    except (StateUnavailable, ValueError) as err:  # the answer went out; only retrieval later will say it is gone
        log.error("modelmux: response %s could not be stored (%s): GET and previous_response_id will not find it",
                  record.id, err)


class ResponsesCall:
    """One Responses exchange's answer logic (the Call of apis/base.py)."""

    def __init__(self, call: Any, runtime: Any, owner: str | None, previous: str | None, compact: bool = False):
        self.call = call
        self.runtime = runtime
        self.owner = owner
        self.previous = previous
        self.compact = compact

    async def answer(self, ex: Exchange, message: dict[str, Any]) -> http.Response:
        answer = to_response(message, self.call.shape)
        if kept := thinking_to_keep(message.get("content") or []):  # for a loop continued without reasoning
            self.runtime.thinking.put(*kept, owner=self.owner)
        if self.call.store and not self.compact:
            try:
                await self.runtime.store.put_response(self._record(answer.stored))
            except (StateUnavailable, ValueError) as err:  # StateTooLarge too: a 2xx would promise a response
                # no one can retrieve or continue (the exchange is still recorded: this is its answer)
                log.warning("modelmux: response %s could not be stored: %s", answer.stored["id"], err)
                raise unavailable_error() from None
        return json_response(200, compact_resource(answer) if self.compact else answer.response)

    def translator(self, ex: Exchange, coalesce: bool) -> ResponsesStreamTranslator:
        return ResponsesStreamTranslator(self.call.shape, coalesce=coalesce)

    def stream_done(self, ex: Exchange, translator: ResponsesStreamTranslator) -> None:
        if kept := translator.kept_thinking:
            self.runtime.thinking.put(*kept, owner=self.owner)
        stored = translator.stored_response
        if stored is not None and self.call.store:
            self.runtime.archive.write(self.runtime.store, self._record(stored))

    def _record(self, stored: dict[str, Any]) -> StoredResponse:
        return StoredResponse(id=stored["id"], owner=self.owner, created_at=float(stored["created_at"]),
                              response=stored, input_items=self.call.input_items,
                              output_items=stored.get("output") or [], previous_response_id=self.previous)


async def load_history(req: ResponsesRequest, runtime: Any, owner: str | None
                       ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(the items a previous_response_id chain holds, oldest first; the stored items the input refers to)."""
    store, history, resolved = runtime.store, [], {}
    wanted = references(req)
    if not req.previous_response_id and not wanted:
        return history, resolved
    try:
        if req.previous_response_id:
            await runtime.archive.settled(req.previous_response_id)
            chain = await store.response_chain(req.previous_response_id, owner, max_depth=MAX_CHAIN)
            for delay in LOOK_AGAIN:  # maybe still being written by the process that served it
                if chain.complete or chain.missing_id != req.previous_response_id:
                    break
                await asyncio.sleep(delay)
                chain = await store.response_chain(req.previous_response_id, owner, max_depth=MAX_CHAIN)
            if not chain.complete:
                raise previous_response_not_found(chain.missing_id or req.previous_response_id, chain.truncated)
            history = conversation_items([(r.input_items, r.response) for r in chain.responses])
        if wanted:
            resolved = await store.get_items(wanted, owner)
    except StateUnavailable as err:
        log.warning("modelmux: stored responses are unavailable: %s", err)
        raise unavailable_error() from None
    return history, resolved


def previous_response_not_found(response_id: str, truncated: bool = False) -> OpenAIError:
    if truncated:
        return invalid_request(f"The conversation of previous response '{response_id}' is longer than modelmux "
                               f"rebuilds ({MAX_CHAIN} responses).", param="previous_response_id",
                               code="previous_response_not_found")
    return invalid_request(f"Previous response with id '{response_id}' not found.", param="previous_response_id",
                           code="previous_response_not_found")


def _drops_builtin_tools(cfg: Any, client: Client) -> bool:
    return cfg.drop_builtin_tools or any(re.search(p, client.user_agent, re.IGNORECASE)
                                         for p in cfg.drop_builtin_tools_user_agents)


async def translate(raw: bytes, snap: Any, runtime: Any, client: Client, *, compact: bool = False,
                    stream: bool | None = None):
    """The parsed request, its route and its translation (ResponsesCall of translate/responses/request.py)."""
    req = parse_responses_request(raw)
    if compact:
        req = as_compaction(req)
    if stream is not None:
        req = req.model_copy(update={"stream": stream})
    try:
        route = snap.router.route(req.model)
    except UnknownModel:
        raise model_not_found(req.model) from None
    history, resolved = await load_history(req, runtime, client.key)
    cfg = snap.config.responses
    # thinking kept for tool calls sent back without their reasoning item (maybe kept by another process)
    calls = [claude_tool_id(i["call_id"]) for i in [*history, *(req.input if isinstance(req.input, list) else [])]
             if isinstance(i, dict) and i.get("type") in ("function_call", "custom_tool_call", "tool_search_call")
             and isinstance(i.get("call_id"), str)]
    thinking_for = await runtime.thinking.lookup(calls, owner=client.key)  # this key's own only
    call = to_vertex_body(req, route.vertex_model, snap.config.vertex.anthropic_version, key=runtime.sealing_keys,
                          history=history, resolved=resolved, web_search=cfg.web_search,
                          drop_builtin_tools=_drops_builtin_tools(cfg, client), thinking_for=thinking_for,
                          created_at=int(time.time()))
    if call.dropped_tools:
        log.info("modelmux: built-in tools Claude on Vertex cannot run were dropped from a %s request: %s "
                 "(responses.drop_builtin_tools)", client.user_agent.split("/", 1)[0] or "client",
                 ", ".join(call.dropped_tools))
    if call.image_urls:
        inline_images(call.body, await fetch_images(call.image_urls, snap.config.images))
    return req, route, call


async def prepare(raw: bytes, snap: Any, runtime: Any, client: Client) -> Prepared:
    """Raises OpenAIError for anything the client must fix (or 503 when the store is needed and unreachable)."""
    req, route, call = await translate(raw, snap, runtime, client)
    if call.store and runtime.store.known_down:  # it could not be kept: say so now, not after the answer
        raise unavailable_error()
    return Prepared(requested_model=req.model, vertex_model=route.vertex_model, body=call.body, stream=call.stream,
                    urls=lambda stream: {region: snap.router.url(route, stream=stream, region=region)
                                         for region in snap.router.regions()},
                    call=ResponsesCall(call, runtime, client.key, req.previous_response_id),
                    keepalive=snap.config.responses.keepalive_seconds)
