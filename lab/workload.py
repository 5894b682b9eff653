"""A workload: a namespace with one address from IPAM, wired to its node the way Calico's CNI does it.

The workload's eth0 holds the address as a /32 (or /128) and a default route out of eth0; the
node side of the veth answers ARP/ND for everything (proxy ARP) and holds a host route to the
address, more specific than the node's blackhole for the block.
"""
from __future__ import annotations

import ipaddress

from lab.net import Net, check_address, sh


def attach_workload(net: Net, node_ns: str, name: str, ip: str, host_if: str) -> str:
    """Create workload namespace `name` with `ip`; returns the namespace."""
    check_address(ip)
    addr = ipaddress.ip_address(ip)
    plen = addr.max_prefixlen
    ws = net.namespace(name)
    net.veth(node_ns, host_if, ws, "eth0")
    sh("ip", "addr", "add", f"{ip}/{plen}", "dev", "eth0", *(["nodad"] if addr.version == 6 else []), ns=ws)
    if addr.version == 4:
        sh("ip", "route", "add", "default", "dev", "eth0", ns=ws)
        sh("sysctl", "-qw", f"net.ipv4.conf.{host_if}.proxy_arp=1", ns=node_ns)
        sh("sysctl", "-qw", f"net.ipv4.neigh.{host_if}.proxy_delay=0", ns=node_ns)
    else:
        sh("ip", "-6", "route", "add", "default", "dev", "eth0", ns=ws)
        sh("sysctl", "-qw", f"net.ipv6.conf.{host_if}.proxy_ndp=1", ns=node_ns)
    sh("ip", "route", "add", f"{ip}/{plen}", "dev", host_if, "scope", "link", ns=node_ns)
    return ws
