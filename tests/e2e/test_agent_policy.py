"""PolicyFilters through the agent: stored in etcd, enforced on the node's uplink, counted, removed."""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.cluster import mesh
from lab.net import wait_for
from tests.e2e.test_mesh import RESOURCES, _converged
from tests.marks import needs_root

XDP_OBJ = Path(__file__).resolve().parents[2] / "dataplane" / "filters" / "xdp" / "filter.o"
pytestmark = [needs_root, pytest.mark.skipif(not XDP_OBJ.exists(), reason="XDP object not built (make -C dataplane/filters/xdp)")]


def test_policy_filter_from_etcd_drops_a_denied_source_and_keeps_bgp(etcd_server):
    with mesh(etcd_server, "pol", RESOURCES, ["n1", "n2"]) as c:
        wait_for("converged", lambda: _converged(c, ["n1", "n2"]), timeout=60)
        src = c.workloads["n1"][1]
        assert c.ping("n1", c.workloads["n2"][1])
        c.apply(f"""kind: PolicyFilter
apiVersion: calico-bgp/v1
metadata: {{name: edge}}
spec:
  nodeSelector: all()
  rules:
  - action: Deny
    source: {{nets: ["{src}/32"]}}
""")
        wait_for("n2 drops n1's workload", lambda: not c.ping("n1", c.workloads["n2"][1], wait=0.5), timeout=15)
        # the status document is published after the filter is in place, not with it
        wait_for("n2's status names its filter mode",
                 lambda: c.status("n2")["filterMode"] in ("xdp", "nft", "iptables"), timeout=10)
        assert c.sessions_up("n2", 1), "the filter cut BGP (tcp 179 is failsafe)"
        c.cli("delete", "policyfilter", "edge")
        wait_for("traffic restored", lambda: c.ping("n1", c.workloads["n2"][1], wait=0.5), timeout=15)
        run_dir = c.run_dir
    assert str(run_dir) not in Path("/proc/mounts").read_text()
