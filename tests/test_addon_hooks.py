"""The addon's hooks, driven with mitmproxy's own test helpers (taddons / tflow)."""

import inspect
import json

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow, tutils
from openapi import validate_error, validate_openai_sse

from modelmux.addons import Runtime, Translate, make_addons

CONFIG = """
vertex: {project: proj, region: us-east5, base_url: "http://127.0.0.1:9"}
auth: {access_token: static-test-token}
retries: {max_attempts: 2, backoff_initial_seconds: 0.01}
models:
  default: null
  map: {gpt-4o: claude-sonnet-4-5@20250929, gpt-4o-mini: claude-haiku-4-5@20251001}
embeddings: {default: null}  # unmapped names are not served (a 404), as for chat
"""

CHAT = {"model": "gpt-4o", "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]}


@pytest.fixture
def chain(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    runtime = Runtime()
    addons = make_addons(runtime)
    with taddons.context(Proxyserver(), *addons) as tctx:
        tctx.configure(addons[0], listen_host="127.0.0.1", confdir=str(tmp_path), modelmux_config=str(path))
        yield tctx, addons


def translator_of(addons) -> Translate:
    return next(a for a in addons if isinstance(a, Translate))


def make_flow(path="/v1/chat/completions", method="POST", body=CHAT, host="api.openai.com", port=443,
              scheme="https", mode="regular", sockname=("127.0.0.1", 8080)):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    f = tflow.tflow(req=tutils.treq(method=method.encode(), host=host, port=port, scheme=scheme.encode(),
                                    path=path.encode(), content=content,
                                    headers=((b"authorization", b"Bearer sk-client-secret"),
                                             (b"openai-organization", b"org-1"), (b"x-stainless-os", b"Linux"),
                                             (b"content-type", b"application/json"))))
    f.client_conn.proxy_mode = ProxyMode.parse(mode)
    f.client_conn.sockname = sockname
    return f


async def run_hook(addons, hook, flow):
    """Every addon's `hook`, in chain order, as mitmproxy calls them."""
    for a in addons:
        if hasattr(a, hook):
            result = getattr(a, hook)(flow)
            if inspect.isawaitable(result):  # mitmproxy awaits async hooks too
                await result


async def run_request(addons, flow):
    await run_hook(addons, "request", flow)


async def test_streamed_request_is_rewritten_for_the_relay(chain):
    tctx, addons = chain
    assert tctx.options.connection_strategy == "lazy"
    f = make_flow(body={**CHAT, "stream": True})
    await run_request(addons, f)
    assert f.response is None
    vertex_path = ("/v1/projects/proj/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929"
                   ":streamRawPredict")
    assert f.metadata["modelmux"]["vertex_url"] == "http://127.0.0.1:9" + vertex_path
    relay = translator_of(addons).runtime.relay
    assert f.request.url == f"http://127.0.0.1:{relay.port}{vertex_path}"  # the loopback relay, see upstream.py
    headers = {k.lower(): v for k, v in f.request.headers.items()}
    plan = relay._plans[headers["x-modelmux-plan"]]
    assert list(plan.urls) == ["us-east5"] and plan.body == f.request.content
    assert "authorization" not in headers  # the relay adds the Google token; the flow never holds it
    assert not any(k.startswith(("openai-", "x-stainless")) for k in headers)
    assert "sk-client-secret" not in json.dumps(headers)
    body = json.loads(f.request.content)
    assert "model" not in body and body["system"] == [{"type": "text", "text": "sys"}]


async def test_unreachable_vertex_is_an_openai_502_not_mitmproxys_html(chain):
    _, addons = chain
    f = make_flow()  # non-streamed: called from the hook itself; nothing listens on 127.0.0.1:9
    await run_request(addons, f)
    ex = translator_of(addons).exchanges[f.id]
    assert f.response.status_code == 502 and ex.outcome.attempts == 2 and ex.outcome.region == "us-east5"
    assert not any(k.startswith("x-modelmux") for k in f.response.headers)
    translator_of(addons).response(f)
    assert f.id not in translator_of(addons).exchanges  # recorded: the record is gone with the exchange
    err = json.loads(f.response.content)
    validate_error(err)
    assert err["error"]["code"] == "upstream_unavailable" and "us-east5" in err["error"]["message"]


async def test_streamed_answer_is_translated_by_the_stream_callable(chain):
    _, addons = chain
    f = make_flow(body={**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    await run_request(addons, f)
    assert f.request.url.endswith(":streamRawPredict") and json.loads(f.request.content)["stream"] is True
    plan = translator_of(addons).runtime.relay._plans[f.request.headers["x-modelmux-plan"]]
    assert plan.stream and plan.urls["us-east5"].endswith(":streamRawPredict")
    f.response = tutils.tresp(status_code=200, content=None,
                              headers=((b"content-type", b"text/event-stream"), (b"content-length", b"999")))
    translator_of(addons).responseheaders(f)
    assert callable(f.response.stream) and "content-length" not in f.response.headers
    assert f.response.headers["transfer-encoding"] == "chunked"
    events = [{"type": "message_start", "message": {"id": "msg_vrtx_9", "usage": {"input_tokens": 2}}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "é"}},
              {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
              {"type": "message_stop"}]
    raw = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)
    out = []
    for i in range(0, len(raw), 7):
        piece = f.response.stream(raw[i:i + 7])
        assert isinstance(piece, list) and b"" not in piece  # never an empty chunk mid-stream
        out += piece
    out += f.response.stream(b"")
    chunks = validate_openai_sse(b"".join(out))
    assert chunks[-1]["usage"]["total_tokens"] == 3


async def test_upstream_429_becomes_openai_429_with_retry_after(chain):
    _, addons = chain
    f = make_flow(body={**CHAT, "stream": True})
    await run_request(addons, f)
    f.response = tutils.tresp(status_code=429, content=json.dumps([{"error": {
        "code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}]).encode())
    translator_of(addons).responseheaders(f)
    translator_of(addons).response(f)
    assert f.response.status_code == 429 and f.response.headers["retry-after"] == "1"
    validate_error(json.loads(f.response.content))


@pytest.mark.parametrize("body, status, param", [
    (b"{nope", 400, None),
    ({"model": "gpt-4o", "messages": [{"role": "bogus", "content": "x"}]}, 400, "messages[0].role"),
    ({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
])
async def test_bad_input_is_answered_locally(chain, body, status, param):
    _, addons = chain
    f = make_flow(body=body)
    await run_request(addons, f)
    assert f.response is not None and f.response.status_code == status
    err = json.loads(f.response.content)
    validate_error(err)
    assert err["error"]["param"] == param
    assert f.request.host == "api.openai.com"  # nothing was redirected upstream


@pytest.mark.parametrize("kw", [
    {},  # regular mode, intercepted host
    {"mode": "reverse:https://api.openai.com", "host": "api.openai.com"},
    {"host": "127.0.0.1", "port": 8080, "scheme": "http"},  # sent straight to the listener
])
async def test_models_are_answered_locally_in_every_mode(chain, kw):
    _, addons = chain
    f = make_flow(path="/v1/models", method="GET", body=b"", **kw)
    await run_request(addons, f)
    body = json.loads(f.response.content)
    assert f.response.status_code == 200 and body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5@20250929", "claude-haiku-4-5@20251001",
                   # the built-in embeddings routes (config `embeddings`)
                   "text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002",
                   "gemini-embedding-001", "text-embedding-005"]
    assert {m["id"]: m["owned_by"] for m in body["data"]}["gemini-embedding-001"] == "google"
    f = make_flow(path="/v1/models/gpt-4o-mini", method="GET", body=b"", **kw)
    await run_request(addons, f)
    assert json.loads(f.response.content)["id"] == "gpt-4o-mini"
    f = make_flow(path="/v1/models/gpt-2", method="GET", body=b"", **kw)
    await run_request(addons, f)
    assert f.response.status_code == 404 and json.loads(f.response.content)["error"]["code"] == "model_not_found"


async def test_other_paths_on_our_hosts_get_404_and_other_hosts_are_untouched(chain):
    _, addons = chain
    f = make_flow(path="/v1/images/generations")
    await run_request(addons, f)
    assert f.response.status_code == 404
    validate_error(json.loads(f.response.content))
    f = make_flow(path="/v1/chat/completions", method="GET", body=b"")
    await run_request(addons, f)
    assert f.response.status_code == 405
    f = make_flow(host="example.com")
    await run_request(addons, f)
    assert f.response is None and f.request.host == "example.com"
    # a Host header naming the listener does not make a request to another port ours
    f = make_flow(host="127.0.0.1", port=9999, scheme="http")
    await run_request(addons, f)
    assert f.response is None


async def test_invalid_config_is_refused_and_missing_config_leaves_flows_alone(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MODELMUX_CONFIG", raising=False)
    runtime = Runtime()
    addons = make_addons(runtime)
    with taddons.context(*addons) as tctx:
        tctx.configure(addons[0], modelmux_config="")
        addons[0].running()
        assert runtime.current is None and "modelmux is inactive" in caplog.text
        f = make_flow()
        await run_request(addons, f)
        assert f.response is None and f.request.host == "api.openai.com"
        bad = tmp_path / "bad.yaml"
        bad.write_text("vertex: {project: p, regoin: x}\n")
        with pytest.raises(exceptions.OptionsError, match="regoin: unknown key"):
            tctx.configure(addons[0], modelmux_config=str(bad))


async def test_pain27_client_keys_gate_every_endpoint(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG + "security: {client_keys: [mm-key-1, mm-key-2]}\n")
    addons = make_addons(Runtime())
    with taddons.context(Proxyserver(), *addons) as tctx:
        tctx.configure(addons[0], listen_host="127.0.0.1", confdir=str(tmp_path), modelmux_config=str(path))
        for path_, method, body in [("/v1/models", "GET", b""), ("/v1/chat/completions", "POST", CHAT)]:
            f = make_flow(path=path_, method=method, body=body)  # carries the app's OpenAI key: not a modelmux key
            await run_request(addons, f)
            assert f.response.status_code == 401
            err = json.loads(f.response.content)
            validate_error(err)
            assert err["error"]["code"] == "invalid_api_key" and "sk-client-secret" not in f.response.text
        f = make_flow(path="/v1/models", method="GET", body=b"")
        f.request.headers["authorization"] = "Bearer mm-key-2"
        await run_request(addons, f)
        assert f.response.status_code == 200
        f = make_flow(host="example.com")  # not ours: not gated
        await run_request(addons, f)
        assert f.response is None


async def test_a_key_that_is_not_utf8_is_refused_not_waved_through(tmp_path):
    """`Authorization: Bearer \\xff` (mitmproxy keeps such bytes as surrogates): a 401, never a hook's crash that
    mitmproxy would log and pass over — the next addons would serve the request without any key."""
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG + "security: {client_keys: [mm-key-1]}\n")
    addons = make_addons(Runtime())
    with taddons.context(Proxyserver(), *addons) as tctx:
        tctx.configure(addons[0], listen_host="127.0.0.1", confdir=str(tmp_path), modelmux_config=str(path))
        for path_, method, body in [("/v1/models", "GET", b""), ("/v1/chat/completions", "POST", CHAT)]:
            f = make_flow(path=path_, method=method, body=body)
            f.request.headers.fields = ((b"authorization", b"Bearer \xffmm-key-1"),
                                        (b"content-type", b"application/json"))
            await run_request(addons, f)
            assert f.response.status_code == 401, f.response.text
            assert f.request.host == "api.openai.com"


async def test_a_request_hook_that_fails_answers_500_and_nothing_goes_on():
    from modelmux.addons.guard import fail_closed

    class Broken:
        @fail_closed
        def request(self, flow):
            raise RuntimeError("a bug")

        @fail_closed
        async def http_connect(self, flow):
            raise KeyError("another")

    f = make_flow()
    Broken().request(f)
    assert f.response.status_code == 500
    err = json.loads(f.response.content)
    validate_error(err)
    assert err["error"]["type"] == "server_error" and "a bug" not in f.response.text
    f = make_flow(method="CONNECT")
    await Broken().http_connect(f)
    assert f.response.status_code == 500


async def test_requests_answered_locally_leave_no_rate_limit_entry(tmp_path):
    """A limited request refused by its API (a 400) never becomes an exchange: nothing of it stays behind."""
    from modelmux.addons import RateLimits
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG + "limits: {requests_per_minute: 100}\n")
    runtime = Runtime()
    addons = make_addons(runtime)
    limits = next(a for a in addons if isinstance(a, RateLimits))
    with taddons.context(Proxyserver(), *addons) as tctx:
        tctx.configure(addons[0], listen_host="127.0.0.1", confdir=str(tmp_path), modelmux_config=str(path))
        for _ in range(5):
            f = make_flow(body={"model": 5, "messages": []})
            await run_request(addons, f)
            await run_hook(addons, "response", f)
            assert f.response.status_code == 400 and f.response.headers["x-ratelimit-limit-requests"] == "100"
        assert limits._clients == {}
        await runtime.close()
