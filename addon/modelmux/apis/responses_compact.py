"""`POST /v1/responses/compact`: the conversation summarised by Claude into one sealed `compaction` item, which
later requests expand (the same request `compaction_trigger` makes of `POST /v1/responses`); never stored."""

from __future__ import annotations

from typing import Any

from .base import Client, Prepared
from .responses import ResponsesCall, translate

NAME = "responses.compact"
PATH = "/v1/responses/compact"


async def prepare(raw: bytes, snap: Any, runtime: Any, client: Client) -> Prepared:
    req, route, call = await translate(raw, snap, runtime, client, compact=True)
    return Prepared(requested_model=req.model, vertex_model=route.vertex_model, body=call.body, stream=False,
                    urls=lambda stream: {region: snap.router.url(route, stream=False, region=region)
                                         for region in snap.router.regions()},
                    call=ResponsesCall(call, runtime, client.key, req.previous_response_id, compact=True))
