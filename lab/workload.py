"""A workload: a namespace with one address from IPAM, wired to its node the way Calico's CNI does it.

The workload's eth0 holds the address as a /32 (or /128). IPv4: a default route out of eth0 with
proxy ARP on the node side; IPv6: a default route via the node side's link-local address. The
node holds a host route to the address, more specific than its blackhole for the block.
"""
from __future__ import annotations

import ipaddress
import json
from typing import Sequence

from lab.net import LabError, Net, TimedOut, check_address, sh, wait_for


def attach_workload(net: Net, node_ns: str, name: str, ip: str | Sequence[str], host_if: str) -> str:
    """Create workload namespace `name` holding `ip` (one address, or one per family); returns it."""
    ips = [ip] if isinstance(ip, str) else list(ip)
    for a in ips:
        check_address(a)
    ws = net.namespace(name)
    net.veth(node_ns, host_if, ws, "eth0")
    for text in ips:
        addr = ipaddress.ip_address(text)
        plen = addr.max_prefixlen
        sh("ip", "addr", "add", f"{text}/{plen}", "dev", "eth0", *(["nodad"] if addr.version == 6 else []), ns=ws)
        if addr.version == 4:
            sh("ip", "route", "add", "default", "dev", "eth0", ns=ws)
            sh("sysctl", "-qw", f"net.ipv4.conf.{host_if}.proxy_arp=1", ns=node_ns)
            sh("sysctl", "-qw", f"net.ipv4.neigh.{host_if}.proxy_delay=0", ns=node_ns)
        else:
            # as Calico does: the default route points at the node side's own link-local address
            sh("ip", "-6", "route", "add", "default", "via", _link_local(node_ns, host_if), "dev", "eth0", ns=ws)
        sh("ip", "route", "add", f"{text}/{plen}", "dev", host_if, "scope", "link", ns=node_ns)
    return ws


def _link_local(ns: str, ifname: str, timeout: float = 5.0) -> str:
    """The kernel-assigned fe80:: address of `ifname`, once duplicate address detection is done."""
    def usable() -> str | None:
        for info in json.loads(sh("ip", "-6", "-j", "addr", "show", "dev", ifname, "scope", "link", ns=ns).stdout or "[]"):
            for a in info.get("addr_info", []):
                if not a.get("tentative"):
                    return a["local"]
        return None

    try:
        return wait_for(f"the link-local address of {ifname} in {ns}", usable, timeout, interval=0.05)
    except TimedOut:
        raise LabError(f"{ifname} in {ns} got no usable IPv6 link-local address within {timeout}s") from None
