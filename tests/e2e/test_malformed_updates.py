"""A fabric peer sending malformed UPDATEs (RFC 7606) to an agent: the broken routes are treated as
withdrawn and never reach the kernel, the good ones before and after them do, the session stays up,
and `events` holds one malformed_update per reason, not one per UPDATE."""
from __future__ import annotations

import json
import shutil

import pytest

from lab.cluster import mesh
from lab.net import wait_for
from tests.e2e.test_mesh import RESOURCES
from tests.integration.test_speaker_malformed import raw_peer
from tests.marks import needs_root
from tests.unit.exabgp_decode import next_hop, origin, sequence, update

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (./bootstrap.sh setup)")]

PEER, PEER_AS = "198.18.0.70", 65070
# outside the pool, accepted by a filter (pool space is IPAM origin validation's to judge)
GOOD_BEFORE, GOOD_AFTER = "198.18.200.0/24", "198.18.203.0/24"
NO_NEXT_HOP, BAD_ORIGIN = "198.18.201.0/24", "198.18.202.0/24"


def test_malformed_updates_are_withdrawn_counted_once_and_block_nothing(etcd_server):
    attrs = [origin(), sequence(PEER_AS), next_hop(PEER)]
    bodies = ([update(attrs, (GOOD_BEFORE, NO_NEXT_HOP, BAD_ORIGIN))]  # first good, then the same prefixes broken
              + [update(attrs[:2], (NO_NEXT_HOP,))] * 20
              + [update([origin(5), *attrs[1:]], (BAD_ORIGIN,)), update(attrs, (GOOD_AFTER,))])
    with mesh(etcd_server, "malf", RESOURCES, ["n1"]) as c:
        ns = c.add_node("peer", 70)
        wait_for("n1 running (its block blackholed)", lambda: "blackhole" in str(c.routes("n1")), timeout=60)
        proc = raw_peer(ns, PEER, PEER_AS, bodies)
        try:
            c.apply(f"""kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {{name: fabric}}
spec:
  importV4: [{{action: Accept, cidr: 198.18.200.0/22, matchOperator: In}}]
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: raw}}
spec: {{node: n1, peerIP: {PEER}, asNumber: {PEER_AS}, filters: [fabric]}}
""")
            wait_for("the good routes in the kernel",
                     lambda: all(c.routes("n1").get(p) == [PEER] for p in (GOOD_BEFORE, GOOD_AFTER)), timeout=60)

            def malformed() -> list[dict]:
                lines = c.cli("events", "--node", "n1", "-o", "json").stdout.splitlines()
                return [e for e in map(json.loads, filter(None, lines)) if e["kind"] == "malformed_update"]

            events = wait_for("two malformed_update events", lambda: (lambda e: e if len(e) >= 2 else None)(malformed()),
                              timeout=30)
            routes = c.routes("n1")
            assert NO_NEXT_HOP not in routes and BAD_ORIGIN not in routes, routes  # withdrawn: announced good first
            assert sorted(e["detail"].split(":")[0] for e in events) == ["invalid-origin", "missing-next-hop"], events
            assert all(e["peer"] == PEER for e in events)
            [s] = [s for s in c.status("n1")["sessions"] if s["peer"] == PEER]
            assert s["state"] == "Established" and s["accepted"] == 2
            assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]  # no NOTIFICATION
        finally:
            proc.kill()
