"""`POST /v1/responses/input_tokens` → Vertex's Claude count-tokens endpoint
(`publishers/anthropic/models/count-tokens:rawPredict`, the model named in the body): the input a Responses request
would send, counted by Vertex. The body is translated exactly as `POST /v1/responses` translates it
(previous_response_id, tools, instructions, reasoning included)."""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import http

from ..exchange import Exchange, Tokens
from ..translate.errors import OpenAIError
from .answers import json_response
from .base import Client, Prepared
from .responses import translate

NAME = "responses.input_tokens"
PATH = "/v1/responses/input_tokens"
_COUNTED = ("messages", "system", "tools", "tool_choice", "thinking")  # what count-tokens takes of a Messages body


class InputTokensCall:
    def answer_body(self, ex: Exchange, content: bytes) -> http.Response:
        try:
            count = json.loads(content)["input_tokens"]
        except (ValueError, KeyError, TypeError):
            count = None
        if type(count) is not int or count < 0:
            raise OpenAIError(502, "Vertex AI's count-tokens answer has no input_tokens count.", "server_error",
                              None, "bad_upstream_response")
        ex.tokens = Tokens()  # counting costs no tokens
        return json_response(200, {"object": "response.input_tokens", "input_tokens": count})


async def prepare(raw: bytes, snap: Any, runtime: Any, client: Client) -> Prepared:
    req, route, call = await translate(raw, snap, runtime, client, stream=False)
    body = {"anthropic_version": call.body["anthropic_version"], "model": route.vertex_model,
            **{k: call.body[k] for k in _COUNTED if k in call.body}}
    return Prepared(requested_model=req.model, vertex_model=route.vertex_model, body=body, stream=False,
                    urls=lambda stream: {region: snap.router.count_tokens_url(region=region)
                                         for region in snap.router.regions()},
                    call=InputTokensCall())
