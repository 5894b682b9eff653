"""calico_bgp.routing.nexthop: which of an IPv6 UPDATE's next hops a route is installed via, and on which
interface; the intake, RIB and desired state carrying the choice through (ECMP over two ToRs)."""
from __future__ import annotations

import ipaddress

import pytest

from calico_bgp.routing import desired
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.damping import Dampener, DampingParams
from calico_bgp.routing.intake import UpdateIntake
from calico_bgp.routing.nexthop import SessionLink, normalise, resolve, session_link, split, unusable
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.rib import Rib
from calico_bgp.speaker.events import PathAttributes, Update
from dataplane.routes.route import NextHop

ETH0 = SessionLink("eth0", (ipaddress.ip_network("2001:db8:0:1::/64"),))


@pytest.mark.parametrize("first, second, want", [
    ("2001:db8:0:1::2", "fe80::2", ("2001:db8:0:1::2", "fe80::2")),  # RFC 2545's 32 bytes
    ("2001:db8:0:1::2", None, ("2001:db8:0:1::2", None)),
    ("fe80::2", None, (None, "fe80::2")),                             # BIRD's three link-local-only shapes
    ("::", "fe80::2", (None, "fe80::2")),
    ("fe80::2", "fe80::2", (None, "fe80::2")),
    ("2001:db8:0:1::2", "2001:db8::9", ("2001:db8:0:1::2", None)),   # a second address that is no link-local
    ("::", None, (None, None)),
])
def test_normalise_reads_every_shape_peers_send(first, second, want):
    assert normalise(first, second) == want


@pytest.mark.parametrize("next_hop, link_local, link, want", [
    ("198.18.0.2", None, None, "198.18.0.2"),
    ("198.18.0.2", None, SessionLink("eth0"), "198.18.0.2"),
    # the global one when there is one (BIRD, gateway direct)
    ("2001:db8:0:1::2", "fe80::2", ETH0, "2001:db8:0:1::2"),
    ("2001:db8:0:1::2", None, ETH0, "2001:db8:0:1::2"),
    ("2001:db8:9::2", None, ETH0, "2001:db8:9::2"),  # off the link, but nothing else came
    ("2001:db8:9::2", "fe80::2", None, "2001:db8:9::2"),  # not directly connected: a link-local one is no use
    # the link-local one on the session's interface: it came alone, or the global one is off the link
    ("fe80::2", None, ETH0, "fe80::2%eth0"),
    ("::", "fe80::2", ETH0, "fe80::2%eth0"),
    ("fe80::2", "fe80::2", ETH0, "fe80::2%eth0"),
    ("2001:db8:9::2", "fe80::2", ETH0, "fe80::2%eth0"),
    # a link-local one from a peer that is not directly connected stays bare: unusable
    ("fe80::2", None, None, "fe80::2"),
    ("::", "fe80::2", None, "fe80::2"),
])
def test_resolve_picks_the_next_hop_to_install(next_hop, link_local, link, want):
    assert resolve(next_hop, link_local, link) == want


def test_unusable_names_a_bare_link_local_next_hop_and_nothing_else():
    assert unusable("fe80::2") == "link-local next hop fe80::2 from a peer that is not directly connected"
    assert unusable("fe80::2%eth0") is None and unusable("2001:db8::2") is None and unusable("198.18.0.2") is None
    assert split("fe80::2%eth0") == ("fe80::2", "eth0") and split("2001:db8::2") == ("2001:db8::2", None)


def _ifaces(**by_name: str) -> list[tuple[str, list]]:
    return [(name, [ipaddress.ip_interface(a) for a in addrs.split()]) for name, addrs in by_name.items()]


def test_session_link_is_the_interface_whose_network_holds_the_peer():
    interfaces = _ifaces(lo="127.0.0.1/8 ::1/128 2001:db8:ff::1/128",
                         eth0="198.18.0.1/24 2001:db8:0:1::1/64 fe80::1/64",
                         eth1="2001:db8:0:2::1/64 fe80::1/64")
    eth0 = SessionLink("eth0", (ipaddress.ip_network("2001:db8:0:1::/64"), ipaddress.ip_network("fe80::/64")))
    assert session_link("2001:db8:0:1::2", "2001:db8:0:1::1", interfaces) == eth0
    assert session_link("2001:db8:0:1::2", None, interfaces) == eth0
    assert session_link("2001:db8:0:2::2", "2001:db8:0:2::1", interfaces).name == "eth1"
    # a peer on a loopback several hops away, and one on a /128 of ours: not directly connected
    assert session_link("2001:db8:77::1", "2001:db8:ff::1", interfaces) is None
    assert session_link("2001:db8:ff::1", None, interfaces) is None
    # two links holding the peer's network: the one with the session's local address
    twice = _ifaces(a="2001:db8:0:1::1/64", b="2001:db8:0:1::9/64")
    assert session_link("2001:db8:0:1::2", "2001:db8:0:1::9", twice).name == "b"
    assert session_link("198.18.0.2", "198.18.0.1", interfaces) == SessionLink("eth0", (ipaddress.ip_network("198.18.0.0/24"),))


def _learn(rib: Rib, peer: Peer, next_hop: str, link_local: str | None = None) -> set:
    ev = Update(peer.address, "ipv6 unicast",
                announced=dict.fromkeys(["2001:db8:100::/48", "2001:db8:200::/48"],
                                        PathAttributes(next_hop=next_hop, link_local=link_local, as_path=(peer.asn,))))
    return UpdateIntake().apply(ev, peer, rib, Dampener(DampingParams(), enabled=False), 0.0).changed


def test_a_link_local_next_hop_from_a_peer_not_directly_connected_is_rejected_with_its_reason():
    rib = Rib(LocalSpeaker(64512, "198.18.0.1"))
    far = Peer("2001:db8:77::1", 65001, "198.18.9.1", ibgp=False)  # no link
    assert _learn(rib, far, "fe80::2") == set()
    assert {(r.prefix.to_ipaddress().exploded[:14], r.reason) for r in rib.rejected()} == {
        ("2001:0db8:0100", "link-local next hop fe80::2 from a peer that is not directly connected"),
        ("2001:0db8:0200", "link-local next hop fe80::2 from a peer that is not directly connected")}
    # global + link-local from it: installed via the global one
    assert len(_learn(rib, far, "2001:db8:77::1", "fe80::2")) == 2 and not rib.rejected()
    sel = rib.selection(Prefix.of("2001:db8:100::/48"))
    assert sel.next_hops == ("2001:db8:77::1",) and sel.best.attrs.link_local == "fe80::2"


def test_ecmp_over_two_tors_sending_one_link_local_address_gives_two_gateway_device_hops():
    """Two ToRs, both fe80::1 (a common data-centre habit), on eth0 and eth1: distinct next hops."""
    rib = Rib(LocalSpeaker(64512, "198.18.0.1"))
    tor1 = Peer("2001:db8:0:1::1", 65001, "198.18.1.1", ibgp=False, link=SessionLink("eth0"))
    tor2 = Peer("2001:db8:0:2::1", 65002, "198.18.2.1", ibgp=False, link=SessionLink("eth1"))
    _learn(rib, tor1, "::", "fe80::1")
    _learn(rib, tor2, "fe80::1")
    prefix = Prefix.of("2001:db8:100::/48")
    sel = rib.selection(prefix)
    assert sel.next_hops == ("fe80::1%eth0", "fe80::1%eth1")
    route = desired.learned_route(prefix, sel.next_hops)
    assert route.nexthops == (NextHop("fe80::1", "eth0"), NextHop("fe80::1", "eth1"))
    assert str(route) == "2001:db8:100::/48 via fe80::1 dev eth0 weight 1 via fe80::1 dev eth1 weight 1"
    # the cached next-hop set is keyed with the device: another prefix via eth0 alone gets eth0's hop
    other = desired.learned_route(Prefix.of("2001:db8:200::/48"), ("fe80::1%eth1",))
    assert other.nexthops == (NextHop("fe80::1", "eth1"),)


def test_a_route_reflector_does_not_pass_on_a_path_via_a_link_local_next_hop():
    """RFC 2545 section 2: a link-local address means something on its link only."""
    from calico_bgp.routing.reflection import reflect_to

    rr = LocalSpeaker(64512, "198.18.0.1", cluster_id="198.18.0.1")
    client = Peer("2001:db8:0:1::2", 64512, "198.18.0.2", ibgp=True, rr_client=True, link=ETH0)
    other = Peer("2001:db8:0:1::3", 64512, "198.18.0.3", ibgp=True, rr_client=True)
    rib = Rib(rr)
    _learn(rib, client, "fe80::2")
    _learn(rib, client, "2001:db8:0:1::2", "fe80::2")
    via_ll = rib.selection(Prefix.of("2001:db8:100::/48"))
    assert via_ll.next_hops == ("2001:db8:0:1::2",)
    assert reflect_to(rr, via_ll, other).next_hop == "2001:db8:0:1::2"
    rib2 = Rib(rr)
    _learn(rib2, client, "fe80::2")
    sel = rib2.selection(Prefix.of("2001:db8:100::/48"))
    assert sel.next_hops == ("fe80::2%eth0",) and reflect_to(rr, sel, other) is None
