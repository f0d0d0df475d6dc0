"""`POST /v1/embeddings` → Vertex's own embedding models (`publishers/google/models/{MODEL}:predict`), and back.

prepare: parse and validate (translate/embeddings.py: bad input → OpenAI 400, before any upstream call; token-id
input decoded with the shipped cl100k_base), route the model (`embeddings.map` / `default`), split the inputs into
the batches the Vertex model takes (texts and tokens per request). The Translate addon sends the batches through
the relay — the same retries, failover and timeouts as chat — at most `embeddings.max_concurrent_batches` at a
time; the first batch that fails cancels the rest and its error is the answer (a 429 stays a 429 with
`retry-after`). The answers are reassembled in input order, floats or base64 as asked.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mitmproxy import http

from ..exchange import Exchange, Tokens
from ..translate.embeddings import EmbeddingsPlan, assemble_bytes, batch_error, batch_tokens, embeddings_plan
from ..translate.errors import OpenAIError
from .base import Client, Prepared

NAME = "embeddings"
PATH = "/v1/embeddings"
OFF_LOOP_BYTES = 64 * 1024  # bodies this large are planned and assembled in a worker thread: the loop stays free


class EmbeddingsCall:
    def __init__(self, plan: EmbeddingsPlan):
        self.plan = plan

    def batch_error(self, k: int, status: int, body: bytes, headers: dict[str, str], region: str | None
                    ) -> OpenAIError:
        return batch_error(self.plan, k, status, body, headers, region=region)

    def partial_tokens(self, answered: dict[int, bytes]) -> int:
        """What the batches Vertex did answer cost, when another failed."""
        return sum(batch_tokens(self.plan, k, body) for k, body in answered.items())

    async def assemble(self, ex: Exchange, bodies: list[bytes]) -> http.Response:
        big = sum(len(b) for b in bodies) > OFF_LOOP_BYTES
        body = await asyncio.to_thread(assemble_bytes, self.plan, bodies) if big else \
            assemble_bytes(self.plan, bodies)
        ex.tokens = Tokens(input=_prompt_tokens(body))
        return http.Response.make(200, body, {"content-type": "application/json"})


def _prompt_tokens(body: bytes) -> int:
    """The usage the answer reports (its last member)."""
    at = body.rfind(b'"usage":')
    try:
        return int(json.loads(body[at + 8:-1])["prompt_tokens"])
    except (ValueError, KeyError, TypeError):
        return 0


async def prepare(raw: bytes, snap: Any, runtime: Any, client: Client) -> Prepared:
    """Raises OpenAIError for anything the client must fix."""
    truncate = snap.config.embeddings.truncate
    if len(raw) > OFF_LOOP_BYTES:  # tokenizing thousands of texts must not stall every other connection
        plan = await asyncio.to_thread(embeddings_plan, raw, snap.router.route_embedding, truncate=truncate)
    else:
        plan = embeddings_plan(raw, snap.router.route_embedding, truncate=truncate)
    route = plan.route
    return Prepared(requested_model=plan.requested, vertex_model=plan.vertex_model,
                    body={"batches": len(plan.batches), "first": plan.batches[0]}, stream=False,
                    urls=lambda stream: {region: snap.router.embedding_url(route, region=region)
                                         for region in snap.router.regions()},
                    call=EmbeddingsCall(plan), batches=plan.batches,
                    max_concurrent=snap.config.embeddings.max_concurrent_batches)
