"""Is an address of the public internet? One rule for the checks that keep client-chosen destinations off the
proxy's own network (addons/forwarding.py: forwarded destinations; images.py: image URLs).

An IPv6 address may carry an IPv4 one that is where the packets really go: IPv4-mapped (::ffff:a.b.c.d),
IPv4-translated (::ffff:0:a.b.c.d), IPv4-compatible (::a.b.c.d), 6to4 (2002:AABB:CCDD::/48), Teredo (server and
client), and NAT64 (64:ff9b::/96, and the local-use 64:ff9b:1::/48 with the address in the last 32 bits). Python's
`is_global` calls several of these global (64:ff9b::a9fe:a9fe reaches the metadata server through a NAT64
gateway): each embedded IPv4 address must be public too.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv6Address, IPv6Network

_LOW_32_BITS = (IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (RFC 2765)
                IPv6Network("::/96"),  # IPv4-compatible (deprecated, RFC 4291)
                IPv6Network("64:ff9b::/96"), IPv6Network("64:ff9b:1::/48"))  # NAT64 (RFC 6052, RFC 8215)


def embedded_ipv4(addr: IPv6Address) -> list[IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (none for most)."""
    found = [a for a in (addr.ipv4_mapped, addr.sixtofour) if a is not None]
    if addr.teredo is not None:
        found.extend(addr.teredo)
    if any(addr in net for net in _LOW_32_BITS):
        found.append(IPv4Address(int(addr) & 0xFFFFFFFF))
    return found


def non_global(ip: str) -> bool:
    """Not an address of the public internet: loopback, link-local, private, shared, reserved, multicast — the
    address itself or any IPv4 address it carries. A zone id (fe80::1%eth0) says nothing about the range."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    candidates = [addr, *embedded_ipv4(addr)] if isinstance(addr, IPv6Address) else [addr]
    return any(not a.is_global or a.is_multicast for a in candidates)
