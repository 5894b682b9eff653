"""Route reflection by node agents: 2 RR nodes (same cluster ID) + 6 clients, mesh off; every client routed,
one reflector lost without losing a route."""
from __future__ import annotations

import re
import shutil
import time

import attrs
import pytest

from lab.bird import Bird, BirdPeer, same_since
from lab.cluster import MeshCluster, mesh
from lab.net import wait_for
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("bird") is None, reason="needs BIRD 2 (./bootstrap.sh setup)")]

CLUSTER_ID = "198.18.0.100"
RRS = {"rr1": 101, "rr2": 102}
CLIENTS = {f"c{i}": i for i in range(1, 7)}
BIRD_ADDR = "198.18.0.50"


def resources() -> str:
    docs = ["""kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMeshEnabled: false}""",
            """kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pods}
spec: {cidr: 198.19.0.0/16, blockSize: 26}""",
            """kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: to-route-reflectors}
spec: {nodeSelector: all(), peerSelector: has(route-reflector)}""",
            f"""kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: bird-client}}
spec: {{node: rr1, peerIP: {BIRD_ADDR}, asNumber: 64512}}"""]
    for name, i in RRS.items():
        docs.append(f"""kind: Node
apiVersion: projectcalico.org/v3
metadata: {{name: {name}, labels: {{route-reflector: "true"}}}}
spec: {{bgp: {{ipv4Address: 198.18.0.{i}/24, routeReflectorClusterID: {CLUSTER_ID}}}}}""")
    return "\n---\n".join(docs)


@attrs.frozen
class DirectPeer(BirdPeer):
    """An iBGP session whose next hops are on the shared segment (BIRD's iBGP is multihop otherwise)."""

    def render(self) -> str:
        return super().render().replace("  hold time", "  direct;\n  hold time", 1)


@pytest.fixture(scope="module")
def rr_cluster(etcd_server):
    with mesh(etcd_server, "rr", resources(), {**RRS, **CLIENTS}) as c:
        bird = Bird(c.add_node("bird", 50), router_id=BIRD_ADDR, tmp=c.run_dir / "bird")
        try:
            bird.configure([DirectPeer(name="rr1", local_as=64512, neighbor="198.18.0.101", peer_as=64512,
                                       local_address=BIRD_ADDR, export="none", next_hop_self=False)])
            yield c, bird
        finally:
            bird.stop()


def _blocks(c: MeshCluster, names) -> dict[str, str]:
    out = {}
    for n in names:
        bh = [p for p, h in c.routes(n).items() if h == ["blackhole"]]
        assert len(bh) == 1, (n, bh)
        out[n] = bh[0]
    return out


def _clients_have_all(c: MeshCluster) -> bool:
    blocks = _blocks(c, CLIENTS)
    for n in CLIENTS:
        r = c.routes(n)
        for m in CLIENTS:
            if m != n and r.get(blocks[m]) != [c.addrs[m]]:
                return False
    return True


def test_every_client_has_every_other_clients_blocks_via_the_originator(rr_cluster):
    c, _ = rr_cluster
    for n in CLIENTS:
        wait_for(f"{n} up with both RRs", lambda n=n: c.sessions_up(n, 2), timeout=60)
    wait_for("all client blocks everywhere", lambda: _clients_have_all(c), timeout=30)
    kinds = {s["peer"]: s["peerType"] for s in c.status("rr1")["sessions"]}
    assert kinds["198.18.0.102"] == "route reflector peer" and kinds["198.18.0.1"] == "route reflector client"
    assert c.ping("c1", c.workloads["c6"][1], count=2)


def test_bird_client_sees_originator_id_and_cluster_list(rr_cluster):
    c, bird = rr_cluster
    bird.wait_established("rr1", timeout=60)
    block = _blocks(c, ["c3"])["c3"]
    wait_for("c3's block in BIRD", lambda: block in bird.routes(), timeout=30)
    detail = bird.route_all(block)
    assert re.search(r"BGP\.originator_id:\s+198\.18\.0\.3\b", detail), detail
    assert re.search(r"BGP\.cluster_list:\s+198\.18\.0\.100\b", detail), detail
    assert "via 198.18.0.3" in detail  # the originator's next hop, not the reflector's


def test_next_hop_mode_self_sends_reflected_routes_via_the_reflector(rr_cluster):
    """BGPPeer nextHopMode Self (BIRD `next hop self` in Calico's config for that peer): the BIRD client
    gets the other clients' blocks with rr1 as next hop; the session stays up through the change, and
    back to Auto the originator's next hop returns."""
    c, bird = rr_cluster
    bird.wait_established("rr1", timeout=60)
    block = _blocks(c, ["c3"])["c3"]
    wait_for("c3's block in BIRD via c3", lambda: bird.routes().get(block) == ["198.18.0.3"], timeout=30)
    since = bird.protocols()["rr1"]["since"]
    peer = (f"kind: BGPPeer\napiVersion: projectcalico.org/v3\nmetadata: {{name: bird-client}}\n"
            f"spec: {{node: rr1, peerIP: {BIRD_ADDR}, asNumber: 64512, nextHopMode: Self}}\n")
    c.apply(peer)
    wait_for("c3's block in BIRD via rr1", lambda: bird.routes().get(block) == ["198.18.0.101"], timeout=30)
    assert same_since(bird.protocols()["rr1"]["since"], since)
    c.apply(peer.replace(", nextHopMode: Self", ""))
    wait_for("c3's block in BIRD via c3 again", lambda: bird.routes().get(block) == ["198.18.0.3"], timeout=30)
    assert same_since(bird.protocols()["rr1"]["since"], since)


def _bird_session(c: MeshCluster) -> str:
    return next((s["state"] for s in c.status("rr1")["sessions"] if s["peer"] == BIRD_ADDR), "absent")


def test_ttl_security_is_gtsm_against_birds_ttl_security(rr_cluster):
    """BGPPeer ttlSecurity 1 (Calico: BIRD `ttl security on; multihop 1`): while BIRD sends with its
    usual TTL our side refuses the session; with BIRD's `ttl security on` it opens and routes flow."""
    c, bird = rr_cluster
    bird.wait_established("rr1", timeout=60)
    block = _blocks(c, ["c3"])["c3"]
    peer = (f"kind: BGPPeer\napiVersion: projectcalico.org/v3\nmetadata: {{name: bird-client}}\n"
            f"spec: {{node: rr1, peerIP: {BIRD_ADDR}, asNumber: 64512, ttlSecurity: 1}}\n")
    c.apply(peer)
    wait_for("rr1's session to BIRD reset", lambda: _bird_session(c) != "Established", timeout=30)
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        state = _bird_session(c)
        assert state not in ("Established", "absent"), f"{state}: configured, and not opened without GTSM at BIRD"
        time.sleep(0.5)
    gtsm = DirectPeer(name="rr1", local_as=64512, neighbor="198.18.0.101", peer_as=64512, local_address=BIRD_ADDR,
                      export="none", next_hop_self=False, extra=("ttl security on;",))
    bird.configure([gtsm])
    wait_for("rr1's session to BIRD with GTSM", lambda: _bird_session(c) == "Established", timeout=60)
    wait_for("c3's block in BIRD", lambda: bird.routes().get(block) == ["198.18.0.3"], timeout=30)
    c.apply(peer.replace(", ttlSecurity: 1", ""))
    bird.configure([attrs.evolve(gtsm, extra=())])
    wait_for("rr1's session to BIRD without GTSM", lambda: _bird_session(c) == "Established", timeout=60)
    bird.wait_established("rr1", timeout=60)


def test_losing_one_reflector_loses_no_route(rr_cluster):
    c, _ = rr_cluster
    rr1_block = _blocks(c, ["rr1"])["rr1"]  # the reflector's own workloads do go away with it
    before = {n: {p: h for p, h in c.routes(n).items() if p != rr1_block} for n in CLIENTS}
    c.agents["rr1"].kill(group=False)
    deadline = time.monotonic() + 8
    lost = []
    while time.monotonic() < deadline:
        for n in CLIENTS:
            now = c.routes(n)
            lost += [(n, p) for p in before[n] if now.get(p) != before[n][p]]
        time.sleep(0.2)
    assert not lost, f"routes changed on clients while rr2 still reflects: {sorted(set(lost))[:10]}"
    c.start_agent("rr1")
    for n in CLIENTS:
        wait_for(f"{n} back with both RRs", lambda n=n: c.sessions_up(n, 2), timeout=60)
    wait_for("rr1's block back", lambda: all(rr1_block in c.routes(n) for n in CLIENTS), timeout=30)
    assert {n: {p: h for p, h in c.routes(n).items() if p != rr1_block} for n in CLIENTS} == before
