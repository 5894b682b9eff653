"""The agent's wiring without a speaker, a kernel or etcd: a cluster state synced by the control
loop, speaker events handled by SessionEvents, what the status and the metrics then say. Before,
only the e2e tests reached these paths."""
from calico_bgp.agent.node import AgentOptions, NodeAgent
from calico_bgp.datastore import Keys
from calico_bgp.resources.bgpconfig import BGPConfiguration, BGPConfigurationSpec
from calico_bgp.resources.bgppeer import BGPPeer, BGPPeerSpec
from calico_bgp.resources.bgpsession import BGPPassword, SecretKeyRef
from calico_bgp.resources.ippool import IPPool, IPPoolSpec
from calico_bgp.resources.model import Metadata
from calico_bgp.resources.node import Node, NodeBGPSpec, NodeSpec
from calico_bgp.resources.view import ClusterState
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.graceful_restart import GRACEFUL_RESTART
from calico_bgp.routing.prefix import Prefix
from calico_bgp.speaker.events import PeerOpen, PeerState

TOR = "198.18.0.9"


def node(name: str, v4: str) -> Node:
    return Node(Metadata(name), NodeSpec(bgp=NodeBGPSpec(ipv4_address=v4)))


def cluster(*peers: BGPPeer, nodes=("n1", "n2"), secrets=None, pools=()) -> ClusterState:
    ns = {n: node(n, f"198.18.0.{i + 1}/24") for i, n in enumerate(nodes)}
    return ClusterState(revision=1, config=BGPConfiguration(spec=BGPConfigurationSpec(as_number=64512)), nodes=ns,
                        pools={p: IPPool(Metadata(p), IPPoolSpec(cidr=p.replace("-", "/"))) for p in pools}, peers={p.name: p for p in peers}, filters={}, policies={}, blocks={}, corrupt={},
                        secrets=secrets or {})


def tor(**spec) -> BGPPeer:
    return BGPPeer(Metadata("tor"), BGPPeerSpec(peer_ip=TOR, as_number=65001, **spec))


class FakeSpeaker:
    """Records what the agent tells the speaker."""

    def __init__(self, agent: NodeAgent) -> None:
        self.neighbors: list[list[str]] = []
        self.abrupt: list[set[str]] = []
        self.sent: list[str] = []
        agent.speaker.set_neighbors = self.set_neighbors
        agent.speaker.send = self.send
        agent.speaker.announce = self.nothing
        agent.speaker.withdraw = self.nothing

    async def set_neighbors(self, neighbors, abrupt=()):
        self.last = {n.key: n for n in neighbors}
        self.neighbors.append(sorted(self.last))
        self.abrupt.append(set(abrupt))

    async def send(self, lines):
        self.sent.extend(lines)
        return len(self.sent)

    async def nothing(self, *args, **kw):
        return None


def agent(tmp_path) -> tuple[NodeAgent, FakeSpeaker]:
    a = NodeAgent(None, Keys("/t/calico-bgp/v1"), AgentOptions(name="n1", filter_mode="off", state_dir=tmp_path))
    return a, FakeSpeaker(a)


async def test_a_session_whose_password_secret_is_missing_is_not_configured_and_status_says_why(tmp_path):
    a, speaker = agent(tmp_path)
    await a.control.sync(cluster(tor(password=BGPPassword(secret_key_ref=SecretKeyRef("bgp", "tor")))))
    assert speaker.neighbors[-1] == ["198.18.0.2"]  # the mesh peer only: never the TOR without its password
    status = {s.peer: s for s in a.build_status().sessions}
    assert status[TOR].state == "Idle" and "password secret bgp/tor not found" in status[TOR].info
    assert "TCP MD5" in status[TOR].info
    await a.control.sync(cluster(tor(password=BGPPassword(secret_key_ref=SecretKeyRef("bgp", "tor"))),
                                 secrets={"bgp": {"tor": "s3cret"}}))
    assert speaker.neighbors[-1] == ["198.18.0.2", TOR]


async def test_a_removed_peer_leaves_no_metric_series_and_a_configured_one_starts_at_zero(tmp_path):
    a, _ = agent(tmp_path)
    await a.control.sync(cluster(tor()))
    labels = {"peer": TOR, "peer_type": "fabric"}
    assert a.metrics.registry.get_sample_value("calico_bgp_peer_flaps_total", labels) == 0
    await a.sessions.on_peer_state(PeerState(peer=TOR, state="up"))
    await a.sessions.on_peer_state(PeerState(peer=TOR, state="down", reason="hold timer expired"))
    assert a.metrics.registry.get_sample_value("calico_bgp_peer_flaps_total", labels) == 1
    assert a.metrics.registry.get_sample_value("calico_bgp_peer_session_state", {**labels, "state": "idle"}) == 1
    await a.control.sync(cluster())
    assert TOR.encode() not in a.metrics.exposition()
    await a.control.sync(cluster(tor()))  # back: its counters start again
    assert a.metrics.registry.get_sample_value("calico_bgp_peer_flaps_total", labels) == 0


async def test_a_peer_over_its_teardown_limit_is_reset_once_and_left_out_until_its_hold_ends(tmp_path):
    a, speaker = agent(tmp_path)
    await a.control.sync(cluster(tor(max_prefixes=3, max_prefix_action="teardown")))
    rib_peer = a.state.rib_peers[TOR]
    a.state.rib.update(rib_peer, {Prefix.of(f"198.19.{i}.0/24"): PathAttributes(TOR) for i in range(4)})
    await a.sessions.check_max_prefixes(TOR)
    await a.sessions.check_max_prefixes(TOR)  # the same limit: acted on once
    assert speaker.sent == [f"neighbor {TOR} teardown 1"]
    events = [e for e in a.events.recent if e.kind == "max_prefixes"]
    assert len(events) == 1 and events[0].detail == "received 4 > limit 3: teardown"
    assert a.metrics.registry.get_sample_value("calico_bgp_peer_max_prefix_actions_total",
                                               {"peer": TOR, "peer_type": "fabric", "action": "teardown"}) == 1
    await a.control.sync(a.state.cluster)  # what the poke runs
    assert TOR not in speaker.neighbors[-1] and TOR in speaker.abrupt[-1]
    status = {s.peer: s for s in a.build_status().sessions}
    assert status[TOR].state == "Idle" and "max prefixes exceeded (4 > 3)" in status[TOR].info


async def test_a_graceful_peer_that_drops_keeps_its_routes_stale_and_one_without_loses_them(tmp_path):
    a, _ = agent(tmp_path)
    await a.control.sync(cluster(tor(origin_validation="Disabled"), pools=["198.19.0.0-16"]))
    routes = {Prefix.of("198.19.0.0/24"): PathAttributes(TOR)}
    a.state.rib.update(a.state.rib_peers[TOR], routes)
    a.sessions.on_open(PeerOpen(peer=TOR, graceful_restart=90, graceful_families=("ipv4 unicast",),
                                forwarding_kept=("ipv4 unicast",)))
    await a.sessions.on_peer_state(PeerState(peer=TOR, state="up"))
    await a.sessions.on_peer_state(PeerState(peer=TOR, state="down", reason="connection lost"))
    assert len(a.state.rib) == 1 and a.state.rib.stale_count(TOR) == 1
    (kept,) = [e for e in a.events.recent if e.kind == GRACEFUL_RESTART]
    assert kept.detail == "kept 1 routes stale for at most 90s"
    a.sessions.on_open(PeerOpen(peer=TOR))  # back without the capability: its stale routes go at the next sweep
    assert [p for p, _up in a.state.stale.due(0.0, lambda _p: True, False, lambda _p: False)] == [TOR]
    a.state.peer_open.clear()
    a.state.rib.update(a.state.rib_peers[TOR], routes)
    await a.sessions.on_peer_state(PeerState(peer=TOR, state="up"))
    await a.sessions.on_peer_state(PeerState(peer=TOR, state="down", reason="notification received (6,2)"))
    assert len(a.state.rib) == 0


async def test_a_password_file_is_read_at_each_sync_and_an_unreadable_one_keeps_the_session_out(tmp_path):
    a, speaker = agent(tmp_path)
    pw = tmp_path / "tor.pw"
    await a.control.sync(cluster(tor(password=BGPPassword(file=str(pw)))))
    assert TOR not in speaker.neighbors[-1]
    assert "unreadable: No such file or directory" in a.state.session_errors[TOR]
    pw.write_text("s3cret\n")
    await a.control.sync(cluster(tor(password=BGPPassword(file=str(pw)))))
    assert speaker.last[TOR].md5_password == "s3cret" and TOR not in a.state.session_errors


async def test_a_peer_without_a_limit_is_not_counted_on_each_update(tmp_path):
    """Counting a peer's paths walks the whole RIB: done per UPDATE for every peer it made a 100k-route
    burst quadratic. Without a maxPrefixes limit there is nothing to count."""
    a, _ = agent(tmp_path)
    await a.control.sync(cluster(tor()))

    def walk(_peer: str) -> int:
        raise AssertionError("the RIB was walked to count a peer without a limit")

    a.state.rib.accepted_count = walk
    await a.sessions.check_max_prefixes(TOR)
    assert TOR not in a.state.max_prefix_hit
