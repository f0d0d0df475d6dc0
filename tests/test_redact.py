"""The client's credentials never stay on a flow of ours (issue 10, point 4): the addon chain's request hooks, driven
with mitmproxy's taddons / tflow. The real-process proof (flows saved by `modelmux run`, read back) is in
test_dump.py."""

import json

import pytest
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow, tutils

from test_addon_hooks import run_hook

from modelmux.addons import Runtime, make_addons
from modelmux.addons.redact import REDACTED, RedactCredentials

KEY = "sk-client-key-redact-0123"
CONFIG = f"""
vertex: {{project: proj, region: us-east5, base_url: "http://127.0.0.1:9"}}
auth: {{access_token: static-test-token}}
models: {{default: null, map: {{gpt-4o: claude-sonnet-4-5@20250929}}}}
security: {{client_keys: [{KEY}]}}
"""
CREDENTIALS = [(b"authorization", f"Bearer {KEY}".encode()), (b"api-key", KEY.encode()),
               (b"x-api-key", KEY.encode()), (b"proxy-authorization", b"Basic dXNlcjpwYXNz")]


@pytest.fixture
def chain(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    addons = make_addons(Runtime())
    with taddons.context(Proxyserver(), *addons) as tctx:
        tctx.configure(addons[0], listen_host="127.0.0.1", confdir=str(tmp_path), modelmux_config=str(path))
        yield addons


def make_flow(path="/v1/models", method="GET", host="api.openai.com", headers=CREDENTIALS, body=b""):
    f = tflow.tflow(req=tutils.treq(method=method.encode(), host=host, port=443, scheme=b"https", path=path.encode(),
                                    content=body, headers=tuple(headers)))
    f.client_conn.proxy_mode = ProxyMode.parse("regular")
    f.client_conn.sockname = ("127.0.0.1", 8080)
    return f


async def run_request(addons, flow):
    await run_hook(addons, "request", flow)


def test_redaction_is_the_last_request_hook():
    hooked = [a for a in make_addons(Runtime()) if hasattr(a, "request")]
    assert isinstance(hooked[-1], RedactCredentials)


@pytest.mark.parametrize("path, method, body, status", [
    ("/v1/models", "GET", b"", 200),  # answered locally
    ("/v1/chat/completions", "POST", b'{"model": "gpt-4o", "messages": [], "seed": "x"}', 400),  # bad input
    ("/v1/nope", "GET", b"", 404),
])
async def test_flows_of_ours_keep_no_credential_once_the_key_was_checked(chain, path, method, body, status):
    f = make_flow(path, method, body=body)
    await run_request(chain, f)
    assert f.response is not None and f.response.status_code == status  # the key was accepted before redaction
    for name, _ in CREDENTIALS:
        assert f.request.headers.get_all(name.decode()) == [REDACTED]
    assert KEY not in json.dumps(f.get_state(), default=repr)  # nowhere on the flow that gets saved


async def test_a_wrong_key_is_refused_and_redacted_too(chain):
    f = make_flow(headers=[(b"authorization", b"Bearer sk-wrong"), (b"authorization", b"Bearer sk-other")])
    await run_request(chain, f)
    assert f.response.status_code == 401
    assert f.request.headers.get_all("authorization") == [REDACTED, REDACTED]


async def test_other_hosts_keep_their_credentials(chain):
    """Not intercepted: forwarded to its own server, which needs them."""
    f = make_flow(host="example.com")
    await run_request(chain, f)
    assert f.response is None and f.request.headers["authorization"] == f"Bearer {KEY}"


async def test_an_inactive_modelmux_touches_nothing():
    addons = make_addons(Runtime())  # no configuration loaded: modelmux passes every flow through
    with taddons.context(Proxyserver(), *addons):
        f = make_flow()
        await run_request(addons, f)
    assert f.request.headers["api-key"] == KEY


async def test_a_flow_that_ends_before_its_request_phase_keeps_no_credential(chain):
    """The client left mid-body (or timed out): mitmproxy's `save` writes the flow from `error`."""
    f = make_flow(path="/v1/chat/completions", method="POST")
    await run_hook(chain, "error", f)
    assert all(f.request.headers[name.decode()] == REDACTED for name, _ in CREDENTIALS)


async def test_the_proxy_password_mitmproxy_notes_on_a_flow_is_not_kept(chain):
    """mitmproxy's proxyauth puts (user, password) in the flow's metadata; a saved flow would hold it."""
    for hook in ("http_connect", "request"):
        f = make_flow(host="example.com")  # any flow, ours or not
        f.metadata["proxyauth"] = ("alice", "pw-proxy-secret-3")
        await run_hook(chain, hook, f)
        assert f.metadata["proxyauth"] == ("alice", REDACTED), hook
