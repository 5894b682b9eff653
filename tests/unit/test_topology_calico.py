"""topology.sessions_for follows Calico's rules, each from the confd file named in its docstring
(projectcalico/calico confd/pkg/backends/calico/client.go updatePeersV1 / nodeAsBGPPeers /
nodesWithIPPortAndAS, and bgp_processor.go processMeshPeers / buildPeerFromData)."""
from __future__ import annotations

from calico_bgp.resources.bgpconfig import BGPConfiguration, BGPConfigurationSpec
from calico_bgp.resources.bgppeer import BGPPeer, BGPPeerSpec
from calico_bgp.resources.model import Metadata
from calico_bgp.resources.node import Node, NodeBGPSpec, NodeSpec
from calico_bgp.routing.topology import listen_port, passive_toward, runnable, sessions_for


def node(name, v4="", v6="", asn=None, cluster="", **labels):
    return Node(Metadata(name, labels), NodeSpec(bgp=NodeBGPSpec(ipv4_address=v4, ipv6_address=v6, as_number=asn,
                                                                  route_reflector_cluster_id=cluster)))


def cfg(mesh=True, asn=64512, port=179, name="default"):
    return BGPConfiguration(Metadata(name), BGPConfigurationSpec(node_to_node_mesh_enabled=mesh, as_number=asn,
                                                                 listen_port=port))


def peer(name, **spec):
    return BGPPeer(Metadata(name), BGPPeerSpec(**spec))


def by_key(sessions):
    return {(s.peer_address, s.peer_port): s for s in sessions}


N9 = node("n9", "198.18.0.9/24")
N10 = node("n10", "198.18.0.10/24")
N11 = node("n11", "198.18.0.11/24")


def test_mesh_passive_side_is_decided_by_comparing_the_addresses_as_strings():
    """bgp_processor.go processMeshPeers: `if peerIP > currentNodeIP { peer.Passive = true }` on the
    text: '198.18.0.9' > '198.18.0.10', so n10 waits for n9 though 9 < 10 as numbers."""
    assert passive_toward("198.18.0.10", "198.18.0.9") and not passive_toward("198.18.0.9", "198.18.0.10")
    at10 = by_key(sessions_for(N10, [N9, N10, N11], cfg(), []))
    at9 = by_key(sessions_for(N9, [N9, N10, N11], cfg(), []))
    assert at10[("198.18.0.9", 179)].passive and not at9[("198.18.0.10", 179)].passive
    assert at10[("198.18.0.11", 179)].passive and not at9[("198.18.0.11", 179)].passive  # '...11' > '...10'


def test_peer_selector_and_route_reflection_sessions_never_wait():
    """bgp_processor.go buildPeerFromData: only mesh, global (and local-workload) peers that are Calico
    nodes are made passive; nodeAsBGPPeers (peerSelector) never sets CalicoNode."""
    rr = node("rr", "198.18.0.20/24", cluster="198.18.0.1", rr="y")
    both = [peer("to-rr", node_selector="all()", peer_selector="has(rr)")]
    for me in (N9, rr):
        assert not any(s.passive for s in sessions_for(me, [N9, rr], cfg(mesh=False), both))


def test_a_global_peer_ip_that_is_a_calico_node_is_passive_by_string_and_a_node_specific_one_dials():
    """client.go updatePeersV1 (CalicoNode: peerIP is a node's address) + bgp_processor.go
    buildPeerFromData (passive only for Type global)."""
    glob = [peer("g", peer_ip="198.18.0.9", as_number=64512)]
    assert by_key(sessions_for(N10, [N9, N10], cfg(mesh=False), glob))[("198.18.0.9", 179)].passive
    ext = [peer("g", peer_ip="198.18.0.99", as_number=65001)]  # not a Calico node: dials
    assert not by_key(sessions_for(N10, [N9, N10], cfg(mesh=False), ext))[("198.18.0.99", 179)].passive
    pinned = [peer("p", node="n10", peer_ip="198.18.0.9", as_number=64512)]
    assert not by_key(sessions_for(N10, [N9, N10], cfg(mesh=False), pinned))[("198.18.0.9", 179)].passive


def test_a_peer_ip_that_is_a_calico_node_is_dialled_on_its_listen_port_and_takes_its_as():
    """client.go updatePeersV1: without a port, nodesWithIPPortAndAS finds the node and its listenPort
    (nodeListenPorts from BGPConfiguration node.<name>, else the global listenPort)."""
    n9 = node("n9", "198.18.0.9/24", asn=65009)
    own = {"n9": cfg(name="node.n9", port=1791)}
    s = by_key(sessions_for(N10, [n9, N10], cfg(mesh=False, port=1790), [peer("p", peer_ip="198.18.0.9")], own))
    assert list(s) == [("198.18.0.9", 1791)] and s[("198.18.0.9", 1791)].peer_as == 65009
    # the cluster's port when the node sets none; an explicit port is kept
    s = by_key(sessions_for(N10, [n9, N10], cfg(mesh=False, port=1790), [peer("p", peer_ip="198.18.0.9")]))
    assert list(s) == [("198.18.0.9", 1790)]
    s = by_key(sessions_for(N10, [n9, N10], cfg(mesh=False, port=1790), [peer("p", peer_ip="198.18.0.9:1000")]))
    assert list(s) == [("198.18.0.9", 1000)]
    # an address that is no Calico node's, without asNumber: no session (nothing to take the AS from)
    assert sessions_for(N10, [n9, N10], cfg(mesh=False), [peer("p", peer_ip="198.18.0.99")]) == []


def test_the_mesh_dials_each_node_on_its_own_listen_port():
    """bgp_processor.go processMeshPeers: /calico/bgp/v1/host/<node>/listen_port, else the global one."""
    own = {"n11": cfg(name="node.n11", port=1791)}
    s = by_key(sessions_for(N10, [N9, N10, N11], cfg(port=1790), [], own))
    assert set(s) == {("198.18.0.9", 1790), ("198.18.0.11", 1791)}
    assert listen_port("n10", cfg(port=1790), own) == 1790 and listen_port("n11", cfg(port=1790), own) == 1791


def test_a_nodes_explicit_listen_port_179_wins_over_a_cluster_default_of_another_port():
    """libcalico-go's bgpsyncer writes /calico/bgp/v1/host/<node>/listen_port whenever the node's
    BGPConfiguration sets listenPort, and confd (bgp_processor.go getNodeOrGlobalValue, processMeshPeers)
    takes it before the global one: 179 given for a node is 179, not the cluster's 1790. It is stored
    as given and comes back from `get -o yaml`."""
    from calico_bgp.resources import model
    from calico_bgp.resources.codec import to_dict

    own = model.from_dict(BGPConfiguration, {"metadata": {"name": "node.n11"}, "spec": {"listenPort": 179}}, where="c")
    assert to_dict(own)["spec"] == {"listenPort": 179}
    s = by_key(sessions_for(N10, [N9, N10, N11], cfg(port=1790), [], {"n11": own}))
    assert set(s) == {("198.18.0.9", 1790), ("198.18.0.11", 179)}
    assert listen_port("n11", cfg(port=1790), {"n11": own}) == 179
    # a node's resource without listenPort leaves the cluster's
    quiet = model.from_dict(BGPConfiguration, {"metadata": {"name": "node.n11"}, "spec": {}}, where="c")
    assert listen_port("n11", cfg(port=1790), {"n11": quiet}) == 1790 and to_dict(quiet).get("spec") in (None, {})


def test_one_address_on_two_ports_is_two_sessions_and_the_speaker_runs_the_first():
    """client.go: peerings are keyed by GlobalBGPPeerKey{PeerIP, Port}; the speaker keys neighbours by
    address, so runnable() keeps the lower port and says why the other does not run."""
    peers = [peer("a", peer_ip="198.18.0.99", as_number=65001), peer("b", peer_ip="198.18.0.99:1179", as_number=65001)]
    sessions = sessions_for(N10, [N10], cfg(mesh=False), peers)
    assert [s.key for s in sessions] == [("198.18.0.99", 179), ("198.18.0.99", 1179)]
    kept, skipped = runnable(sessions)
    assert kept["198.18.0.99"].peer_port == 179
    assert [(k.session.peer_port, k.why) for k in skipped] == [
        (1179, "not run: ExaBGP holds one neighbour per address (a second port is a duplicate peer definition), "
               "and 198.18.0.99 port 179 runs")]


def test_local_as_number_is_the_sessions_local_as_and_decides_rr_clients():
    """client.go setPeerConfigFieldsFromV3Resource (LocalASNum) and bgp_processor.go buildPeerFromData:
    `local as` is localASNumber; rrClient compares the peer's AS with that effective AS."""
    s = by_key(sessions_for(N10, [N10], cfg(mesh=False), [peer("p", peer_ip="198.18.0.99", as_number=65001,
                                                                  local_as_number=65010)]))
    assert (s[("198.18.0.99", 179)].local_as, s[("198.18.0.99", 179)].peer_as) == (65010, 65001)
    rr = node("rr", "198.18.0.20/24", cluster="198.18.0.1")
    s = by_key(sessions_for(rr, [rr], cfg(mesh=False), [peer("ibgp", peer_ip="198.18.0.98", as_number=64512),
                                                         peer("moved", peer_ip="198.18.0.99", as_number=65010,
                                                              local_as_number=65010)]))
    assert s[("198.18.0.98", 179)].rr_client and s[("198.18.0.99", 179)].rr_client


def test_reverse_peering_auto_mirrors_a_peer_selector_and_manual_does_not():
    """client.go updatePeersV1's second pass: nodes a BGPPeer's peerSelector picks peer back with the
    nodes it selects; reversePeering Manual (projectcalico/api BGPPeerSpec) leaves that out."""
    rr = node("rr", "198.18.0.20/24", **{"route-reflector": "true"})
    auto = [peer("to-rr", node_selector="all()", peer_selector="route-reflector == 'true'")]
    assert [s.peer_address for s in sessions_for(rr, [N9, N10, rr], cfg(mesh=False), auto)] == [
        "198.18.0.9", "198.18.0.10"]
    manual = [peer("to-rr", node_selector="all()", peer_selector="route-reflector == 'true'", reverse_peering="Manual")]
    assert sessions_for(rr, [N9, N10, rr], cfg(mesh=False), manual) == []
    assert [s.peer_address for s in sessions_for(N9, [N9, N10, rr], cfg(mesh=False), manual)] == ["198.18.0.20"]


def test_a_reverse_peering_with_local_as_number_mirrors_both_ases():
    """localASNumber is the AS of the nodes the BGPPeer selects: the node its peerSelector picks sees
    that AS as the peer's and keeps its own, so each side's configured peer AS is what the other
    sends in its OPEN."""
    a = node("a", "198.18.0.9/24", rack="a")
    r = node("r", "198.18.0.20/24", rr="yes")
    p = [peer("p", node_selector="rack == 'a'", peer_selector="has(rr)", local_as_number=65100)]
    on_a = by_key(sessions_for(a, [a, r], cfg(mesh=False), p))[("198.18.0.20", 179)]
    on_r = by_key(sessions_for(r, [a, r], cfg(mesh=False), p))[("198.18.0.9", 179)]
    assert (on_a.local_as, on_a.peer_as) == (65100, 64512)
    assert (on_r.local_as, on_r.peer_as) == (64512, 65100)


def test_a_peer_ip_naming_a_node_makes_that_node_peer_back_in_that_family_only():
    """client.go updatePeersV1's second pass: nodesWithIPPortAndAS(peerIP, asNumber, port) are the
    "local" nodes; they peer with the selected nodes over the peerIP's family only."""
    a = node("a", "198.18.0.1/24", "2001:db8::1/64", rack="1")
    b = node("b", "198.18.0.2/24", "2001:db8::2/64", rack="1")
    peers = [peer("to-b", node="a", peer_ip="198.18.0.2", as_number=64512)]
    assert [s.key for s in sessions_for(b, [a, b], cfg(mesh=False), peers)] == [("198.18.0.1", 179)]
    other_as = [peer("to-b", node="a", peer_ip="198.18.0.2", as_number=65000)]  # b is not at that AS
    assert sessions_for(b, [a, b], cfg(mesh=False), other_as) == []


def test_a_global_peering_wins_over_a_node_specific_one_to_the_same_address_and_port():
    """client.go updatePeersV1: global peerings are emitted first; a node-specific one to the same
    (peerIP, port) is skipped."""
    peers = [peer("a-node", node="n10", peer_ip="198.18.0.99", as_number=65002),
             peer("z-global", peer_ip="198.18.0.99", as_number=65001)]
    [s] = sessions_for(N10, [N10], cfg(mesh=False), peers)
    assert (s.peer_name, s.peer_as, s.scope) == ("z-global", 65001, "global")


def test_source_address_none_leaves_the_source_to_the_kernel():
    """bgp_processor.go buildPeerFromData: `if peer.SourceAddr == "UseNodeIP" { result.SourceAddr = currentNodeIP }`."""
    s = by_key(sessions_for(N10, [N10], cfg(mesh=False), [peer("a", peer_ip="198.18.0.99", as_number=1),
                                                           peer("b", peer_ip="198.18.0.98", as_number=1,
                                                                source_address="None")]))
    assert s[("198.18.0.99", 179)].source_address == "198.18.0.10"
    assert s[("198.18.0.98", 179)].source_address == ""


def test_a_nodes_own_prefix_advertisements_replace_the_clusters():
    """client.go updateBGPConfigCache: a node's BGPConfiguration sets prefix_advertisements under the
    node's key; bgp_processor.go processCommunityRules reads the node's key first, then the global one."""
    from calico_bgp.resources.bgpconfig import Community, PrefixAdvertisement
    from calico_bgp.routing.topology import advertising_spec

    cluster = BGPConfiguration(spec=BGPConfigurationSpec(
        prefix_advertisements=(PrefixAdvertisement("198.19.0.0/16", ("64512:1",)),)))
    own = BGPConfiguration(Metadata("node.n1"), BGPConfigurationSpec(
        communities=(Community("rack", "64512:2"),),
        prefix_advertisements=(PrefixAdvertisement("198.19.0.0/16", ("rack",)),)))
    spec = advertising_spec("n1", cluster, {"n1": own})
    assert spec is own.spec and spec.community_value("rack") == "64512:2"
    assert advertising_spec("n2", cluster, {"n1": own}) is cluster.spec
    listen_only = BGPConfiguration(Metadata("node.n1"), BGPConfigurationSpec(listen_port=1790))
    assert advertising_spec("n1", cluster, {"n1": listen_only}) is cluster.spec


def test_apply_names_only_what_a_nodes_configuration_sets_that_is_not_applied():
    """What a per-node BGPConfiguration sets that sessions use (listenPort, prefixAdvertisements) is
    not warned about; a log level is (the agent's --log-level sets its logging)."""
    from calico_bgp.resources.pending import warning

    assert warning(cfg(name="node.n1", port=1790)) is None
    noisy = BGPConfiguration(Metadata("node.n1"), BGPConfigurationSpec(log_severity_screen="Debug"))
    assert warning(noisy) == ("BGPConfiguration 'node.n1': stored, not acted on yet: logSeverityScreen Debug "
                              "(node 'n1': the agent's --log-level sets its logging)")


def test_within_one_pass_a_later_bgppeer_by_name_refines_an_earlier_one():
    """client.go updatePeersV1 emits one pass's peerings in Go's map order (unspecified); here the
    later BGPPeer by name wins, so a peer for one node refines the rack's (its filters, its limits)."""
    n = node("n4", "198.18.1.14/24", rack="r1")
    peers = [peer("tor1", node_selector="rack == 'r1'", peer_ip="198.18.1.1", as_number=65101),
             peer("tor1-with-default", node="n4", peer_ip="198.18.1.1", as_number=65101, filters=("take-default",))]
    [s] = sessions_for(n, [n], cfg(mesh=False), peers)
    assert (s.peer_name, s.filters) == ("tor1-with-default", ("take-default",))
    # a reverse peering never replaces a BGPPeer's own session to that node
    a, b = node("a", "198.18.0.1/24", rr="y"), node("b", "198.18.0.2/24")
    own = [peer("a-to-b", node="a", peer_ip="198.18.0.2", as_number=64512, ttl_security=1),
           peer("z-all-to-rr", node_selector="all()", peer_selector="has(rr)")]
    [s] = sessions_for(a, [a, b], cfg(mesh=False), own)
    assert (s.peer_name, s.ttl_security) == ("a-to-b", 1)


def test_reflectors_peering_on_their_own_both_dial():
    """Route reflection is never passive (bgp_processor.go buildPeerFromData passes only mesh/global
    Calico nodes): our own reflector-to-reflector sessions dial from both ends too."""
    rr1, rr2 = node("rr1", "198.18.0.8/24", cluster="1.0.0.1"), node("rr2", "198.18.0.9/24", cluster="1.0.0.1")
    for me in (rr1, rr2):
        [s] = sessions_for(me, [rr1, rr2], cfg(), [])
        assert (s.kind, s.passive, s.rr_client) == ("rr-peer", False, False)


def test_a_peer_that_makes_no_session_says_why_when_asked():
    declined: list[str] = []
    peers = [peer("ext", peer_ip="198.18.0.99"), peer("v6", peer_ip="2001:db8::99", as_number=65001)]
    assert sessions_for(N10, [N10], cfg(mesh=False), peers, declined=declined) == []
    assert declined == ["BGPPeer ext: no session: peerIP 198.18.0.99 without asNumber is no Calico node's address",
                        "BGPPeer v6: no session: node n10 has no IPv6 address for peerIP 2001:db8::99"]
