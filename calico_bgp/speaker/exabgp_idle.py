"""How long ExaBGP's reactor waits for its sockets when nothing asked for another turn (patched into
ExaBGP by exabgp_run, as its other mends are; see the README's "ExaBGP patches").

ExaBGP's loop (reactor/loop.py `Reactor.run`) waits at most 10 ms (reactor speed 1.0 / 100): 100
turns a second of every peer's state machine and the API even with nothing to do. The sockets of
running sessions and the API pipes are in its poll set and end the wait as soon as they are
readable; its listening sockets and its signals are not: a connection being accepted, and a
SIGTERM, waited for the timeout. Here:

- the listening sockets and a signal wake-up pipe (`signal.set_wakeup_fd`) are in the poll set too,
  behind one epoll descriptor of our own (so the loop, which maps every readable descriptor to a
  peer, never sees them), and a connection is accepted, a signal acted on, at once;
- the loop's `Listener.incoming` calls accept() on every listening socket at each turn (an
  EAGAIN and its exception, every turn, under churn several hundred a second); it now does so only
  after a wait reported that descriptor readable (a connection, or a signal, may be there), and
  until then tells the loop there is no connection, as its failed accept() did;
- with no API command queued the wait is `IDLE_WAIT_MS` (ExaBGP: 10 ms; timers and connection steps
  may come up to 40 ms later); with API work queued it stays 10 ms, and a turn that asked for the
  next one at once still does not wait.

A longer wait while every session was Established (250 ms) cut an idle ExaBGP's CPU about 4x more,
and was taken out: a node joining a 20-node mesh then took about a second longer to its first
session and to the join (bench.mesh --k 20, alternating, shared machine: join 1.95 / 2.11 s before,
3.03 / 3.12 s with it, 2.67 s with it only after 2 s without API commands or connections, 1.58 s
with this module as it is), the mechanism not found.

Follows ExaBGP 5.0.15's reactor/loop.py (`Reactor.run`,
`_wait_for_io`) and reactor/listener.py (`Listener.incoming`, which accepts at each turn; the gate keeps its
`serving` check and what it accepts).

Must import under Python 3.9 (PyPy's ExaBGP runs it).
"""
from __future__ import annotations

import os
import select
import signal
from typing import Any, Iterator

IDLE_WAIT_MS = 50  # how long an idle reactor waits for a socket (ExaBGP: 10 ms)


class Wakeups:
    """One descriptor for the reactor's poll set that is readable while a listening socket has a
    connection to accept or a signal arrived: an epoll of the listening sockets and of the read end
    of the signal wake-up pipe (level-triggered: readable until the connection is accepted)."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.fd = self.epoll.fileno()
        self._signal_read, write = os.pipe()
        for end in (self._signal_read, write):
            os.set_blocking(end, False)
        try:
            signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except ValueError:  # not the main thread: signals then wait for the timeout, as before
            os.close(write)
        else:
            self.epoll.register(self._signal_read, select.EPOLLIN)
        self.listening: "dict[int, object]" = {}  # fd -> the listening socket registered under it
        # whether the listening sockets may have a connection to accept: set when a wait saw this
        # descriptor readable (level-triggered, so an unaccepted connection sets it again each wait)
        self.maybe_incoming = False  # the first wait sees a connection already there (level-triggered)

    def follow(self, sockets: "list[Any]") -> None:
        """Make the listening sockets registered those of `sockets` (ExaBGP opens and closes them
        on reloads). A closed socket leaves the epoll by itself; its fd may already name another
        file, which is never removed by mistake (the epoll knows the fd with its file)."""
        if len(sockets) == len(self.listening) and all(self.listening.get(s.fileno()) is s for s in sockets):
            return
        wanted = {s.fileno(): s for s in sockets if s.fileno() != -1}
        for fd, sock in list(self.listening.items()):
            if wanted.get(fd) is not sock:
                try:
                    self.epoll.unregister(fd)
                except OSError:
                    pass
                del self.listening[fd]
        for fd, sock in wanted.items():
            if fd not in self.listening:
                try:
                    self.epoll.register(fd, select.EPOLLIN)
                except OSError:
                    continue
                self.listening[fd] = sock

    def clear_signals(self) -> None:
        """Read the signal numbers the wake-up pipe holds (their handlers ran already)."""
        try:
            while os.read(self._signal_read, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass


def wait_ms(sleeptime: int, api_idle: bool) -> int:
    """The poll timeout for the loop's `sleeptime` (ms; 0: another turn at once): longer only when
    the loop would wait anyway and no API command is queued."""
    if not sleeptime or not api_idle:
        return sleeptime
    return max(sleeptime, IDLE_WAIT_MS)


def patch() -> None:
    from exabgp.reactor.loop import Reactor

    wait = Reactor._wait_for_io

    def _wait_for_io(self: Reactor, sleeptime: int) -> Iterator[int]:  # type: ignore[no-untyped-def]
        wake = self.__dict__.get("_calico_wakeups")
        if wake is None:
            wake = self._calico_wakeups = Wakeups()
            self._poller.register(wake.fd, select.POLLIN)
        listener = getattr(self, "listener", None)
        wake.follow(list(listener._sockets) if listener is not None else [])
        sleeptime = wait_ms(sleeptime, self.asynchronous.ready())
        for fd in wait(self, sleeptime):
            if fd == wake.fd:
                wake.maybe_incoming = True
                wake.clear_signals()  # a connection is accepted by the loop's next turn
                continue
            yield fd

    Reactor._wait_for_io = _wait_for_io  # type: ignore[method-assign]

    from exabgp.reactor.listener import Listener

    incoming = Listener.incoming

    def _incoming(self: Listener) -> bool:  # type: ignore[no-untyped-def]
        wake = getattr(self._reactor, "_calico_wakeups", None)
        if wake is not None:  # None before the loop's first wait: accept as ExaBGP does
            if not wake.maybe_incoming:
                return False
            wake.maybe_incoming = False
        return incoming(self)

    Listener.incoming = _incoming  # type: ignore[method-assign]
