"""IPv4 and IPv6 side by side: one session per family, v6 blocks routed via v6 next hops."""
from __future__ import annotations

import shutil

import pytest

from lab.cluster import mesh
from lab.net import wait_for
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (./bootstrap.sh setup)")]

RESOURCES = """
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pods4}
spec: {cidr: 198.19.0.0/16}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pods6}
spec: {cidr: "2001:db8:1::/112", blockSize: 122}
"""


def test_dual_stack_mesh(etcd_server):
    with mesh(etcd_server, "ds", RESOURCES, ["n1", "n2", "n3"], ipv6=True) as c:
        for n in c.nodes:
            wait_for(f"{n}: a v4 and a v6 session to each peer", lambda n=n: c.sessions_up(n, 4), timeout=60)

        def v6_routed() -> bool:
            for n in c.nodes:
                r = c.routes(n)
                v6_blocks = [p for p, h in r.items() if ":" in p and h == ["blackhole"]]
                learned = {p: h for p, h in r.items() if ":" in p and h != ["blackhole"]}
                if len(v6_blocks) != 1 or sorted(learned.values()) != sorted([c.addrs6[m]] for m in c.nodes if m != n):
                    return False
            return True

        wait_for("every v6 block in every other kernel via the v6 next hop", v6_routed, timeout=30)
        assert c.ping("n1", c.workloads6["n3"], count=2)
        assert c.ping("n2", c.workloads["n1"][1], count=2)
