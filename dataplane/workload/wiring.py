"""A workload wired, unwired and inspected: blocking netlink in the host's and the container's namespaces.

    done = attach(workload("/run/netns/w1", "eth0", "cali0123456789a", ["198.19.0.5"]))
    detach("/run/netns/w1", "eth0")          # True, then False: nothing left to remove
    problems(w, *inspect(w))                 # [] while the wiring is whole (plan.problems)

The order is Calico's DoNetworking (cni-plugin/pkg/dataplane/linux/dataplane_linux.go), with one
difference: the pair is made from the host with its peer created straight inside the container's
namespace (IFLA_NET_NS_FD), so no host end ever sits in the container. An attach that fails part
way deletes the pair it made, which takes every address and route on it along: nothing is left.
A socket keeps the namespace it was opened in, so one process serves both without moving threads;
only the container's sysctls are written from a short-lived thread inside its namespace.
"""
from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import socket
import time
from typing import NamedTuple

from dataplane import netlink
from dataplane import rtnl_codec as rtnl
from dataplane.routes.kernel import RTN_UNICAST, RouteKey
from dataplane.workload import codec
from dataplane.workload.plan import (
    HOST_MAC, MAIN_TABLE, RTPROT_BOOT, NoNamespace, Observed, RouteWant, WiringError, Workload,
    container_ipv6_sysctls, container_routes, container_sysctls, dad_sysctls, host_optional_sysctls,
    host_routes, host_sysctls,
)

_seqs = itertools.count(1)
RCVBUF = 1 << 20
# Calico polls for the host end's link-local address 10 times, 50 ms apart; the same half second
# here, polled finer: with DAD off it is there a few ms after both ends are up
LINK_LOCAL_TRIES = 100
LINK_LOCAL_WAIT_S = 0.005
RT_SCOPE_LINK = 253


class Attached(NamedTuple):
    """What an attach made: the host end (name, MAC), the container end's MAC, the IPv6 gateway."""

    host_ifname: str
    host_mac: str
    container_mac: str
    gateway_v6: str | None


def _errno(exc: netlink.NetlinkError) -> int | None:
    cause = exc.__cause__
    return cause.errno if isinstance(cause, OSError) else None


def _ask(sock: socket.socket, build, what: str, *args) -> bytes | None:
    seq = next(_seqs)
    try:
        return netlink.query(sock, build(seq, *args), seq)
    except netlink.NetlinkError as exc:
        raise WiringError(f"{what}: {exc}") from exc


def _link(sock: socket.socket, name: str) -> codec.LinkInfo | None:
    seq = next(_seqs)
    try:
        data = netlink.query(sock, codec.encode_link_get(seq, name), seq)
    except netlink.NetlinkError as exc:
        if _errno(exc) == errno.ENODEV:
            return None
        raise WiringError(f"looking up interface {name}: {exc}") from exc
    return None if data is None else codec.decode_link(data, 0, len(data))


def _open_container(netns: str) -> socket.socket:
    try:
        return netlink.open_rtnl_socket(netns, rcvbuf=RCVBUF)
    except netlink.NamespaceError as exc:
        raise NoNamespace(f"network namespace {netns} cannot be entered: {exc}") from exc


def _write_sysctls(pairs: list[tuple[str, str]]) -> None:
    for path, value in pairs:
        try:
            with open(f"/proc/sys/{path}", "w") as f:
                f.write(value)
        except OSError as exc:
            raise WiringError(f"failed to set {path.replace('/', '.')}={value}: {exc.strerror or exc}") from exc


def _read_sysctls(paths: list[str]) -> list[tuple[str, str]]:
    out = []
    for path in paths:
        try:
            with open(f"/proc/sys/{path}") as f:
                out.append((path, f.read().strip()))
        except OSError:
            pass
    return out


def _add_route(sock: socket.socket, dst: str, gateway: str | None, dev: str, ifindex: int, what: str) -> None:
    """One route in the main table, protocol boot; refused if it exists (the caller decides)."""
    net = ipaddress.ip_network(dst)
    hop = (None if gateway is None else ipaddress.ip_address(gateway).packed, dev, 1)
    seq = next(_seqs)
    key = RouteKey(net.prefixlen, net.network_address.packed, 0)
    msg = rtnl.with_ack(rtnl.encode_newroute(seq, rtnl.NEW_FLAGS, MAIN_TABLE, RTPROT_BOOT, key, RTN_UNICAST, (hop,),
                                             lambda _name: ifindex))
    try:
        netlink.query(sock, msg, seq)
    except netlink.NetlinkError as exc:
        raise WiringError(f"{what} {dst}{f' via {gateway}' if gateway else ''} dev {dev}: {exc}") from exc


def _text(packed: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(packed) == 16 else socket.AF_INET, packed)


def _routes(sock: socket.socket, family: int) -> list[tuple[str, str | None, int]]:
    """The main table's unicast routes of one family: (dst CIDR, gateway or None, oif)."""
    seq = next(_seqs)
    out = []
    for data in netlink.dump(sock, rtnl.encode_route_dump(seq, family, MAIN_TABLE, 0), seq):
        for off, length, mtype in netlink.iter_messages(data):
            if mtype != rtnl.RTM_NEWROUTE:
                continue
            r = rtnl.decode_route(data, off, length)
            if r is None or r.table != MAIN_TABLE or r.rtype != RTN_UNICAST:
                continue
            dst = f"{_text(r.key.dst)}/{r.key.dst_len}"
            for gw, oif, _weight in r.hops:
                out.append((dst, None if gw is None else _text(gw), oif))
    return out


def _addresses(sock: socket.socket, family: int, ifindex: int) -> list[codec.AddressInfo]:
    seq = next(_seqs)
    out = []
    for data in netlink.dump(sock, codec.encode_address_dump(seq, family, ifindex), seq):
        for off, length, mtype in netlink.iter_messages(data):
            if mtype == codec.RTM_NEWADDR:
                a = codec.decode_address(data, off, length)
                if a.index == ifindex:
                    out.append(a)
    return out


def _link_local(sock: socket.socket, ifindex: int) -> str | None:
    for a in _addresses(sock, codec.AF_INET6, ifindex):
        if a.scope == RT_SCOPE_LINK and not a.flags & codec.IFA_F_TENTATIVE:
            return _text(a.address)
    return None


def _wait_link_local(sock: socket.socket, ifindex: int, host_if: str) -> str:
    for attempt in range(LINK_LOCAL_TRIES):
        found = _link_local(sock, ifindex)
        if found:
            return found
        if attempt + 1 < LINK_LOCAL_TRIES:
            time.sleep(LINK_LOCAL_WAIT_S)
    raise WiringError(f"host interface {host_if} got no IPv6 link-local address (is IPv6 disabled on this host?)")


def attach(w: Workload, allow_ip_forwarding: bool = False) -> Attached:
    """Wire `w` (its namespace must exist; a stale host end of the same name is replaced, as Calico
    does). WiringError (NoNamespace for the namespace) names the step that failed; nothing stays."""
    csock = _open_container(w.netns)
    hsock = netlink.open_rtnl_socket(rcvbuf=RCVBUF)
    try:
        if _link(hsock, w.host_ifname) is not None:
            _ask(hsock, codec.encode_link_delete, f"deleting the stale host interface {w.host_ifname}", w.host_ifname)
        fd = os.open(netlink.netns_path(w.netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _ask(hsock, codec.encode_veth_pair, f"creating veth {w.host_ifname} with peer {w.ifname} in {w.netns}",
                 w.host_ifname, w.ifname, fd, w.mtu, codec.mac_bytes(HOST_MAC))
        finally:
            os.close(fd)
        try:
            return _configure(w, hsock, csock, allow_ip_forwarding)
        except BaseException:
            _delete_quietly(hsock, w.host_ifname)
            raise
    finally:
        csock.close()
        hsock.close()


def _configure(w: Workload, hsock: socket.socket, csock: socket.socket, allow_ip_forwarding: bool) -> Attached:
    if w.has_v6:
        _write_sysctls(dad_sysctls(w.host_ifname))
        netlink.run_in_netns(w.netns, lambda: _write_sysctls(container_ipv6_sysctls() + dad_sysctls(w.ifname)))
    _ask(hsock, codec.encode_link_up, f"setting {w.host_ifname} up", w.host_ifname)
    _ask(csock, codec.encode_link_up, f"setting {w.ifname} up in {w.netns}", w.ifname)
    host = _link(hsock, w.host_ifname)
    cont = _link(csock, w.ifname)
    if host is None or cont is None:
        raise WiringError(f"veth {w.host_ifname}/{w.ifname} vanished while it was being set up")
    gateway_v6 = None
    want = container_routes(w, None)
    if w.has_v6:
        gateway_v6 = _wait_link_local(hsock, host.index, w.host_ifname)
        want = container_routes(w, gateway_v6)
    for r in want:
        _add_route(csock, r.dst, r.gateway, r.dev, cont.index, f"adding the route in {w.netns}:")
    for ip in w.ips:
        _ask(csock, codec.encode_address_add, f"adding {ip}/{ip.max_prefixlen} to {w.ifname} in {w.netns}",
             cont.index, ip.packed, ip.max_prefixlen)
    netlink.run_in_netns(w.netns, lambda: _write_sysctls(container_sysctls(w, allow_ip_forwarding)))
    _write_sysctls(host_sysctls(w))
    try:
        _write_sysctls(host_optional_sysctls(w))
    except WiringError:
        pass  # Calico only warns: a host without IPv6 has no accept_ra to set
    for r in host_routes(w):
        _host_route(hsock, r, host.index)
    return Attached(w.host_ifname, host.mac, cont.mac, gateway_v6)


def _host_route(hsock: socket.socket, r: RouteWant, ifindex: int) -> None:
    """SetupRoutes: the route to the workload; one already there through this host end is fine (felix
    may have made it), one through another interface is a conflict named in the error."""
    try:
        _add_route(hsock, r.dst, None, r.dev, ifindex, "adding the host route")
        return
    except WiringError as exc:
        cause = exc.__cause__
        if not (isinstance(cause, netlink.NetlinkError) and _errno(cause) == errno.EEXIST):
            raise
    family = codec.AF_INET6 if ":" in r.dst else codec.AF_INET
    others = [(gw, oif) for dst, gw, oif in _routes(hsock, family) if dst == r.dst]
    if any(oif == ifindex and gw is None for gw, oif in others):
        return
    names = ", ".join(f"ifindex {oif}" + (f" via {gw}" if gw else "") for gw, oif in others) or "a route of another table"
    raise WiringError(f"route {r.dst} already exists through another interface than {r.dev}: {names}")


def _delete_quietly(sock: socket.socket, name: str) -> None:
    seq = next(_seqs)
    try:
        netlink.query(sock, codec.encode_link_delete(seq, name), seq)
    except (netlink.NetlinkError, OSError):
        pass  # already gone (its namespace went with it), or the original error is the one to report


def detach(netns: str, ifname: str) -> bool:
    """Delete the container's interface (its host end, addresses and routes go with it). False when
    there was nothing to delete: the namespace or the interface is already gone (DEL is idempotent)."""
    if not netns:
        return False
    try:
        csock = netlink.open_rtnl_socket(netns, rcvbuf=RCVBUF)
    except netlink.NamespaceError:
        if not os.path.exists(netlink.netns_path(netns)):
            return False
        raise
    try:
        seq = next(_seqs)
        try:
            netlink.query(csock, codec.encode_link_delete(seq, ifname), seq)
        except netlink.NetlinkError as exc:
            if _errno(exc) == errno.ENODEV:
                return False
            raise WiringError(f"deleting {ifname} in {netns}: {exc}") from exc
        return True
    finally:
        csock.close()


def inspect(w: Workload) -> tuple[Observed, str | None]:
    """What the kernel holds of `w`'s wiring, and the host end's IPv6 link-local address (for
    plan.problems). NoNamespace when the container's namespace is gone."""
    csock = _open_container(w.netns)
    hsock = netlink.open_rtnl_socket(rcvbuf=RCVBUF)
    try:
        cont = _link(csock, w.ifname)
        host = _link(hsock, w.host_ifname)
        addrs: list[str] = []
        croutes: list[RouteWant] = []
        if cont is not None:
            for fam in (codec.AF_INET, codec.AF_INET6):
                addrs += [f"{_text(a.address)}/{a.prefixlen}" for a in _addresses(csock, fam, cont.index)]
                croutes += [RouteWant(d, g, w.ifname) for d, g, oif in _routes(csock, fam) if oif == cont.index]
        wanted = {r.dst for r in host_routes(w)}
        hroutes: list[RouteWant] = []
        for fam in ((codec.AF_INET,) if not w.has_v6 else (codec.AF_INET, codec.AF_INET6)):
            for d, g, oif in _routes(hsock, fam):
                if d in wanted:
                    hroutes.append(RouteWant(d, g, w.host_ifname if host is not None and oif == host.index else f"ifindex {oif}"))
        peer = host is not None and cont is not None and host.peer_index == cont.index and cont.peer_index == host.index
        gateway_v6 = _link_local(hsock, host.index) if host is not None and w.has_v6 else None
        sysctls = _read_sysctls([p for p, _v in host_sysctls(w)])
        seen = Observed(None if cont is None else (cont.name, cont.flags), tuple(addrs), tuple(croutes),
                        None if host is None else (host.name, host.flags), tuple(hroutes), tuple(sysctls), peer)
        return seen, gateway_v6
    finally:
        csock.close()
        hsock.close()

