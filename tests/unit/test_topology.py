import pytest

from calico_bgp.resources.bgpconfig import BGPConfiguration, BGPConfigurationSpec
from calico_bgp.resources.bgppeer import BGPPeer, BGPPeerSpec
from calico_bgp.resources.bgpsession import BGPPassword, SecretKeyRef
from calico_bgp.resources.model import Metadata
from calico_bgp.resources.node import Node, NodeBGPSpec, NodeSpec
from calico_bgp.routing.topology import TopologyError, router_id, sessions_for


def node(name, v4="", v6="", asn=None, cluster="", **labels):
    return Node(Metadata(name, labels), NodeSpec(bgp=NodeBGPSpec(ipv4_address=v4, ipv6_address=v6, as_number=asn,
                                                                  route_reflector_cluster_id=cluster)))


def cfg(mesh=True, asn=64512):
    return BGPConfiguration(spec=BGPConfigurationSpec(node_to_node_mesh_enabled=mesh, as_number=asn))


def peer(name, **spec):
    return BGPPeer(Metadata(name), BGPPeerSpec(**spec))


A = node("a", "198.18.0.1/24", "2001:db8::1/64")
B = node("b", "198.18.0.2/24", "2001:db8::2/64")
C = node("c", "198.18.0.3/24")
NODES = [A, B, C]


def test_full_mesh_one_session_per_pair_and_family_lower_address_passive():
    s = sessions_for(A, NODES, cfg(), [])
    assert [(x.peer_address, x.kind, x.passive) for x in s] == [
        ("198.18.0.2", "mesh", True), ("198.18.0.3", "mesh", True), ("2001:db8::2", "mesh", True)]
    back = {x.peer_address: x for x in sessions_for(B, NODES, cfg(), [])}
    assert back["198.18.0.1"].passive is False  # exactly one side dials
    assert all(x.ibgp and x.local_as == 64512 for x in s)


def test_graceful_restart_time_defaults_to_calicos_and_a_peer_may_set_or_disable_it():
    peers = [peer("tor1", peer_ip="198.18.9.1", as_number=65001, max_restart_time="5m"),
             peer("tor2", peer_ip="198.18.9.2", as_number=65001, max_restart_time="0s")]
    s = {x.peer_address: x.restart_time for x in sessions_for(A, NODES, cfg(), peers)}
    assert s == {"198.18.0.2": 120, "198.18.0.3": 120, "2001:db8::2": 120, "198.18.9.1": 300, "198.18.9.2": 0}


def test_the_mesh_takes_its_password_and_restart_time_from_the_configuration_and_only_the_mesh():
    secret = BGPPassword(secret_key_ref=SecretKeyRef("mesh", "password"))
    spec = BGPConfigurationSpec(node_mesh_password=secret, node_mesh_max_restart_time="0s")
    rr1, rr2 = node("rr1", "198.18.0.8/24", cluster="1.0.0.1"), node("rr2", "198.18.0.9/24", cluster="1.0.0.1")
    own = peer("tor", peer_ip="198.18.9.1", as_number=65001)
    s = {x.peer_address: x for x in sessions_for(A, NODES, BGPConfiguration(spec=spec), [own])}
    mesh = [x for x in s.values() if x.kind == "mesh"]
    assert len(mesh) == 3 and all(x.password == secret and x.restart_time == 0 for x in mesh)
    assert s["198.18.9.1"].password is None and s["198.18.9.1"].restart_time == 120  # a BGPPeer's own
    # route reflectors peer among themselves on their own: the same settings
    between = sessions_for(rr1, [rr1, rr2], BGPConfiguration(spec=spec), [])
    assert [(x.kind, x.password, x.restart_time) for x in between] == [("rr-peer", secret, 0)]
    # a selector BGPPeer between nodes is that peer's session, not the mesh's
    by_peer = peer("pair", node_selector="all()", peer_selector="all()")
    s = {x.peer_address: x for x in sessions_for(A, NODES, cfg(mesh=False), [by_peer])}
    assert all(x.password is None and x.restart_time == 120 for x in s.values())


def test_mesh_off_means_no_node_sessions():
    assert sessions_for(A, NODES, cfg(mesh=False), []) == []


def test_fabric_peer_global_per_node_and_by_selector():
    rack1 = node("r1", "198.18.1.10/24", rack="1")
    rack2 = node("r2", "198.18.2.10/24", rack="2")
    peers = [peer("tor1", peer_ip="198.18.1.1", as_number=65001, node_selector="rack == '1'"),
             peer("tor2", peer_ip="198.18.2.1:1790", as_number=65002, node="r2"),
             peer("spine", peer_ip="198.18.9.1", as_number=65100)]
    s1 = {x.peer_address: x for x in sessions_for(rack1, [rack1, rack2], cfg(mesh=False), peers)}
    assert set(s1) == {"198.18.1.1", "198.18.9.1"}
    assert s1["198.18.1.1"].kind == "fabric" and not s1["198.18.1.1"].ibgp and s1["198.18.1.1"].peer_name == "tor1"
    s2 = {x.peer_address: x for x in sessions_for(rack2, [rack1, rack2], cfg(mesh=False), peers)}
    assert s2["198.18.2.1"].peer_port == 1790


def test_as_per_rack_node_as_overrides_global():
    n = node("r1", "198.18.1.10/24", asn=65010)
    [s] = sessions_for(n, [n], cfg(mesh=False), [peer("tor", peer_ip="198.18.1.1", as_number=65001)])
    assert (s.local_as, s.peer_as) == (65010, 65001)


def test_route_reflectors_leave_the_mesh_and_serve_clients_via_peer_selector():
    rr1 = node("rr1", "198.18.0.101/24", cluster="198.18.0.100", **{"route-reflector": "true"})
    rr2 = node("rr2", "198.18.0.102/24", cluster="198.18.0.100", **{"route-reflector": "true"})
    nodes = [A, B, C, rr1, rr2]
    to_rrs = peer("to-rrs", node_selector="all()", peer_selector="has(route-reflector)")
    # mesh still on: clients mesh among themselves, RRs are not in it
    sa = {x.peer_address: x.kind for x in sessions_for(A, nodes, cfg(), [to_rrs])}
    assert sa == {"198.18.0.2": "mesh", "198.18.0.3": "mesh", "2001:db8::2": "mesh",
                  "198.18.0.101": "to-rr", "198.18.0.102": "to-rr"}
    # mesh off: clients peer only with their RRs
    sa = {x.peer_address: x.kind for x in sessions_for(A, nodes, cfg(mesh=False), [to_rrs])}
    assert sa == {"198.18.0.101": "to-rr", "198.18.0.102": "to-rr"}
    srr = {x.peer_address: x for x in sessions_for(rr1, nodes, cfg(mesh=False), [to_rrs])}
    assert {a: x.kind for a, x in srr.items()} == {
        "198.18.0.1": "rr-client", "198.18.0.2": "rr-client", "198.18.0.3": "rr-client", "198.18.0.102": "rr-peer"}
    assert srr["198.18.0.1"].rr_client and not srr["198.18.0.102"].rr_client


def test_node_without_address_is_an_error_naming_it():
    with pytest.raises(TopologyError, match="node x"):
        sessions_for(Node(Metadata("x")), NODES, cfg(), [])


def test_router_id_prefers_ipv4_and_is_stable_for_v6_only():
    assert router_id(A) == "198.18.0.1"
    v6 = node("v6only", v6="2001:db8::9/64")
    assert router_id(v6) == router_id(v6)
    # the old 16-bit name sum gave node-16 and node-80 one id: they could never peer
    ids = {router_id(node(f"node-{i}", v6=f"2001:db8::{i:x}/64")) for i in range(1, 2001)}
    assert len(ids) == 2000


def test_dual_homed_node_uses_the_address_on_each_tors_link():
    from calico_bgp.resources.node import NodeAddress
    n = Node(Metadata("r1", {"rack": "1"}), NodeSpec(
        bgp=NodeBGPSpec(ipv4_address="198.18.1.11/24", as_number=65101),
        addresses=(NodeAddress("198.18.1.11/24"), NodeAddress("198.18.2.11/24"))))
    peers = [peer("tor1", peer_ip="198.18.1.1", as_number=65001, num_allowed_local_as_numbers=1),
             peer("tor2", peer_ip="198.18.2.1", as_number=65002)]
    s = {x.peer_address: x for x in sessions_for(n, [n], cfg(mesh=False), peers)}
    assert s["198.18.1.1"].local_address == "198.18.1.11" and s["198.18.1.1"].allow_own_as == 1
    assert s["198.18.2.1"].local_address == "198.18.2.11"


def test_a_peers_origin_validation_overrides_the_clusters_and_the_mesh_inherits():
    peers = [peer("tor", peer_ip="198.18.0.50", as_number=65001, origin_validation="Deprefer"),
             peer("tor2", peer_ip="198.18.0.51", as_number=65002)]
    s = {x.peer_address: x for x in sessions_for(A, [A, B], cfg(), peers)}
    assert s["198.18.0.50"].origin_validation == "Deprefer"
    assert s["198.18.0.51"].origin_validation == "" and s["198.18.0.2"].origin_validation == ""  # the cluster's
