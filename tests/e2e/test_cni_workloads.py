"""Workloads attached by `calico-bgp-cni` (with `calico-bgp-ipam`) on two nodes whose agents peer: they
reach each other over IPv4 and IPv6 through the blocks the agents announce, and a DEL takes the
workload's veth, host routes and addresses away and succeeds again (Calico's cmdDel is idempotent).

The lab has no other way to wire a workload (lab/workload.py), so every e2e test's workloads went
through the plugin too; this one looks at what the plugin left on the node.
"""
from __future__ import annotations

import json
import re
import shutil

import pytest

from lab.cluster import MESH_RESOURCES, mesh
from lab.net import sh, wait_for
from lab.workload import NETWORK, run_plugin
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (./bootstrap.sh setup)")]

RESOURCES = MESH_RESOURCES + """---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pods6}
spec: {cidr: "2001:db8:1::/112", blockSize: 122}
"""


def cali_links(ns: str) -> list[str]:
    return [link["ifname"] for link in json.loads(sh("ip", "-j", "link", ns=ns).stdout) if link["ifname"].startswith("cali")]


def routes_to(ns: str, ips: list[str]) -> list[str]:
    out = []
    for fam in ("-4", "-6"):
        out += [f"{r['dst']} dev {r.get('dev')}" for r in json.loads(sh("ip", "-j", fam, "route", ns=ns).stdout)
                if r["dst"] in ips]
    return out


def handles(c) -> dict[str, int]:
    blocks = json.loads(c.cli("ipam", "show", "--show-blocks", "-o", "json").stdout)["blocks"]
    out: dict[str, int] = {}
    for b in blocks:
        for h, n in b["handles"].items():
            out[h] = out.get(h, 0) + n
    return out


def test_workloads_attached_by_the_plugin_reach_each_other_and_del_leaves_nothing(etcd_server):
    with mesh(etcd_server, "cn", RESOURCES, ["n1", "n2"], ipv6=True) as c:
        for n in c.nodes:
            wait_for(f"{n}: a v4 and a v6 session", lambda n=n: c.sessions_up(n, 2), timeout=60)
        ip1, ip1_6 = c.workloads["n1"][1], c.workloads6["n1"]
        # ADD wired n1's workload: the host end named by Calico's rule, a host route per address
        assert cali_links(c.nodes["n1"]) == ["caliwn1"]
        assert sorted(routes_to(c.nodes["n1"], [ip1, ip1_6])) == sorted([f"{ip1} dev caliwn1", f"{ip1_6} dev caliwn1"])
        assert handles(c) == {f"{NETWORK}.wn1": 2, f"{NETWORK}.wn2": 2}

        wait_for("n1's workload reachable from n2's", lambda: c.ping("n2", ip1), timeout=30)
        wait_for("n2's workload reachable from n1's over IPv6", lambda: c.ping("n1", c.workloads6["n2"]), timeout=30)

        # an ADD repeated for n2's container (a runtime retrying): the same addresses, one veth, still routed
        ws2, ip2 = c.workloads["n2"]
        again = run_plugin(c.nodes["n2"], "ADD", "wn2", f"/run/netns/{ws2}", c.network(True), "n2")
        assert [ip["address"] for ip in again["ips"]] == [f"{ip2}/32", f"{c.workloads6['n2']}/128"]
        assert cali_links(c.nodes["n2"]) == ["caliwn2"]
        # its IPAM was answered by the warm process n2's agent owns (calico_bgp/agent/ipam_service.py)
        warm = re.findall(r"event=ipam_service_started pid=(\d+)", (c.run_dir / "logs" / "n2.log").read_text())
        assert warm and f"calico-bgp-ipam[{warm[-1]}]" in (c.run_dir / "logs" / "cni.log").read_text()
        wait_for("n2's re-added workload reachable from n1's", lambda: c.ping("n1", ip2), timeout=10)

        c.remove_workload("n1")
        assert cali_links(c.nodes["n1"]) == [] and routes_to(c.nodes["n1"], [ip1, ip1_6]) == []
        assert "eth0" not in sh("ip", "link", ns=f"{c.net.tag}-wn1").stdout
        # a second DEL (the runtime retrying) finds nothing to do and succeeds
        run_plugin(c.nodes["n1"], "DEL", "wn1", f"/run/netns/{c.net.tag}-wn1", c.network(True), "n1")
        assert handles(c) == {f"{NETWORK}.wn2": 2}  # n2's two addresses, still one each after its second ADD
