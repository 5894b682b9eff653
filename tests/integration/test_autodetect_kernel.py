"""The node's interfaces and addresses as the agent reads them (one netlink address dump), against
what `ip -j addr` shows for the same namespace: secondaries, a point-to-point peer address, IPv6,
and links with no address (root only; the namespaces are the test's own)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lab.net import netns, sh, veth
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.root]

READ = ("from calico_bgp.agent.autodetect import detect, read_interfaces; import json; "
        "print(json.dumps({'interfaces': [[i.name, [str(a) for a in i.addresses]] for i in read_interfaces()], "
        "'first_found': str(detect('first-found')), 'by_name': str(detect('interface=u.*'))}))")


def agent_view(ns: str) -> dict:
    res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", READ], capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(res.stdout)


def ip_view(ns: str) -> list[list]:
    """Every link in index order with its addresses as `ip addr` lists them (`local` is the address
    of a point-to-point one: the peer's comes as `address`, and the agent takes that, as before)."""
    out = []
    for link in sorted(json.loads(sh("ip", "-j", "addr", "show", ns=ns).stdout), key=lambda x: x["ifindex"]):
        addrs = [f"{a.get('address', a['local'])}/{a['prefixlen']}" for a in link.get("addr_info", [])]
        out.append([link["ifname"], addrs])
    return out


def test_interfaces_and_addresses_are_what_the_kernel_holds():
    with netns("ad") as node, netns("ap") as peer:
        veth(node, "up0", peer, "p0", ("198.18.7.1/24", "198.18.7.9/24", "2001:db8:7::1/64"), ("198.18.7.2/24",))
        veth(node, "x0", peer, "p1")  # a link with no address of its own
        sh("ip", "addr", "add", "198.18.8.1", "peer", "198.18.8.2/32", "dev", "x0", ns=node)
        sh("ip", "link", "add", "docker0", "type", "bridge", ns=node)  # excluded by first-found
        sh("ip", "addr", "add", "198.18.9.1/24", "dev", "docker0", ns=node)
        seen = agent_view(node)
        assert seen["interfaces"] == ip_view(node)
        by_name = dict((name, addrs) for name, addrs in seen["interfaces"])
        assert by_name["up0"][:2] == ["198.18.7.1/24", "198.18.7.9/24"]  # primary first, then secondary
        assert "2001:db8:7::1/64" in by_name["up0"]
        assert by_name["x0"][0] == "198.18.8.2/32"
        assert seen["by_name"] == "198.18.7.1/24"
        assert seen["first_found"] in ("198.18.7.1/24", "198.18.8.2/32")  # whichever link came first
