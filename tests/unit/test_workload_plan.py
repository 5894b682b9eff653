"""The pure half of a workload's wiring: Calico's names, the sysctls and routes per family, CHECK's
verdict, and the link/address messages (cni-plugin/pkg/dataplane/linux/dataplane_linux.go)."""
from __future__ import annotations

import hashlib
import struct

import pytest

from dataplane.workload import codec
from dataplane.workload.plan import (
    Observed, RouteWant, WiringError, container_routes, container_sysctls, host_ifname, host_routes, host_sysctls,
    problems, workload,
)


def test_host_names_follow_calico():
    """A pod: "cali" + 11 hex digits of sha1("<namespace>.<pod>"); otherwise the container ID's first 11."""
    assert host_ifname("abc", "default", "nginx") == "cali" + hashlib.sha1(b"default.nginx").hexdigest()[:11]
    assert host_ifname("0123456789abcdef") == "cali0123456789a"
    assert host_ifname("w1") == "caliw1"
    with pytest.raises(WiringError, match="no usable host interface name from container id ''"):
        host_ifname("")
    with pytest.raises(WiringError, match="container id 'a/b'"):
        host_ifname("a/b")


def test_a_workload_holds_each_address_alone_one_per_family():
    w = workload("/run/netns/x", "eth0", "cali1", ["198.19.0.5/26", "2001:db8::5/122"])
    assert [str(ip) for ip in w.ips] == ["198.19.0.5", "2001:db8::5"] and w.has_v4 and w.has_v6
    with pytest.raises(WiringError, match="address 'nope' is not an IP address"):
        workload("x", "eth0", "cali1", ["nope"])
    with pytest.raises(WiringError, match=r"more than one IPv4 address: \['198.19.0.1', '198.19.0.2'\]"):
        workload("x", "eth0", "cali1", ["198.19.0.1", "198.19.0.2"])
    with pytest.raises(WiringError, match="no address"):
        workload("x", "eth0", "cali1", [])
    with pytest.raises(WiringError, match="interface name 'a-very-long-interface' is not a usable"):
        workload("x", "a-very-long-interface", "cali1", ["198.19.0.1"])


def test_sysctls_and_routes_per_family():
    v4 = workload("ns", "eth0", "cali1", ["198.19.0.5"])
    assert ("net/ipv4/conf/cali1/proxy_arp", "1") in host_sysctls(v4)
    assert ("net/ipv4/neigh/cali1/proxy_delay", "0") in host_sysctls(v4)
    assert not any("ipv6" in p for p, _ in host_sysctls(v4))
    assert container_sysctls(v4) == [("net/ipv4/ip_forward", "0")]
    assert container_sysctls(v4, allow_ip_forwarding=True) == [("net/ipv4/ip_forward", "1")]
    assert container_routes(v4, None) == [RouteWant("169.254.1.1/32", None, "eth0"), RouteWant("0.0.0.0/0", "169.254.1.1", "eth0")]
    v6 = workload("ns", "eth0", "cali1", ["2001:db8::5"])
    assert ("net/ipv6/conf/cali1/proxy_ndp", "1") in host_sysctls(v6)
    assert container_routes(v6, "fe80::1") == [RouteWant("::/0", "fe80::1", "eth0")]
    assert host_routes(v6) == [RouteWant("2001:db8::5/128", None, "cali1")]


def _whole(w, gw):
    return Observed(("eth0", 1), tuple(f"{ip}/{ip.max_prefixlen}" for ip in w.ips), tuple(container_routes(w, gw)),
                    ("cali1", 1), tuple(host_routes(w)), tuple(host_sysctls(w)), True)


def test_check_is_clean_for_whole_wiring_and_names_each_missing_piece():
    w = workload("ns", "eth0", "cali1", ["198.19.0.5", "2001:db8::5"])
    seen = _whole(w, "fe80::1")
    assert problems(w, seen, "fe80::1") == []
    broken = seen._replace(container_link=("eth0", 0), container_addresses=("198.19.0.5/26",), host_routes=(),
                           sysctls=(("net/ipv4/conf/cali1/proxy_arp", "0"),), peer_of_host=False)
    out = problems(w, broken, None)
    assert "interface eth0 in ns is down" in out
    assert "host interface cali1 is not the peer of eth0 in ns" in out
    assert "address 198.19.0.5/32 is missing on eth0 in ns" in out
    assert "host interface cali1 has no IPv6 link-local address" in out
    assert "route 198.19.0.5/32 dev cali1 is missing on the host" in out
    assert "sysctl net.ipv4.conf.cali1.proxy_arp is 0, not 1" in out
    assert "sysctl net.ipv6.conf.cali1.proxy_ndp is unreadable, not 1" in out
    gone = problems(w, seen._replace(container_link=None, host_link=None), "fe80::1")
    assert gone[:2] == ["interface eth0 is missing in ns", "host interface cali1 is missing"]


def test_the_veth_message_nests_its_peer_with_the_namespace_fd():
    msg = codec.encode_veth_pair(7, "cali1", "eth0", 42, mtu=1400, mac=codec.mac_bytes("ee:ee:ee:ee:ee:ee"))
    length, mtype, flags, seq, _pid = struct.unpack_from("=IHHII", msg)
    assert (length, mtype, seq) == (len(msg), codec.RTM_NEWLINK, 7)
    assert flags & codec.NLM_F_CREATE and flags & codec.NLM_F_EXCL and flags & codec.NLM_F_ACK
    assert b"veth\0" in msg and b"cali1\0" in msg and b"eth0\0" in msg
    assert struct.pack("=HHI", 8, codec.IFLA_NET_NS_FD, 42) in msg
    assert struct.pack("=HH", 10, codec.IFLA_ADDRESS) + b"\xee" * 6 in msg
    assert msg.count(struct.pack("=HHI", 8, codec.IFLA_MTU, 1400)) == 2  # both ends


def test_link_and_address_answers_decode():
    body = codec.IFINFO.pack(0, 1, 5, codec.IFF_UP, 0)
    body += codec._attr(codec.IFLA_IFNAME, b"cali1\0") + codec._attr(codec.IFLA_MTU, struct.pack("=I", 1500))
    body += codec._attr(codec.IFLA_ADDRESS, b"\xee" * 6) + codec._attr(codec.IFLA_LINK, struct.pack("=I", 2))
    msg = codec._message(codec.RTM_NEWLINK, 0, 1, body)
    assert codec.decode_link(msg, 0, len(msg)) == codec.LinkInfo(5, "cali1", codec.IFF_UP, 1500, "ee:ee:ee:ee:ee:ee", 2)
    add = codec.encode_address_add(3, 5, bytes(15) + b"\x05", 128)
    fam, plen, flags, _scope, index = codec.IFADDR.unpack_from(add, 16)
    assert (fam, plen, flags, index) == (codec.AF_INET6, 128, codec.IFA_F_NODAD, 5)
    got = codec.decode_address(add, 0, len(add))
    assert got.address == bytes(15) + b"\x05" and got.prefixlen == 128


def test_the_plugin_and_its_netlink_half_load_no_attrs_trio_or_httpx():
    """calico-bgp-cni is exec'd per container: the modules it needs to wire one import none of the
    heavy libraries (attrs alone was ~30 ms of a ~100 ms start)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = ("import json, sys; import calico_bgp.cni.plugin, dataplane.workload.wiring; "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert sorted(m for m in ("attrs", "attr", "trio", "httpx", "pyroute2", "yaml") if m in loaded) == []
