"""Calico's session rules on the wire: node agents in namespaces run the sessions `node sessions` shows.

n2 listens on its own port (BGPConfiguration node.n2, listenPort 1790) and every other node dials it
there; a global BGPPeer names n10's address without an AS (it takes n10's, and n10 peers back with
every node, dialling); the mesh's waiting side is decided on the addresses as strings ('198.18.0.10'
sorts below '198.18.0.2'). Every session comes up and every block is routed via its node."""
from __future__ import annotations

import json
import shutil

import pytest

from lab.cluster import mesh
from lab.net import wait_for
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (./bootstrap.sh setup)")]

RESOURCES = """
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMeshEnabled: true}
---
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: node.n2}
spec: {listenPort: 1790}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pods}
spec: {cidr: 198.19.0.0/16, blockSize: 26}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: to-n10}
spec: {peerIP: 198.18.0.10}
"""


def test_agents_run_the_sessions_node_sessions_shows(etcd_server):
    with mesh(etcd_server, "cs", RESOURCES, {"n1": 1, "n2": 2, "n10": 10}) as c:
        for n in c.nodes:  # each agent writes its Node (address) as it starts: wait for all three
            wait_for(f"{n} sessions Established", lambda n=n: c.sessions_up(n, 2), timeout=90)
        shown = {n: json.loads(c.cli("node", "sessions", "--name", n, "-o", "json").stdout) for n in c.nodes}
        ports = {n: {(r["peerIP"], r["port"]) for r in rows} for n, rows in shown.items()}
        assert ports == {"n1": {("198.18.0.2", 1790), ("198.18.0.10", 179)},
                         "n2": {("198.18.0.1", 179), ("198.18.0.10", 179)},
                         "n10": {("198.18.0.1", 179), ("198.18.0.2", 1790)}}
        kinds = {n: {r["peerIP"]: (r["kind"], r["passive"]) for r in rows} for n, rows in shown.items()}
        assert kinds["n1"] == {"198.18.0.2": ("mesh", True), "198.18.0.10": ("global", True)}
        assert kinds["n2"] == {"198.18.0.1": ("mesh", False), "198.18.0.10": ("global", False)}
        assert kinds["n10"] == {"198.18.0.1": ("node-specific", False), "198.18.0.2": ("node-specific", False)}
        for n in c.nodes:  # what runs is what was shown
            assert {s["peer"] for s in c.status(n)["sessions"]} == {p for p, _ in ports[n]}

        def converged() -> bool:
            blocks = {n: [p for p, h in c.routes(n).items() if h == ["blackhole"]] for n in c.nodes}
            return all(len(b) == 1 for b in blocks.values()) and all(
                c.routes(n).get(blocks[m][0]) == [c.addrs[m]] for n in c.nodes for m in c.nodes if m != n)
        wait_for("every block via its node", converged, timeout=60)
