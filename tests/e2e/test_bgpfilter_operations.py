"""BGPFilter conditions and operations on the wire, against two BIRD 2 ToRs (eBGP) of one node agent,
with Calico's semantics (confd/pkg/resource/template/template_funcs.go; golden configs under
confd/tests/compiled_templates/bgpfilter/communities_and_operations and as_path_and_priority):

    hub bridge 198.18.0.0/24:  n1 .1 (agent, AS 64512)   tor-a .61 (AS 65061)   tor-b .62 (AS 65062)

- export: a rule on peerType eBGP and priority 1024 (every route we originate) adds community
  65000:42 and prepends 65010 65011: both ToRs hold n1's block with that community and the path
  64512 65010 65011;
- import: a communities match rejects what tor-a tags 65000:666 (listed by `routes --rejected`);
  a rule on 65000:100 sets priority 512 (LOCAL_PREF 2147483135), so tor-b's longer path to the shared
  prefix wins over tor-a's on local-pref; the filter changed without that rule, the same paths are
  judged again from what was sent and tor-a's shorter path wins.
"""
from __future__ import annotations

import json
import shutil

import pytest

from lab.bird import Bird, BirdPeer
from lab.cluster import PROTO, MeshCluster, mesh
from lab.net import sh, wait_for
from tests.e2e.test_mesh import _block_of
from tests.marks import needs_root

pytestmark = [needs_root,
              pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (./bootstrap.sh setup)"),
              pytest.mark.skipif(shutil.which("bird") is None, reason="needs BIRD 2 (./bootstrap.sh setup)")]

TOR_A, TOR_B = "198.18.0.61", "198.18.0.62"
SHARED, TAINTED = "198.18.200.0/24", "198.18.201.0/24"
RESOURCES = """
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMeshEnabled: false}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pods}
spec: {cidr: 198.19.0.0/16, blockSize: 26}
"""
PRIORITY_RULE = """  - action: Accept
    communities: {values: ["65000:100"]}
    operations: [{setPriority: {value: 512}}]
"""


def _filter(with_priority: bool) -> str:
    return f"""kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {{name: tor}}
spec:
  exportV4:
  - action: Accept
    peerType: eBGP
    priority: 1024
    operations:
    - addCommunity: {{value: "65000:42"}}
    - prependASPath: {{prefix: [65010, 65011]}}
  importV4:
  - action: Reject
    communities: {{values: ["65000:666"]}}
{PRIORITY_RULE if with_priority else ""}  - {{action: Accept, cidr: 198.18.200.0/22, matchOperator: In}}
"""


PEERS = "---\n".join(
    f"kind: BGPPeer\napiVersion: projectcalico.org/v3\nmetadata: {{name: {name}}}\n"
    f"spec: {{node: n1, peerIP: {ip}, asNumber: {asn}, filters: [tor]}}\n"
    for name, ip, asn in (("tor-a", TOR_A, 65061), ("tor-b", TOR_B, 65062)))


def _bird(c: MeshCluster, ns: str, ip: str, asn: int, export: str, static: list[str]) -> Bird:
    bird = Bird(ns, router_id=ip, tmp=c.run_dir / f"bird-{asn}")
    bird.configure([BirdPeer(name="n1", local_as=asn, neighbor="198.18.0.1", peer_as=64512, local_address=ip,
                             export=export)], static4=static)
    return bird


def _routes(c: MeshCluster) -> dict[str, dict]:
    return {r["prefix"]: r for r in json.loads(c.cli("routes", "--node", "n1", "-o", "json").stdout)["n1"]}


def _metrics(c: MeshCluster, prefix: str) -> list[int]:
    """The metric of each of our kernel routes to `prefix` on n1 (0 when `ip` shows none)."""
    raw = sh("ip", "-j", "-4", "route", "show", prefix, "proto", str(PROTO), ns=c.nodes["n1"]).stdout or "[]"
    return [r.get("metric", 0) for r in json.loads(raw)]


def _rejected(c: MeshCluster) -> dict[str, str]:
    rows = json.loads(c.cli("routes", "--node", "n1", "--rejected", "-o", "json").stdout)["n1"]
    return {r["prefix"]: r["reason"] for r in rows}


@pytest.fixture(scope="module")
def rack(etcd_server):
    with mesh(etcd_server, "bgpf", RESOURCES, ["n1"]) as c:
        ns_a, ns_b = c.add_node("tora", 61), c.add_node("torb", 62)
        c.apply(_filter(with_priority=True))
        wait_for("n1's BGPPeers accepted (its Node exists)",
                 lambda: c.cli("apply", "-f", "-", input=PEERS, check=False).returncode == 0, timeout=30)
        # tor-a: the shared prefix on a short path, and one tagged to be refused
        a = _bird(c, ns_a, TOR_A, 65061, "filter { if source != RTS_STATIC then reject; "
                  f"if net = {TAINTED} then bgp_community.add((65000, 666)); accept; }}", [SHARED, TAINTED])
        # tor-b: the shared prefix on a longer path, tagged for priority 512
        b = _bird(c, ns_b, TOR_B, 65062, "filter { if source != RTS_STATIC then reject; "
                  "bgp_path.prepend(65062); bgp_community.add((65000, 100)); accept; }", [SHARED])
        try:
            a.wait_established("n1", timeout=60)
            b.wait_established("n1", timeout=60)
            c.birds = {TOR_A: a, TOR_B: b}  # type: ignore[attr-defined]
            yield c
        finally:
            a.stop()
            b.stop()


def test_export_operations_are_seen_by_bird(rack):
    c = rack
    block = wait_for("n1's block", lambda: _block_of(c, "n1"), timeout=60)
    for tor, bird in c.birds.items():  # type: ignore[attr-defined]
        out = wait_for(f"{tor} holds n1's block", lambda: (lambda t: t if "BGP.as_path" in t else None)(
            bird.route_all(block)), timeout=30)
        assert "BGP.as_path: 64512 65010 65011" in out, out
        assert "BGP.community: (65000,42)" in out, out


def test_import_communities_match_rejects_and_set_priority_decides_the_best_path(rack):
    c = rack
    wait_for("the tagged route rejected by the filter",
             lambda: _rejected(c).get(TAINTED) == "rejected by filter 'tor' importV4[0]", timeout=30)
    assert TAINTED not in c.routes("n1")
    best = wait_for("tor-b's longer path preferred on its priority",
                    lambda: (lambda r: r if r.get("nextHops") == [TOR_B] else None)(_routes(c).get(SHARED, {})),
                    timeout=30)
    assert best["bestReason"] == "local-pref", best
    wait_for("the kernel follows", lambda: c.routes("n1").get(SHARED) == [TOR_B], timeout=30)
    # setPriority is the route's kernel metric, as Calico's `krt_metric = 512` (template_funcs.go)
    wait_for("one route, at metric 512", lambda: _metrics(c, SHARED) == [512], timeout=30)

    c.apply(_filter(with_priority=False))  # the rule gone: judged again from what tor-b sent
    wait_for("tor-a's shorter path preferred again", lambda: c.routes("n1").get(SHARED) == [TOR_A], timeout=30)
    wait_for("one route, at metric 0", lambda: _metrics(c, SHARED) == [0], timeout=30)
    # the status document `routes` reads is published a moment after the kernel changed
    wait_for("the status saying why", lambda: _routes(c).get(SHARED, {}).get("bestReason") == "as-path", timeout=30)
    assert _routes(c)[SHARED]["nextHops"] == [TOR_A]
    c.apply(_filter(with_priority=True))
    wait_for("and back to tor-b", lambda: c.routes("n1").get(SHARED) == [TOR_B], timeout=30)
