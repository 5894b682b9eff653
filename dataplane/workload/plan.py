"""What a workload's wiring is, decided apart from the I/O: names, sysctls, routes, and CHECK's verdict.

Calico's CNI plugin is the model (cni-plugin/pkg/dataplane/linux/dataplane_linux.go, DoNetworking,
SetupRoutes, configureSysctls, configureContainerSysctls): a veth whose container end holds each
address as a /32 or /128; inside, IPv4 leaves through a link route to 169.254.1.1 and a default
route via it, answered by proxy ARP on the host end (which has no address of its own), and IPv6
through a default route via the host end's link-local address; on the host, a scope-link route to
each address through the host end. Nothing is bridged: the host routes every packet.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable, NamedTuple, Sequence, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

GATEWAY_V4 = ipaddress.IPv4Address("169.254.1.1")
# the host end's MAC, as Calico sets it: the kernel need not generate (and persist) one per veth
HOST_MAC = "ee:ee:ee:ee:ee:ee"
RTPROT_BOOT = 3  # what `ip route add` and Calico's netlink library give a route
MAIN_TABLE = 254
IFNAMSIZ = 15
IFF_UP = 0x1
DEFAULT_PREFIX = "cali"


class WiringError(Exception):
    """A workload could not be wired (or unwired); the message names the step and the object."""


class NoNamespace(WiringError):
    """The container's network namespace does not exist (or cannot be entered)."""


def host_ifname(container_id: str, pod_namespace: str = "", pod_name: str = "", prefix: str = DEFAULT_PREFIX) -> str:
    """The host end's name, by Calico's rules: for a Kubernetes pod, the prefix and 11 hex digits of
    the SHA-1 of "<namespace>.<pod>" (libcalico-go k8s conversion VethNameForWorkload); otherwise the
    prefix and the first 11 characters of the container ID (cni-plugin/pkg/plugin/plugin.go)."""
    if pod_namespace and pod_name:
        try:
            from _sha1 import sha1  # CPython's own SHA-1: hashlib would load OpenSSL, ~7 ms of a plugin's start
        except ImportError:
            from hashlib import sha1
        suffix = sha1(f"{pod_namespace}.{pod_name}".encode()).hexdigest()[:11]
    else:
        suffix = container_id[:11]
    name = f"{prefix}{suffix}"
    if not suffix or len(name) > IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise WiringError(f"no usable host interface name from container id {container_id!r} (got {name!r})")
    return name


class Workload(NamedTuple):
    """One attachment: the namespace (a name or a path), the container's interface name, the host
    end's name, the addresses (one per family at most, as Calico takes them) and the MTU (0: the
    kernel's default)."""

    netns: str
    ifname: str
    host_ifname: str
    ips: tuple[IPAddress, ...]
    mtu: int = 0

    @property
    def has_v4(self) -> bool:
        return any(ip.version == 4 for ip in self.ips)

    @property
    def has_v6(self) -> bool:
        return any(ip.version == 6 for ip in self.ips)


def workload(netns: str, ifname: str, host_if: str, ips: Iterable[str | IPAddress], mtu: int = 0) -> Workload:
    """A checked Workload: addresses parse, at most one per family. An address may come in CIDR form
    (an IPAM's result): the prefix is dropped, the workload holds the address alone, as Calico does."""
    parsed: list[IPAddress] = []
    for text in ips:
        try:
            parsed.append(ipaddress.ip_interface(str(text)).ip)
        except ValueError:
            raise WiringError(f"address {text!r} is not an IP address") from None
    if not parsed:
        raise WiringError("no address to give the workload")
    for version in (4, 6):
        if sum(ip.version == version for ip in parsed) > 1:
            raise WiringError(f"more than one IPv{version} address: {[str(ip) for ip in parsed if ip.version == version]}")
    if not ifname or len(ifname) > IFNAMSIZ or "/" in ifname:
        raise WiringError(f"interface name {ifname!r} is not a usable Linux interface name")
    if not 0 <= mtu <= 65535:
        raise WiringError(f"mtu {mtu} is out of range")
    return Workload(netns, ifname, host_if, tuple(parsed), mtu)


def dad_sysctls(ifname: str) -> list[tuple[str, str]]:
    """Duplicate address detection off on one end: it delays an address for up to a second and a
    point-to-point link has no one to collide with. Before the link goes up."""
    return [(f"net/ipv6/conf/{ifname}/accept_dad", "0")]


def host_sysctls(w: Workload) -> list[tuple[str, str]]:
    """The host end's sysctls (configureSysctls): IPv4 routing to localhost for NAT, proxy ARP with
    no delay (it answers for 169.254.1.1), forwarding; IPv6 on, proxy NDP, forwarding."""
    out = []
    if w.has_v4:
        h = w.host_ifname
        out += [(f"net/ipv4/conf/{h}/route_localnet", "1"), (f"net/ipv4/neigh/{h}/proxy_delay", "0"),
                (f"net/ipv4/conf/{h}/proxy_arp", "1"), (f"net/ipv4/conf/{h}/forwarding", "1")]
    if w.has_v6:
        h = w.host_ifname
        out += [(f"net/ipv6/conf/{h}/disable_ipv6", "0"), (f"net/ipv6/conf/{h}/proxy_ndp", "1"),
                (f"net/ipv6/conf/{h}/forwarding", "1")]
    return out


def host_optional_sysctls(w: Workload) -> list[tuple[str, str]]:
    """Set when possible, a warning otherwise (Calico: accept_ra off on the host end)."""
    return [(f"net/ipv6/conf/{w.host_ifname}/accept_ra", "0")]


def container_ipv6_sysctls() -> list[tuple[str, str]]:
    """IPv6 on inside the container, before its links go up: without it they get no link-local
    address and the default route via the host end cannot be added."""
    return [("net/ipv6/conf/all/disable_ipv6", "0"), ("net/ipv6/conf/default/disable_ipv6", "0"),
            ("net/ipv6/conf/lo/disable_ipv6", "0")]


def container_sysctls(w: Workload, allow_ip_forwarding: bool = False) -> list[tuple[str, str]]:
    """Forwarding inside the container off, unless allowed (container_settings.allow_ip_forwarding)."""
    value = "1" if allow_ip_forwarding else "0"
    out = []
    if w.has_v4:
        out.append(("net/ipv4/ip_forward", value))
    if w.has_v6:
        out.append(("net/ipv6/conf/all/forwarding", value))
    return out


class RouteWant(NamedTuple):
    """A route as CHECK compares it: destination CIDR, gateway (None: on-link) and device name."""

    dst: str
    gateway: str | None
    dev: str


def container_routes(w: Workload, gateway_v6: str | None) -> list[RouteWant]:
    """Inside: 169.254.1.1 on-link and the default via it; ::/0 via the host end's link-local."""
    out = []
    if w.has_v4:
        out += [RouteWant(f"{GATEWAY_V4}/32", None, w.ifname), RouteWant("0.0.0.0/0", str(GATEWAY_V4), w.ifname)]
    if w.has_v6 and gateway_v6:
        out.append(RouteWant("::/0", gateway_v6, w.ifname))
    return out


def host_routes(w: Workload) -> list[RouteWant]:
    """On the host: each address, alone, on-link through the host end."""
    return [RouteWant(f"{ip}/{ip.max_prefixlen}", None, w.host_ifname) for ip in w.ips]


class Observed(NamedTuple):
    """What inspecting a workload found; None for a link that is not there."""

    container_link: tuple[str, int] | None  # (name, flags)
    container_addresses: tuple[str, ...]     # "ip/len"
    container_routes: tuple[RouteWant, ...]
    host_link: tuple[str, int] | None
    host_routes: tuple[RouteWant, ...]
    sysctls: tuple[tuple[str, str], ...]     # (path, value) of the host end's, as read
    peer_of_host: bool                        # the host end's peer is the container's interface


def problems(w: Workload, seen: Observed, gateway_v6: str | None) -> list[str]:
    """CHECK's verdict: each way `seen` falls short of the wiring `w` should have (empty: all there)."""
    out: list[str] = []
    if seen.container_link is None:
        out.append(f"interface {w.ifname} is missing in {w.netns}")
    elif not seen.container_link[1] & IFF_UP:
        out.append(f"interface {w.ifname} in {w.netns} is down")
    if seen.host_link is None:
        out.append(f"host interface {w.host_ifname} is missing")
    else:
        if not seen.host_link[1] & IFF_UP:
            out.append(f"host interface {w.host_ifname} is down")
        if seen.container_link is not None and not seen.peer_of_host:
            out.append(f"host interface {w.host_ifname} is not the peer of {w.ifname} in {w.netns}")
    have_addrs = set(seen.container_addresses)
    for ip in w.ips:
        want = f"{ip}/{ip.max_prefixlen}"
        if want not in have_addrs:
            out.append(f"address {want} is missing on {w.ifname} in {w.netns}")
    if w.has_v6 and not gateway_v6:
        out.append(f"host interface {w.host_ifname} has no IPv6 link-local address")
    out += _missing(container_routes(w, gateway_v6), seen.container_routes, f"in {w.netns}")
    out += _missing(host_routes(w), seen.host_routes, "on the host")
    have_sysctls = dict(seen.sysctls)
    for path, value in host_sysctls(w):
        got = have_sysctls.get(path)
        if got != value:
            out.append(f"sysctl {path.replace('/', '.')} is {got if got is not None else 'unreadable'}, not {value}")
    return out


def _missing(want: Sequence[RouteWant], have: Sequence[RouteWant], where: str) -> list[str]:
    have_set = set(have)
    return [f"route {r.dst}{f' via {r.gateway}' if r.gateway else ''} dev {r.dev} is missing {where}"
            for r in want if r not in have_set]
