"""IPv6 next hops as BGP carries them, and which one a learned route is installed via. Pure.

RFC 2545 section 3: on a session over a shared link, an IPv6 UPDATE's next hop is the sender's global
address followed by its link-local one (32 bytes); otherwise the global alone (16 bytes). Peers also
send a link-local address alone, in one of three shapes BIRD accepts ("There are three common ways
how to encode IPv6 link-local-only next hops: (:: ll), (ll), and (ll ll)", BIRD commit 17de3a02):
`normalise` maps all of them to (None, ll); a second address that is not link-local is ignored, as
GoBGP does (osrg/gobgp#2481).

Which one to install (`resolve`), decided the way BIRD does on a direct session (proto/bgp/packets.c,
bgp_apply_next_hop, `gateway direct`): the global one when there is one, the link-local one on the
session's interface when the peer sent only that. FRR installs the link-local one by default whenever
both came (bgpd/bgp_zebra.c, bgp_path_info_to_ipv6_nexthop; `set ipv6 next-hop prefer-global` turns
that round); we take it too when the global one is on none of the session link's networks, where
BIRD would drop the route: the link-local one is always reachable on a direct session, a global
one off the link is not (the kernel refuses a gateway that is not on-link).

A link-local address names a host only together with a link, so the chosen one is written scoped,
RFC 4007 section 11's `fe80::1%eth0`: one string that keeps the route's next-hop sets hashable and
distinct per interface (two ToRs may both use fe80::1). A link-local next hop without a scope can
only come from a peer that is not directly connected, and is unusable (`unusable`).
"""
from __future__ import annotations

import ipaddress
from typing import Iterable, Sequence

import attrs

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface
SCOPE = "%"  # RFC 4007: address%zone


@attrs.frozen(slots=True)
class SessionLink:
    """The interface a directly connected session runs over, and the networks on it (of the session's
    address family): a peer's global next hop is on-link when one of them holds it."""

    name: str
    networks: tuple[Network, ...] = ()


def _link_local(text: str | None) -> bool:
    if not text or ":" not in text:
        return False
    try:
        return ipaddress.IPv6Address(text).is_link_local
    except ValueError:
        return False


def _unspecified(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_unspecified
    except ValueError:
        return False


def normalise(first: str | None, second: str | None) -> tuple[str | None, str | None]:
    """(global, link-local) from the one or two addresses an UPDATE's next hop held, in order."""
    if second is not None and not _link_local(second):
        second = None  # not a link-local address: RFC 2545 has nothing else there
    if first is not None and (_link_local(first) or _unspecified(first)):
        # (ll), (ll ll), (:: ll): only a link-local next hop
        return None, (first if _link_local(first) and second is None else second)
    return first, second


def resolve(next_hop: str, link_local: str | None, link: SessionLink | None) -> str:
    """The next hop to install a route via, from what the peer sent (`next_hop` first, `link_local`
    second, as on the wire) and the session's link (None: the peer is not directly connected).

    The global one when there is one (and, on a direct session, it is on the link or no link-local
    one came); else the link-local one scoped to the session's interface ("fe80::1%eth0"); a
    link-local one with no link to scope it stays bare, which `unusable` rejects."""
    if link_local is None and ":" not in next_hop:
        return next_hop  # IPv4: the common case, nothing to decide
    global_, ll = normalise(next_hop, link_local)
    if global_ is not None and (ll is None or link is None or on_link(global_, link)):
        return global_
    if ll is None:  # "::" alone
        return next_hop
    return f"{ll}{SCOPE}{link.name}" if link is not None else ll


def on_link(address: str, link: SessionLink) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip.version == n.version and ip in n for n in link.networks)


def unusable(next_hop: str) -> str | None:
    """Why a route cannot be installed via `next_hop` as far as its scope goes: a link-local one that
    `resolve` could not give an interface (None otherwise)."""
    if ":" not in next_hop or SCOPE in next_hop:
        return None
    if _link_local(next_hop):
        return f"link-local next hop {next_hop} from a peer that is not directly connected"
    return None  # "::" and the other martian next hops: calico_bgp.routing.martians


def split(next_hop: str) -> tuple[str, str | None]:
    """(gateway, device) of a next hop as `resolve` writes it."""
    gateway, _, device = next_hop.partition(SCOPE)
    return gateway, device or None


def session_link(peer_address: str, local_address: str | None, interfaces: Iterable[tuple[str, Sequence[Address]]]) -> SessionLink | None:
    """The link a session runs over when the peer is directly connected: the interface with a network
    holding `peer_address` (the one holding `local_address` first, when several do); None when no
    interface's network holds it (a peer on a loopback, several hops away). `interfaces`: (name,
    addresses with their prefix lengths), as autodetect.read_interfaces gives them."""
    peer = ipaddress.ip_address(peer_address)
    local = ipaddress.ip_address(local_address) if local_address else None
    found: SessionLink | None = None
    for name, addrs in interfaces:
        nets = tuple(dict.fromkeys(a.network for a in addrs if a.version == peer.version))
        if not any(peer in n and n.num_addresses > 1 for n in nets):  # a /32 or /128 is no link
            continue
        link = SessionLink(name, nets)
        if local is None or any(a.ip == local for a in addrs):
            return link
        found = found or link
    return found
