"""`POST /v1/chat/completions` → Vertex Claude `rawPredict` / `streamRawPredict`, and the answer back.

prepare: parse and validate (bad input → OpenAI 400), route the model (unknown with no default → 404), fetch and
inline image URLs, build the Vertex body (translate/request.py). The answer: a chat.completion (translate/
response.py) or chat.completion.chunk SSE (translate/stream.py); Claude's thinking blocks are kept for the tool
loop's next turn (thinking_cache.py), before the client can send it.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from mitmproxy import http

from ..exchange import Exchange
from ..images import fetch_images
from ..thinking_cache import Thinking
from ..translate.errors import model_not_found
from ..translate.request import claude_tool_id, inline_images, parse_request, to_vertex_body
from ..translate.response import AnswerShape, thinking_to_keep, to_openai_response
from ..translate.stream import StreamTranslator
from ..vertex import UnknownModel
from .answers import json_response
from .base import Client, Prepared

NAME = "chat"
PATH = "/v1/chat/completions"


class ChatCall:
    def __init__(self, shape: AnswerShape, thinking: Thinking, owner: str | None = None):
        self.shape = shape
        self.thinking = thinking
        self.owner = owner  # the client key's name: thinking is kept for it alone

    def answer(self, ex: Exchange, message: dict[str, Any]) -> http.Response:
        if kept := thinking_to_keep(message.get("content") or []):
            self.thinking.put(*kept, owner=self.owner)
        return json_response(200, to_openai_response(message, self.shape))

    def translator(self, ex: Exchange, coalesce: bool) -> StreamTranslator:
        return StreamTranslator(self.shape, coalesce=coalesce)

    def stream_done(self, ex: Exchange, translator: StreamTranslator) -> None:
        if kept := translator.kept_thinking:
            self.thinking.put(*kept, owner=self.owner)


async def prepare(raw: bytes, snap: Any, runtime: Any, client: Client) -> Prepared:
    """Raises OpenAIError for anything the client must fix."""
    req = parse_request(raw)
    try:
        route = snap.router.route(req.model)
    except UnknownModel:
        raise model_not_found(req.model) from None
    # thinking kept for the tool loop's earlier turns, by their first tool-call id (maybe in another process)
    turns = [claude_tool_id(m.tool_calls[0].id) for m in req.messages if m.role == "assistant" and m.tool_calls]
    thinking_for = await runtime.thinking.lookup(turns, owner=client.key)  # this key's own only
    vreq = to_vertex_body(req, route.vertex_model, snap.config.vertex.anthropic_version, thinking_for=thinking_for)
    if vreq.image_urls:
        inline_images(vreq.body, await fetch_images(vreq.image_urls, snap.config.images))
    shape = AnswerShape(model=req.model, created=int(time.time()), fallback_id=secrets.token_hex(12),
                        tool_names=vreq.tool_names, json_tool=vreq.json_tool, json_wrapped=vreq.json_wrapped,
                        include_usage=vreq.include_usage, expose_reasoning=snap.config.reasoning.expose)
    return Prepared(requested_model=req.model, vertex_model=route.vertex_model, body=vreq.body, stream=vreq.stream,
                    urls=lambda stream: {region: snap.router.url(route, stream=stream, region=region)
                                         for region in snap.router.regions()},
                    call=ChatCall(shape, runtime.thinking, client.key))
