"""A full iBGP mesh of node agents in namespaces, end to end: blocks routed via their node, nodes joining,
crashing and leaving, events, passwords."""
from __future__ import annotations

import itertools
import json
import shutil
import time

import pytest

from lab.cluster import MESH_RESOURCES as RESOURCES
from lab.cluster import MeshCluster, mesh
from lab.net import wait_for
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (./bootstrap.sh setup)")]

_tags = itertools.count()


@pytest.fixture(scope="module")
def cluster(etcd_server):
    with mesh(etcd_server, "mesh", RESOURCES, ["n1", "n2", "n3"]) as c:
        yield c


def _block_of(c: MeshCluster, node: str) -> str:
    blocks = [p for p, hops in c.routes(node).items() if hops == ["blackhole"]]
    assert len(blocks) == 1, blocks
    return blocks[0]


def _converged(c: MeshCluster, names: list[str]) -> bool:
    blocks = {n: _block_of(c, n) for n in names}
    for n in names:
        r = c.routes(n)
        for m in names:
            if m != n and r.get(blocks[m]) != [c.addrs[m]]:
                return False
    return True


def _join_fourth_node(c: MeshCluster) -> None:
    c.add_node("n4", 4)
    c.add_workload("n4")
    c.start_agent("n4")
    names = ["n1", "n2", "n3", "n4"]
    for n in names:
        wait_for(f"{n} sessions Established", lambda n=n: c.sessions_up(n, 3), timeout=60)
    wait_for("n4's block everywhere", lambda: _converged(c, names), timeout=30)


def _with_fourth_node(c: MeshCluster) -> None:
    """The tests after the join run on four nodes; run alone (-k), each brings n4 in itself."""
    if "n4" not in c.agents:
        _join_fourth_node(c)


def _remove_fourth_node(c: MeshCluster) -> None:
    block = _block_of(c, "n4")
    c.agents["n4"].stop()
    c.remove_workload("n4")  # DEL through calico-bgp-cni: its veth, routes and address go
    c.cli("delete", "node", "n4")
    for n in ("n1", "n2", "n3"):
        wait_for(f"n4's block gone from {n}", lambda n=n: block not in c.routes(n), timeout=30)
        wait_for(f"{n} back to two sessions", lambda n=n: c.sessions_up(n, 2), timeout=30)


def _fourth_node_came_and_went(c: MeshCluster) -> None:
    _with_fourth_node(c)
    if c.agents["n4"].alive():
        _remove_fourth_node(c)


def test_mesh_comes_up_and_routes_blocks_via_the_right_next_hop(cluster):
    c = cluster
    names = ["n1", "n2", "n3"]
    for n in names:
        wait_for(f"{n} sessions Established", lambda n=n: c.sessions_up(n, 2), timeout=60)
    wait_for("every block in every other kernel", lambda: _converged(c, names), timeout=30)
    for src in names:
        for dst in names:
            if src != dst:
                assert c.ping(src, c.workloads[dst][1], count=2), f"{src} -> {dst} workload"


def test_a_fourth_node_joins_without_disturbing_existing_sessions(cluster):
    c = cluster
    assert "n4" not in c.agents, "n4 is already in the mesh"
    before = {n: {s["peer"]: s["since"] for s in c.status(n)["sessions"]} for n in ("n1", "n2", "n3")}
    _join_fourth_node(c)
    for n in ("n1", "n2", "n3"):
        after = {s["peer"]: s["since"] for s in c.status(n)["sessions"]}
        for peer, since in before[n].items():
            assert after[peer] == since, f"{n}'s session to {peer} was reset when n4 joined"
    assert c.ping("n4", c.workloads["n1"][1], count=2)


def test_sigkill_and_restart_keeps_routes_and_traffic(cluster):
    c = cluster
    _with_fourth_node(c)
    victim = "n2"
    watched = {n: c.routes(n) for n in ("n1", "n3", "n4")}
    victim_routes = c.routes(victim)
    c.agents[victim].kill(group=False)
    # the victim's kernel keeps every route while no agent runs, and its ExaBGP died with it
    time.sleep(1.0)
    assert c.routes(victim) == victim_routes
    assert c.exabgp_pids(victim) == [], "ExaBGP outlived its agent"
    lost = 0
    for _ in range(5):
        lost += 0 if c.ping("n1", c.workloads["n3"][1], wait=1) else 1
    # graceful restart: the other agents (helpers) keep the victim's block while it restarts
    victim_block = _block_of(c, victim)
    dropped = [n for n in watched if victim_block not in c.routes(n)]
    restarted_at = time.time()
    c.start_agent(victim)
    gone = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = c.routes(victim)
        gone += [p for p in victim_routes if p not in r]
        dropped += [n for n in watched if victim_block not in c.routes(n)]
        lost += 0 if c.ping("n3", c.workloads["n1"][1], wait=1) else 1
        # the killed agent's status stays in etcd until its lease expires (15 s): read the new one's
        st = c.status(victim)
        states = [s["state"] for s in st["sessions"]]
        if st["started"] >= restarted_at and states == ["Established"] * 3 and not st["inGrace"]:
            break
    else:
        raise AssertionError(f"{victim}'s sessions were not all back, its grace over, 20 s after its restart")
    assert not gone, f"routes vanished from {victim}'s kernel during its restart: {gone}"
    assert not dropped, f"{victim}'s block {victim_block} left these nodes' kernels while it restarted: {dropped}"
    assert lost == 0, f"{lost} pings between other nodes' workloads were lost"
    wait_for("mesh re-converged", lambda: _converged(c, ["n1", "n2", "n3", "n4"]), timeout=30)
    assert c.agents[victim].alive(), f"the restarted agent exited: {c.agents[victim].proc.returncode}"
    assert len(c.exabgp_pids(victim)) == 1
    for n, r in watched.items():
        assert set(r) <= set(c.routes(n))


def test_removing_a_node_removes_its_routes_everywhere(cluster):
    c = cluster
    _with_fourth_node(c)
    _remove_fourth_node(c)


def test_events_record_sessions_and_repairs(cluster):
    import json

    c = cluster
    _fourth_node_came_and_went(c)  # its session_down is one of the events read below
    block3 = _block_of(c, "n3")
    sh_ns = c.nodes["n1"]
    from lab.net import sh
    sh("ip", "route", "del", block3, ns=sh_ns)
    wait_for("route restored by the programmer", lambda: block3 in c.routes("n1"), timeout=1.5, interval=0.05)

    def events():
        out = c.cli("events", "--node", "n1", "-o", "json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    got = wait_for("repair event", lambda: [e for e in events() if e["kind"] == "repair"], timeout=10)
    assert any(e["prefix"] == block3 and e["detail"] == "route_deleted" for e in got)
    kinds = {(e["kind"], e["peer"]) for e in events()}
    assert ("session_up", c.addrs["n2"]) in kinds and ("session_down", c.addrs["n4"]) in kinds
    assert ("grace_end", "") in kinds
    churn = json.loads(c.cli("routes", "--node", "n1", "--churn", "-o", "json").stdout)["n1"]
    assert any(x["prefix"] == _block_of(c, "n3") and x["announces"] >= 1 for x in churn)


def test_an_emptied_block_is_released_and_withdrawn(cluster):
    c = cluster
    block1 = _block_of(c, "n1")
    c.remove_workload("n1")
    # two sweeps one second apart see it empty: affinity released, blackhole and announcements gone
    wait_for("n1's empty block released", lambda: block1 not in c.routes("n1"), timeout=15)
    for n in ("n2", "n3"):
        wait_for(f"n1's block withdrawn from {n}", lambda n=n: block1 not in c.routes(n), timeout=10)
    import json
    blocks = json.loads(c.cli("ipam", "show", "--show-blocks", "-o", "json").stdout)["blocks"]
    assert block1 not in [b["cidr"] for b in blocks]


@pytest.mark.parametrize("bad_peer, fragment", [
    ("{peerIP: 198.18.0.300, asNumber: 65001}", "spec.peerIP"),
    ("{peerIP: 198.18.0.9, asNumber: 0}", "spec.asNumber"),
    ("{peerIP: 198.18.0.9, asNumber: 4294967296}", "spec.asNumber"),
    ("{peerIP: '198.18.0.9:0', asNumber: 65001}", "spec.peerIP: port out of range"),
    ("{peerSelector: 'has(rr'}", "spec.peerSelector"),
    ("{peerIP: 198.18.0.9, asNumber: 65001, filters: [nope]}", "BGPFilter 'nope' does not exist"),
])
def test_bad_peer_is_refused_at_apply_and_nothing_running_changes(cluster, bad_peer, fragment):
    c = cluster
    before = {s["peer"]: s["since"] for s in c.status("n2")["sessions"]}
    res = c.cli("apply", "-f", "-", check=False,
                input=f"kind: BGPPeer\napiVersion: projectcalico.org/v3\nmetadata: {{name: bad}}\nspec: {bad_peer}\n")
    assert res.returncode == 2 and fragment in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert json.loads(c.cli("get", "bgppeers", "-o", "json").stdout)["items"] == []
    time.sleep(1)
    assert {s["peer"]: s["since"] for s in c.status("n2")["sessions"]} == before


def _mesh_config(c: MeshCluster) -> list[str]:
    return [p.read_text() for p in sorted((c.run_dir / "state").glob("n[123]/**/exabgp.conf"))]


def test_a_mesh_password_takes_every_node_session_to_md5_and_back(cluster):
    """nodeMeshPassword: every agent re-configures its mesh sessions with TCP MD5 (the session only
    opens when both ends agree), a password that cannot be read leaves the sessions unconfigured
    rather than open without it, and removing it brings plain sessions back."""
    c = cluster
    names = ["n1", "n2", "n3"]
    c.cli("secret", "set", "bgp", "mesh", input="mesh-secret\n")
    with_password = RESOURCES.replace("nodeToNodeMeshEnabled: true}", "nodeToNodeMeshEnabled: true, "
                                      "nodeMeshPassword: {secretKeyRef: {name: bgp, key: KEY}}}")
    assert with_password != RESOURCES
    try:
        c.apply(with_password.replace("KEY", "mesh"))
        wait_for("md5 in every mesh neighbour", lambda: all(
            conf.count("md5-password") == conf.count("neighbor ") == 2 for conf in _mesh_config(c)), timeout=30)
        for n in names:
            wait_for(f"{n}'s mesh up with MD5", lambda n=n: c.sessions_up(n, 2), timeout=60)
        assert all('"mesh-secret"' in conf for conf in _mesh_config(c))
        c.apply(with_password.replace("KEY", "missing"))
        st = wait_for("sessions unconfigured, saying why", lambda: [
            s for s in c.status("n1")["sessions"] if "bgp/missing not found" in s["info"]], timeout=30)
        assert len(st) == 2, st
        assert all("md5-password" not in conf and "neighbor " not in conf for conf in _mesh_config(c))
    finally:
        c.apply(RESOURCES)
    for n in names:
        wait_for(f"{n}'s mesh up without MD5", lambda n=n: c.sessions_up(n, 2), timeout=60)
    assert all("md5-password" not in conf for conf in _mesh_config(c))
    # the neighbours were unconfigured and configured again: every block is announced again
    wait_for("n2 and n3 routed to each other again", lambda: _converged(c, ["n2", "n3"]), timeout=30)
    c.cli("secret", "delete", "bgp")
