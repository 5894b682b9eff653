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
  after a wait reported that descriptor readable (a connection, or a signal, may be there), or
  while a socket it skipped still holds an accepted connection the loop has not taken, and
  otherwise tells the loop there is no connection, as its failed accept() did;
- a listening socket that woke the loop is left out (EPOLLONESHOT) until `Listener.incoming()`
  accepts a connection, or for one idle wait (`IDLE_WAIT_MS`): it stays readable while a
  connection waits, and when incoming() cannot take it (EMFILE, ENOBUFS) every poll would return
  at once and the loop spin;
- with no API command queued the wait is `IDLE_WAIT_MS` (ExaBGP: 10 ms; timers and connection steps
  may come up to 40 ms later); with API work queued it stays 10 ms, and a turn that asked for the
  next one at once still does not wait;
- once every session is Established and nothing but their timers is left to do (`timer_deadlines`:
  no peer connecting, exchanging OPENs, backing off, torn down or reconfigured, no operational,
  refresh or EOR message queued, no KEEPALIVE half written, no rate limit, no listener left out),
  the wait lasts until the earliest timer: a session's next KEEPALIVE or its hold timer's expiry, at
  most `SETTLED_WAIT_MS`; everything else that gives ExaBGP work (a peer's bytes, an API command or
  reload, a connection, a signal) is a descriptor in the poll set and ends the wait;
- where its descriptors cannot be made (EMFILE), the wait is ExaBGP's own, tried again after
  `RETRY_S`.

A fixed 250 ms wait while every session was Established was tried before and taken out: a node
joining a 20-node mesh took about a second longer (bench.mesh --k 20: join 1.95 / 2.11 s before,
3.03 / 3.12 s with it), the cause not found. It counted a speaker with no neighbours as settled,
but that alone is not it: counting it so here did not slow the join (1.18 / 1.37 s against 1.66 /
1.48 s without, alternating). It also had no timer bound, kept the long wait while a peer was
reconfigured or had messages queued, and came before the listener gate above.

Follows ExaBGP 5.0.15's reactor/loop.py (`Reactor.run`,
`_wait_for_io`) and reactor/listener.py (`Listener.incoming`, which accepts at each turn, once a
socket; the gate keeps its `serving` check and what it accepts).

Must import under Python 3.9 (PyPy's ExaBGP runs it).
"""
from __future__ import annotations

import os
import select
import signal
import time
from typing import Any, Iterator

IDLE_WAIT_MS = 50  # how long an idle reactor waits for a socket (ExaBGP: 10 ms)
SETTLED_WAIT_MS = 1000  # the most an idle reactor waits with every session Established and no timer due sooner
RETRY_S = 1.0  # after the wake-up descriptors could not be made, ExaBGP's own wait this long
_LISTENING = select.EPOLLIN | select.EPOLLONESHOT


class Wakeups:
    """One descriptor for the reactor's poll set that is readable while a listening socket has a
    connection to accept or a signal arrived: an epoll of the listening sockets and of the read end
    of the signal wake-up pipe (the signal pipe level-triggered, each
    listening socket EPOLLONESHOT: see `woken` and `rearm`)."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        try:
            self._signal_read, write = os.pipe()
        except OSError:
            self.epoll.close()
            raise
        self.fd = self.epoll.fileno()
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
        # descriptor readable (a listening socket then out of the poll set until `rearm`)
        self.maybe_incoming = False  # the first wait sees a connection already there
        # fd -> (when it woke the loop, the listener's accept count then): out of the poll set
        self.unarmed: "dict[int, tuple[float, int]]" = {}

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
                self.unarmed.pop(fd, None)
        for fd, sock in wanted.items():
            if fd not in self.listening:
                try:
                    self.epoll.register(fd, _LISTENING)
                except OSError:
                    continue
                self.listening[fd] = sock

    def woken(self, accepts: int, now: float) -> None:
        """Our descriptor was readable: the signal numbers read, and each listening socket that
        fired left out of the poll set (EPOLLONESHOT disarmed it) from `now`, at `accepts`."""
        for fd, _ in self.epoll.poll(0):
            if fd in self.listening:
                self.unarmed[fd] = (now, accepts)
            else:
                self.clear_signals()

    def rearm(self, accepts: int, now: float) -> None:
        """Put back in the poll set the listening sockets left out, once the listener accepted a
        connection since (`accepts` moved: the next waiting one may wake the loop) or one idle wait
        has passed (a connection it could not take is tried again then, not at every turn)."""
        for fd, (since, count) in list(self.unarmed.items()):
            if accepts != count or now - since >= IDLE_WAIT_MS / 1000:
                del self.unarmed[fd]
                try:
                    self.epoll.modify(fd, _LISTENING)
                except OSError:  # closed since: follow() drops it
                    pass

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


def settled_wait_ms(now: float, deadlines: "list[float] | None") -> int:
    """The idle wait (ms) when every session is Established: until the earliest of their timers'
    `deadlines` (time.time() seconds), at most SETTLED_WAIT_MS; None (a peer whose next step is
    found by polling, or no peer at all) keeps IDLE_WAIT_MS."""
    if deadlines is None:
        return IDLE_WAIT_MS
    soonest = min(deadlines, default=now + SETTLED_WAIT_MS / 1000)
    return max(1, min(SETTLED_WAIT_MS, int((soonest - now) * 1000) + 1))


def timer_deadlines(peers: "Any", established: "Any") -> "list[float] | None":
    """When the loop must next run each of `peers` (ExaBGP's Peer objects) for its timers: its next
    KEEPALIVE (SendTimer.need_ka: the whole second last_sent + keepalive) and its hold timer's expiry
    (ReceiveTimer.check_ka_timer: a second after last_read + holdtime). None when any peer's next step
    is not on a timer but on a turn of the loop (connecting, OPEN/KEEPALIVE exchange, back-off,
    teardown, a reconfiguration, queued operational/refresh/EOR messages, a rate limit), or when
    there is no peer (a speaker with none yet is about to be given some)."""
    if not peers:
        return None
    deadlines = []
    for peer in peers:
        neighbor = peer.neighbor
        keepalive = peer.__dict__.get("_calico_ka")
        if (peer.fsm != established or keepalive is None or peer._teardown is not None or peer._neighbor is not None
                or neighbor.messages or neighbor.refresh or neighbor.eor or neighbor["rate-limit"]):
            return None
        frame = keepalive._generator.gi_frame  # a KEEPALIVE part written goes on at the next turn
        if frame is None or frame.f_locals.get("generator") is not None:
            return None
        sending = keepalive.send_timer
        if sending.keepalive:
            deadlines.append(sending.last_sent + sending.keepalive)
        receiving = peer.recv_timer
        if receiving is not None and receiving.holdtime:
            deadlines.append(receiving.last_read + int(receiving.holdtime) + 1)
    return deadlines


def patch() -> None:
    from exabgp.bgp.fsm import FSM
    from exabgp.reactor.keepalive import KA
    from exabgp.reactor.listener import Listener
    from exabgp.reactor.loop import Reactor

    ka_init = KA.__init__

    def _ka_init(self: KA, session: Any, proto: Any) -> None:  # type: ignore[no-untyped-def]
        ka_init(self, session, proto)
        proto.peer._calico_ka = self  # the session's keepalive timer, for the idle wait's deadline

    KA.__init__ = _ka_init  # type: ignore[method-assign]

    wait = Reactor._wait_for_io
    incoming = Listener.incoming

    def _incoming(self: Listener) -> bool:  # type: ignore[no-untyped-def]
        wake = getattr(self._reactor, "_calico_wakeups", None)
        if wake is None:  # before the loop's first wait, or without its descriptors: as ExaBGP does
            accepted = incoming(self)
        elif not wake.maybe_incoming and not self._accepted:
            return False
        else:
            accepted = incoming(self)
            # a socket holding a connection the loop has not taken yet was skipped: try again next turn
            wake.maybe_incoming = not accepted and bool(self._accepted)
        if accepted:  # what lets a listening socket back in the poll set at once (Wakeups.rearm)
            self._calico_accepts = getattr(self, "_calico_accepts", 0) + 1
        return accepted

    def wakeups(reactor: Reactor) -> "Wakeups | None":
        """The reactor's Wakeups, made at its first wait; None while they cannot be made."""
        wake = reactor.__dict__.get("_calico_wakeups")
        if wake is not None:
            return wake
        failed = reactor.__dict__.get("_calico_wakeups_failed")
        if failed is not None and time.monotonic() - failed < RETRY_S:
            return None
        try:
            wake = Wakeups()
        except OSError:  # out of descriptors: outside ExaBGP's own try, it would end ExaBGP's loop
            reactor._calico_wakeups_failed = time.monotonic()
            return None
        reactor._poller.register(wake.fd, select.POLLIN)
        reactor._calico_wakeups = wake
        return wake

    def _wait_for_io(self: Reactor, sleeptime: int) -> Iterator[int]:  # type: ignore[no-untyped-def]
        wake = wakeups(self)
        if wake is None:
            yield from wait(self, sleeptime)
            return
        listener = getattr(self, "listener", None)
        accepts = getattr(listener, "_calico_accepts", 0)
        wake.follow(list(listener._sockets) if listener is not None else [])
        if wake.unarmed:
            wake.rearm(accepts, time.monotonic())
        sleeptime = wait_ms(sleeptime, self.asynchronous.ready())
        if sleeptime == IDLE_WAIT_MS and not wake.unarmed:  # idle: sleep until the next timer if only timers are left
            sleeptime = settled_wait_ms(time.time(), timer_deadlines(getattr(self, "_peers", {}).values(), FSM.ESTABLISHED))
        for fd in wait(self, sleeptime):
            if fd == wake.fd:
                wake.maybe_incoming = True
                wake.woken(accepts, time.monotonic())  # a connection is accepted by the loop's next turn
                continue
            yield fd

    Reactor._wait_for_io = _wait_for_io  # type: ignore[method-assign]
    Listener.incoming = _incoming  # type: ignore[method-assign]
