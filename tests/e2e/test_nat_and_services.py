"""natOutgoing and service CIDR advertisement through the agents of a two-node mesh, from etcd.

natOutgoing: a UDP sink on n2's own address (in no pool) sees n1's address while the pool has
natOutgoing, the workload's address before and after; traffic to n2's workload (pool to pool) keeps
the workload's address throughout. Services: each node announces the configured service CIDRs (its
peer receives and refuses them, outside every pool: `routes --rejected` names the sender), puts none
in its kernel, and stops once labelled exclude-from-external-load-balancers.
"""
from __future__ import annotations

import json
import shutil

import pytest

from lab.cluster import MESH_RESOURCES, mesh
from lab.net import sh, wait_for
from tests.e2e.test_mesh import _converged
from tests.integration.test_nat_outgoing import sources_seen
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (./bootstrap.sh setup)"),
              pytest.mark.skipif(not (shutil.which("nft") or (shutil.which("iptables") and shutil.which("ipset"))),
                                 reason="needs nft, or iptables and ipset")]

POOL = "kind: IPPool\napiVersion: projectcalico.org/v3\nmetadata: {name: pods}\n" \
       "spec: {cidr: 198.19.0.0/16, blockSize: 26, natOutgoing: %s}\n"
CONFIG = "kind: BGPConfiguration\napiVersion: projectcalico.org/v3\nmetadata: {name: default}\n" \
         "spec: {asNumber: 64512, nodeToNodeMeshEnabled: true%s}\n"
SERVICES = (", serviceClusterIPs: [{cidr: 198.18.200.0/24}], serviceExternalIPs: [{cidr: 198.18.201.0/24}], "
            "serviceLoadBalancerIPs: [{cidr: 198.18.202.0/24}]")
CIDRS = {"198.18.200.0/24", "198.18.201.0/24", "198.18.202.0/24"}


@pytest.fixture(scope="module")
def cluster(etcd_server):
    with mesh(etcd_server, "natsvc", MESH_RESOURCES, ["n1", "n2"]) as c:
        wait_for("converged", lambda: _converged(c, ["n1", "n2"]), timeout=60)
        yield c


def test_nat_outgoing_from_etcd(cluster):
    c = cluster
    ws, wl_ip = c.workloads["n1"]
    far_ws, far_wl = c.workloads["n2"]

    def seen_by_n2() -> set[str]:
        return sources_seen(ws, wl_ip, c.nodes["n2"], c.addrs["n2"])

    assert seen_by_n2() == {wl_ip}
    c.apply(POOL % "true")
    wait_for("n1 masquerades its workload towards n2's address", lambda: seen_by_n2() == {c.addrs["n1"]}, timeout=30)
    assert sources_seen(ws, wl_ip, far_ws, far_wl) == {wl_ip}       # pool to pool: never NATed
    assert c.ping("n1", c.addrs["n2"])
    c.apply(POOL % "false")
    wait_for("natOutgoing off: the workload's own address again", lambda: seen_by_n2() == {wl_ip}, timeout=30)
    for n in ("n1", "n2"):
        assert "calico_bgp_nat" not in sh("nft", "list", "tables", ns=c.nodes[n], check=False).stdout
        assert "cbn-" not in sh("ipset", "list", "-n", ns=c.nodes[n], check=False).stdout


def _rejected_from(c, node: str) -> dict[str, str]:
    """prefix -> the peer it came from, for what `node` refused."""
    out = json.loads(c.cli("routes", "--node", node, "--rejected", "-o", "json").stdout)[node]
    return {r["prefix"]: r["peer"] for r in out}


def test_service_cidrs_announced_from_every_node_but_an_excluded_one(cluster):
    c = cluster
    try:
        c.apply(CONFIG % SERVICES)
        for n, other in (("n1", "n2"), ("n2", "n1")):
            wait_for(f"{n} receives the service CIDRs from {other}",
                     lambda n=n, other=other: all(_rejected_from(c, n).get(p) == c.addrs[other] for p in CIDRS),
                     timeout=30)
            assert CIDRS <= set(c.status(n)["announced"])
            assert not CIDRS & set(c.routes(n))                     # in no kernel: not the sender's, not the receiver's
        node = json.loads(c.cli("get", "node", "n2", "-o", "json").stdout)
        node = node[0] if isinstance(node, list) else node
        node["metadata"].setdefault("labels", {})["node.kubernetes.io/exclude-from-external-load-balancers"] = "true"
        c.apply(json.dumps(node))
        wait_for("n2 withdrew them", lambda: not CIDRS & set(_rejected_from(c, "n1")), timeout=30)
        # n2's own status document is published on its own schedule, a moment after n1 heard
        wait_for("n2 says it announces them no more", lambda: not CIDRS & set(c.status("n2")["announced"]),
                 timeout=30)
        assert CIDRS <= set(c.status("n1")["announced"])
    finally:
        c.apply(CONFIG % "")
