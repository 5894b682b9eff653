"""The node's BGP address, found the way calico/node does it: first-found, interface=REGEX, can-reach=IP.

`choose()` is pure over a list of interfaces; `detect()` reads them (and, for can-reach, the route
to the target) from the kernel with pyroute2.
"""
from __future__ import annotations

import ipaddress
import re
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


def read_interfaces() -> list[Interface]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        by_index: dict[int, list] = {i: [] for i in names}
        for msg in ipr.get_addr():
            addr = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
            by_index.setdefault(msg["index"], []).append(ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}"))
    return [Interface(names.get(i, str(i)), tuple(addrs)) for i, addrs in sorted(by_index.items())]


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
