"""Martian prefixes and unusable next hops: never installed, whatever a BGPFilter accepts. Pure.

A prefix is martian when every address it covers is in one of these ranges (so 0.0.0.0/0 and ::/0
stay legitimate defaults a filter may accept; 0.0.0.0/8 and anything inside it do not):

    IPv4  0.0.0.0/8 (this network), 127.0.0.0/8 (loopback), 169.254.0.0/16 (link-local),
          224.0.0.0/3 = 224.0.0.0/4 (multicast) + 240.0.0.0/4 (reserved, 255.255.255.255 broadcast)
    IPv6  ::/127 (:: unspecified, ::1 loopback), fe80::/10 (link-local), ff00::/8 (multicast)

after RFC 6890's registry and what BIRD and FRR refuse: BIRD's rte_validate drops a route whose
network address ip4_classify/ip6_classify calls host- or link-scope, multicast or invalid
(nest/rt-table.c, lib/ip.c); FRR's bgp_nlri_parse_ip drops IPv4 class D and IPv6 link-local and
multicast NLRI (bgpd/bgp_route.c).

A next hop is unusable when it is unspecified, loopback, multicast, broadcast, reserved (240/4),
IPv4 link-local, or one of this node's own addresses: FRR's bgp_update_martian_nexthop refuses
0/8, 127/8, class D and E and its own addresses ("martian or self next-hop"). An IPv6 link-local
next hop is NOT refused here: whether it is usable depends on the session (directly connected,
and installed with the session's interface): the RIB asks calico_bgp.routing.nexthop.unusable.

Cost on the hot path: a prefix check is a table lookup and two int operations; a next hop is
classified once per attributes object (the prefixes of one UPDATE share one) and cached by text.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.path import Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import ImportPolicy

_V4_RANGES = (("0.0.0.0/8", "this network"), ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"),
              ("224.0.0.0/3", "multicast or reserved"))
_V6_RANGES = (("::/127", "unspecified or loopback"), ("fe80::/10", "link-local"), ("ff00::/8", "multicast"))


def _table(ranges: tuple[tuple[str, str], ...], bits: int, index_bits: int) -> dict[int, tuple[int, int, int, str]]:
    """The first `index_bits` of an address -> (the shortest prefix length that lies inside the range,
    the shift and the value the range's bits have, the reason) for each range they fall in."""
    out: dict[int, tuple[int, int, int, str]] = {}
    for cidr, what in ranges:
        net = ipaddress.ip_network(cidr)
        plen, value = net.prefixlen, int(net.network_address)
        entry = (plen, bits - plen, value >> (bits - plen), f"martian prefix: inside {cidr} ({what})")
        first, last = value >> (bits - index_bits), int(net.broadcast_address) >> (bits - index_bits)
        for i in range(first, last + 1):
            out[i] = entry
    return out


_V4 = _table(_V4_RANGES, 32, 8)     # by first octet
_V4_BY_OCTET = tuple(_V4.get(i) for i in range(256))  # indexing a tuple is cheaper than dict.get
_V6 = _table(_V6_RANGES, 128, 16)   # by first 16 bits (fe80::/10 spans fe80..febf)


def prefix_reason(prefix: Prefix) -> str | None:
    """Why `prefix` is martian, or None when it is not."""
    version, value, plen = prefix
    m = _V4_BY_OCTET[value >> 24] if version == 4 else _V6.get(value >> 112)
    if m is not None and plen >= m[0] and value >> m[1] == m[2]:
        return m[3]
    return None


def next_hop_reason(next_hop: str, own: frozenset[str] = frozenset()) -> str | None:
    """Why `next_hop` cannot be installed, or None. `own`: this node's addresses (canonical text).
    IPv6 link-local next hops are left to calico_bgp.routing.nexthop.unusable (the RIB: usable only scoped to
    a directly connected session's interface)."""
    try:
        addr = ipaddress.ip_address(next_hop)
    except ValueError:
        return f"next hop {next_hop!r} is not an address"
    text = str(addr)
    if text in own:
        return f"next hop {text} is this node's own address"
    if addr.version == 4:
        if addr.is_unspecified or int(addr) >> 24 == 0:
            return f"next hop {text} is unspecified (0.0.0.0/8)"
        if addr.is_loopback:
            return f"next hop {text} is loopback"
        if addr.is_multicast:
            return f"next hop {text} is multicast"
        if int(addr) == 0xFFFFFFFF:
            return f"next hop {text} is the broadcast address"
        if addr.is_reserved:
            return f"next hop {text} is reserved (240.0.0.0/4)"
        if addr.is_link_local:
            return f"next hop {text} is link-local"
        return None
    if addr.is_unspecified:
        return f"next hop {text} is unspecified"
    if addr.is_loopback:
        return f"next hop {text} is loopback"
    if addr.is_multicast:
        return f"next hop {text} is multicast"
    mapped = addr.ipv4_mapped
    if mapped is not None:
        why = next_hop_reason(str(mapped), own)
        return None if why is None else f"{why} (as {text})"
    return None


def own_addresses(addresses: Iterable[str]) -> frozenset[str]:
    """This node's addresses as canonical text ('198.18.0.2', '2001:db8::2'); a CIDR's address part
    counts; text that is no address is skipped."""
    out = set()
    for a in addresses:
        try:
            out.add(str(ipaddress.ip_address(a.split("/")[0])))
        except ValueError:
            continue
    return frozenset(out)


def guarded(policy: ImportPolicy | None, own: frozenset[str] = frozenset(), max_cached: int = 4096) -> ImportPolicy:
    """`policy` behind the martian checks: a martian prefix or an unusable next hop is rejected with
    its reason before the filters are asked, so no filter can accept one. `own`: this node's
    addresses."""
    cache: dict[str, str | None] = {}  # next hop -> reason
    last_attrs: PathAttributes | None = None  # the last attributes object and its next hop's verdict
    last_why: str | None = None
    v4, v6 = _V4_BY_OCTET, _V6.get

    def check(peer: Peer, prefix: Prefix, pattrs: PathAttributes) -> str | None:
        nonlocal last_attrs, last_why
        if pattrs is not last_attrs:
            nh = pattrs.next_hop
            try:
                why = cache[nh]
            except KeyError:
                if len(cache) >= max_cached:
                    cache.clear()
                why = cache[nh] = next_hop_reason(nh, own)
            last_attrs, last_why = pattrs, why
        if last_why is not None:
            return last_why
        # prefix_reason, inlined: this runs for every prefix received
        version, value, plen = prefix
        m = v4[value >> 24] if version == 4 else v6(value >> 112)
        if m is not None and plen >= m[0] and value >> m[1] == m[2]:
            return m[3]
        return policy(peer, prefix, pattrs) if policy is not None else None

    return check

