"""What modelmux itself promises on the Responses API, through a real `modelmux run` in HTTPS_PROXY and reverse
mode against the emulator, with openai-python and raw HTTP: reasoning sealed into `encrypted_content` and back to
Vertex exactly as Claude produced it (tampering is a 400), stored items and their pages, `item_reference`,
`store: false`, compaction, refusals of what Claude cannot do, errors before and during a stream, the keep-alive of
a silent stream, the WebSocket refusal. (tests/test_clients_responses*.py drive the real SDKs and agents.)"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openapi import validate, validate_error, validate_response, validate_responses_sse

import procs
from e2e import CLIENT_KEY, CLIENT_KINDS_VIA_PROXY, Emulator, assert_no_secrets, openai_client, start_proxy, \
    write_config

WEATHER = {"type": "function", "name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("responses-api")
    emu_proc, url, key = procs.emulator(tmp)
    cfg = write_config(tmp / "modelmux.yaml", url, key)
    cfg.write_text(cfg.read_text() + "responses: {keepalive_seconds: 0.3}\ntimeouts: {idle_seconds: 10}\n"
                   "dump: {path: " + str(tmp / "dump.jsonl") + "}\n")
    proxy = start_proxy("modelmux-run", cfg, tmp / "confdir")
    try:
        yield proxy, Emulator(url), tmp
    finally:
        proxy.proc.stop()
        emu_proc.stop()
        assert_no_secrets(proxy.proc.output())


@pytest.fixture(params=CLIENT_KINDS_VIA_PROXY)
def client(request, setup, monkeypatch):
    return openai_client(request.param, setup[0], monkeypatch)


def raw_post(setup, path: str, body: dict, **headers) -> httpx.Response:
    proxy = setup[0]
    return httpx.post(f"http://127.0.0.1:{proxy.reverse_port}{path}", json=body, trust_env=False, timeout=20,
                      headers={"authorization": f"Bearer {CLIENT_KEY}", **headers})


def test_sealed_reasoning_goes_back_to_vertex_exactly_as_claude_produced_it(client, setup):
    _, emu, _ = setup
    ask = "Weather in Oslo? Use get_weather."
    first = client.responses.with_raw_response.create(model="gpt-4o", input=ask, tools=[WEATHER], store=False,
                                                      reasoning={"effort": "low"},
                                                      include=["reasoning.encrypted_content"])
    validate_response(first.http_response.json())
    produced = next(b for b in emu.last_request()["response"]["body"]["content"] if b["type"] == "thinking")
    out = first.parse().output
    reasoning = next(i for i in out if i.type == "reasoning")
    call = next(i for i in out if i.type == "function_call")
    assert reasoning.encrypted_content.startswith("modelmux:")
    assert produced["thinking"] not in reasoning.encrypted_content  # sealed, not readable
    items = [{"role": "user", "content": ask}, reasoning.model_dump(exclude_none=True),
             call.model_dump(exclude_none=True),
             {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    second = client.responses.create(model="gpt-4o", input=items, tools=[WEATHER], store=False,
                                     reasoning={"effort": "low"})
    sent = emu.last_request()["body"]
    assert sent["messages"][1]["content"][0] == produced and sent["thinking"]["type"] == "enabled"
    assert second.output_text.startswith("Tool results: sunny")
    # a blob altered by one character is refused, naming the item: never a silent drop
    blob = reasoning.encrypted_content
    items[1]["encrypted_content"] = blob[:-2] + ("A" if blob[-2] != "A" else "B") + blob[-1]
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt-4o", input=items, tools=[WEATHER], store=False)
    assert err.value.body["param"] == "input[1].encrypted_content"
    validate_error({"error": err.value.body})


def test_item_references_previous_ids_and_store_false(client, setup):
    _, emu, _ = setup
    first = client.responses.create(model="gpt-4o", input="first words")
    message = next(i for i in first.output if i.type == "message")
    # the Vercel AI SDK's way: earlier turns as bare references to stored items
    follow = client.responses.create(model="gpt-4o", input=[
        {"role": "user", "content": "first words"}, {"type": "item_reference", "id": message.id},
        {"role": "user", "content": "second words"}])
    sent = emu.last_request()["body"]["messages"]
    assert sent[1] == {"role": "assistant", "content": [{"type": "text", "text": "You said: first words"}]}
    assert follow.output_text == "You said: second words"
    for bad in ({"previous_response_id": "resp_" + "0" * 50, "input": "hi"},
                {"input": [{"type": "item_reference", "id": "msg_" + "0" * 50}]}):
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.create(model="gpt-4o", **bad)
        validate_error({"error": err.value.body})
        assert err.value.body["code"] in ("previous_response_not_found", "item_not_found")
    unstored = client.responses.create(model="gpt-4o", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_input_items_are_paged_as_openai_pages_them(client):
    items = [{"role": "user", "content": f"part {i}"} for i in range(5)]
    made = client.responses.create(model="gpt-4o", input=items)
    page = client.responses.input_items.with_raw_response.list(made.id, limit=2, order="asc")
    body = page.http_response.json()
    validate(body, "ResponseItemList")
    assert [d["content"][0]["text"] for d in body["data"]] == ["part 0", "part 1"] and body["has_more"]
    rest = client.responses.input_items.list(made.id, limit=10, order="asc", after=body["last_id"])
    assert [d.content[0].text for d in rest.data] == ["part 2", "part 3", "part 4"] and not rest.has_more
    newest = client.responses.input_items.list(made.id, limit=1)  # desc by default
    assert newest.data[0].content[0].text == "part 4"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.input_items.list(made.id, limit=500)
    assert err.value.body["param"] == "limit"


def test_what_modelmux_does_not_run_is_a_clear_400_before_any_upstream_call(setup):
    _, emu, _ = setup
    seen = len(emu.requests())
    cases = [({"model": "gpt-4o", "input": "x", "background": True}, "background"),
             ({"model": "gpt-4o", "input": "x", "conversation": "conv_1"}, "conversation"),
             ({"model": "gpt-4o", "input": "x", "temperature": True}, "temperature"),
             ({"model": "gpt-4o", "input": 5}, "input"),
             ({"input": "x"}, "model"),
             ({"model": "gpt-4o", "input": "x", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]},
              "tools[0]"),
             ({"model": "gpt-4o", "input": [{"role": "user", "content": [
                 {"type": "input_file", "file_id": "file-1"}]}]}, "input[0].content[0]")]
    for body, param in cases:
        r = raw_post(setup, "/v1/responses", body)
        assert r.status_code == 400, (body, r.text)
        validate_error(r.json())
        assert r.json()["error"]["param"] == param or r.json()["error"]["param"].startswith(param), (param, r.text)
    r = raw_post(setup, "/v1/responses/resp_x/cancel", {})
    assert r.status_code == 400 and "background" in r.json()["error"]["message"]
    proxy = setup[0]
    r = httpx.get(f"http://127.0.0.1:{proxy.reverse_port}/v1/responses/resp_x?stream=true", trust_env=False,
                  headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"
    assert len(emu.requests()) == seen  # none of it reached Vertex


def test_a_websocket_upgrade_is_refused_with_426_so_codex_uses_http_at_once(setup):
    proxy = setup[0]
    r = httpx.get(f"http://127.0.0.1:{proxy.reverse_port}/v1/responses", trust_env=False, headers={
        "authorization": f"Bearer {CLIENT_KEY}", "connection": "Upgrade", "upgrade": "websocket",
        "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "openai-beta": "responses_websockets=2026-02-06"})
    assert r.status_code == 426
    validate_error(r.json())


def test_compaction_summarises_into_a_sealed_item_that_later_requests_expand(client, setup):
    _, emu, _ = setup
    convo = [{"role": "user", "content": "We talked about rivers."}, {"role": "assistant", "content": "Yes, rivers."}]
    compacted = client.post("/responses/compact", cast_to=httpx.Response,
                            body={"model": "gpt-4o", "input": convo}).json()
    validate(compacted, "CompactResource")
    [item] = [i for i in compacted["output"] if i["type"] == "compaction"]
    assert item["encrypted_content"].startswith("modelmux:")
    client.responses.create(model="gpt-4o", input=[item, {"role": "user", "content": "go on"}])
    sent = json.dumps(emu.last_request()["body"]["messages"])
    assert "modelmux:" not in sent and "go on" in sent  # expanded into the summary Claude wrote


def test_vertex_errors_before_and_during_a_stream(client):
    with pytest.raises(openai.RateLimitError) as err:
        client.responses.create(model="gpt-4o", input="[[status:429]] now", stream=True)
    assert int(err.value.response.headers["retry-after"]) >= 1
    validate_error({"error": err.value.body})
    with client.responses.with_streaming_response.create(model="gpt-4o", input="a b c [[stream-error:overloaded]]",
                                                         stream=True) as resp:
        raw = resp.read()
    events = validate_responses_sse(raw)
    failed = events[-1]
    assert failed["type"] == "response.failed" and failed["response"]["error"]["code"] == "rate_limit_exceeded"
    assert "try again in" in failed["response"]["error"]["message"].lower()


def test_a_silent_stream_is_kept_visibly_alive(setup, client):
    proxy, emu, _ = setup
    httpx.post(f"{emu.url}/_emulator/faults", trust_env=False, json={"rules": [
        {"match": {"stream": True}, "action": "stall", "after_events": 2, "ms": 1200, "count": 1}]})
    try:
        with client.responses.with_streaming_response.create(model="gpt-4o", input="slow thought",
                                                             stream=True) as resp:
            raw = resp.read()
    finally:
        httpx.delete(f"{emu.url}/_emulator/faults", trust_env=False)
    events = validate_responses_sse(raw)
    assert [e["type"] for e in events].count("response.in_progress") >= 3  # the first, then one per 0.3 s of silence
    assert events[-1]["type"] == "response.completed"


def test_exchanges_are_counted_logged_and_dumped_like_chat(setup, client):
    proxy, _, tmp = setup
    client.responses.create(model="gpt-4o", input="count me")
    metrics = httpx.get(f"http://127.0.0.1:{proxy.reverse_port}/metrics", trust_env=False).text
    assert 'modelmux_requests_total{api="responses"' in metrics
    records = [json.loads(line) for line in (tmp / "dump.jsonl").read_text().splitlines()]
    mine = [r for r in records if r["api"] == "responses" and r["openai_request"].get("input") == "count me"]
    assert mine and mine[-1]["vertex_request"]["body"]["messages"][0]["content"][0]["text"] == "count me"
    assert mine[-1]["openai_response"]["body"]["output"][0]["type"] == "message"


@pytest.mark.parametrize("stream", [False, True])
def test_codexs_configuration_update_is_stored_and_the_response_continued(setup, stream):
    """Codex sends `{"type": "configuration_update", "reasoning": {"effort": "low"}}` without an id; it is stored
    under one modelmux mints (the store keeps items by id: without one, the answer was a 500, or the streamed
    response was lost and its continuation a 400)."""
    update = {"type": "configuration_update", "reasoning": {"effort": "low"}}
    body = {"model": "gpt-4o", "input": [{"role": "user", "content": "configured"}, update], "stream": stream}
    first = raw_post(setup, "/v1/responses", body)
    assert first.status_code == 200, first.text
    if stream:
        events = validate_responses_sse(first.content)
        assert events[-1]["type"] == "response.completed"
        made = events[-1]["response"]
    else:
        made = first.json()
        validate_response(made)
    follow = raw_post(setup, "/v1/responses", {"model": "gpt-4o", "previous_response_id": made["id"],
                                               "input": "and then"})
    assert follow.status_code == 200, follow.text
    items = httpx.get(f"http://127.0.0.1:{setup[0].reverse_port}/v1/responses/{made['id']}/input_items",
                      params={"order": "asc"}, trust_env=False, timeout=20,
                      headers={"authorization": f"Bearer {CLIENT_KEY}"}).json()
    assert [d["type"] for d in items["data"]] == ["message", "configuration_update"]
    assert items["data"][1]["id"].startswith("cu_") and items["data"][1]["reasoning"] == {"effort": "low"}
    bad = raw_post(setup, "/v1/responses", {"model": "gpt-4o", "input": [{"role": "user", "content": "x",
                                                                           "id": 5}]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input[0].id"
    validate_error(bad.json())
