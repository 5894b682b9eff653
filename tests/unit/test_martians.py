"""calico_bgp.routing.martians: martian prefixes and unusable next hops never reach the RIB's selection,
whatever a BGPFilter accepts, and `routes --rejected` (the RIB's rejected list) says why."""
from __future__ import annotations

import ipaddress

import pytest

from calico_bgp.resources import model
from calico_bgp.resources.bgpfilter import BGPFilter, BGPFilterRule, BGPFilterSpec
from calico_bgp.routing import bgpfilter, martians
from calico_bgp.routing.damping import Dampener, DampingParams
from calico_bgp.routing.intake import UpdateIntake
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import Rib
from calico_bgp.speaker.parse import parse_line
from tests.unit.exabgp_decode import LOCAL, PEER, PEER_AS, decode, next_hop, origin, sequence, update

EBGP = Peer(PEER, PEER_AS, PEER, ibgp=False)
MARTIANS = ["0.0.0.0/8", "0.1.2.0/24", "127.0.0.0/8", "127.0.0.1/32", "169.254.0.0/16", "169.254.7.0/24",
            "224.0.0.0/4", "224.0.0.0/3", "239.1.1.0/24", "240.0.0.0/4", "255.255.255.255/32",
            "::/128", "::1/128", "fe80::/10", "fe80::/64", "febf:1::/32", "ff00::/8", "ff02::1/128"]
FINE = ["0.0.0.0/0", "0.0.0.0/7", "1.0.0.0/8", "126.255.0.0/16", "128.0.0.0/1", "169.253.0.0/16", "169.255.0.0/16",
        "192.0.0.0/2", "223.255.255.0/24", "198.18.0.0/15", "::/0", "::2/128", "fec0::/10", "fe00::/9",
        "2001:db8::/32", "::ffff:198.18.0.1/128"]


def _accept_all() -> BGPFilter:
    return BGPFilter(model.Metadata("everything"), BGPFilterSpec(
        import_v4=(BGPFilterRule(action="Accept", cidr="0.0.0.0/0", match_operator="In"),),
        import_v6=(BGPFilterRule(action="Accept", cidr="::/0", match_operator="In"),)))


def _rib(own: frozenset[str] = frozenset()) -> Rib:
    """A RIB whose import policy is the agent's: the martian guard in front of a filter accepting everything."""
    policy = bgpfilter.import_policy([], lambda peer: [_accept_all()])
    return Rib(LocalSpeaker(64512, LOCAL), import_policy=martians.guarded(policy, own))


@pytest.mark.parametrize("text", MARTIANS)
def test_a_martian_prefix_is_rejected_though_a_filter_accepts_everything(text):
    rib = _rib()
    nh = PEER if ":" not in text else "2001:db8::1"
    rib.update(EBGP, {Prefix.of(text): PathAttributes(nh, as_path=(PEER_AS,))})
    assert len(rib) == 0
    [r] = rib.rejected(PEER)
    assert str(r.prefix) == text and r.reason.startswith("martian prefix: inside ")
    assert martians.prefix_reason(Prefix.of(ipaddress.ip_network(text))) == r.reason  # from the cluster's ipaddress type too


@pytest.mark.parametrize("text", FINE)
def test_everything_else_is_up_to_the_filters(text):
    rib = _rib()
    nh = PEER if ":" not in text else "2001:db8::1"
    rib.update(EBGP, {Prefix.of(text): PathAttributes(nh, as_path=(PEER_AS,))})
    assert len(rib) == 1 and not rib.rejected(PEER)


@pytest.mark.parametrize("nh,why", [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"),
    ("224.0.0.5", "multicast"), ("255.255.255.255", "broadcast"), ("240.0.0.1", "reserved"),
    ("169.254.1.1", "link-local"), (LOCAL, "this node's own address"), ("198.18.0.99", "this node's own address"),
    ("::", "unspecified"), ("::1", "loopback"), ("ff02::2", "multicast"), ("2001:db8::2", "this node's own address"),
    ("::ffff:127.0.0.1", "loopback"), ("no-nexthop", "not an address"),
])
def test_an_unusable_next_hop_is_rejected_with_its_reason(nh, why):
    rib = _rib(martians.own_addresses([LOCAL, "198.18.0.99/24", "2001:db8::2"]))
    prefix = Prefix.of("198.19.5.0/24")
    rib.update(EBGP, {prefix: PathAttributes(nh, as_path=(PEER_AS,))})
    assert rib.selection(prefix) is None
    [r] = rib.rejected(PEER)
    assert why in r.reason and r.reason.startswith("next hop")


def test_a_usable_next_hop_replaces_the_rejected_path_and_a_rejected_one_withdraws_the_good_one():
    rib = _rib(martians.own_addresses([LOCAL]))
    prefix = Prefix.of("198.19.5.0/24")
    rib.update(EBGP, {prefix: PathAttributes("127.0.0.1", as_path=(PEER_AS,))})
    rib.update(EBGP, {prefix: PathAttributes(PEER, as_path=(PEER_AS,))})
    assert rib.selection(prefix).next_hops == (PEER,) and not rib.rejected(PEER)
    rib.update(EBGP, {prefix: PathAttributes(LOCAL, as_path=(PEER_AS,))})
    assert rib.selection(prefix) is None and rib.rejected(PEER)[0].reason == f"next hop {LOCAL} is this node's own address"


def test_an_ipv6_link_local_next_hop_is_left_to_the_session():
    """The martian guard passes fe80:: next hops on; the RIB takes one from a directly connected peer
    (scoped to its link by the intake) and refuses one from a peer on no link of ours (nexthop.unusable)."""
    prefix = Prefix.of("2001:db8:5::/48")
    assert martians.guarded(None)(EBGP, prefix, PathAttributes("fe80::1", as_path=(PEER_AS,))) is None
    rib = _rib()
    rib.update(EBGP, {prefix: PathAttributes("fe80::1%eth0", as_path=(PEER_AS,))})
    assert rib.selection(prefix) is not None
    rib.update(EBGP, {prefix: PathAttributes("fe80::1", as_path=(PEER_AS,))})
    assert rib.selection(prefix) is None
    assert rib.rejected(PEER)[0].reason.startswith("link-local next hop fe80::1")


def test_the_filter_still_decides_the_rest():
    policy = bgpfilter.import_policy([], lambda peer: [])  # no filter, no pool: nothing is accepted
    rib = Rib(LocalSpeaker(64512, LOCAL), import_policy=martians.guarded(policy))
    rib.update(EBGP, {Prefix.of("198.19.5.0/24"): PathAttributes(PEER, as_path=(PEER_AS,)),
                      Prefix.of("127.0.0.0/8"): PathAttributes(PEER, as_path=(PEER_AS,))})
    assert sorted(r.reason for r in rib.rejected(PEER)) == ["martian prefix: inside 127.0.0.0/8 (loopback)",
                                                            "outside every IP pool"]


def test_from_exabgps_json_a_martian_and_a_good_route_of_one_update():
    """The whole intake path: ExaBGP's JSON for one UPDATE with a martian, then one with the node's
    own address as next hop; only the good route is selected, the others are listed as rejected."""
    one, two = decode(update([origin(), sequence(PEER_AS), next_hop(PEER)], ("127.0.0.0/8", "198.19.5.0/24")),
                      update([origin(), sequence(PEER_AS), next_hop(LOCAL)], ("198.19.6.0/24",)))
    rib, intake = _rib(martians.own_addresses([LOCAL])), UpdateIntake()
    for line in (one, two):
        (ev,) = parse_line(line)
        intake.apply(ev, EBGP, rib, Dampener(DampingParams(), enabled=False), 0.0)
    assert [str(p) for p, _ in rib.selections()] == ["198.19.5.0/24"]
    assert {(str(r.prefix), r.reason) for r in rib.rejected(PEER)} == {
        ("127.0.0.0/8", "martian prefix: inside 127.0.0.0/8 (loopback)"),
        ("198.19.6.0/24", f"next hop {LOCAL} is this node's own address")}


def test_own_addresses_takes_cidrs_and_skips_what_is_no_address():
    assert martians.own_addresses(["198.18.0.2/24", "2001:DB8::2", "eth0", ""]) == frozenset({"198.18.0.2", "2001:db8::2"})
