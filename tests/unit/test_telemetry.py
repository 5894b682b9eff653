"""The metrics an agent exposes: read from its state at scrape time (telemetry/collector.py), in the
names, types and labels the README's Observability table documents."""
import trio
from prometheus_client.parser import text_string_to_metric_families

from calico_bgp.agent import sampling
from calico_bgp.agent.node import AgentOptions, NodeAgent
from calico_bgp.agent.snapshot import metrics_sample
from calico_bgp.agent.state import AgentState
from calico_bgp.datastore import Keys
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import Rib
from calico_bgp.routing.topology import Session
from calico_bgp.telemetry.collector import NodeSample, PeerCounts, PeerSample, PoolSample
from calico_bgp.telemetry.metrics import Metrics
from calico_bgp.telemetry.stability import PeerStability


def session(addr: str, kind: str = "mesh") -> Session:
    return Session(peer_address=addr, peer_as=64512, local_as=64512, local_address="198.18.0.1", kind=kind)


def watching(state: AgentState) -> Metrics:
    m = Metrics()
    m.watch(lambda: metrics_sample(sampling.peers(state, {}, 0.0), pools=state.pool_usage,
                                   stray_notifications=tuple((p, c, n) for (p, c), n in state.stray_notifications.items())))
    return m


def test_exposition_parses_and_uses_conventional_names():
    m = Metrics()
    m.watch(lambda: NodeSample(peers=(PeerSample("198.18.1.1", "fabric", "established",
                                                 counts=PeerCounts(flaps=1, updates_received=3)),),
                               pools=(PoolSample("default", 0.5, 2),)))
    m.programming_latency.observe(0.004)
    families = {f.name: f for f in text_string_to_metric_families(m.exposition().decode())}
    for name in ("calico_bgp_peer_session_state", "calico_bgp_peer_flaps", "calico_bgp_route_programming_seconds",
                 "calico_bgp_peer_updates_received", "calico_bgp_ipam_pool_utilisation_ratio"):
        assert name in families, name
    states = {s.labels["state"]: s.value for s in families["calico_bgp_peer_session_state"].samples}
    assert states["established"] == 1 and states["idle"] == 0
    assert families["calico_bgp_peer_flaps"].type == "counter"
    assert families["calico_bgp_peer_updates_received"].samples[0].value == 3
    assert all(f.name.startswith("calico_bgp_") for f in families.values())


def test_every_documented_family_is_exposed_with_its_type_and_labels_before_any_peer():
    """The README's Observability table, as the registry exposes it with no agent state yet."""
    documented = {
        "calico_bgp_peer_session_state": ("gauge", {"peer", "peer_type", "state"}),
        "calico_bgp_peer_established_seconds": ("gauge", {"peer", "peer_type"}),
        "calico_bgp_peer_transitions": ("counter", {"peer", "peer_type"}),
        "calico_bgp_peer_flaps": ("counter", {"peer", "peer_type"}),
        "calico_bgp_peer_flap_score": ("gauge", {"peer", "peer_type"}),
        "calico_bgp_peer_notifications": ("counter", {"peer", "peer_type", "code"}),
        "calico_bgp_peer_updates_received": ("counter", {"peer", "peer_type"}),
        "calico_bgp_peer_withdrawals_received": ("counter", {"peer", "peer_type"}),
        "calico_bgp_peer_updates_sent": ("counter", {"peer", "peer_type"}),
        "calico_bgp_peer_withdrawals_sent": ("counter", {"peer", "peer_type"}),
        "calico_bgp_peer_prefixes": ("gauge", {"peer", "peer_type", "kind"}),
        "calico_bgp_peer_max_prefix_actions": ("counter", {"peer", "peer_type", "action"}),
        "calico_bgp_peer_malformed_updates": ("counter", {"peer", "reason"}),
        "calico_bgp_peer_origin_invalid_prefixes": ("gauge", {"peer", "peer_type", "action"}),
        "calico_bgp_kernel_routes": ("gauge", {"kind"}),
        "calico_bgp_damped_prefixes": ("gauge", set()),
        "calico_bgp_ipam_pool_utilisation_ratio": ("gauge", {"pool"}),
        "calico_bgp_ipam_pool_blocks": ("gauge", {"pool"}),
        "calico_bgp_ipam_borrowed_addresses": ("gauge", set()),
        "calico_bgp_nat_mode": ("gauge", {"mode"}),
        "calico_bgp_nat_masquerade_cidrs": ("gauge", set()),
    }
    m = Metrics()
    types = {f.name: f.type for f in m.registry.collect()}
    for name, (kind, _labels) in documented.items():
        assert types.get(name) == kind, name
    full = NodeSample(peers=(PeerSample("198.18.0.2", "mesh", "idle", 1.0, 0.5,
                                        counts=PeerCounts(notifications={"6": 1}, max_prefix_actions={"warn": 1},
                                                          malformed={"as-zero": 1})),),
                      pools=(PoolSample("p", 0.1, 1),))
    m.watch(lambda: full)
    labels = {f.name: {k for s in f.samples for k in s.labels} for f in m.registry.collect()}
    for name, (_kind, want) in documented.items():
        assert labels[name] == want, name


def test_a_configured_peer_has_its_counters_at_zero_and_no_state_until_it_reports_one():
    state = AgentState(sessions={"198.18.0.2": session("198.18.0.2")}, counts={"198.18.0.2": PeerCounts()})
    m = watching(state)
    labels = {"peer": "198.18.0.2", "peer_type": "mesh"}
    assert m.registry.get_sample_value("calico_bgp_peer_flaps_total", labels) == 0
    assert m.registry.get_sample_value("calico_bgp_peer_session_state", {**labels, "state": "idle"}) is None
    state.stability["198.18.0.2"] = PeerStability("198.18.0.2")
    state.stability["198.18.0.2"].transition("idle", 1.0)
    assert m.registry.get_sample_value("calico_bgp_peer_session_state", {**labels, "state": "idle"}) == 1


def test_forgotten_peer_leaves_no_series():
    state = AgentState(sessions={"198.18.1.1": session("198.18.1.1")}, counts={"198.18.1.1": PeerCounts(flaps=1)})
    state.stab("198.18.1.1").transition("idle", 1.0)
    m = watching(state)
    assert b"198.18.1.1" in m.exposition()
    state.forget_peer("198.18.1.1", 2.0)
    del state.sessions["198.18.1.1"]
    assert b"198.18.1.1" not in m.exposition()


def test_forgetting_a_peer_or_pool_leaves_no_series_behind():
    state = AgentState(sessions={a: session(a) for a in ("198.18.0.2", "198.18.0.3")},
                       counts={"198.18.0.2": PeerCounts(notifications={"6": 1}, max_prefix_actions={"teardown": 1}),
                               "198.18.0.3": PeerCounts(notifications={"6": 1})},
                       pool_usage={"gone": (0.95, 3)})
    state.stab("198.18.0.2").transition("idle", 1.0)
    m = watching(state)
    assert 'pool="gone"' in m.exposition().decode()
    state.forget_peer("198.18.0.2", 2.0)
    del state.sessions["198.18.0.2"]
    state.pool_usage = {}
    text = m.exposition().decode()
    assert "198.18.0.2" not in text and 'pool="gone"' not in text
    assert 'peer="198.18.0.3"' in text


def test_prefix_gauges_count_what_the_rib_holds_at_scrape_time():
    """received = accepted + rejected + damped, read from the RIB when scraped, not when status was built."""
    state = AgentState(sessions={"198.18.0.1": session("198.18.0.1", "fabric")}, counts={"198.18.0.1": PeerCounts()})
    state.rib = Rib(LocalSpeaker(64512, "198.18.0.2"),
                    lambda _p, prefix, _a: "outside every IP pool" if prefix.prefixlen == 32 else None)
    m = watching(state)
    labels = {"peer": "198.18.0.1", "peer_type": "fabric"}
    assert m.registry.get_sample_value("calico_bgp_peer_prefixes", {**labels, "kind": "received"}) == 0
    state.rib.update(Peer("198.18.0.1", 65001, "198.18.0.1", ibgp=False),
                     {Prefix.of("198.18.64.1/32"): PathAttributes("198.18.0.1"),
                      Prefix.of("198.18.64.0/26"): PathAttributes("198.18.0.1")})
    got = {k: m.registry.get_sample_value("calico_bgp_peer_prefixes", {**labels, "kind": k})
           for k in ("received", "accepted", "rejected", "damped")}
    assert got == {"received": 2, "accepted": 1, "rejected": 1, "damped": 0}


def test_a_notification_from_a_peer_that_is_no_session_is_counted_as_unknown():
    state = AgentState(stray_notifications={("198.18.0.9", "6"): 2})
    m = watching(state)
    assert m.registry.get_sample_value("calico_bgp_peer_notifications_total",
                                       {"peer": "198.18.0.9", "peer_type": "unknown", "code": "6"}) == 2


async def test_a_scrape_from_another_thread_reads_the_agents_state_in_the_agents_thread(tmp_path):
    """The HTTP server scrapes in its own thread; the agent's state is read in the trio thread (as
    GoBGP's collector goes through its server's loop), so it never changes under the reader."""
    a = NodeAgent(None, Keys("/t/calico-bgp/v1"), AgentOptions(name="n1", filter_mode="off", state_dir=tmp_path))
    a.state.sessions = {"198.18.0.1": session("198.18.0.1", "fabric")}
    a.state.counts = {"198.18.0.1": PeerCounts(flaps=4)}
    a._token = trio.lowlevel.current_trio_token()
    threads: list[bool] = []
    take = sampling.metrics

    def spy(*args, **kw):
        try:
            trio.lowlevel.current_trio_token()
            threads.append(True)
        except RuntimeError:
            threads.append(False)
        return take(*args, **kw)

    sampling.metrics = spy
    try:
        text = (await trio.to_thread.run_sync(a.metrics.exposition)).decode()
    finally:
        sampling.metrics = take
    assert 'calico_bgp_peer_flaps_total{peer="198.18.0.1",peer_type="fabric"} 4.0' in text
    assert threads == [True]
