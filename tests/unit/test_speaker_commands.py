"""Command formatting, batching and the route intent that drives replay (pure)."""
from __future__ import annotations

import pytest

from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.speaker.commands import (
    RouteChange,
    batch,
    neighbor_selector,
    render,
    route_attributes,
    route_refresh,
    teardown,
)
from calico_bgp.speaker.errors import InvalidRoute
from calico_bgp.speaker.intent import RouteIntent
from calico_bgp.speaker.neighbor import IPV4_UNICAST, IPV6_UNICAST, Neighbor

A, B, C = "198.18.0.2", "198.18.0.3", "2001:db8::2"


def nb(peer: str, families=(IPV4_UNICAST,)) -> Neighbor:
    local = "2001:db8::1" if ":" in peer else "198.18.0.1"
    return Neighbor(peer_address=peer, peer_as=65000, local_as=65000, local_address=local, router_id="198.18.0.1",
                    families=families)


def test_spec_renders_every_attribute_in_exabgp_syntax():
    spec = route_attributes(next_hop="198.18.0.12", origin="incomplete", local_pref=200, med=10, as_path=[65001, 65002],
                     communities=[(65000, 1), (65000, 2)], large_communities=[(65000, 1, 2)],
                     originator_id="198.18.0.12", cluster_list=["198.18.0.1", "198.18.0.5"])
    assert render(spec) == (
        "next-hop 198.18.0.12 origin incomplete as-path [ 65001 65002 ] local-preference 200 med 10 "
        "community [ 65000:1 65000:2 ] large-community [ 65000:1:2 ] originator-id 198.18.0.12 "
        "cluster-list [ 198.18.0.1 198.18.0.5 ]")
    assert render(route_attributes()) == "next-hop self origin igp"


@pytest.mark.parametrize("kw", [{"next_hop": "me"}, {"origin": "bgp"}, {"originator_id": "2001:db8::1"},
                                {"cluster_list": ["x"]}])
def test_bad_specs_are_typed_errors(kw):
    with pytest.raises(InvalidRoute):
        route_attributes(**kw)


def test_a_value_to_send_is_checked_and_carries_only_what_a_command_says():
    """A path from the RIB (reflected) or an export goes out as the same value: its next hop in
    canonical text, an AS_SET or a link-local next hop left out (no command carries them)."""
    path = PathAttributes("2001:DB8::9", as_path=(65001,), as_set=(65002,), link_local="fe80::1", med=5)
    sent = route_attributes(attributes=path)
    assert sent == PathAttributes("2001:db8::9", as_path=(65001,), med=5)
    assert render(sent) == "next-hop 2001:db8::9 origin igp as-path [ 65001 ] med 5"
    assert route_attributes(attributes=sent) is sent  # nothing to change: the same object
    for bad in (PathAttributes(None), PathAttributes("self", origin=None), PathAttributes("self", cluster_list=("x",))):
        with pytest.raises(InvalidRoute):
            route_attributes(attributes=bad)


def test_neighbor_selector_needs_the_comma_and_is_sorted():
    assert neighbor_selector([B, A]) == f"neighbor {A} , neighbor {B}"
    assert teardown(A) == f"neighbor {A} teardown 2"


def test_batch_groups_by_attributes_and_targets():
    s, r = route_attributes(), route_attributes(next_hop="198.18.0.12", originator_id="198.18.0.12", cluster_list=["198.18.0.1"])
    changes = [
        RouteChange(A, "198.19.0.0/26", s, True), RouteChange(B, "198.19.0.0/26", s, True),
        RouteChange(A, "198.19.0.64/26", s, True), RouteChange(B, "198.19.0.64/26", s, True),
        RouteChange(B, "198.19.1.0/26", s, True),
        RouteChange(A, "198.19.9.0/26", r, True),
        RouteChange(A, "198.19.8.0/26", s, False),
    ]
    assert batch(changes) == [
        f"neighbor {A} withdraw attributes next-hop self origin igp nlri 198.19.8.0/26",
        f"neighbor {A} announce attributes next-hop 198.18.0.12 origin igp originator-id 198.18.0.12 "
        "cluster-list [ 198.18.0.1 ] nlri 198.19.9.0/26",
        f"neighbor {A} , neighbor {B} announce attributes next-hop self origin igp nlri 198.19.0.0/26 198.19.0.64/26",
        f"neighbor {B} announce attributes next-hop self origin igp nlri 198.19.1.0/26",
    ]


def test_batch_splits_long_lines_and_families():
    changes = [RouteChange(A, f"198.19.{i}.0/24", route_attributes(), True) for i in range(10)]
    changes += [RouteChange(A, f"2001:db8:{i}::/48", route_attributes(), True) for i in range(3)]
    lines = batch(changes, max_nlri=4)
    assert [len(line.split(" nlri ")[1].split()) for line in lines] == [4, 4, 2, 3]
    assert all(":" not in line.split(" nlri ")[1] for line in lines[:3])


def test_intent_everyone_routes_follow_families_and_replay():
    intent = RouteIntent()
    intent.set_neighbors([nb(A), nb(C, (IPV6_UNICAST,))])
    changes = intent.announce(None, ["198.19.0.0/26", "2001:db8:100::/64"], route_attributes())
    assert {(c.neighbor, c.prefix) for c in changes} == {(A, "198.19.0.0/26"), (C, "2001:db8:100::/64")}
    # a neighbor configured later gets the "everyone" routes when replayed
    intent.set_neighbors([nb(A), nb(B), nb(C, (IPV6_UNICAST,))])
    assert list(intent.routes_for(B)) == ["198.19.0.0/26"]
    assert intent.replay_groups([B, "198.18.0.99"]) == ({(True, 4, route_attributes()): {"198.19.0.0/26": {B}}}, {B: 1})


def test_intent_specific_overrides_everyone_and_withdraw_restores_it():
    intent = RouteIntent()
    intent.set_neighbors([nb(A), nb(B)])
    intent.announce(None, ["198.19.0.0/26"], route_attributes())
    reflected = route_attributes(next_hop="198.18.0.12", originator_id="198.18.0.12", cluster_list=["198.18.0.1"])
    ch = intent.announce([A], ["198.19.0.0/26"], reflected)
    assert ch == [RouteChange(A, "198.19.0.0/26", reflected, True)]
    assert intent.routes_for(A)["198.19.0.0/26"] == reflected and intent.routes_for(B)["198.19.0.0/26"] == route_attributes()
    # taking the specific one away falls back to the route for everyone: a re-announce, not a withdraw
    assert intent.withdraw([A], ["198.19.0.0/26"]) == [RouteChange(A, "198.19.0.0/26", route_attributes(), True)]
    out = intent.withdraw(None, ["198.19.0.0/26"])
    assert {(c.neighbor, c.announce) for c in out} == {(A, False), (B, False)}
    assert intent.count() == 0


def test_intent_no_change_no_command_and_prefixes_normalised():
    intent = RouteIntent()
    intent.set_neighbors([nb(A)])
    assert len(intent.announce(None, ["198.19.0.0/26"], route_attributes())) == 1
    assert intent.announce(None, ["198.19.0.0/26"], route_attributes()) == []
    assert intent.withdraw(None, ["198.19.5.0/26"]) == []
    with pytest.raises(InvalidRoute):
        intent.announce(None, ["198.19.0.1/26"], route_attributes())  # host bits set


def test_intent_keeps_routes_for_a_neighbor_not_configured_yet():
    intent = RouteIntent()
    assert intent.announce([B], ["198.19.3.0/26"], route_attributes()) == []  # nothing to send: B unknown
    intent.set_neighbors([nb(B)])
    assert list(intent.routes_for(B)) == ["198.19.3.0/26"]


def test_a_neighbor_that_leaves_takes_its_own_routes_but_not_everyones():
    intent = RouteIntent()
    intent.set_neighbors([nb(A), nb(B)])
    intent.announce(None, ["198.19.0.0/26"], route_attributes())
    intent.announce([B], ["198.19.3.0/26", "198.19.4.0/26"], route_attributes())
    intent.set_neighbors([nb(A)])
    intent.announce([B], ["198.19.3.0/26"], route_attributes())  # while it is gone: kept for its return
    intent.set_neighbors([nb(A), nb(B)])
    # 198.19.4.0/26 was withdrawn meanwhile (nothing said so, as B was gone): it must not come back
    assert sorted(intent.routes_for(B)) == ["198.19.0.0/26", "198.19.3.0/26"]


def test_next_hop_self_for_the_other_family_is_the_neighbors_explicit_address():
    from calico_bgp.speaker.commands import resolve_self
    from calico_bgp.speaker.errors import InvalidNeighbor
    with pytest.raises(InvalidNeighbor) as err:
        nb(A, (IPV4_UNICAST, IPV6_UNICAST))  # ExaBGP cannot pick an IPv6 next hop on an IPv4 session
    assert err.value.field == "next_hop_v6"
    dual = Neighbor(peer_address=A, peer_as=65000, local_as=65000, local_address="198.18.0.1",
                    router_id="198.18.0.1", families=(IPV4_UNICAST, IPV6_UNICAST), next_hop_v6="2001:db8::1")
    assert dual.self_next_hop(IPV4_UNICAST) is None and dual.self_next_hop(IPV6_UNICAST) == "2001:db8::1"
    v6 = resolve_self(RouteChange(A, "2001:db8:7::/48", route_attributes(), True), dual.self_next_hop(IPV6_UNICAST))
    assert v6.attributes.next_hop == "2001:db8::1"
    foreign = RouteChange(A, "2001:db8:7::/48", route_attributes(next_hop="2001:db8::9"), True)
    assert resolve_self(foreign, "2001:db8::1") is foreign


def test_route_refresh_is_exabgps_announce_route_refresh_for_one_family():
    """ExaBGP 5's API: `neighbor <ip> announce route-refresh <afi> <safi>` (reactor/api/command/announce.py)."""
    assert route_refresh(A, "ipv6 unicast") == f"neighbor {A} announce route-refresh ipv6 unicast"
