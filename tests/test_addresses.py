"""addresses.py: an IPv6 address that carries an IPv4 one is judged by that one too, for forwarded destinations
(addons/forwarding.py) and image URLs (images.py) alike."""

import pytest

from modelmux.addons.forwarding import vet
from modelmux.addresses import embedded_ipv4, non_global
from modelmux.config import ImagesConfig
from modelmux.images import fetch_images
from modelmux.translate.errors import OpenAIError

CARRYING_PRIVATE = [
    "64:ff9b::a9fe:a9fe",  # NAT64 (well-known prefix) to the metadata server
    "64:ff9b::7f00:1",  # NAT64 to loopback
    "64:ff9b:1::a00:1",  # local-use NAT64 to 10.0.0.1
    "::a00:1",  # IPv4-compatible 10.0.0.1
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1
    "::ffff:0:a9fe:a9fe",  # IPv4-translated 169.254.169.254
    "::ffff:127.0.0.1",  # IPv4-mapped
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
]


@pytest.mark.parametrize("address", CARRYING_PRIVATE)
def test_an_ipv6_form_carrying_a_private_ipv4_address_is_not_global(address):
    assert non_global(address)


@pytest.mark.parametrize("address, carried", [
    ("64:ff9b::a9fe:a9fe", ["169.254.169.254"]), ("64:ff9b:1::a00:1", ["10.0.0.1"]), ("::a00:1", ["10.0.0.1"]),
    ("::ffff:0:7f00:1", ["127.0.0.1"]), ("::ffff:8.8.8.8", ["8.8.8.8"]), ("2002:808:808::1", ["8.8.8.8"]),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", ["65.54.227.120", "192.0.2.45"]),  # Teredo: server, client
    ("2607:f8b0:4004:800::200e", []),
])
def test_the_carried_ipv4_addresses(address, carried):
    import ipaddress
    assert [str(a) for a in embedded_ipv4(ipaddress.IPv6Address(address))] == carried


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2607:f8b0:4004:800::200e", "8.8.8.8", "::ffff:8.8.8.8"])
def test_public_addresses_stay_public(address):
    assert not non_global(address)  # NAT64 to 8.8.8.8 is as public as 8.8.8.8


@pytest.mark.parametrize("address", CARRYING_PRIVATE)
async def test_forwarding_and_image_fetches_refuse_them(address):
    forwarded, reason = await vet(address, 80)
    assert forwarded is None and "security.forward_private_networks" in reason

    async def resolve(host, port):  # a name that resolves to this address (nothing is connected to)
        return [address]

    with pytest.raises(OpenAIError) as err:
        await fetch_images(["http://img.test/a.png"], ImagesConfig(), resolve=resolve)
    assert err.value.status == 400 and "not fetched" in err.value.message
