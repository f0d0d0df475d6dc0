"""apis/responses.py's answer when the store refuses the response Vertex was already paid for: never a 500
`translation_failed` (the exchange unrecorded), but the 503 of an unreachable store, an answer the hook records."""

from __future__ import annotations

import json
import types

import pytest

from modelmux.apis.responses import ResponsesCall
from modelmux.state import SQLiteStore, StoreSettings
from modelmux.thinking_cache import Thinking, ThinkingCache
from modelmux.translate.errors import OpenAIError
from modelmux.translate.responses.request import parse_responses_request, to_vertex_body

MESSAGE = {"id": "msg_vrtx_1", "type": "message", "role": "assistant", "content": [{"type": "text", "text": "Hi"}],
           "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 2}}


@pytest.fixture
async def runtime(tmp_path):
    store = SQLiteStore(tmp_path / "s.sqlite3", StoreSettings(response_max_bytes=200))  # smaller than any answer
    yield types.SimpleNamespace(store=store, thinking=Thinking(ThinkingCache()))
    await store.close()


async def test_a_response_too_large_to_store_is_a_503_not_a_crash(runtime):
    req = parse_responses_request(json.dumps({"model": "gpt-5", "input": "hello"}).encode())
    call = to_vertex_body(req, "claude-sonnet-4-5@20250929", "vertex-2023-10-16", key=None, created_at=1)
    with pytest.raises(OpenAIError) as err:
        await ResponsesCall(call, runtime, "team-a", None).answer(None, MESSAGE)
    assert (err.value.status, err.value.code) == (503, "state_unavailable")
    unstored = to_vertex_body(req.model_copy(update={"store": False}), "claude-sonnet-4-5@20250929",
                              "vertex-2023-10-16", key=None, created_at=1)
    answered = await ResponsesCall(unstored, runtime, "team-a", None).answer(None, MESSAGE)
    assert answered.status_code == 200 and json.loads(answered.content)["output"][0]["content"][0]["text"] == "Hi"
