"""routing/bfd.py plan_bfd: which BFD sessions a node runs, from its labels, the BFDConfigurations,
its BGP sessions (with their BGPPeer's failureDetectionMode) and its links."""
from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from calico_bgp.resources.bfdconfig import BFDConfiguration, BFDConfigurationSpec, BFDInterface
from calico_bgp.resources.bgpconfig import BGPConfiguration, BGPConfigurationSpec
from calico_bgp.resources.bgppeer import BGPPeer, BGPPeerSpec
from calico_bgp.resources.model import Metadata
from calico_bgp.resources.node import Node, NodeBGPSpec, NodeSpec
from calico_bgp.routing.bfd import BfdPlan, BfdSession, Link, Skipped, connected_link, plan_bfd
from calico_bgp.routing.topology import Session, sessions_for

BFD = "BFDIfDirectlyConnected"


def node(name="n1", **labels):
    return Node(Metadata(name, labels), NodeSpec(bgp=NodeBGPSpec(ipv4_address="198.18.1.11/24")))


def config(name, *entries, selector=None):
    return BFDConfiguration(Metadata(name), BFDConfigurationSpec(node_selector=selector, interfaces=entries))


def session(peer, mode=BFD):
    return Session(peer_address=peer, peer_as=65101, local_as=64512, local_address="198.18.1.11", kind="fabric",
                   failure_detection_mode=mode)


ETH0 = Link("eth0", ("198.18.1.11/24", "2001:db8:1::11/64"))
ETH1 = Link("eth1", ("198.18.2.11/24",))
LINKS = [ETH0, ETH1]
STAR = BFDInterface("*")


def test_calico_enterprise_sample_gives_its_timers_to_a_directly_connected_peer():
    # the sample of docs.tigera.io/calico-enterprise/latest/reference/resources/bfdconfig
    sample = config("default", BFDInterface("*", "10ms", "100ms", "1m", 5), selector="all()")
    plan = plan_bfd(node(), [sample], [session("198.18.1.1")], LINKS)
    assert plan == BfdPlan(sessions=(BfdSession("198.18.1.1", "eth0", 10, 100, 60_000, 5),), configuration="default")
    assert plan.sessions[0].detect_ms == 50


def test_defaults_are_calico_enterprises_when_an_entry_sets_only_its_pattern():
    plan = plan_bfd(node(), [config("c", BFDInterface("eth*"))], [session("198.18.2.1")], LINKS)
    assert plan.sessions == (BfdSession("198.18.2.1", "eth1", 10, 100, 60_000, 5),)


def test_no_bfd_unless_the_peer_asks_for_it():
    plan = plan_bfd(node(), [config("c", STAR)], [session("198.18.1.1", "None")], LINKS)
    assert plan == BfdPlan(configuration="c")  # not asked: not skipped either


def test_a_peer_on_no_link_subnet_is_skipped_with_the_reason():
    plan = plan_bfd(node(), [config("c", STAR)], [session("198.18.9.1")], LINKS)
    assert plan.sessions == ()
    assert plan.skipped == (Skipped("198.18.9.1", "not directly connected: on no subnet of the node's links"),)


def test_no_configuration_selecting_the_node_means_no_bfd():
    cfg = config("racks", STAR, selector="rack == 'r2'")
    plan = plan_bfd(node(rack="r1"), [cfg], [session("198.18.1.1")], LINKS)
    assert plan == BfdPlan(skipped=(Skipped("198.18.1.1", "no BFDConfiguration selects this node"),))
    assert plan_bfd(node(rack="r2"), [cfg], [session("198.18.1.1")], LINKS).configuration == "racks"


def test_a_configuration_without_a_selector_selects_every_node():
    assert plan_bfd(node(anything="x"), [config("c", STAR)], [session("198.18.1.1")], LINKS).configuration == "c"


def test_the_link_must_match_an_entry_of_the_configuration():
    plan = plan_bfd(node(), [config("c", BFDInterface("eth1"))], [session("198.18.1.1"), session("198.18.2.1")],
                    LINKS)
    assert [s.peer for s in plan.sessions] == ["198.18.2.1"]
    assert plan.skipped == (Skipped("198.18.1.1", "BFDConfiguration 'c' has no interface entry matching eth0"),)


def test_an_empty_interfaces_list_runs_bfd_nowhere():
    plan = plan_bfd(node(), [config("off")], [session("198.18.1.1")], LINKS)
    assert plan.sessions == () and plan.configuration == "off" and len(plan.skipped) == 1


def test_several_configurations_the_lowest_name_is_in_force_and_the_others_are_reported():
    fast, slow = config("a-fast", BFDInterface("*", "20ms")), config("b-slow", BFDInterface("*", "1s"))
    for order in ([fast, slow], [slow, fast]):
        plan = plan_bfd(node(), order, [session("198.18.1.1")], LINKS)
        assert plan.configuration == "a-fast" and plan.ignored == ("b-slow",)
        assert plan.sessions[0].min_rx_ms == 20


def test_configurations_do_not_merge_a_lower_name_without_the_interface_wins_anyway():
    only_eth1, eth0 = config("a", BFDInterface("eth1")), config("b", BFDInterface("eth0"))
    plan = plan_bfd(node(), [eth0, only_eth1], [session("198.18.1.1")], LINKS)
    assert plan.sessions == () and plan.ignored == ("b",)


def test_the_most_specific_entry_wins_whatever_the_order():
    entries = [BFDInterface("*", multiplier=3), BFDInterface("eth*", multiplier=4),
               BFDInterface("eth0*", multiplier=6), BFDInterface("eth0", multiplier=7)]
    for rotate in range(len(entries)):
        order = entries[rotate:] + entries[:rotate]
        plan = plan_bfd(node(), [config("c", *order)], [session("198.18.1.1"), session("198.18.2.1")], LINKS)
        assert {s.interface: s.multiplier for s in plan.sessions} == {"eth0": 7, "eth1": 4}


def test_ipv6_peers_and_the_address_is_normalised():
    plan = plan_bfd(node(), [config("c", STAR)], [session("2001:db8:1::1")], LINKS)
    assert plan.sessions == (BfdSession("2001:db8:1::1", "eth0", 10, 100, 60_000, 5),)


def test_connected_link_longest_prefix_wins_and_a_tie_is_ambiguous():
    wide = Link("bond0", ("198.18.0.11/16",))
    assert connected_link("198.18.1.1", [wide, ETH0]) == ("eth0", "")
    ll = [Link("eth0", ("fe80::11/64",)), Link("eth1", ("fe80::12/64",))]
    link, why = connected_link("fe80::1", ll)
    assert link is None and "several links (eth0, eth1)" in why


def test_connected_link_ignores_the_nodes_own_address_and_host_routes():
    assert connected_link("198.18.1.11", [ETH0])[0] is None
    assert connected_link("198.18.5.5", [Link("lo", ("198.18.5.5/32",))])[0] is None
    assert connected_link("198.18.5.4", [Link("dummy0", ("198.18.5.5/31",))]) == ("dummy0", "")


def test_sessions_are_sorted_by_address_and_one_per_peer():
    peers = ["198.18.1.200", "198.18.1.3", "2001:db8:1::2", "198.18.1.3"]
    plan = plan_bfd(node(), [config("c", STAR)], [session(p) for p in peers], LINKS)
    assert [s.peer for s in plan.sessions] == ["198.18.1.3", "198.18.1.200", "2001:db8:1::2"]


def test_topology_carries_the_peers_failure_detection_mode_to_the_plan():
    me = node(rack="r1")
    bgp = BGPConfiguration(spec=BGPConfigurationSpec(node_to_node_mesh_enabled=False))
    peers = [BGPPeer(Metadata("tor1"), BGPPeerSpec(peer_ip="198.18.1.1", as_number=65101, failure_detection_mode=BFD)),
             BGPPeer(Metadata("tor2"), BGPPeerSpec(peer_ip="198.18.2.1", as_number=65102))]
    sessions = sessions_for(me, [me], bgp, peers)
    assert {s.peer_address: s.failure_detection_mode for s in sessions} == {"198.18.1.1": BFD, "198.18.2.1": "None"}
    plan = plan_bfd(me, [config("c", STAR)], sessions, LINKS)
    assert [s.peer for s in plan.sessions] == ["198.18.1.1"]


# --- properties -----------------------------------------------------------------------------------

_names = st.sampled_from(["eth0", "eth1", "ens1f0", "ens1f1", "bond0"])
_patterns = st.sampled_from(["*", "eth*", "eth0", "eth1", "ens*", "ens1f*", "ens1f0", "bond0", "b*"])
_entries = st.lists(st.tuples(_patterns, st.integers(1, 255)), unique_by=lambda t: t[0], max_size=5).map(
    lambda ts: tuple(BFDInterface(p, multiplier=m) for p, m in ts))
_links = st.lists(st.tuples(_names, st.integers(0, 7), st.sampled_from([24, 25, 16])), unique_by=lambda t: t[0],
                  max_size=4).map(lambda ts: [Link(n, (f"198.18.{i}.11/{plen}",)) for n, i, plen in ts])
_peers = st.lists(st.tuples(st.integers(0, 8), st.integers(1, 254), st.booleans()), max_size=8).map(
    lambda ts: [session(f"198.18.{i}.{h}", BFD if on else "None") for i, h, on in ts])


@given(_entries, _links, _peers)
def test_property_every_session_is_asked_for_connected_and_configured(entries, links, peers):
    cfg = config("c", *entries)
    plan = plan_bfd(node(), [cfg], peers, links)
    asked = {s.peer_address for s in peers if s.failure_detection_mode == BFD}
    assert {s.peer for s in plan.sessions} | {k.peer for k in plan.skipped} == asked
    assert not {s.peer for s in plan.sessions} & {k.peer for k in plan.skipped}
    by_name = {link.name: link for link in links}
    for s in plan.sessions:
        ip = ipaddress.ip_address(s.peer)
        assert any(ip in ipaddress.ip_interface(a).network for a in by_name[s.interface].addresses)
        matching = [e for e in entries if e.matches(s.interface)]
        chosen = max(matching, key=lambda e: e.specificity)
        assert s.multiplier == chosen.multiplier
        # the chosen pattern is at least as specific as every other that matches
        assert all(e.specificity <= chosen.specificity for e in matching)


@given(_entries, _links, _peers, st.randoms(use_true_random=False))
def test_property_the_plan_does_not_depend_on_any_input_order(entries, links, peers, rnd):
    configs = [config("c", *entries), config("d", BFDInterface("*"))]
    before = plan_bfd(node(), configs, peers, links)
    shuffled = [list(x) for x in (entries, links, peers, configs)]
    for x in shuffled:
        rnd.shuffle(x)
    e, lk, p, c = shuffled
    c = [config("c", *e) if x.name == "c" else x for x in c]
    assert plan_bfd(node(), c, p, lk) == before


@given(_entries, _links, _peers)
def test_property_a_peer_is_skipped_only_when_a_condition_fails(entries, links, peers):
    """An oracle written apart from the plan: the links whose subnets hold the peer, the longest
    prefix unique, and an entry of the configuration matching that link's name."""
    plan = plan_bfd(node(), [config("c", *entries)], peers, links)
    got = {s.peer: s.interface for s in plan.sessions}
    for s in peers:
        if s.failure_detection_mode != BFD:
            continue
        ip = ipaddress.ip_address(s.peer_address)
        holding = {}
        for link in links:
            for a in link.addresses:
                iface = ipaddress.ip_interface(a)
                if ip in iface.network and ip != iface.ip and iface.network.prefixlen < 32:
                    holding[link.name] = max(holding.get(link.name, 0), iface.network.prefixlen)
        best = [n for n, plen in holding.items() if plen == max(holding.values(), default=-1)]
        expect = best[0] if len(best) == 1 and any(e.matches(best[0]) for e in entries) else None
        assert got.get(s.peer_address) == expect


@given(_entries, _links, _peers)
def test_property_sessions_on_one_interface_share_its_timers(entries, links, peers):
    plan = plan_bfd(node(), [config("c", *entries)], peers, links)
    timers: dict[str, tuple[int, int, int, int]] = {}
    for s in plan.sessions:
        got = (s.min_rx_ms, s.min_tx_ms, s.idle_tx_ms, s.multiplier)
        assert timers.setdefault(s.interface, got) == got


def test_a_peer_selector_peering_carries_the_mode_too_and_the_mesh_never_asks():
    me = Node(Metadata("n1", {"rack": "r1"}), NodeSpec(bgp=NodeBGPSpec(ipv4_address="198.18.1.11/24")))
    other = Node(Metadata("n2", {"rack": "r1"}), NodeSpec(bgp=NodeBGPSpec(ipv4_address="198.18.1.12/24")))
    far = Node(Metadata("n3", {"rack": "r2"}), NodeSpec(bgp=NodeBGPSpec(ipv4_address="198.18.2.13/24")))
    bgp = BGPConfiguration(spec=BGPConfigurationSpec(node_to_node_mesh_enabled=True))
    rack = BGPPeer(Metadata("rack-peers"), BGPPeerSpec(node_selector="rack == 'r1'", peer_selector="rack == 'r1'",
                                                       failure_detection_mode=BFD))
    sessions = sessions_for(me, [me, other, far], bgp, [rack])
    assert {s.peer_address: s.failure_detection_mode for s in sessions} == {"198.18.1.12": BFD,
                                                                             "198.18.2.13": "None"}
    plan = plan_bfd(me, [config("c", STAR)], sessions, LINKS)
    assert plan.sessions == (BfdSession("198.18.1.12", "eth0", 10, 100, 60_000, 5),)
