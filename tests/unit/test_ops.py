"""The operators' files: Prometheus alert rules (checked and unit-tested by promtool) and the Grafana
dashboard, whose every calico_bgp_* name must be one the agent's registry really exports."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from calico_bgp.telemetry.metrics import Metrics

OPS = Path(__file__).resolve().parents[2] / "ops"
RULES = OPS / "prometheus" / "calico-bgp-rules.yml"
RULES_TEST = OPS / "prometheus" / "calico-bgp-rules.test.yml"
DASHBOARD = OPS / "grafana" / "calico-bgp.json"
NAME = re.compile(r"\bcalico_bgp_[a-z0-9_]+")
ISSUE_ALERTS = {"CalicoBGPSessionDown", "CalicoBGPPeerFlapping", "CalicoBGPChurnBurst", "CalicoBGPDampingActive",
                "CalicoBGPIPAMPoolNearlyExhausted", "CalicoBGPProgrammingLatencyHigh",
                "CalicoBGPOriginInvalid"}

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="needs promtool (Debian's prometheus package)")


def exported_names() -> set[str]:
    """Every series name the agent's registry can expose (histograms as _bucket/_sum/_count)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query", "definition") and isinstance(v, str):
                yield v
            else:
                yield from dashboard_exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from dashboard_exprs(v)


@needs_promtool
def test_promtool_check_rules():
    res = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


@needs_promtool
def test_promtool_unit_tests_fire_alerts_on_synthetic_series():
    res = subprocess.run(["promtool", "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    tested = {t["alertname"] for case in yaml.safe_load(RULES_TEST.read_text())["tests"]
              for t in case["alert_rule_test"] if t.get("exp_alerts")}
    assert len(tested) >= 2, tested


def test_rules_cover_the_issue_and_are_complete():
    rs = rules()
    assert ISSUE_ALERTS <= {r["alert"] for r in rs}
    for r in rs:
        assert "for" in r, r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_every_metric_in_rules_exists_in_the_registry():
    known = exported_names()
    used = {n for r in rules() for n in NAME.findall(r["expr"])}
    used |= {n for r in rules() for a in r["annotations"].values() for n in NAME.findall(a)}
    assert used, "the rules reference no calico_bgp_* metric"
    assert used <= known, f"unknown metrics in rules: {sorted(used - known)}"


def test_every_metric_in_the_dashboard_exists_in_the_registry():
    dash = json.loads(DASHBOARD.read_text())
    known = exported_names()
    used = {n for e in dashboard_exprs(dash) for n in NAME.findall(e)}
    assert used <= known, f"unknown metrics in the dashboard: {sorted(used - known)}"
    # the dashboard shows peer stability and route churn
    for name in ("calico_bgp_peer_session_state", "calico_bgp_peer_flaps_total", "calico_bgp_peer_flap_score",
                 "calico_bgp_peer_prefixes", "calico_bgp_peer_updates_received_total",
                 "calico_bgp_route_programming_seconds_bucket", "calico_bgp_ipam_pool_utilisation_ratio",
                 "calico_bgp_damped_prefixes", "calico_bgp_filter_packets_total"):
        assert name in used, name
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["targets"] and p["gridPos"]["w"] <= 24, p["title"]
