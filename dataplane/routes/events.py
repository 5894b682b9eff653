"""Route and link events (IPv4 + IPv6) on a trio-owned netlink socket, decoded lean."""
from __future__ import annotations

import ctypes
import errno
import logging
import socket
import struct
import sys
from typing import AsyncIterator, Callable, Container, Mapping, Union

import attrs
import trio

from dataplane import netlink
from dataplane import rtnl_codec as codec
from dataplane.logfmt import event
from dataplane.routes.dump import Link
from dataplane.routes.route import KernelRoute

log = logging.getLogger(__name__)

EVENT_GROUPS = netlink.RTMGRP_LINK | netlink.RTMGRP_IPV4_ROUTE | netlink.RTMGRP_IPV6_ROUTE


@attrs.frozen(slots=True)
class RouteEvent:
    deleted: bool
    route: KernelRoute


@attrs.frozen(slots=True)
class LinkEvent:
    deleted: bool
    link: Link


@attrs.frozen(slots=True)
class EventsLost:
    """The receive buffer overflowed: some events are gone, state must be read again."""


Event = Union[RouteEvent, LinkEvent, EventsLost]


def open_event_socket(netns: str | None = None, rcvbuf: int = netlink.DEFAULT_RCVBUF) -> socket.socket:
    return netlink.open_rtnl_socket(netns, groups=EVENT_GROUPS, rcvbuf=rcvbuf)


SO_ATTACH_FILTER = 26


def ignore_sender(sock: socket.socket, portid: int) -> None:
    """Have the kernel drop, before they are queued, the events our own requests cause.

    A route notification carries the port id of the socket whose request made the change
    (nlmsg_pid); a classic BPF filter drops those from `portid`, so adding or removing 100k routes
    costs no 100k receive calls here. Changes made by anyone else still arrive.
    """
    # ld [12] (nlmsg_pid, read as a big-endian word); jeq ours -> drop; accept
    ours = int.from_bytes(portid.to_bytes(4, sys.byteorder), "big")
    program = [(0x20, 0, 0, 12), (0x15, 0, 1, ours), (0x06, 0, 0, 0), (0x06, 0, 0, 0xFFFFFFFF)]
    code = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def decode_events(data: bytes, known: Mapping[bytes, object] | None = None,
                  gone: tuple[int, Container[object]] | None = None) -> list[Event]:
    """Decode one datagram; a new route whose bytes are in `known` (codec.dump_signature) is dropped,
    and so is a deletion of a route of protocol `gone[0]` whose key is not in `gone[1]` (our own
    withdrawals: 100k of them after a session drop)."""
    out: list[Event] = []
    for off, length, mtype in netlink.iter_messages(data):
        if known and mtype == codec.RTM_NEWROUTE and data[off + 16 : off + length - 4] in known:
            continue
        if mtype == codec.RTM_NEWROUTE or mtype == codec.RTM_DELROUTE:
            route = codec.decode_route(data, off, length)
            if route is not None:
                if gone is not None and mtype == codec.RTM_DELROUTE and route.protocol == gone[0] and route.key not in gone[1]:
                    continue
                out.append(RouteEvent(mtype == codec.RTM_DELROUTE, route))
        elif mtype == codec.RTM_NEWLINK or mtype == codec.RTM_DELLINK:
            index, name, flags = codec.decode_link(data, off, length)
            out.append(LinkEvent(mtype == codec.RTM_DELLINK, Link(index, name, flags)))
    return out


async def events(sock: socket.socket, known: Callable[[], Mapping[bytes, object]] | None = None,
                 gone: Callable[[], tuple[int, Container[object]]] | None = None) -> AsyncIterator[list[Event]]:
    """Batches of events as they arrive (one batch per readable wakeup), until cancelled.

    `known()` gives the signatures of routes already exactly as wanted: events re-announcing them
    (our own bulk adds) are dropped undecoded.
    """
    while True:
        await trio.lowlevel.wait_readable(sock)
        batch: list[Event] = []
        while True:
            try:
                data = sock.recv(netlink.RECV_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                event(log, "netlink_events_lost", logging.WARNING, reason="receive buffer overrun")
                batch.append(EventsLost())
                continue
            batch.extend(decode_events(data, known() if known is not None else None, gone() if gone is not None else None))
            if len(batch) >= 4096:
                break
        if batch:
            yield batch
