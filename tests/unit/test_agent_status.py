"""The status an agent publishes counts honestly (it used to be: `status` said 32 routes in the kernel while
9 had failed; a RIB holding only rejected paths showed 0 rejected, an empty RIB being falsy)."""

from calico_bgp.agent.node import AgentOptions, NodeAgent
from calico_bgp.datastore import Keys
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import Rib
from calico_bgp.routing.topology import Session


def agent(tmp_path) -> NodeAgent:
    a = NodeAgent(None, Keys("/t/calico-bgp/v1"), AgentOptions(name="n1", filter_mode="off", state_dir=tmp_path))
    a.state.sessions = {"198.18.0.1": Session(peer_address="198.18.0.1", peer_as=65001, local_as=64512,
                                        local_address="198.18.0.2", kind="fabric")}
    a.state.rib = Rib(LocalSpeaker(64512, "198.18.0.2"), lambda _p, _prefix, _a: "outside every IP pool", max_rejected=3)
    return a


async def test_a_rib_holding_only_rejected_paths_reports_them_with_those_beyond_the_cap(tmp_path):
    a = agent(tmp_path)
    peer = Peer("198.18.0.1", 65001, "198.18.0.1", ibgp=False)
    a.state.rib.update(peer, {Prefix.of(f"198.18.64.{i}/32"): PathAttributes("198.18.0.1") for i in range(5)})
    status = a.build_status()
    s = status.sessions[0]
    assert (s.received, s.accepted, s.rejected, s.rejected_not_kept) == (5, 0, 5, 2)
    assert len(status.rejected) == 3 and status.routes_total == 0


async def test_failed_routes_are_counted_listed_with_their_reason_and_not_in_the_kernel(tmp_path):
    a = agent(tmp_path)
    a.state.rib.import_policy = None
    peer = Peer("198.18.0.1", 65001, "198.18.0.1", ibgp=False)
    a.state.rib.update(peer, {Prefix.of("198.19.0.0/26"): PathAttributes("no-nexthop"),
                        Prefix.of("198.19.1.0/26"): PathAttributes("198.18.0.1")})
    from calico_bgp.routing import desired
    routes, unbuildable = desired.kernel_routes("n1", {}, a.state.rib)
    a.programmer.set_desired(routes, unbuildable)  # not opened: nothing is in the kernel yet
    status = a.build_status()
    assert (status.routes_total, status.kernel_routes, status.routes_failed) == (2, 0, 1)
    assert [(f.prefix, f.stage) for f in status.failed] == [("198.19.0.0/26", "build")]
    assert "no-nexthop" in status.failed[0].reason
    assert not any(r.in_kernel for r in status.routes)


async def test_a_policy_change_asks_a_capped_peer_for_a_route_refresh_if_it_takes_one(tmp_path):
    """Soft reconfiguration re-judges only the rejected paths kept: a peer beyond the cap is asked to
    send its routes again (RFC 2918) when its import policy changes, once per change; a peer without
    the capability gets an event saying what stays out."""
    from calico_bgp.resources import model
    from calico_bgp.resources.ippool import IPPool, IPPoolSpec
    from calico_bgp.speaker.events import PeerOpen, PeerState

    a = agent(tmp_path)
    a.state.sessions["198.18.0.3"] = Session(peer_address="198.18.0.3", peer_as=65001, local_as=64512,
                                       local_address="198.18.0.2", kind="fabric")
    sent: list[str] = []

    async def send(lines):
        sent.extend(lines)
        return len(sent)

    a.speaker.send = send
    a.speaker.peers = {p: PeerState(peer=p, state="up") for p in a.state.sessions}
    a.state.peer_open = {"198.18.0.1": PeerOpen(peer="198.18.0.1", route_refresh=True), "198.18.0.3": PeerOpen(peer="198.18.0.3")}
    for p in a.state.sessions:
        a.state.rib.update(Peer(p, 65001, p, ibgp=False),
                     {Prefix.of(f"198.18.64.{i}/32"): PathAttributes(p) for i in range(5)})
    pools = [IPPool(model.Metadata("a"), IPPoolSpec(cidr="198.19.0.0/16"))]
    await a.control.refresh_capped(pools)  # the first policy seen: nothing to compare with
    await a.control.refresh_capped(pools)  # unchanged
    assert sent == []
    pools.append(IPPool(model.Metadata("b"), IPPoolSpec(cidr="198.18.64.0/24")))
    await a.control.refresh_capped(pools)
    assert sent == ["neighbor 198.18.0.1 announce route-refresh ipv4 unicast"]
    assert a.state.rib.rejected_not_kept("198.18.0.1") == 0  # counted again as the refresh brings them
    events = [(e.kind, e.peer, e.detail) for e in a.events.recent if e.kind == "route_refresh"]
    assert [(k, p) for k, p, _ in events] == [("route_refresh", "198.18.0.1"), ("route_refresh", "198.18.0.3")]
    assert "takes no ROUTE-REFRESH" in events[1][2] and "2 rejected paths were not kept" in events[1][2]


async def test_a_route_unchanged_since_the_last_document_is_the_same_value_and_changed_ones_are_new(tmp_path):
    """Under churn most published routes are what the last document said: they are reused (not built
    and encoded again) while their selection and kernel state stay; a new selection is said anew."""
    from calico_bgp.agent import status as st
    from calico_bgp.resources import codec

    a = agent(tmp_path)
    a.state.rib.import_policy = None
    peer = Peer("198.18.0.1", 65001, "198.18.0.1", ibgp=False)
    a.state.rib.update(peer, {Prefix.of(f"198.19.0.{i}/32"): PathAttributes("198.18.0.1") for i in range(4)})
    first = a.build_status()
    a.state.rib.update(peer, {Prefix.of("198.19.0.1/32"): PathAttributes("198.18.0.9"),
                              Prefix.of("198.19.0.7/32"): PathAttributes("198.18.0.1")})
    second = a.build_status()
    by_prefix = {r.prefix: r for r in first.routes}
    assert [r.prefix for r in second.routes] == [f"198.19.0.{i}/32" for i in (0, 1, 2, 3, 7)]
    assert [r is by_prefix.get(r.prefix) for r in second.routes] == [True, False, True, True, False]
    assert second.routes[1].next_hops == ("198.18.0.9",)
    enc = st.Encoder()
    for doc in (first, second, first, st.NodeStatus(node="n1", version="0", address="", asn=1, router_id="",
                                                    role="node", updated=0.0, started=0.0)):
        assert enc.encode(doc) == codec.encode(doc) == st.encode(doc)
        assert st.decode(enc.encode(doc), "status/n1") == doc


def test_a_route_encodes_as_the_codec_writes_it_whatever_its_fields():
    from calico_bgp.agent import status as st
    from calico_bgp.resources import codec

    routes = [st.RouteStatus("198.19.0.1/32", ("198.18.0.1",), ("198.18.0.1",), True),
              st.RouteStatus("2001:db8::/64", ("2001:db8::1", "fe80::1"), ("2001:db8::1", "2001:db8::2"), False,
                             'lowest "MED"\\ é'),
              st.RouteStatus("198.19.0.0/26", (), (), False, "")]
    for r in routes:
        assert st.route_json(r) == codec.encode(r).decode()
