"""The node's BGP address, found the way calico/node does it: first-found, interface=REGEX, can-reach=IP.

`choose()` is pure over a list of interfaces; `detect()` reads them from the kernel (one netlink
address dump) and, for can-reach, the route to the target (with pyroute2).
"""
from __future__ import annotations

import ipaddress
import re
import socket
import struct
import time
from typing import Iterable, Sequence

import attrs

# calico/node's default exclusions for first-found
EXCLUDED = re.compile(r"^(docker.*|cbr.*|dummy.*|virbr.*|lxcbr.*|veth.*|lo|cali.*|tunl.*|flannel.*|kube-ipvs.*"
                      r"|cni.*|vxlan.calico.*|vxlan-v6.calico.*|wireguard.cali.*|wg-v6.cali.*)$")


class AutodetectError(ValueError):
    """No address matched the method (the message names the method and what was seen)."""


@attrs.frozen
class Interface:
    name: str
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]


def _usable(addr: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> bool:
    ip = addr.ip
    return not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified)


def choose(method: str, interfaces: Sequence[Interface], version: int = 4,
           route_source: str | None = None) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """Pick the address for `method` among `interfaces`; `route_source` is the kernel's source address
    for the can-reach target (looked up by the caller)."""
    def candidates(names: Iterable[Interface]) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        return [a for i in names for a in i.addresses if a.version == version and _usable(a)]

    if method == "first-found":
        found = candidates(i for i in interfaces if not EXCLUDED.match(i.name))
    elif method.startswith("interface="):
        try:
            pattern = re.compile(method.split("=", 1)[1])
        except re.error as exc:
            raise AutodetectError(f"--ip-autodetect {method!r}: bad regular expression ({exc})") from None
        found = candidates(i for i in interfaces if pattern.fullmatch(i.name))
    elif method.startswith("can-reach="):
        target = method.split("=", 1)[1]
        try:
            ipaddress.ip_address(target)
        except ValueError:
            raise AutodetectError(f"--ip-autodetect {method!r}: {target!r} is not an IP address") from None
        found = [a for a in candidates(interfaces) if route_source and str(a.ip) == route_source]
    else:
        raise AutodetectError(f"--ip-autodetect {method!r}: use first-found, interface=REGEX or can-reach=IP")
    if not found:
        seen = ", ".join(f"{i.name}[{' '.join(str(a) for a in i.addresses)}]" for i in interfaces) or "none"
        raise AutodetectError(f"--ip-autodetect {method}: no IPv{version} address matched (interfaces: {seen})")
    return found[0]


_RTM_NEWADDR, _RTM_GETADDR = 20, 22
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_DUMP_FLAGS = 0x1 | 0x300  # NLM_F_REQUEST | NLM_F_DUMP
_NLMSGHDR = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index


def read_interfaces() -> list[Interface]:
    """This namespace's interfaces (every link, by index) and their addresses, from one RTM_GETADDR
    dump on our own netlink socket: the agent reads them at start and every few seconds, and pyroute2
    for this cost a quarter of a second and 11 MB of an agent's memory (bench/mesh.py)."""
    from dataplane import netlink

    names = dict(socket.if_nameindex())
    by_index: dict[int, list] = {i: [] for i in names}
    sock = netlink.open_rtnl_socket()
    try:
        for index, addr in _addresses(sock):
            by_index.setdefault(index, []).append(addr)
    finally:
        sock.close()
    return [Interface(names.get(i, str(i)), tuple(addrs)) for i, addrs in sorted(by_index.items())]


def _addresses(sock: socket.socket) -> list[tuple[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface]]:
    """(interface index, address/prefix length) of every address, in the kernel's order; an address
    is IFA_ADDRESS, else IFA_LOCAL (as `ip addr` shows it)."""
    from dataplane import netlink, rtnl_codec

    seq = int(time.monotonic() * 1000) & 0x3FFFFFFF
    request = _NLMSGHDR.pack(_NLMSGHDR.size + _IFADDRMSG.size, _RTM_GETADDR, _DUMP_FLAGS, seq, 0) + \
        _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    out = []
    for data in netlink.dump(sock, request, seq):
        for off, length, mtype in netlink.iter_messages(data):
            if mtype != _RTM_NEWADDR:
                continue
            family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(data, off + 16)
            attrs_found = rtnl_codec.attributes(data, off + 16 + _IFADDRMSG.size, off + length)
            raw = attrs_found.get(_IFA_ADDRESS) or attrs_found.get(_IFA_LOCAL)
            if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
                continue
            out.append((index, ipaddress.ip_interface((socket.inet_ntop(family, raw), prefixlen))))
    return out


def route_source(target: str) -> str | None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=target)
        except Exception:  # noqa: BLE001 - unreachable target: no source
            return None
    for r in routes:
        src = r.get_attr("RTA_PREFSRC")
        if src:
            return src
    return None


def detect(method: str, version: int = 4) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    src = route_source(method.split("=", 1)[1]) if method.startswith("can-reach=") else None
    return choose(method, read_interfaces(), version, src)
