"""Martian prefixes and unusable next hops from a real fabric peer (GoBGP) never reach the kernel,
though a BGPFilter accepts 0.0.0.0/0 and everything inside it; a good route and the default route
from the same peer do, and `routes --rejected` names each refused one with its reason."""
from __future__ import annotations

import json
import shutil

import pytest

from lab.cluster import mesh
from lab.net import Process, sh, wait_for
from tests.e2e.test_mesh import RESOURCES
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (./bootstrap.sh setup)"),
              pytest.mark.skipif(shutil.which("gobgpd") is None, reason="needs gobgpd (./bootstrap.sh setup)")]

TOR, TOR_AS = "198.18.0.60", 65060
GOOD = "198.18.200.0/24"  # outside the pool: the filter's to accept (IPAM origin validation judges pool space)
MARTIANS = ["127.0.0.0/8", "0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32"]
BAD_NEXT_HOPS = {"198.18.201.0/24": "127.0.0.1", "198.18.202.0/24": "198.18.0.1"}  # loopback, n1's own address

GOBGP_CONF = f"""[global.config]
  as = {TOR_AS}
  router-id = "{TOR}"
  port = 179
[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.18.0.1"
    peer-as = 64512
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
"""


def test_martians_and_bad_next_hops_stay_out_of_the_kernel_whatever_the_filter_accepts(etcd_server):
    with mesh(etcd_server, "mart", RESOURCES, ["n1"]) as c:
        ns = c.add_node("tor", 60)
        wait_for("n1 running (its block blackholed)", lambda: "blackhole" in str(c.routes("n1")), timeout=60)
        c.apply(f"""kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {{name: everything}}
spec:
  importV4: [{{action: Accept, cidr: 0.0.0.0/0, matchOperator: In}}]
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: tor}}
spec: {{node: n1, peerIP: {TOR}, asNumber: {TOR_AS}, filters: [everything]}}
""")
        conf = c.run_dir / "gobgpd.toml"
        conf.write_text(GOBGP_CONF)
        Process(c.ledger, ns, ["gobgpd", "-f", str(conf), "-t", "toml", "-p", "--pprof-disable",
                               "--api-hosts", "127.0.0.1:50051"], c.run_dir / "logs" / "gobgpd.log")

        def gobgp(*args: str) -> str:
            return sh("gobgp", *args, ns=ns, check=False, timeout=30).stdout

        wait_for("gobgpd's API", lambda: "AS" in gobgp("global"), timeout=30)
        wait_for("the session", lambda: c.sessions_up("n1", 1), timeout=60)
        # a locally originated route keeps the next hop it is given, on eBGP too (GoBGP's UpdatePathAttrs)
        for prefix in [GOOD, "0.0.0.0/0", *MARTIANS]:
            gobgp("global", "rib", "add", "-a", "ipv4", prefix, "nexthop", TOR)
        for prefix, nh in BAD_NEXT_HOPS.items():
            gobgp("global", "rib", "add", "-a", "ipv4", prefix, "nexthop", nh)

        def rejected() -> dict[str, str]:
            rows = json.loads(c.cli("routes", "--node", "n1", "--rejected", "-o", "json").stdout)["n1"]
            return {r["prefix"]: r["reason"] for r in rows}

        got = wait_for("every bad route listed as rejected",
                       lambda: (lambda r: r if len(r) == len(MARTIANS) + len(BAD_NEXT_HOPS) else None)(rejected()),
                       timeout=30)
        wait_for("the good route in the kernel", lambda: c.routes("n1").get(GOOD) == [TOR], timeout=30)
        routes = c.routes("n1")
        assert routes.get("default/32", routes.get("0.0.0.0/0")) == [TOR], routes  # the filter accepted it
        for prefix in MARTIANS:
            assert got[prefix].startswith("martian prefix: inside "), got
            assert prefix not in routes
        assert got["198.18.201.0/24"] == "next hop 127.0.0.1 is loopback"
        assert got["198.18.202.0/24"] == "next hop 198.18.0.1 is this node's own address"
        assert not set(BAD_NEXT_HOPS) & set(routes), routes
        tor = [s for s in c.status("n1")["sessions"] if s["peer"] == TOR][0]
        assert tor["state"] == "Established" and tor["rejected"] == len(got)
