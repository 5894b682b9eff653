from prometheus_client.parser import text_string_to_metric_families

from calico_bgp.telemetry.metrics import Metrics


def test_exposition_parses_and_uses_conventional_names():
    m = Metrics()
    m.set_peer_state("198.18.1.1", "fabric", "established")
    m.peer_flaps.labels("198.18.1.1", "fabric").inc()
    m.updates_received.labels("198.18.1.1", "fabric").inc(3)
    m.programming_latency.observe(0.004)
    families = {f.name: f for f in text_string_to_metric_families(m.exposition().decode())}
    for name in ("calico_bgp_peer_session_state", "calico_bgp_peer_flaps", "calico_bgp_route_programming_seconds",
                 "calico_bgp_peer_updates_received", "calico_bgp_ipam_pool_utilisation_ratio"):
        assert name in families, name
    states = {s.labels["state"]: s.value for s in families["calico_bgp_peer_session_state"].samples}
    assert states["established"] == 1 and states["idle"] == 0
    assert all(f.name.startswith("calico_bgp_") for f in families.values())


def test_forgotten_peer_leaves_no_series():
    m = Metrics()
    m.set_peer_state("198.18.1.1", "mesh", "idle")
    m.peer_flaps.labels("198.18.1.1", "mesh").inc()
    m.forget_peer("198.18.1.1", "mesh")
    assert b"198.18.1.1" not in m.exposition()


def test_forgetting_a_peer_or_pool_leaves_no_series_behind():
    from calico_bgp.telemetry.metrics import Metrics
    m = Metrics()
    m.init_peer("198.18.0.2", "mesh")
    m.set_peer_state("198.18.0.2", "mesh", "idle")
    m.peer_notifications.labels("198.18.0.2", "mesh", "6").inc()
    m.max_prefix_actions.labels("198.18.0.2", "mesh", "teardown").inc()
    m.peer_notifications.labels("198.18.0.3", "mesh", "6").inc()
    m.pool_utilisation.labels("gone").set(0.95)
    m.forget_peer("198.18.0.2", "mesh")
    m.forget_pool("gone")
    text = m.exposition().decode()
    assert "198.18.0.2" not in text and 'pool="gone"' not in text
    assert 'peer="198.18.0.3"' in text
