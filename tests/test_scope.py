"""addons/scope.py: a request sent straight to the listener is recognised by address, not by spelling — on a
dual-stack listener (`--listen-host ::`) an IPv4 client's connection reads as ::ffff:a.b.c.d."""

import pytest
from test_addon_hooks import CHAT, chain, make_flow, run_request  # noqa: F401  (chain: a fixture)

from modelmux.addons.scope import is_ours, sent_to_listener


@pytest.mark.parametrize("host, sockname, ours", [
    ("10.1.2.3", ("::ffff:10.1.2.3", 8080), True),  # IPv4 client of a dual-stack listener
    ("::ffff:10.1.2.3", ("10.1.2.3", 8080), True),
    ("10.1.2.3", ("10.1.2.3", 8080), True),
    ("2001:db8::5", ("2001:DB8:0::5", 8080), True),  # the same IPv6 address, written otherwise
    ("localhost", ("::ffff:10.1.2.3", 8080), True),  # a loopback name, as before
    ("10.1.2.4", ("::ffff:10.1.2.3", 8080), False),  # another address
    ("10.1.2.3", ("::ffff:10.1.2.3", 9090), False),  # another port
    ("example.com", ("::ffff:10.1.2.3", 8080), False),
    ("::ffff:10.1.2.3", ("10.1.2.30", 8080), False),
])
def test_the_listener_is_recognised_by_address(host, sockname, ours):
    f = make_flow(host=host, port=8080, scheme="http", sockname=sockname)
    assert sent_to_listener(f) is ours
    assert is_ours(f, frozenset({"api.openai.com"})) is ours


async def test_a_direct_request_to_a_dual_stack_listener_is_translated(chain):
    _, addons = chain
    f = make_flow(body={**CHAT, "stream": True}, host="10.1.2.3", port=8080, scheme="http",
                  sockname=("::ffff:10.1.2.3", 8080))
    await run_request(addons, f)
    assert f.response is None and f.request.url.endswith(":streamRawPredict")  # pointed at the relay
    assert "authorization" not in f.request.headers
