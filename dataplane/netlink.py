"""NETLINK_ROUTE sockets owned by trio: opening one (in a named netns), bulk requests, dumps.

Requests go out in chunks: many messages in one sendmsg, which the kernel processes in order, each
failure answered by its own NLMSG_ERROR matched back by sequence number. Only the last message of a
chunk asks for an ack: errors are always answered, so that ack is the barrier for the whole chunk.
A large batch runs in a worker thread, so the kernel's work overlaps the event loop's; a small one
(at most INLINE_MAX requests: steady churn, a few hundred routes a batch) is sent from the loop's
thread, as the thread hop (a worker woken, the GIL handed over and back) costs more than the
kernel's part of it.

Only RequestChannel needs trio, and it imports trio itself: the blocking half (sockets in a
namespace, `exchange`, `dump`) serves a process exec'd once per container, where importing trio
would cost more than the work.
"""
from __future__ import annotations

import ctypes
import errno as errno_mod
import logging
import os
import select
import socket
import struct
import threading
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple, TypeVar


from dataplane import rtnl_codec as codec

if TYPE_CHECKING:
    import trio

log = logging.getLogger(__name__)
T = TypeVar("T")

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
CLONE_NEWNET = 0x40000000

RTMGRP_LINK = 0x1
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400

NETNS_DIR = "/run/netns"
RECV_SIZE = 1 << 16
DEFAULT_RCVBUF = 32 << 20
DEFAULT_WINDOW = 1024
ACK_TIMEOUT_S = 10.0
INLINE_MAX = 256  # requests a batch sent from the event loop's thread at most (more: a worker thread)


class NetlinkError(Exception):
    """The netlink conversation itself failed (not one route: see RequestFailure)."""


class NamespaceError(NetlinkError):
    """The named network namespace cannot be entered."""


class DumpInterrupted(NetlinkError):
    """The kernel's table changed during a dump (NLM_F_DUMP_INTR); dump again."""


class RequestFailure(NamedTuple):
    """The kernel refused request `index` of a batch: errno and its reason (strerror + extended ack)."""

    index: int
    errno: int
    reason: str


_DONE_ERRNO = struct.Struct("=i")  # NLMSG_DONE's payload: 0, or the negative errno that ended the dump


def describe_errno(err: int, extack: str = "") -> str:
    text = f"{errno_mod.errorcode.get(err, str(err))} {os.strerror(err)}"
    return f"{text}: {extack}" if extack else text


def _make_socket(groups: int, rcvbuf: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20)
        except PermissionError:  # not root: the sysctl caps apply
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
            try:
                sock.setsockopt(SOL_NETLINK, opt, 1)
            except OSError:  # an older kernel: fewer details, filtering done by us
                pass
        sock.bind((0, groups))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NamespaceError(f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def netns_path(netns: str) -> str:
    """A namespace given by name (/run/netns/<name>) or by path (/proc/<pid>/ns/net, a bind mount)."""
    return netns if netns.startswith("/") else os.path.join(NETNS_DIR, netns)


def run_in_netns(netns: str, work: Callable[[], T]) -> T:
    """`work()` in a short-lived thread that entered `netns` (a name or a path) and then ends: no
    thread of ours (nor trio's thread cache) is left in another namespace. What it raises is raised
    here; an OSError entering the namespace is a NamespaceError."""
    path = netns_path(netns)
    result: list[object] = []

    def run() -> None:
        try:
            _setns(path)
        except BaseException as exc:  # handed to the caller's thread
            result.append(NamespaceError(f"netns {netns}: {exc}") if isinstance(exc, OSError) else exc)
            return
        try:
            result.append((work(),))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    out = result[0]
    if isinstance(out, BaseException):
        raise out
    return out[0]  # type: ignore[index]


def open_rtnl_socket(netns: str | None = None, groups: int = 0, rcvbuf: int = DEFAULT_RCVBUF) -> socket.socket:
    """A non-blocking NETLINK_ROUTE socket; with `netns`, created inside that namespace (a name under
    /run/netns or a path). A socket keeps the namespace it was made in."""
    if netns is None:
        return _make_socket(groups, rcvbuf)
    try:
        return run_in_netns(netns, lambda: _make_socket(groups, rcvbuf))
    except OSError as exc:
        if isinstance(exc, NamespaceError):
            raise
        raise NamespaceError(f"netns {netns}: {exc}") from exc


def _wait_readable(sock: socket.socket, timeout: float) -> bool:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _recv(sock: socket.socket, timeout_message: str) -> bytes:
    """Blocking: the next datagram on a non-blocking netlink socket, waiting up to ACK_TIMEOUT_S for
    one (NetlinkError(timeout_message) after that); an overrun of the receive buffer (ENOBUFS) is a
    NetlinkError too, since answers were lost."""
    while True:
        try:
            return sock.recv(RECV_SIZE)
        except BlockingIOError:
            if not _wait_readable(sock, ACK_TIMEOUT_S):
                raise NetlinkError(timeout_message) from None
        except OSError as exc:
            if exc.errno == errno_mod.ENOBUFS:
                raise NetlinkError("netlink receive buffer overrun while reading answers") from exc
            raise


class Held:
    """`async with Held(lock)`: a trio.Lock taken without a trip through the scheduler when it is free,
    and waited for as `Lock.acquire` does when it is not; a cancelled task still stops here
    (`checkpoint_if_cancelled`). trio's own `async with lock` always yields once: under churn two of
    the kernel writer's four turns a tick were locks nobody else held, each a cold turn of the loop."""

    __slots__ = ("lock",)

    def __init__(self, lock: "trio.Lock") -> None:
        self.lock = lock

    async def __aenter__(self) -> None:
        import trio

        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.lock.acquire_nowait()
        except trio.WouldBlock:
            await self.lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.lock.release()


class RequestChannel:
    """Bulk RTM_NEWROUTE/RTM_DELROUTE on one socket; one batch at a time."""

    def __init__(self, sock: socket.socket, window: int = DEFAULT_WINDOW) -> None:
        import trio

        self._sock = sock
        self._window = max(1, window)
        self._seq = 1
        self._lock = trio.Lock()

    def _reserve(self, count: int) -> int:
        if self._seq + count >= 0x7FFFFFFF:
            self._seq = 1
        base = self._seq
        self._seq += count
        return base

    async def transact(
        self,
        count: int,
        encode: Callable[[int, int], bytes],
        progress: Callable[[int], None] | None = None,
    ) -> list[RequestFailure]:
        """Send requests 0..count-1 (`encode(i, seq)` -> message without NLM_F_ACK); failures by index.

        A batch of more than INLINE_MAX requests runs in one worker thread: encoding a chunk, then the
        sendmsg in which the kernel applies it, chunk after chunk. No round trip through the event
        loop per chunk, so a busy loop (100k prefixes being parsed) does not slow the kernel writes
        down, and the kernel's part runs beside the loop's Python (the GIL is released in
        sendmsg/recv). `encode` and `progress` are called in that thread: they must only read values
        nothing else changes. A smaller batch runs the same steps in the loop's thread; either way the
        batch is not cancelled half way.
        """
        if count <= 0:
            return []
        import trio

        async with Held(self._lock):
            base = self._reserve(count)
            if count <= INLINE_MAX:
                # like the worker thread's batch, not cancelled half way (bounded by ACK_TIMEOUT_S)
                with trio.CancelScope(shield=True):
                    return await self._run_inline(count, encode, base, progress)
            return await trio.to_thread.run_sync(self._run, count, encode, base, progress)

    async def _run_inline(self, count: int, encode: Callable[[int, int], bytes], base: int,
                          progress: Callable[[int], None] | None) -> list[RequestFailure]:
        """`_run` in the loop's thread. The kernel applies a chunk inside the sendmsg and queues its
        answers before returning, so the reads normally find them at once; else the loop waits."""
        import trio

        failures: list[RequestFailure] = []
        window = self._window
        sock = self._sock
        for start in range(0, count, window):
            stop = min(count, start + window)
            parts = [encode(i, base + i) for i in range(start, stop)]
            parts[-1] = codec.with_ack(parts[-1])
            data = b"".join(parts)
            while True:
                try:
                    sent = sock.send(data)
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
            if sent != len(data):
                raise NetlinkError(f"short netlink send {sent}/{len(data)}")
            first_seq, last_seq = base + start, base + stop - 1
            errors: list[tuple[int, int, str]] = []
            while True:
                try:
                    got = sock.recv(RECV_SIZE)
                except BlockingIOError:
                    with trio.move_on_after(ACK_TIMEOUT_S) as waited:
                        await trio.lowlevel.wait_readable(sock)
                    if waited.cancelled_caught:
                        raise NetlinkError(f"no ack for seq {last_seq} within {ACK_TIMEOUT_S}s") from None
                    continue
                except OSError as exc:
                    if exc.errno == errno_mod.ENOBUFS:
                        raise NetlinkError("netlink receive buffer overrun while reading acks") from exc
                    raise
                if _read_acks(got, first_seq, last_seq, errors):
                    break
            failures.extend(RequestFailure(seq - base, err, describe_errno(err, text)) for seq, err, text in errors)
            if progress is not None:
                progress(stop)
        return failures

    def _run(self, count: int, encode: Callable[[int, int], bytes], base: int,
             progress: Callable[[int], None] | None) -> list[RequestFailure]:
        failures: list[RequestFailure] = []
        window = self._window
        for start in range(0, count, window):
            stop = min(count, start + window)
            parts = [encode(i, base + i) for i in range(start, stop)]
            parts[-1] = codec.with_ack(parts[-1])
            got = exchange(self._sock, b"".join(parts), base + start, base + stop - 1)
            failures.extend(RequestFailure(seq - base, err, describe_errno(err, text)) for seq, err, text in got)
            if progress is not None:
                progress(stop)
        return failures


def exchange(sock: socket.socket, data: bytes, first_seq: int, last_seq: int) -> list[tuple[int, int, str]]:
    """Blocking: one sendmsg of requests first_seq..last_seq (the last asking for an ack), then their
    refusals (seq, errno, reason) read up to that barrier ack."""
    sent = sock.send(data)
    if sent != len(data):
        raise NetlinkError(f"short netlink send {sent}/{len(data)}")
    errors: list[tuple[int, int, str]] = []
    while True:
        data_view = _recv(sock, f"no ack for seq {last_seq} within {ACK_TIMEOUT_S}s")
        if _read_acks(data_view, first_seq, last_seq, errors):
            return errors


def _read_acks(data: bytes, first_seq: int, last_seq: int, errors: list[tuple[int, int, str]]) -> bool:
    """Collect the refusals of requests first_seq..last_seq in one datagram of answers into `errors`
    (seq, errno, reason); True once the barrier (last_seq's ack) is among them. Other answers (a
    batch given up on before) are skipped."""
    n = len(data)
    off = 0
    done = False
    while off + 16 <= n:
        length, mtype, _flags, seq, _pid = codec.HDR.unpack_from(data, off)
        if length < 16:
            break
        if mtype == codec.NLMSG_ERROR:
            req_seq, err, text = codec.decode_error(data, off, length)
            if first_seq <= req_seq <= last_seq:
                if err:
                    errors.append((req_seq, err, text))
                if req_seq == last_seq:
                    done = True
        off += (length + 3) & ~3
    return done


def dump(sock: socket.socket, request: bytes, seq: int) -> Iterator[bytes]:
    """Blocking (run it in a worker thread): send a dump request, yield each datagram of the answer.

    Every message in a yielded datagram belongs to this dump and is not DONE/ERROR; those end it here.
    """
    sock.send(request)
    interrupted = False
    unpack = codec.HDR.unpack_from
    while True:
        data = _recv(sock, f"dump seq {seq} timed out")
        n = len(data)
        # the last message of a datagram carries DONE or ERROR; the rest are data
        off = 0
        last = 0
        while off + 16 <= n:
            length = unpack(data, off)[0]
            if length < 16:
                break
            last = off
            off += (length + 3) & ~3
        length, mtype, flags, mseq, _pid = unpack(data, last)
        if mseq != seq:
            continue  # a stale answer from an abandoned request
        if flags & codec.NLM_F_DUMP_INTR:
            interrupted = True
        if mtype == codec.NLMSG_DONE:
            if last:
                yield data[:last]
            # a dump that failed part way ends in DONE carrying a negative errno, not in an ERROR:
            # read as success it would look like an empty (or truncated) table
            err = _DONE_ERRNO.unpack_from(data, last + 16)[0] if length >= 20 else 0
            if err < 0:
                raise NetlinkError(f"dump seq {seq}: {describe_errno(-err)}") from OSError(-err, os.strerror(-err))
            if interrupted:
                raise DumpInterrupted("table changed during the dump")
            return
        if mtype == codec.NLMSG_ERROR:
            _s, err, text = codec.decode_error(data, last, length)
            if err:
                raise NetlinkError(describe_errno(err, text)) from OSError(err, text)
            return
        yield data


def query(sock: socket.socket, request: bytes, seq: int) -> bytes | None:
    """Blocking: send one request that has one answer (a GET without NLM_F_DUMP, or a change asking
    for an ack) and return that answer's message; None for an ack. A refusal raises NetlinkError
    with the errno as its cause's."""
    sock.send(request)
    while True:
        data = _recv(sock, f"no answer to seq {seq} within {ACK_TIMEOUT_S}s")
        for off, length, mtype in iter_messages(data):
            if codec.HDR.unpack_from(data, off)[3] != seq:
                continue  # a stale answer from an abandoned request
            if mtype == codec.NLMSG_ERROR:
                _s, err, text = codec.decode_error(data, off, length)
                if err:
                    raise NetlinkError(describe_errno(err, text)) from OSError(err, text)
                return None
            return data[off : off + length]


def iter_messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(offset, length, type) of each netlink message in one datagram."""
    off = 0
    n = len(data)
    while off + 16 <= n:
        length, mtype, _flags, _seq, _pid = codec.HDR.unpack_from(data, off)
        if length < 16:
            return
        yield off, length, mtype
        off += (length + 3) & ~3
