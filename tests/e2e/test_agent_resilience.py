"""An agent under bad input: ExaBGP crashing, etcd unavailable for longer than
the status lease lives, a corrupt resource.
Each is logged with its reason; the last good state stays programmed; the agent recovers alone."""
from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from lab.cluster import MeshCluster, mesh
from lab.etcd import EtcdServer
from lab.net import wait_for
from tests.e2e.test_mesh import RESOURCES, _block_of, _converged
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (./bootstrap.sh setup)")]


@pytest.fixture(scope="module")
def pair():
    with EtcdServer() as etcd, mesh(etcd, "resil", RESOURCES, ["n1", "n2"]) as c:  # its own etcd: this module stops it
        for n in ("n1", "n2"):
            wait_for(f"{n} up", lambda n=n: c.sessions_up(n, 1), timeout=60)
        wait_for("converged", lambda: _converged(c, ["n1", "n2"]), timeout=30)
        yield c


def _watch_route(c: MeshCluster, node: str, prefix: str, hops: list[str], seconds: float) -> list[float]:
    """Sample the kernel for `seconds`; return the times the route was not as expected."""
    missing, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        if c.routes(node).get(prefix) != hops:
            missing.append(time.monotonic())
        time.sleep(0.1)
    return missing


def test_exabgp_crash_keeps_routes_and_recovers(pair):
    c = pair
    block2 = _block_of(c, "n2")
    [pid] = c.exabgp_pids("n1")
    os.kill(pid, signal.SIGKILL)
    missing = _watch_route(c, "n1", block2, [c.addrs["n2"]], 6.0)
    assert not missing, "n1 dropped n2's block while its own ExaBGP restarted"
    wait_for("n1's session back", lambda: c.sessions_up("n1", 1), timeout=60)
    wait_for("new ExaBGP", lambda: c.exabgp_pids("n1") not in ([], [pid]), timeout=10)
    assert "exabgp_exited" in c.agents["n1"].log_path.read_text()
    wait_for("routes both ways again", lambda: _converged(c, ["n1", "n2"]), timeout=30)
    assert c.ping("n1", c.workloads["n2"][1], count=2)


def test_etcd_unavailable_longer_than_the_status_lease_changes_nothing_then_recovers(pair):
    """etcd hung for 20 s: longer than the status lease's TTL (15 s, renewed every 5 s) and the
    datastore client's 5 s timeout, so the lease goes unrenewed past its TTL and the watch and the
    publisher time out, while the routes must stay."""
    c = pair
    proc = c.etcd.proc
    block2 = _block_of(c, "n2")
    proc.send_signal(signal.SIGSTOP)  # hung, not refused: the harder case for timeouts
    try:
        missing = _watch_route(c, "n1", block2, [c.addrs["n2"]], 20.0)
        assert c.ping("n1", c.workloads["n2"][1], count=2), "traffic stopped while etcd was away"
    finally:
        proc.send_signal(signal.SIGCONT)
    assert not missing, "a route changed while etcd was unavailable"
    log = c.agents["n1"].log_path.read_text()
    # the status lease's keeper, the publisher (which then waits for a new lease) or the watch says so
    assert any(e in log for e in ("status_lease_failed", "status_publish_failed", "watch_dropped")), \
        "the outage was not logged"
    # recovered: a change made after the outage reaches the kernels
    c.add_node("n3", 3)
    c.add_workload("n3")
    c.start_agent("n3")
    wait_for("n3 joined after the outage", lambda: _converged(c, ["n1", "n2", "n3"]), timeout=60)


def test_corrupt_resource_is_named_and_ignored(pair):
    c = pair
    import subprocess
    key = f"{c.prefix}/peers/broken"
    subprocess.run(["etcdctl", "--endpoints", c.etcd.url, "put", key, "{not json"], check=True,
                   capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})
    before = c.routes("n1")
    time.sleep(2)
    assert c.routes("n1") == before
    assert key in c.agents["n1"].log_path.read_text()
    assert c.sessions_up("n1", len(c.agents) - 1)


def test_update_outside_every_pool_is_rejected_counted_and_kept_out_of_the_kernel(pair):
    import json

    from lab.bird import Bird, BirdPeer

    c = pair
    ns = c.add_node("tor", 60)
    c.apply("""kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: tor}
spec: {node: n1, peerIP: 198.18.0.60, asNumber: 65060, originValidation: Disabled}
""")  # Disabled: its in-pool prefix is in no block (origin-invalid); this test is about the pool default
    bird = Bird(ns, router_id="198.18.0.60", tmp=c.run_dir / "tor")
    try:
        bird.configure([BirdPeer(name="n1", local_as=65060, neighbor="198.18.0.1", peer_as=64512,
                                 local_address="198.18.0.60")],
                       static4=["198.18.99.0/24", "198.19.250.0/24"])
        bird.wait_established("n1", timeout=60)
        wait_for("the in-pool prefix in n1's kernel", lambda: "198.19.250.0/24" in c.routes("n1"), timeout=30)
        rejected = wait_for("the stray prefix rejected", lambda: json.loads(
            c.cli("routes", "--node", "n1", "--rejected", "-o", "json").stdout)["n1"], timeout=15)
        assert [(r["prefix"], r["peer"], r["reason"]) for r in rejected] == [
            ("198.18.99.0/24", "198.18.0.60", "outside every IP pool")]
        assert "198.18.99.0/24" not in c.routes("n1") and "198.18.99.0/24" not in c.routes("n2")
        tor = [s for s in c.status("n1")["sessions"] if s["peer"] == "198.18.0.60"][0]
        assert (tor["received"], tor["accepted"], tor["rejected"]) == (2, 1, 1)
    finally:
        bird.stop()


def test_export_filter_actions_reach_the_peer(pair):
    """Communities, large communities and AS-path prepend set by an export rule, as BIRD sees them."""
    import re

    from lab.bird import Bird, BirdPeer

    c = pair
    ns = c.add_node("tor2", 61)
    c.apply("""kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {name: tag-blocks}
spec:
  exportV4:
  - {action: Accept, cidr: 198.19.0.0/16, matchOperator: In, addCommunities: ["65000:100"],
     addLargeCommunities: ["65000:1:2"], asPathPrepend: [64512, 64512]}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: tor2}
spec: {node: n2, peerIP: 198.18.0.61, asNumber: 65061, filters: [tag-blocks]}
""")
    bird = Bird(ns, router_id="198.18.0.61", tmp=c.run_dir / "tor2")
    try:
        bird.configure([BirdPeer(name="n2", local_as=65061, neighbor="198.18.0.2", peer_as=64512,
                                 local_address="198.18.0.61", export="none")])
        bird.wait_established("n2", timeout=60)
        block = _block_of(c, "n2")
        wait_for("n2's block at the ToR", lambda: block in bird.routes(), timeout=30)
        detail = bird.route_all(block)
        assert re.search(r"BGP\.as_path:\s+64512 64512 64512\s", detail), detail
        assert "(65000,100)" in detail and "(65000, 1, 2)" in detail, detail
        # Calico's prefixAdvertisements: the pool's routes carry the configured community too
        c.apply(RESOURCES.replace("nodeToNodeMeshEnabled: true}", "nodeToNodeMeshEnabled: true, "
                                  "communities: [{name: pods, value: '65000:300'}], "
                                  "prefixAdvertisements: [{cidr: 198.19.0.0/16, communities: [pods]}]}"))
        wait_for("the advertised community at the ToR", lambda: "(65000,300)" in bird.route_all(block), timeout=30)
        assert "(65000,100)" in bird.route_all(block)
    finally:
        c.apply(RESOURCES)
        bird.stop()


def test_a_peer_on_a_loopback_is_reached_through_reachable_by(pair):
    """Calico's reachableBy: the ToR peers from its loopback, on no link of the node; the agent routes
    the loopback via the ToR's link address (its own protocol, like every route it owns) and the
    session opens. Without that route n1 has no way to the peer."""
    from lab.bird import Bird, BirdPeer
    from lab.net import sh

    c = pair
    ns = c.add_node("tor3", 62)
    sh("ip", "link", "set", "lo", "up", ns=ns)
    sh("ip", "addr", "add", "198.18.250.62/32", "dev", "lo", ns=ns)
    bird = Bird(ns, router_id="198.18.250.62", tmp=c.run_dir / "tor3")
    try:
        bird.configure([BirdPeer(name="n1", local_as=65062, neighbor="198.18.0.1", peer_as=64512,
                                 local_address="198.18.250.62", export="none", extra=("multihop 2;",))])
        c.apply("""kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: tor3}
spec: {node: n1, peerIP: 198.18.250.62, asNumber: 65062, reachableBy: 198.18.0.62}
""")
        wait_for("the loopback routed via the ToR", lambda: c.routes("n1").get("198.18.250.62/32") == ["198.18.0.62"],
                 timeout=30)
        bird.wait_established("n1", timeout=60)
        block = _block_of(c, "n1")
        wait_for("n1's block at the ToR", lambda: block in bird.routes(), timeout=30)
        c.cli("delete", "bgppeer", "tor3")
        wait_for("the route to the loopback gone with the peer", lambda: "198.18.250.62/32" not in c.routes("n1"),
                 timeout=30)
    finally:
        bird.stop()
