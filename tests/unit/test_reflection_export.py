"""A route reflector's reflected routes pass through each neighbour's export filters and the pool
default, as Calico's BIRD export filter for every peer does (projectcalico/calico confd/pkg/backends/
calico/bgp_processor.go buildExportFilter: `'bgp_<f>_exportFilterV4'(); ... calico_export_to_bgp_peers
(true); reject;`, and bird_ipam.cfg.template calico_export_to_bgp_peers: reject_disabled_pools, the
/staticroutes and the pools accepted, the rest rejected)."""
from __future__ import annotations

from calico_bgp.resources import model
from calico_bgp.resources.bgpfilter import AddCommunity, BGPFilter, BGPFilterRule, BGPFilterSpec, Operation
from calico_bgp.resources.ippool import IPPool, IPPoolSpec
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.bgpfilter import compile_rules
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.reflection import Reflected, reflections
from calico_bgp.routing.reflection_export import ReflectionExport, Variant
from calico_bgp.routing.rib import Rib
from calico_bgp.speaker.commands import render_groups, route_attributes
from calico_bgp.speaker.intent import RouteIntent
from calico_bgp.speaker.neighbor import IPV4_UNICAST, Neighbor

RR = LocalSpeaker(64512, "198.18.0.1", cluster_id="198.18.0.100")
A, B, C = "198.18.0.11", "198.18.0.12", "198.18.0.13"
POOLS = [IPPool(model.Metadata("pods"), IPPoolSpec(cidr="198.19.0.0/16")),
         IPPool(model.Metadata("quiet"), IPPoolSpec(cidr="198.19.128.0/20", disable_bgp_export=True))]
SERVICES = (Prefix.of("198.18.200.0/24"),)
IN_POOL, QUIET, SERVICE, OUTSIDE = (Prefix.of("198.19.1.0/26"), Prefix.of("198.19.130.0/26"),
                                    Prefix.of("198.18.200.0/24"), Prefix.of("198.18.100.0/24"))
ATTRS = PathAttributes(A, originator_id=A, cluster_list=("198.18.0.100",), local_pref=100)


def flt(*rules: BGPFilterRule) -> BGPFilter:
    return BGPFilter(model.Metadata("f"), BGPFilterSpec(export_v4=rules))


def rules(f: BGPFilter) -> dict[int, list]:
    return {v: compile_rules([f], "export", v) for v in (4, 6)}


def test_without_filters_only_what_is_inside_an_exported_pool_or_a_service_cidr_is_reflected():
    export = ReflectionExport.of(POOLS, SERVICES, {})
    everyone = frozenset({B, C})
    assert export.variants(IN_POOL, ATTRS, everyone) == (Variant(ATTRS, everyone),)
    assert export.variants(SERVICE, ATTRS, everyone) == (Variant(ATTRS, everyone),)
    assert export.variants(QUIET, ATTRS, everyone) == ()      # reject_disabled_pools
    assert export.variants(OUTSIDE, ATTRS, everyone) == ()    # the final `reject`


def test_each_neighbours_filters_decide_for_it_first():
    tagged = Operation(add_community=AddCommunity("65000:7"))
    export = ReflectionExport.of(POOLS, SERVICES, {
        B: rules(flt(BGPFilterRule(action="Reject", cidr="198.19.1.0/24", match_operator="In"))),
        C: rules(flt(BGPFilterRule(action="Accept", cidr="198.18.100.0/24", match_operator="Equal"),
                     BGPFilterRule(action="Accept", cidr="198.19.0.0/16", match_operator="In", operations=(tagged,)))),
    })
    everyone = frozenset({A, B, C})
    out = export.variants(IN_POOL, ATTRS, everyone)
    assert out == (Variant(ATTRS, frozenset({A})),
                   Variant(PathAttributes(A, originator_id=A, cluster_list=("198.18.0.100",), local_pref=100,
                                          communities=((65000, 7),)), frozenset({C})))
    # an Accept rule sends what the pool default would not
    assert export.variants(OUTSIDE, ATTRS, everyone) == (Variant(ATTRS, frozenset({C})),)
    # a neighbour whose rules match nothing falls to the default
    assert export.variants(SERVICE, ATTRS, everyone) == (Variant(ATTRS, everyone),)


def test_reflections_carry_the_filtered_variants():
    client, b, c = (Peer(x, 64512, x, ibgp=True, rr_client=True) for x in (A, B, C))
    rib = Rib(RR)
    rib.update(client, {IN_POOL: PathAttributes(A), QUIET: PathAttributes(A)})
    export = ReflectionExport.of(POOLS, SERVICES, {B: rules(flt(BGPFilterRule(action="Reject")))})
    out = reflections(RR, rib, [client, b, c], None, export)
    assert set(out) == {IN_POOL} and out[IN_POOL].targets == {C} and out[IN_POOL].others == ()
    # without the stage (tests, or no reflector): everything to everyone, as before
    assert reflections(RR, rib, [client, b, c])[QUIET].targets == {B, C}


def nb(address: str) -> Neighbor:
    return Neighbor(peer_address=address, peer_as=64512, local_as=64512, local_address="198.18.0.1",
                    router_id="198.18.0.1", families=(IPV4_UNICAST,))


def test_the_intent_sends_each_variant_to_its_neighbours_and_only_what_changes():
    intent = RouteIntent()
    intent.set_neighbors([nb(k) for k in (A, B, C)])
    plain = route_attributes(next_hop=A, originator_id=A, cluster_list=["198.18.0.100"], local_pref=100)
    tagged = route_attributes(next_hop=A, originator_id=A, cluster_list=["198.18.0.100"], local_pref=100,
                              communities=[(65000, 7)])
    p = "198.19.1.0/26"
    groups, fallback = intent.reflect({p: Reflected(plain, frozenset({B}), (Reflected(tagged, frozenset({C})),))})
    assert fallback == [] and sorted(render_groups(groups)) == sorted([
        f"neighbor {B} announce attributes next-hop {A} origin igp local-preference 100 originator-id {A} "
        f"cluster-list [ 198.18.0.100 ] nlri {p}",
        f"neighbor {C} announce attributes next-hop {A} origin igp local-preference 100 community [ 65000:7 ] "
        f"originator-id {A} cluster-list [ 198.18.0.100 ] nlri {p}"])
    assert intent.wanted(C, p) == tagged and intent.routes_for(B) == {p: plain} and intent.routes_for(C) == {p: tagged}
    # C's filter goes: it gets the plain route; B keeps what it has (nothing sent to it)
    groups, _ = intent.reflect({p: Reflected(plain, frozenset({B, C}))})
    assert render_groups(groups) == [
        f"neighbor {C} announce attributes next-hop {A} origin igp local-preference 100 originator-id {A} "
        f"cluster-list [ 198.18.0.100 ] nlri {p}"]
    # a filter now rejects it for B and tags it for C: B's is withdrawn
    groups, _ = intent.reflect({p: Reflected(tagged, frozenset({C}))})
    lines = render_groups(groups)
    assert any(line.startswith(f"neighbor {B} withdraw") for line in lines)
    assert any(line.startswith(f"neighbor {C} announce") and "65000:7" in line for line in lines)
    groups, _ = intent.reflect({p: None})
    assert [line.split(" attributes")[0] for line in render_groups(groups)] == [f"neighbor {C} withdraw"]


async def test_a_reflector_agent_reflects_through_each_neighbours_filters(tmp_path):
    """The control loop builds the stage from the sessions' BGPFilters and the pools; what the agent
    hands the speaker leaves out the neighbour whose filter rejects the route."""
    import attrs as _attrs

    from calico_bgp.agent.reflection import reflect
    from calico_bgp.resources.bgppeer import BGPPeer, BGPPeerSpec
    from calico_bgp.resources.node import NodeBGPSpec, NodeSpec
    from tests.unit.test_agent_wiring import agent, cluster

    a, _ = agent(tmp_path)
    peers = [BGPPeer(model.Metadata("c1"), BGPPeerSpec(peer_ip="198.18.0.21", as_number=64512, filters=("deny",))),
             BGPPeer(model.Metadata("c2"), BGPPeerSpec(peer_ip="198.18.0.22", as_number=64512)),
             BGPPeer(model.Metadata("c3"), BGPPeerSpec(peer_ip="198.18.0.23", as_number=64512,
                                                       origin_validation="Disabled"))]
    base = cluster(*peers, pools=["198.19.0.0-16"])
    rr = _attrs.evolve(base.nodes["n1"], spec=NodeSpec(bgp=NodeBGPSpec(ipv4_address="198.18.0.1/24",
                                                                       route_reflector_cluster_id="198.18.0.100")))
    state = _attrs.evolve(base, nodes={**base.nodes, "n1": rr},
                          filters={"deny": flt(BGPFilterRule(action="Reject", cidr="198.19.0.0/16", match_operator="In"))})
    sent: list[dict] = []

    async def capture(updates, complete=False):
        sent.append(dict(updates))

    a.speaker.reflect = capture
    await a.control.sync(state)
    export = a.state.reflection_export
    assert export is not None and set(export.rules) == {"198.18.0.21"}
    changed = a.state.rib.update(a.state.rib_peers["198.18.0.23"], {IN_POOL: PathAttributes("198.18.0.23")})
    await reflect(a.state, a.speaker, changed)
    r = sent[-1][str(IN_POOL)]
    assert "198.18.0.21" not in r.targets and "198.18.0.22" in r.targets


async def test_a_sync_that_changes_both_a_selection_and_the_export_filters_reflects_everything_again(tmp_path):
    """New export rules apply to every reflected route, not only to the prefixes whose selection the
    same sync changed: the route c1's new export filter rejects is withdrawn from it at once."""
    import attrs as _attrs

    from calico_bgp.resources.bgppeer import BGPPeer, BGPPeerSpec
    from calico_bgp.resources.node import NodeBGPSpec, NodeSpec
    from tests.unit.test_agent_wiring import agent, cluster

    a, _ = agent(tmp_path)
    c1, c2, c3 = "198.18.0.21", "198.18.0.22", "198.18.0.23"
    from_c1 = Prefix.of("198.19.5.0/26")

    def state(*c1_filters: str):
        peers = [BGPPeer(model.Metadata("c1"), BGPPeerSpec(peer_ip=c1, as_number=64512, filters=c1_filters,
                                                           origin_validation="Disabled")),
                 BGPPeer(model.Metadata("c2"), BGPPeerSpec(peer_ip=c2, as_number=64512)),
                 BGPPeer(model.Metadata("c3"), BGPPeerSpec(peer_ip=c3, as_number=64512, origin_validation="Disabled"))]
        base = cluster(*peers, pools=["198.19.0.0-16"])
        rr = _attrs.evolve(base.nodes["n1"], spec=NodeSpec(bgp=NodeBGPSpec(
            ipv4_address="198.18.0.1/24", route_reflector_cluster_id="198.18.0.100")))
        f = BGPFilter(model.Metadata("f"), BGPFilterSpec(
            export_v4=(BGPFilterRule(action="Reject", cidr=str(IN_POOL), match_operator="Equal"),),
            import_v4=(BGPFilterRule(action="Reject", cidr=str(from_c1), match_operator="Equal"),)))
        return _attrs.evolve(base, nodes={**base.nodes, "n1": rr}, filters={"f": f})

    sent: list[tuple[dict, bool]] = []

    async def capture(updates, complete=False):
        sent.append((dict(updates), complete))

    a.speaker.reflect = capture
    await a.control.sync(state())
    a.state.rib.update(a.state.rib_peers[c3], {IN_POOL: PathAttributes(c3)})
    a.state.rib.update(a.state.rib_peers[c1], {from_c1: PathAttributes(c1)})
    await a.control.sync(state())
    assert c1 in sent[-1][0][str(IN_POOL)].targets
    # c1's filter: its route is rejected on import (a selection change) and IN_POOL on export to it
    await a.control.sync(state("f"))
    updates, complete = sent[-1]
    assert complete and updates.get(str(from_c1)) is None  # complete: what is absent is withdrawn
    assert updates[str(IN_POOL)].targets == {c2}
    # the filter goes: c1 gets IN_POOL again, with its own route back
    await a.control.sync(state())
    updates, complete = sent[-1]
    assert complete and updates[str(IN_POOL)].targets == {c1, c2} and updates[str(from_c1)].targets == {c2, c3}
