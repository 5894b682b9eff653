"""Origin validation end to end: a hostile fabric peer (BIRD 2, AS 64999, eBGP to both nodes of a
meshed pair) announces node n2's block, a /27 inside it holding n2's workload, and a /32 of an
unassigned address of n1's own block. Without origin validation its eBGP copy beat the mesh route
and the pings were lost; now workloads on the two nodes ping each other with 0 loss, the hijacked
routes are in `routes --rejected` with the reason, and the metric counts them. Then Deprefer: the
hijacked block stays behind the valid mesh path and the paths are counted as de-preferred."""
from __future__ import annotations

import ipaddress
import json
import re
import shutil

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.bird import Bird, BirdPeer
from lab.cluster import MeshCluster, mesh
from lab.net import sh, wait_for
from tests.e2e.test_mesh import _block_of, _converged
from tests.marks import needs_root

pytestmark = [needs_root,
              pytest.mark.skipif(shutil.which("bird") is None, reason="needs BIRD 2 (./bootstrap.sh setup)"),
              pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (./bootstrap.sh setup)"),
              pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl to scrape the metrics port")]

HIJACKER, HIJACKER_AS = "198.18.0.99", 64999
PORT = 9189
RESOURCES = f"""
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {{name: default}}
spec: {{asNumber: 64512, nodeToNodeMeshEnabled: true}}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {{name: pods}}
spec: {{cidr: 198.19.0.0/16, blockSize: 26}}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: hijacker}}
spec: {{peerIP: {HIJACKER}, asNumber: {HIJACKER_AS}}}
"""


@pytest.fixture(scope="module")
def hijacked(etcd_server):
    with mesh(etcd_server, "origin", RESOURCES, ["n1", "n2"], agent_args=("--metrics-port", str(PORT))) as c:
        wait_for("the mesh converged", lambda: _converged(c, ["n1", "n2"]), timeout=60)
        bird = Bird(c.add_node("evil", 99), router_id=HIJACKER, tmp=c.run_dir / "bird")
        try:
            n2_block = ipaddress.ip_network(_block_of(c, "n2"))
            n2_workload = c.workloads["n2"][1]
            n1_block = ipaddress.ip_network(_block_of(c, "n1"))
            stolen = {
                "block": str(n2_block),
                "more-specific": str(ipaddress.ip_network(f"{n2_workload}/27", strict=False)),
                "unassigned": f"{n1_block.network_address + 40}/32",
            }
            bird.configure([BirdPeer(name=n, local_as=HIJACKER_AS, neighbor=c.addrs[n], peer_as=64512,
                                     local_address=HIJACKER) for n in ("n1", "n2")],
                           static4=list(stolen.values()))
            bird.wait_established("n1", timeout=60)
            bird.wait_established("n2", timeout=60)
            yield c, stolen
        finally:
            bird.stop()


def _loss(c: MeshCluster, src: str, dst_ip: str, count: int = 20) -> int:
    """Percent of `count` pings from `src`'s workload to `dst_ip` that got no reply."""
    ws, _ = c.workloads[src]
    out = sh("ping", "-c", str(count), "-i", "0.2", "-W", "1", dst_ip, ns=ws, check=False, timeout=count + 15).stdout
    m = re.search(r"(\d+(?:\.\d+)?)% packet loss", out)
    assert m, out
    return round(float(m.group(1)))


def _rejected(c: MeshCluster, node: str) -> dict[str, str]:
    rows = json.loads(c.cli("routes", "--node", node, "--rejected", "-o", "json").stdout)[node]
    return {r["prefix"]: r["reason"] for r in rows if r["peer"] == HIJACKER}


def _metric(c: MeshCluster, node: str, action: str) -> float:
    raw = sh("curl", "-sf", "--max-time", "5", f"http://127.0.0.1:{PORT}/metrics", ns=c.nodes[node]).stdout
    for family in text_string_to_metric_families(raw):
        for s in family.samples:
            if s.name == "calico_bgp_peer_origin_invalid_prefixes" and s.labels == {
                    "peer": HIJACKER, "peer_type": "fabric", "action": action}:
                return s.value
    return -1.0


def test_a_hijacked_block_and_more_specific_are_rejected_and_traffic_flows(hijacked):
    c, stolen = hijacked
    block, more, unassigned = stolen["block"], stolen["more-specific"], stolen["unassigned"]
    n2_block_reason = f"origin invalid: {block} is n2's block, path originates at AS {HIJACKER_AS}"
    # n1: n2's block and the /27 inside it are rejected; so is the /32 in its own block
    want_n1 = {block: n2_block_reason, more: n2_block_reason,
               unassigned: f"origin invalid: an unassigned address of block {_block_of(c, 'n1')}"}
    wait_for("n1 rejected the three hijacked routes", lambda: _rejected(c, "n1") == want_n1, timeout=30)
    # n2: its own block and more-specific are never valid from anyone else; the /32 is in n1's block
    wait_for("n2 rejected them too", lambda: set(_rejected(c, "n2")) == set(stolen.values()), timeout=30)
    assert _rejected(c, "n2")[block].endswith("this node's own, path from 198.18.0.99")
    # the kernel: the mesh routes only, none via the hijacker
    for node in ("n1", "n2"):
        routes = c.routes(node)
        assert not [p for p, hops in routes.items() if HIJACKER in hops], (node, routes)
        assert more not in routes and unassigned not in routes
    assert c.routes("n1")[block] == [c.addrs["n2"]]
    # workloads on the two nodes reach each other with no loss, both ways
    assert _loss(c, "n1", c.workloads["n2"][1]) == 0
    assert _loss(c, "n2", c.workloads["n1"][1]) == 0
    # counted, per peer
    wait_for("n1's metric counts the three", lambda: _metric(c, "n1", "rejected") == 3, timeout=30)
    assert _metric(c, "n1", "depreferred") == 0
    sessions = {s["peer"]: s for s in c.status("n1")["sessions"]}
    assert sessions[HIJACKER]["state"] == "Established" and sessions[c.addrs["n2"]]["state"] == "Established"
    # and one event says so, with an example
    events = [json.loads(line) for line in c.cli("events", "--node", "n1", "-o", "json").stdout.splitlines() if line]
    flagged = [e for e in events if e["kind"] == "origin_invalid"]
    assert len(flagged) == 1 and flagged[0]["peer"] == HIJACKER, flagged
    assert re.match(r"[123] rejected, 0 de-preferred; origin invalid: ", flagged[0]["detail"]), flagged


def test_deprefer_keeps_the_hijack_behind_the_valid_path(hijacked):
    c, stolen = hijacked
    try:
        c.apply(RESOURCES.replace("nodeToNodeMeshEnabled: true}", "nodeToNodeMeshEnabled: true, originValidation: Deprefer}"))
        wait_for("n1 counts the paths as de-preferred", lambda: _metric(c, "n1", "depreferred") == 3, timeout=30)
        assert _rejected(c, "n1") == {}
        routes = c.routes("n1")
        assert routes[stolen["block"]] == [c.addrs["n2"]]  # the invalid eBGP path loses to the valid iBGP one
        # a more-specific has no valid path to lose to: de-preferring does not stop it (as with RPKI)
        assert routes[stolen["more-specific"]] == [HIJACKER]
        rows = json.loads(c.cli("routes", "--node", "n1", "-o", "json").stdout)["n1"]
        mine = next(r for r in rows if r["prefix"] == stolen["block"])
        assert mine["bestReason"] == "origin-validation", mine
    finally:
        c.apply(RESOURCES)
    wait_for("Reject again", lambda: _metric(c, "n1", "rejected") == 3, timeout=30)
    wait_for("the more-specific gone", lambda: stolen["more-specific"] not in c.routes("n1"), timeout=30)


def test_disabled_lets_the_hijack_take_the_traffic(hijacked):
    """The control: without origin validation the hijacker's /27 takes n2's workload from n1 (BIRD
    prepends its AS, so its copy of the block itself loses to the mesh on AS-path length; the raw
    speaker's empty AS_PATH would win that too)."""
    c, stolen = hijacked
    try:
        c.apply(RESOURCES.replace("nodeToNodeMeshEnabled: true}", "nodeToNodeMeshEnabled: true, originValidation: Disabled}"))
        wait_for("n1 routes the /27 via the hijacker",
                 lambda: c.routes("n1").get(stolen["more-specific"]) == [HIJACKER], timeout=30)
        assert c.routes("n1")[stolen["unassigned"]] == [HIJACKER]
        assert _rejected(c, "n1") == {}
        assert _loss(c, "n1", c.workloads["n2"][1], count=5) == 100
    finally:
        c.apply(RESOURCES)
    wait_for("the hijack gone", lambda: stolen["more-specific"] not in c.routes("n1"), timeout=30)
    assert _loss(c, "n1", c.workloads["n2"][1]) == 0
