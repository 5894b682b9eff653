"""Reflected routes as one value per prefix: who gets them (the same as asking per neighbour), the
intent's reflected layer, and the command lines that send one route to many neighbours at once."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.reflection import Audience, Reflected, reflect_to, reflection, reflections
from calico_bgp.routing.rib import Rib
from calico_bgp.speaker.commands import RouteChange, render_groups, route_attributes
from calico_bgp.speaker.intent import RouteIntent
from calico_bgp.speaker.neighbor import IPV4_UNICAST, Neighbor

RR = LocalSpeaker(64512, "198.18.0.1", cluster_id="198.18.0.100")
P = Prefix.of("198.19.1.0/26")


def peer(i: int, client: bool, ibgp: bool = True, router_id: str | None = None) -> Peer:
    a = f"198.18.0.{10 + i}"
    return Peer(a, 64512 if ibgp else 65001, router_id or a, ibgp=ibgp, rr_client=client)


@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.integers(0, 3)), min_size=1, max_size=8),
       st.integers(0, 7), st.sampled_from([None, "198.18.0.10", "198.18.0.12"]))
def test_the_targets_are_exactly_the_neighbours_reflect_to_sends_to(shape, source_at, originator):
    """A neighbour with the originator's router id, the sender itself, a non-client from a
    non-client, an eBGP neighbour: each is left out, as reflect_to decides for one neighbour."""
    neighbors = [peer(i, client, ibgp, router_id=f"198.18.0.{10 + rid}" if rid else None)
                 for i, (client, ibgp, rid) in enumerate(shape)]
    source = neighbors[source_at % len(neighbors)]
    rib = Rib(RR)
    rib.update(source, {P: PathAttributes("198.18.0.99", originator_id=originator)})
    sel = rib.selection(P)
    r = reflection(RR, sel, Audience(neighbors))
    want = {n.address for n in neighbors if reflect_to(RR, sel, n) is not None}
    assert (r.targets if r is not None else set()) == want
    if r is not None:
        assert all(reflect_to(RR, sel, neighbors[i]) == r.attributes
                   for i, n in enumerate(neighbors) if n.address in want)


def test_many_clients_share_one_target_set():
    clients = [peer(i, True) for i in range(5)]
    rib = Rib(RR)
    changed = rib.update(clients[0], {Prefix.of(f"198.19.0.{64 * b}/26"): PathAttributes(clients[0].address)
                                      for b in range(4)})
    out = reflections(RR, rib, clients, changed)
    sets = {id(r.targets) for r in out.values()}
    assert len(sets) == 1 and next(iter(out.values())).targets == {c.address for c in clients[1:]}


def nb(address: str, next_hop_self: bool = False) -> Neighbor:
    return Neighbor(peer_address=address, peer_as=64512, local_as=64512, local_address="198.18.0.1",
                    router_id="198.18.0.1", families=(IPV4_UNICAST,), next_hop_self=next_hop_self)


A, B, C, D = "198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.14"
VIA_A = route_attributes(next_hop=A, originator_id=A, cluster_list=["198.18.0.100"], local_pref=100)
VIA_D = route_attributes(next_hop=D, originator_id=D, cluster_list=["198.18.0.100"], local_pref=100)


def intent_with(*keys: str) -> RouteIntent:
    intent = RouteIntent()
    intent.set_neighbors([nb(k) for k in keys])
    return intent


def test_a_route_for_many_neighbours_is_one_command_line():
    intent = intent_with(A, B, C)
    groups, fallback = intent.reflect({"198.19.1.0/26": Reflected(VIA_A, frozenset({B, C})),
                                       "198.19.1.64/26": Reflected(VIA_A, frozenset({B, C}))})
    assert fallback == []
    assert render_groups(groups) == [
        f"neighbor {B} , neighbor {C} announce attributes next-hop {A} origin igp local-preference 100 "
        f"originator-id {A} cluster-list [ 198.18.0.100 ] nlri 198.19.1.0/26 198.19.1.64/26"]
    assert intent.wanted(B, "198.19.1.0/26") == VIA_A and intent.wanted(A, "198.19.1.0/26") is None
    assert intent.routes_for(C) == {"198.19.1.0/26": VIA_A, "198.19.1.64/26": VIA_A}


def test_a_changed_reflection_sends_only_the_difference():
    intent = intent_with(A, B, C, D)
    intent.reflect({"198.19.1.0/26": Reflected(VIA_A, frozenset({B, C}))})
    # same attributes, one more neighbour: only it is told
    groups, _ = intent.reflect({"198.19.1.0/26": Reflected(VIA_A, frozenset({B, C, D}))})
    assert [line.split(" announce ")[0] for line in render_groups(groups)] == [f"neighbor {D}"]
    # another best path: everyone it goes to hears the new attributes, the new source loses it
    groups, _ = intent.reflect({"198.19.1.0/26": Reflected(VIA_D, frozenset({A, B, C}))})
    lines = render_groups(groups)
    assert lines[0].startswith(f"neighbor {D} withdraw attributes next-hop {A}")
    assert lines[1].startswith(f"neighbor {A} , neighbor {B} , neighbor {C} announce attributes next-hop {D}")
    assert intent.reflect({"198.19.1.0/26": Reflected(VIA_D, frozenset({A, B, C}))}) == ({}, [])


def test_a_complete_set_withdraws_what_is_no_longer_reflected():
    intent = intent_with(A, B, C)
    intent.reflect({"198.19.1.0/26": Reflected(VIA_A, frozenset({B, C}))})
    groups, _ = intent.reflect({}, complete=True)
    assert render_groups(groups) == [f"neighbor {B} , neighbor {C} withdraw attributes next-hop {A} origin igp "
                                     f"local-preference 100 originator-id {A} cluster-list [ 198.18.0.100 ] "
                                     f"nlri 198.19.1.0/26"]
    assert intent.count() == 0


def test_our_own_routes_win_where_they_are_given_and_come_back_when_reflection_stops():
    intent = intent_with(A, B, C)
    ours = route_attributes()
    intent.announce(None, ["198.19.1.0/26"], ours)
    export_to_c = route_attributes(med=5)
    intent.announce([C], ["198.19.1.0/26"], export_to_c)
    groups, _ = intent.reflect({"198.19.1.0/26": Reflected(VIA_A, frozenset({B, C}))})
    # C has a route given for it alone: reflection does not touch it
    assert [line.split(" announce ")[0] for line in render_groups(groups)] == [f"neighbor {B}"]
    assert intent.wanted(C, "198.19.1.0/26") == export_to_c
    groups, fallback = intent.reflect({"198.19.1.0/26": None})
    assert groups == {} and fallback == [RouteChange(B, "198.19.1.0/26", ours, True)]


def test_replaying_several_neighbours_shares_their_lines():
    intent = intent_with(A, B, C)
    intent.announce(None, ["198.19.9.0/26"], route_attributes())
    intent.reflect({"198.19.1.0/26": Reflected(VIA_A, frozenset({B, C}))})
    groups, counts = intent.replay_groups([B, C, "198.18.0.99"])
    assert counts == {B: 2, C: 2}
    lines = render_groups(groups)
    assert len(lines) == 2 and all(line.startswith(f"neighbor {B} , neighbor {C} announce") for line in lines)


def test_a_neighbour_that_leaves_is_not_sent_reflections_and_gets_them_back_on_return():
    intent = intent_with(A, B, C)
    intent.set_neighbors([nb(A), nb(B)])
    groups, _ = intent.reflect({"198.19.1.0/26": Reflected(VIA_A, frozenset({B, C}))})
    assert [line.split(" announce ")[0] for line in render_groups(groups)] == [f"neighbor {B}"]
    intent.set_neighbors([nb(A), nb(B), nb(C)])
    assert intent.routes_for(C) == {"198.19.1.0/26": VIA_A}


def test_a_next_hop_self_neighbour_gets_reflected_routes_via_us_the_others_as_they_came():
    """A reflector's BGPPeer with nextHopMode Self (BIRD `next hop self` on that protocol): its
    clients there route through the reflector; the other clients keep the originator's next hop."""
    intent = RouteIntent()
    intent.set_neighbors([nb(A), nb(B), nb(C, next_hop_self=True)])
    groups, _ = intent.reflect({"198.19.1.0/26": Reflected(VIA_A, frozenset({B, C}))})
    assert render_groups(groups) == [
        f"neighbor {B} announce attributes next-hop {A} origin igp local-preference 100 "
        f"originator-id {A} cluster-list [ 198.18.0.100 ] nlri 198.19.1.0/26",
        f"neighbor {C} announce attributes next-hop self origin igp local-preference 100 "
        f"originator-id {A} cluster-list [ 198.18.0.100 ] nlri 198.19.1.0/26"]
    via_us = route_attributes(next_hop="self", originator_id=A, cluster_list=["198.18.0.100"], local_pref=100)
    assert intent.wanted(C, "198.19.1.0/26") == via_us and intent.wanted(B, "198.19.1.0/26") == VIA_A
    assert intent.routes_for(C) == {"198.19.1.0/26": via_us}
    groups, _ = intent.replay_groups([C])
    assert " next-hop self " in render_groups(groups)[0]
    # withdrawn the same way
    groups, _ = intent.reflect({"198.19.1.0/26": None})
    assert [line.split(" attributes ")[0] for line in render_groups(groups)] == [
        f"neighbor {B} withdraw", f"neighbor {C} withdraw"]


def test_a_changed_next_hop_mode_sends_that_neighbour_its_reflected_routes_again():
    intent = intent_with(A, B)
    intent.announce(None, ["198.19.9.0/26"], route_attributes())
    intent.reflect({"198.19.1.0/26": Reflected(VIA_A, frozenset({B}))})
    resend = intent.set_neighbors([nb(A), nb(B, next_hop_self=True)])
    via_us = route_attributes(next_hop="self", originator_id=A, cluster_list=["198.18.0.100"], local_pref=100)
    assert resend == [RouteChange(B, "198.19.1.0/26", via_us, True)]  # our own route is unchanged
    assert intent.set_neighbors([nb(A), nb(B, next_hop_self=True)]) == []
    assert intent.set_neighbors([nb(A), nb(B)]) == [RouteChange(B, "198.19.1.0/26", VIA_A, True)]
