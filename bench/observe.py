"""What the convergence bench watches while a receiver works: the node's main table, kept from route
events (KernelTable), the receiver going quiet between phases, and py-spy profiles of our processes.

The observer shares a 2-core machine with the receivers it times, so it is built to cost them little.
"""
from __future__ import annotations

import errno
import ipaddress
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import cpu_by_process, part_of, proc_tree, progress
from dataplane import netlink
from dataplane import rtnl_codec as codec

MAIN = 254


class KernelTable:
    """The announced /32s present in the node's main table, kept from route events by a thread.

    The observer must cost the receivers little CPU on a 2-core machine: a route event is matched
    with one struct unpack (no route object), and the waiting thread is woken once, when the count
    reaches its target, not per event (per-event wakeups made this process use ~0.13 s of CPU per
    10,000 routes, more than BIRD's whole job). The time returned is when the datagram that made
    the count right was read. A dump seeds the set (and re-seeds it if the kernel reports lost events).
    """

    def __init__(self, ns: str, first: int, last: int) -> None:
        self.ns = ns
        self.lo = ipaddress.IPv4Address(first).packed
        self.hi = ipaddress.IPv4Address(last).packed
        self.events = netlink.open_rtnl_socket(ns, groups=netlink.RTMGRP_IPV4_ROUTE, rcvbuf=64 << 20)
        self.events.setblocking(True)
        self.events.settimeout(0.2)
        self.dumps = netlink.open_rtnl_socket(ns)
        self.present: set[bytes] = set()  # written by the reader thread only (and before it starts)
        self.target = -1  # the count `wait` is waiting for
        self.reached_at: float | None = None
        self.first_at: float | None = None  # the first change since `mark()`
        self.resyncs = 0
        self.cond = threading.Condition()
        self._stop = False
        self.present = self.dump()
        self.thread = threading.Thread(target=self._run, name="kernel-events", daemon=True)
        self.thread.start()

    def _ours(self, route) -> bool:  # type: ignore[no-untyped-def]
        k = route.key
        return route.table == MAIN and k.dst_len == 32 and len(k.dst) == 4 and self.lo <= k.dst <= self.hi

    def dump(self) -> set[bytes]:
        out: set[bytes] = set()
        for _ in range(5):
            seq = int(time.monotonic() * 1000) & 0x3FFFFFFF
            try:
                for data in netlink.dump(self.dumps, codec.encode_route_dump(seq, codec.AF_INET, MAIN, 0), seq):
                    for off, length, mtype in netlink.iter_messages(data):
                        if mtype == codec.RTM_NEWROUTE:
                            r = codec.decode_route(data, off, length)
                            if r is not None and self._ours(r):
                                out.add(r.key.dst)
                return out
            except netlink.DumpInterrupted:
                out.clear()
        raise RuntimeError("route dump interrupted five times")

    def _run(self) -> None:
        sock, present, lo, hi = self.events, self.present, self.lo, self.hi
        head = struct.Struct("=IH10xBBB").unpack_from  # nlmsghdr len, type; rtmsg family, dst_len, src_len
        table_of = struct.Struct("=B").unpack_from
        attr = struct.Struct("=HH").unpack_from
        new, gone = codec.RTM_NEWROUTE, codec.RTM_DELROUTE
        while not self._stop:
            try:
                data = sock.recv(1 << 16)
            except (socket.timeout, BlockingIOError):
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # events were lost: read the table again
                    self.resyncs += 1
                    present = self.present = self.dump()
                    self._changed(time.monotonic())
                    continue
                raise
            off, n, changed = 0, len(data), False
            while off + 28 <= n:
                length, mtype, family, dst_len, src_len = head(data, off)
                if length < 16:
                    break
                if (mtype == new or mtype == gone) and family == socket.AF_INET and dst_len == 32 \
                        and table_of(data, off + 20)[0] == MAIN:
                    a, end = off + 28, off + length
                    while a + 4 <= end:  # the attributes: find RTA_DST
                        alen, atype = attr(data, a)
                        if alen < 4:
                            break
                        if atype == 1 and alen == 8:
                            dst = data[a + 4:a + 8]
                            if lo <= dst <= hi:
                                if mtype == new:
                                    present.add(dst)
                                else:
                                    present.discard(dst)
                                changed = True
                            break
                        a += (alen + 3) & ~3
                off += (length + 3) & ~3
            if changed:
                self._changed(time.monotonic())

    def _changed(self, now: float) -> None:
        if self.first_at is None:
            self.first_at = now
        if len(self.present) == self.target and self.reached_at is None:
            with self.cond:
                self.reached_at = now
                self.cond.notify_all()

    def mark(self) -> None:
        """Start a phase: `first_at` will hold the time of its first change."""
        self.first_at = None

    def count(self) -> int:
        return len(self.present)

    def wait(self, n: int, timeout: float, tick=None) -> float | None:  # type: ignore[no-untyped-def]
        """Until exactly n are present: the time of the change that made it so (None on timeout)."""
        deadline = time.monotonic() + timeout
        last_tick = time.monotonic()
        with self.cond:
            self.reached_at = None
            self.target = n
            if len(self.present) == n:
                return time.monotonic()
            while self.reached_at is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.target = -1
                    return None
                self.cond.wait(min(left, 1.0))
                if tick is not None and time.monotonic() - last_tick >= 2.0:
                    last_tick = time.monotonic()
                    tick(len(self.present))
            self.target = -1
            return self.reached_at

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=2)
        self.events.close()
        self.dumps.close()


def wait_quiet(pids: list[int], limit: float = 15.0) -> None:
    """Until the receiver is idle (under 5% CPU over 0.3 s): leftover work is not charged to the next phase."""
    deadline = time.monotonic() + limit
    before = sum(cpu_by_process(pids).values())
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = sum(cpu_by_process(pids).values())
        if now - before < 0.015:
            return
        before = now


class Profiler:
    """py-spy on every Python process of our node, one collapsed-stack file per process and phase."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.procs: list[subprocess.Popen[bytes]] = []
        self.exe = shutil.which("py-spy") or (str(Path(sys.executable).with_name("py-spy"))
                                             if Path(sys.executable).with_name("py-spy").exists() else None)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            if self.exe is None:
                progress("--profile: py-spy not found; not profiling")

    def start(self, pids: list[int], tag: str) -> None:
        if self.out is None or self.exe is None:
            return
        for root in pids:
            for p in proc_tree(root):
                part = part_of(p)
                if part in ("agent", "bridge", "exabgp"):
                    self.procs.append(subprocess.Popen(
                        [self.exe, "record", "--pid", str(p), "--rate", "250", "--format", "raw", "--nonblocking",
                         "--output", str(self.out / f"{tag}-{part}-{p}.txt")],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)  # py-spy attaches

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


class Prefixes:
    """The IPv4 prefixes one routing protocol has in a namespace's main table, read with one netlink
    dump on a socket kept open: polling 20 nodes this way costs the machine far less than an `ip`
    process per node and poll, on the 2 cores the daemons being timed share."""

    def __init__(self, ns: str, protocol: int) -> None:
        self.protocol = protocol
        self.sock = netlink.open_rtnl_socket(ns)

    def read(self) -> set[str]:
        for _ in range(5):
            seq = int(time.monotonic() * 1000) & 0x3FFFFFFF
            out: set[str] = set()
            try:
                request = codec.encode_route_dump(seq, codec.AF_INET, MAIN, self.protocol)
                for data in netlink.dump(self.sock, request, seq):
                    for off, length, mtype in netlink.iter_messages(data):
                        if mtype == codec.RTM_NEWROUTE:
                            r = codec.decode_route(data, off, length)
                            if r is not None and r.protocol == self.protocol and len(r.key.dst) == 4:
                                out.add(f"{ipaddress.IPv4Address(r.key.dst)}/{r.key.dst_len}")
                return out
            except netlink.DumpInterrupted:
                continue
        raise RuntimeError("route dump interrupted five times")

    def close(self) -> None:
        self.sock.close()
