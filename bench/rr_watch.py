"""What the reflection bench watches in its K client namespaces, at a cost that does not grow with
polling: each client's learned routes counted from route events (one thread, one select over the
K sockets, a header unpack per event), and each client's session asked over BIRD's control socket
(no birdc process per question). With K=200, exec'ing `ip` and `birdc` per client per poll took
seconds per round on 2 cores, from the same cores the reflector under test needs.
"""
from __future__ import annotations

import errno
import select
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Sequence

from dataplane import netlink
from dataplane import rtnl_codec as codec

_HEAD = struct.Struct("=IH10xBB").unpack_from  # nlmsghdr len, type; rtmsg family, dst_len
_ATTR = struct.Struct("=HH").unpack_from
RTA_DST = 1


def route_dsts(data: bytes, dst_len: int, lo: bytes, hi: bytes) -> list[tuple[int, bytes]]:
    """(message type, destination) of each IPv4 route message in a netlink datagram whose prefix is
    `dst_len` long and whose destination lies in [lo, hi]."""
    out = []
    off, n = 0, len(data)
    while off + 26 <= n:
        length, mtype, family, plen = _HEAD(data, off)
        if length < 16:
            break
        if mtype in (codec.RTM_NEWROUTE, codec.RTM_DELROUTE) and family == socket.AF_INET and plen == dst_len:
            a, end = off + 28, off + length
            while a + 4 <= end:
                alen, atype = _ATTR(data, a)
                if alen < 4:
                    break
                if atype == RTA_DST and alen == 8:
                    dst = data[a + 4:a + 8]
                    if lo <= dst <= hi:
                        out.append((mtype, dst))
                    break
                a += (alen + 3) & ~3
        off += (length + 3) & ~3
    return out


class RouteCounts:
    """Per namespace, the routes of one prefix length within a range present in its kernel, kept from
    route events; `done_at[i]` is when namespace i first held `want` of them."""

    def __init__(self, namespaces: Sequence[str], dst_len: int, lo: str, hi: str, want: int) -> None:
        self.dst_len, self.want = dst_len, want
        self.lo, self.hi = socket.inet_aton(lo), socket.inet_aton(hi)
        self.socks = [netlink.open_rtnl_socket(ns, groups=netlink.RTMGRP_IPV4_ROUTE, rcvbuf=8 << 20)
                      for ns in namespaces]
        for s in self.socks:
            s.setblocking(False)
        self.present: list[set[bytes]] = [set() for _ in namespaces]
        self.done_at: list[float | None] = [None] * len(namespaces)
        self.lost = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="route-counts", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        index = {s.fileno(): i for i, s in enumerate(self.socks)}
        poller = select.epoll()
        for s in self.socks:
            poller.register(s.fileno(), select.EPOLLIN)
        try:
            while not self._stop:
                for fd, _ in poller.poll(0.2):
                    i = index[fd]
                    self._read(i)
        finally:
            poller.close()

    def _read(self, i: int) -> None:
        sock, present = self.socks[i], self.present[i]
        while True:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.lost += 1  # counted: the figures are void if this is not 0
                    continue
                raise
            for mtype, dst in route_dsts(data, self.dst_len, self.lo, self.hi):
                if mtype == codec.RTM_NEWROUTE:
                    present.add(dst)
                else:
                    present.discard(dst)
            if self.done_at[i] is None and len(present) >= self.want:
                self.done_at[i] = time.monotonic()

    def done(self) -> int:
        return sum(1 for t in self.done_at if t is not None)

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=2)
        for s in self.socks:
            s.close()


def bird_ask(ctl: Path, command: str, timeout: float = 5.0) -> str:
    """One command over BIRD's control socket, the reply's text (codes stripped), as birdc prints it
    minus the greeting."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(ctl))
        f = s.makefile("rwb")
        f.readline()  # 0001 BIRD x.y ready.
        f.write(command.encode() + b"\n")
        f.flush()
        out = []
        while True:
            line = f.readline().decode(errors="replace").rstrip("\n")
            if not line:
                break
            if line[:4].isdigit() and len(line) >= 5:
                code, sep, text = line[:4], line[4], line[5:]
                out.append(text)
                if sep == " " and (code == "0000" or code[0] in "89" or code.startswith("00")):
                    break
            else:
                out.append(line[1:])
        return "\n".join(out)


def bird_established(ctl: Path, protocol: str) -> bool:
    try:
        text = bird_ask(ctl, f"show protocols {protocol}")
    except OSError:
        return False
    return any(line.split()[:1] == [protocol] and "Established" in line for line in text.splitlines())
