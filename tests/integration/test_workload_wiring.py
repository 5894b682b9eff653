"""A workload wired the way Calico's CNI plugin does it (cni-plugin/pkg/dataplane/linux/dataplane_linux.go),
against a real kernel: one "node" namespace plays the host, workload namespaces hang off it.

Routed, not bridged: two workloads on one node reach each other through the node's host routes (the
TTL drops by one), over IPv4 (proxy ARP answering for 169.254.1.1) and IPv6 (the host end's
link-local as the gateway). Detach removes the veth and both host routes and is idempotent; an
attach that fails part way leaves nothing; CHECK names what was removed behind its back.
"""
from __future__ import annotations

import json
import re

import pytest

from dataplane import netlink
from dataplane.workload import wiring
from dataplane.workload.plan import NoNamespace, WiringError, problems, workload
from lab.net import netns, sh
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.root]


def on_node(node: str, fn):
    """Run `fn` as the plugin runs: in the node's namespace (never the test machine's own)."""
    return netlink.run_in_netns(node, fn)


@pytest.fixture(scope="module")
def node():
    with netns("node") as ns:
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            sh("sysctl", "-qw", key, ns=ns)
        # a node answers ARP for 169.254.1.1 by proxy only with a route to it (a default route is one)
        sh("ip", "route", "add", "169.254.1.1/32", "dev", "lo", ns=ns)
        yield ns


def host_links(node: str) -> list[str]:
    return [link["ifname"] for link in json.loads(sh("ip", "-j", "link", ns=node).stdout)]


def host_routes(node: str) -> list[str]:
    out = []
    for fam in ("-4", "-6"):
        out += [r["dst"] for r in json.loads(sh("ip", "-j", fam, "route", ns=node).stdout) if r.get("dev", "").startswith("calt") and not r["dst"].startswith("fe80")]
    return out


def ping(ns: str, ip: str) -> str:
    res = sh("ping", *(["-6"] if ":" in ip else []), "-c", "1", "-W", "2", ip, ns=ns, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_two_workloads_are_routed_to_each_other_and_detach_leaves_nothing(node):
    with netns("w") as a, netns("w") as b:
        wa = workload(a, "eth0", "calta", ["198.19.7.1/26", "2001:db8:7::1/122"], mtu=1400)
        wb = workload(b, "eth0", "caltb", ["198.19.7.2", "2001:db8:7::2"])
        got = on_node(node, lambda: wiring.attach(wa))
        on_node(node, lambda: wiring.attach(wb))
        assert got.host_mac == "ee:ee:ee:ee:ee:ee" and got.gateway_v6 == "fe80::ecee:eeff:feee:eeee"

        assert "inet 198.19.7.1/32" in sh("ip", "addr", "show", "eth0", ns=a).stdout
        assert "inet6 2001:db8:7::1/128" in sh("ip", "addr", "show", "eth0", ns=a).stdout
        assert "mtu 1400" in sh("ip", "link", "show", "eth0", ns=a).stdout
        inside = sh("ip", "route", ns=a).stdout
        assert "default via 169.254.1.1 dev eth0" in inside and "169.254.1.1 dev eth0 scope link" in inside
        assert "default via fe80::ecee:eeff:feee:eeee dev eth0" in sh("ip", "-6", "route", ns=a).stdout
        assert sh("sysctl", "-n", "net.ipv4.conf.calta.proxy_arp", ns=node).stdout.strip() == "1"
        assert sorted(host_routes(node)) == ["198.19.7.1", "198.19.7.2", "2001:db8:7::1", "2001:db8:7::2"]

        # through the node's routing table: one hop, so the TTL drops by one (64 -> 63)
        assert re.search(r"ttl=63", ping(a, "198.19.7.2"))
        assert re.search(r"ttl=63", ping(b, "2001:db8:7::1"))
        assert on_node(node, lambda: problems(wa, *wiring.inspect(wa))) == []

        assert on_node(node, lambda: wiring.detach(a, "eth0")) is True
        assert "calta" not in host_links(node)
        assert sorted(host_routes(node)) == ["198.19.7.2", "2001:db8:7::2"]
        assert "eth0" not in sh("ip", "link", ns=a).stdout
        assert on_node(node, lambda: wiring.detach(a, "eth0")) is False  # idempotent
        assert on_node(node, lambda: wiring.detach(b, "eth0")) is True
    assert on_node(node, lambda: wiring.detach(b, "eth0")) is False  # its namespace is gone: nothing to do
    assert host_routes(node) == []


def test_an_attach_that_fails_half_way_gives_back_what_it_made(node):
    """The host route is the last step: a route to the address through another interface (another
    workload's) refuses it, named in the error, and the veth made so far goes again."""
    with netns("w") as a, netns("w") as b:
        on_node(node, lambda: wiring.attach(workload(a, "eth0", "caltc", ["198.19.7.9"])))
        clash = workload(b, "eth0", "caltd", ["198.19.7.9"])
        with pytest.raises(WiringError, match=r"route 198.19.7.9/32 already exists through another interface than caltd"):
            on_node(node, lambda: wiring.attach(clash))
        assert "caltd" not in host_links(node)
        assert "eth0" not in sh("ip", "link", ns=b).stdout
        assert host_routes(node) == ["198.19.7.9"]  # the first workload's, untouched
        on_node(node, lambda: wiring.detach(a, "eth0"))


def test_check_names_what_was_removed_behind_its_back_and_a_stale_host_end_is_replaced(node):
    with netns("w") as a:
        w = workload(a, "eth0", "calte", ["198.19.7.20", "2001:db8:7::20"])
        on_node(node, lambda: wiring.attach(w))
        sh("ip", "route", "del", "198.19.7.20/32", ns=node)
        sh("sysctl", "-qw", "net.ipv4.conf.calte.proxy_arp=0", ns=node)
        sh("ip", "-6", "route", "del", "default", ns=a)
        assert on_node(node, lambda: problems(w, *wiring.inspect(w))) == [
            "route ::/0 via fe80::ecee:eeff:feee:eeee dev eth0 is missing in " + a,
            "route 198.19.7.20/32 dev calte is missing on the host",
            "sysctl net.ipv4.conf.calte.proxy_arp is 0, not 1",
        ]
        # an ADD again (the runtime retrying): the old pair is deleted first, the new one is whole
        on_node(node, lambda: wiring.attach(w))
        assert on_node(node, lambda: problems(w, *wiring.inspect(w))) == []
        on_node(node, lambda: wiring.detach(a, "eth0"))
        assert "interface eth0 is missing in " + a in on_node(node, lambda: problems(w, *wiring.inspect(w)))


def test_a_namespace_that_does_not_exist_is_named(node):
    with pytest.raises(NoNamespace, match="/run/netns/cb-no-such-ns"):
        on_node(node, lambda: wiring.attach(workload("/run/netns/cb-no-such-ns", "eth0", "caltf", ["198.19.7.30"])))
    assert "caltf" not in host_links(node)


FAKE_IPAM = """#!/bin/sh
cat >/dev/null
[ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion": "1.1.0", "ips": [{"address": "198.19.7.9/32"}]}'
exit 0
"""


def test_a_wiring_that_fails_inside_the_warm_process_leaves_it_whole(node, tmp_path):
    """calico-bgp-cni's ADD run as the agent's warm process runs it (cni/warm.py handle, in the node's
    namespace), failing at its last step (the host route clashes with another workload's): the error
    is the reply, the address goes back (the IPAM's DEL), and the process is as before: its thread
    still in the node's namespace, no descriptor more, and the next invocation answered."""
    import os

    from calico_bgp.cni import plugin, warm

    ipam = tmp_path / "fake-ipam"
    ipam.write_text(FAKE_IPAM)
    ipam.chmod(0o755)
    conf = json.dumps({"cniVersion": "1.1.0", "name": "n", "type": "calico-bgp-cni", "ipam": {"type": "fake-ipam"},
                       "nodename": "node-1"}).encode()

    def env(command: str, cid: str, ns: str) -> bytes:
        pairs = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": f"/run/netns/{ns}",
                 "CNI_IFNAME": "eth0", "CNI_PATH": str(tmp_path)}
        return b"\0".join(f"{k}={v}".encode() for k, v in pairs.items())

    def as_the_warm_process():
        own = os.stat("/proc/thread-self/ns/net").st_ino
        fds = len(os.listdir("/proc/self/fd"))
        first = warm.handle(plugin, env("ADD", "wa", a), conf)
        failed = warm.handle(plugin, env("ADD", "wb", b), conf)
        after = os.stat("/proc/thread-self/ns/net").st_ino, len(os.listdir("/proc/self/fd"))
        again = warm.handle(plugin, env("DEL", "wa", a), conf)
        return own, fds, first, failed, after, again

    links = host_links(node)
    with netns("w") as a, netns("w") as b:
        own, fds, first, failed, after, again = on_node(node, as_the_warm_process)
    assert first[0] == b"0", first
    assert failed[0] == b"1" and b"already exists through another interface" in failed[1], failed
    assert b"cni_add_released" in failed[2]  # the address given back through the IPAM's DEL
    assert after == (own, fds)
    assert again[0] == b"0", again
    host_end = json.loads(first[1])["interfaces"][0]["name"]
    assert host_end.startswith("cal") and host_links(node) == links  # nothing of either ADD stays
