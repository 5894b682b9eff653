"""A minimal BGP session over a blocking socket, for tests: connect or accept (optionally inside a
network namespace), exchange OPEN and KEEPALIVE, send raw bytes, read what comes back, notice a
NOTIFICATION and a closed connection.

    with RawSpeaker.connect("198.18.0.1", ns=ns, source="198.18.0.50") as s:
        s.establish(asn=65099, router_id="198.18.0.50")
        s.send(message.update(...))
        note = s.wait_notification(timeout=5)       # None: the session stayed up

No FSM beyond that: the test decides every byte. Keepalives are answered only while reading (`read`,
`wait_notification`, `keep_alive`) once Established, which is enough for hold times of a few seconds and up.
"""
from __future__ import annotations

import ctypes
import os
import socket
import threading
import time
from typing import Callable, TypeVar

from tests.bgpwire import message as m

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


class SessionClosed(ConnectionError):
    """The peer closed the TCP connection (with or without a NOTIFICATION before)."""


def in_netns(ns: str | None, fn: Callable[[], T]) -> T:
    """Run `fn` in a thread switched into network namespace `ns` (setns(2) applies to the calling
    thread only), so the sockets it makes belong to that namespace and the caller's stays as it was."""
    if ns is None:
        return fn()
    out: list = []

    def target() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            out.append(("ok", fn()))
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            out.append(("err", exc))

    t = threading.Thread(target=target, name=f"netns-{ns}")
    t.start()
    t.join()
    kind, value = out[0]
    if kind == "err":
        raise value
    return value


class RawSpeaker:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""
        self._pending: list[m.Message] = []  # read but not yet handed out (expect stops at its match)
        self.received: list[m.Message] = []   # everything read, in order
        self.peer_open: m.OpenInfo | None = None
        self.notification: m.Notification | None = None
        self.closed = False
        self.established = False  # KEEPALIVEs are answered from then on, never before (OpenConfirm tests)

    # ------------------------------------------------------------ opening
    @classmethod
    def connect(cls, address: str, port: int = 179, *, ns: str | None = None, source: str | None = None,
                timeout: float = 10.0) -> "RawSpeaker":
        def make() -> socket.socket:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if source:
                s.bind((source, 0))
            s.settimeout(timeout)
            s.connect((address, port))
            return s

        return cls(in_netns(ns, make))

    @staticmethod
    def listener(address: str, port: int = 179, *, ns: str | None = None) -> socket.socket:
        """A listening socket (in `ns`); `accept` takes sessions from it."""
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
            s.listen(8)
            return s

        return in_netns(ns, make)

    @classmethod
    def accept(cls, listener: socket.socket, timeout: float = 30.0) -> "RawSpeaker":
        listener.settimeout(timeout)
        conn, _ = listener.accept()
        return cls(conn)

    def establish(self, asn: int, router_id: str, hold_time: int = 90, capabilities=None,
                  timeout: float = 10.0) -> m.OpenInfo:
        """Send our OPEN, read theirs, KEEPALIVE both ways: the session is Established on return."""
        self.send(m.open_message(asn, router_id, hold_time, capabilities))
        self.peer_open = self.read_open(timeout)
        self.send(m.keepalive())
        self.expect(m.KEEPALIVE, timeout)
        self.established = True
        return self.peer_open

    def read_open(self, timeout: float = 10.0) -> m.OpenInfo:
        return m.parse_open(self.expect(m.OPEN, timeout).body)

    # ------------------------------------------------------------ I/O
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float) -> list[m.Message]:
        """Messages that arrive within `timeout` (at least one unless the time runs out); answers
        KEEPALIVEs; records a NOTIFICATION; raises SessionClosed once the peer closed and nothing is left."""
        deadline = time.monotonic() + timeout
        got, self._pending = self._pending, []
        while not got:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                got, self._buffer = m.split(self._buffer)
                self._note(got)
                if not got:
                    raise SessionClosed(f"peer closed the connection (notification: {self.notification})")
                break
            got, self._buffer = m.split(self._buffer + chunk)
            self._note(got)
        return got

    def _note(self, got: list[m.Message]) -> None:
        self.received += got
        for msg in got:
            if msg.type == m.NOTIFICATION:
                self.notification = m.parse_notification(msg.body)
            elif msg.type == m.KEEPALIVE and self.established and not self.closed:
                try:
                    self.send(m.keepalive())
                except OSError:
                    pass

    def expect(self, kind: int, timeout: float = 10.0) -> m.Message:
        """The next message of type `kind`, skipping KEEPALIVEs; a NOTIFICATION instead raises."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.read(deadline - time.monotonic())
            for i, msg in enumerate(got):
                if msg.type == kind:
                    self._pending = got[i + 1:]
                    return msg
                if msg.type == m.NOTIFICATION:
                    raise SessionClosed(f"NOTIFICATION {m.parse_notification(msg.body)} while waiting for type {kind}")
        raise TimeoutError(f"no message of type {kind} within {timeout}s")

    def wait_notification(self, timeout: float) -> m.Notification | None:
        """The NOTIFICATION the peer sends within `timeout`, None if none came (the connection may
        still have been closed: see `closed`)."""
        deadline = time.monotonic() + timeout
        while self.notification is None and not self.closed and time.monotonic() < deadline:
            try:
                self.read(deadline - time.monotonic())
            except SessionClosed:
                break
        return self.notification

    def wait_closed(self, timeout: float) -> bool:
        """Whether the peer closed the connection within `timeout`."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            try:
                self.read(deadline - time.monotonic())
            except SessionClosed:
                break
        return self.closed

    def keep_alive(self, seconds: float) -> None:
        """Stay in the session for `seconds`, sending a KEEPALIVE every second."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.closed:
            self.send(m.keepalive())
            try:
                self.read(min(1.0, max(0.0, end - time.monotonic())))
            except SessionClosed:
                return

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self.closed = True

    def __enter__(self) -> "RawSpeaker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
