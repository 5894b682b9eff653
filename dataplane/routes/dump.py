"""Reading kernel state: our routes (one table, one protocol) and the links, with the lean decoder.

The kernel filters the route dump to our table and protocol (strict checking); the decoder checks
again, so a kernel without filtering still never hands us a foreign route.
"""
from __future__ import annotations

import errno
import itertools
import socket
from typing import Callable, Mapping

import attrs
import trio

from dataplane import netlink
from dataplane import rtnl_codec as codec
from dataplane.routes.route import KernelRoute, RouteKey

_seqs = itertools.count(0x40000000)
DUMP_RETRIES = 5


@attrs.frozen(slots=True)
class Link:
    index: int
    name: str
    flags: int

    @property
    def usable(self) -> bool:
        """Up and with carrier: next hops through it can forward."""
        return bool(self.flags & codec.IFF_UP) and bool(self.flags & codec.IFF_LOWER_UP)


def _scan_family(
    sock: socket.socket,
    family: int,
    table: int,
    protocol: int,
    visit: Callable[[KernelRoute], None],
    known: Mapping[bytes, RouteKey],
    visit_known: Callable[[RouteKey], None],
) -> None:
    decode = codec.decode_route
    lookup = known.get
    newroute = codec.RTM_NEWROUTE
    unpack = codec.HDR.unpack_from
    seq = next(_seqs)
    try:
        for data in netlink.dump(sock, codec.encode_route_dump(seq, family, table, protocol), seq):
            off = 0
            n = len(data)
            while off + 16 <= n:
                length, mtype, _flags, _seq, _pid = unpack(data, off)
                if length < 16:
                    break
                if mtype == newroute:
                    if known:
                        hit = lookup(data[off + 16 : off + length - 4])
                        if hit is not None:
                            visit_known(hit)
                            off += (length + 3) & ~3
                            continue
                    route = decode(data, off, length)
                    if route is not None and route.protocol == protocol and route.table == table:
                        visit(route)
                off += (length + 3) & ~3
    except netlink.NetlinkError as exc:
        # an IPv4 table that does not exist yet is an empty table
        if not (isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOENT):
            raise


def _ignore(_hit: RouteKey) -> None:
    pass


def scan_routes_sync(
    sock: socket.socket,
    table: int,
    protocol: int,
    visit: Callable[[KernelRoute], None],
    known: Mapping[bytes, RouteKey] | None = None,
    visit_known: Callable[[RouteKey], None] = _ignore,
) -> None:
    """Blocking: `visit` each of our routes of both families; none kept (no 100k objects for the GC to walk).

    A route whose raw bytes are in `known` (codec.dump_signature -> a caller's id) is not decoded:
    `visit_known(id)` instead. A dump the kernel marks interrupted is read again, so a route may be
    seen twice.
    """
    known = known or {}
    for family in (codec.AF_INET, codec.AF_INET6):
        for attempt in range(DUMP_RETRIES):
            try:
                _scan_family(sock, family, table, protocol, visit, known, visit_known)
                break
            except netlink.DumpInterrupted:
                if attempt == DUMP_RETRIES - 1:
                    raise


def dump_routes_sync(sock: socket.socket, table: int, protocol: int) -> dict[RouteKey, KernelRoute]:
    out: dict[RouteKey, KernelRoute] = {}

    def keep(route: KernelRoute) -> None:
        out[route.key] = route

    scan_routes_sync(sock, table, protocol, keep)
    return out


async def dump_routes(sock: socket.socket, table: int, protocol: int) -> dict[RouteKey, KernelRoute]:
    """Our routes by key, from both families."""
    return await trio.to_thread.run_sync(dump_routes_sync, sock, table, protocol)


def dump_links_sync(sock: socket.socket) -> dict[int, Link]:
    for attempt in range(DUMP_RETRIES):
        out: dict[int, Link] = {}
        seq = next(_seqs)
        try:
            for data in netlink.dump(sock, codec.encode_link_dump(seq), seq):
                for off, length, mtype in netlink.iter_messages(data):
                    if mtype == codec.RTM_NEWLINK:
                        index, name, flags = codec.decode_link(data, off, length)
                        out[index] = Link(index, name, flags)
            return out
        except netlink.DumpInterrupted:
            if attempt == DUMP_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


async def dump_links(sock: socket.socket) -> dict[int, Link]:
    return await trio.to_thread.run_sync(dump_links_sync, sock)
