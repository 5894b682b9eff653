"""PolicyFilter resources -> a node's FilterSet (calico_bgp/agent/policy.py), and counters -> metrics."""
from __future__ import annotations

import pytest

from calico_bgp.agent.policy import FilterMetrics, node_filterset
from calico_bgp.resources import model
from calico_bgp.resources.fields import InvalidResource
from calico_bgp.resources.policyfilter import PolicyFilter
from calico_bgp.telemetry.metrics import Metrics
from dataplane.filters.rules import (
    FAILSAFE_RULE,
    CapacityExceeded,
    FailsafePort,
    InvalidFilter,
    Limits,
    RuleCounter,
    RuleId,
)


def pf(name: str, rules: list[dict], **spec) -> PolicyFilter:
    return model.from_dict(PolicyFilter, {"metadata": {"name": name}, "spec": {"rules": rules, **spec}},
                           where=name)


DENY_NET = {"action": "Deny", "source": {"nets": ["198.18.0.0/16", "2001:db8:1::/48"]}}
ALLOW_443 = {"action": "Allow", "source": {"nets": ["198.18.0.0/16"]}, "protocol": "TCP",
             "destination": {"ports": [443, "8000:8080"]}}
IFACES = ["eth0", "eth1", "ens3", "ens4", "lo"]


def test_selected_filters_on_uplinks_by_default():
    fs = node_filterset([pf("edge", [DENY_NET, ALLOW_443]),
                         pf("other", [DENY_NET], nodeSelector="rack == 'r2'")],
                        {"rack": "r1"}, IFACES, uplinks=["eth0", "eth1"])
    assert fs.names == ("eth0", "eth1")
    f = fs.get("eth0")
    assert [r.rule_id for r in f.rules] == [RuleId("edge", 0), RuleId("edge", 1)]
    assert f.decide("198.18.3.4", 6, 8080).counted == RuleId("edge", 1)
    assert not f.decide("198.18.3.4", 6, 22 + 1).passed
    assert f.decide("2001:db8:1::1", 6, 179).counted == FAILSAFE_RULE   # Calico's default failsafe
    assert FailsafePort(6, 2379) in f.failsafe


def test_patterns_and_failsafe_union():
    fs = node_filterset([pf("a", [DENY_NET], interfaces=["ens*"], failsafeInboundPorts=[{"protocol": "tcp", "port": 9000}]),
                         pf("b", [ALLOW_443], interfaces=["ens3"])],
                        {}, IFACES, uplinks=["eth0"])
    assert fs.names == ("ens3", "ens4")
    ens3 = fs.get("ens3")
    assert {str(p) for p in ens3.failsafe} >= {"tcp:9000", "tcp:179"}
    assert [str(r.rule_id) for r in ens3.rules] == ["a/0", "b/0"]
    assert [str(p) for p in fs.get("ens4").failsafe] == ["tcp:9000"]


def test_unknown_interface_is_an_error_naming_it():
    with pytest.raises(InvalidFilter, match="PolicyFilter edge: interface 'eth9'"):
        node_filterset([pf("edge", [DENY_NET], interfaces=["eth9"])], {}, IFACES, uplinks=[])


def test_too_many_rules():
    rules = [{"action": "Deny", "source": {"nets": [f"198.18.{i}.0/24"]}} for i in range(20)]
    with pytest.raises(CapacityExceeded, match="20 rules"):
        node_filterset([pf("big", rules)], {}, IFACES, ["eth0"], Limits(rules=10))


def test_invalid_cidr_is_rejected_by_the_model():
    with pytest.raises(InvalidResource, match="198.18.0.300"):
        pf("bad", [{"action": "Deny", "source": {"nets": ["198.18.0.300/32"]}}])


def test_metrics_from_counters_are_monotonic_and_forget_removed_rules():
    m = FilterMetrics(Metrics())

    def c(p: int, b: int) -> RuleCounter:
        return RuleCounter("eth0", RuleId("edge", 0), "Deny", p, b)

    m.update("xdp", [c(10, 1000), RuleCounter("eth0", FAILSAFE_RULE, "Allow", 2, 120)])
    m.update("xdp", [c(15, 1500), RuleCounter("eth0", FAILSAFE_RULE, "Allow", 2, 120)])
    m.update("xdp", [c(3, 300), RuleCounter("eth0", FAILSAFE_RULE, "Allow", 2, 120)])   # recreated: a reset
    text = m.metrics.exposition().decode()
    assert 'calico_bgp_filter_packets_total{action="Deny",filter="edge",interface="eth0",rule="0"} 18.0' in text
    assert 'calico_bgp_filter_bytes_total{action="Deny",filter="edge",interface="eth0",rule="0"} 1800.0' in text
    assert 'rule="failsafe"} 2.0' in text
    assert 'calico_bgp_filter_mode{mode="xdp"} 1.0' in text and 'calico_bgp_filter_mode{mode="nft"} 0.0' in text
    m.update("nft", [RuleCounter("eth0", FAILSAFE_RULE, "Allow", 0, 0)])
    text = m.metrics.exposition().decode()
    assert 'filter="edge"' not in text
    assert 'calico_bgp_filter_mode{mode="nft"} 1.0' in text


class FakeEngine:
    def __init__(self) -> None:
        self.mode = None
        self.applied = []

    def apply(self, fs):
        self.applied.append(fs)
        self.mode = "nft" if fs.interfaces else None
        return self.mode

    def counters(self):
        return [RuleCounter("eth0", RuleId("edge", 0), "Deny", 5, 500)]


async def test_reconciler_applies_good_filters_and_keeps_them_on_bad_ones():
    from calico_bgp.agent.policy import PolicyFilterReconciler

    engine = FakeEngine()
    metrics = Metrics()
    r = PolicyFilterReconciler(engine, metrics)
    good = [pf("edge", [DENY_NET])]
    assert await r.reconcile(good, {}, IFACES, ["eth0"]) == "nft"
    assert await r.reconcile(good, {}, IFACES, ["eth0"]) == "nft"
    assert len(engine.applied) == 1                       # unchanged: not re-applied
    bad = [pf("edge", [DENY_NET], interfaces=["eth9"])]
    assert await r.reconcile(bad, {}, IFACES, ["eth0"]) == "nft"
    assert "eth9" in r.last_error and len(engine.applied) == 1
    await r.export_metrics()
    assert 'calico_bgp_filter_packets_total{action="Deny",filter="edge",interface="eth0",rule="0"} 5.0' in \
        metrics.exposition().decode()
    assert await r.reconcile([], {}, IFACES, ["eth0"]) is None
    assert r.last_error is None and engine.applied[-1].interfaces == ()
