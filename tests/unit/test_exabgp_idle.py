"""calico_bgp.speaker.exabgp_idle: how long ExaBGP's reactor waits for its sockets. The probes that
patch ExaBGP run in a child under both interpreters ExaBGP may run under (the agent's CPython and
bootstrap.sh's PyPy), as tests/unit/test_exabgp_run.py's do."""
from __future__ import annotations

import subprocess
import sys

import pytest

from types import SimpleNamespace

from calico_bgp.speaker.exabgp_idle import IDLE_WAIT_MS, SETTLED_WAIT_MS, settled_wait_ms, timer_deadlines, wait_ms
from calico_bgp.speaker.process import PYPY_VENV, pypy_ready


@pytest.fixture(params=["cpython", "pypy"])
def python(request) -> str:
    if request.param == "cpython":
        return sys.executable
    if not pypy_ready():
        pytest.skip(f"ExaBGP's PyPy venv {PYPY_VENV} is not built (./bootstrap.sh setup)")
    return str(PYPY_VENV / "bin" / "python")


def test_the_wait_is_longer_only_when_the_loop_would_wait_and_no_api_work_is_queued():
    assert wait_ms(10, api_idle=True) == IDLE_WAIT_MS
    assert wait_ms(10, api_idle=False) == 10
    assert wait_ms(0, api_idle=True) == 0
    assert 10 < IDLE_WAIT_MS <= 50  # no slower than before: a longer wait slowed a mesh join (module docstring)


def test_with_every_session_established_the_wait_lasts_until_the_next_timer():
    assert settled_wait_ms(100.0, [101.5, 100.25]) == 251  # the earliest deadline, rounded up to the ms
    assert settled_wait_ms(100.0, [130.0]) == SETTLED_WAIT_MS  # never longer than that
    assert settled_wait_ms(100.0, []) == SETTLED_WAIT_MS  # no timers (hold time 0)
    assert settled_wait_ms(100.0, [99.0]) == 1  # overdue: the next turn at once
    assert settled_wait_ms(100.0, None) == IDLE_WAIT_MS  # a step found by polling: the short wait


ESTABLISHED, CONNECT = 6, 3


def _keepalive(sending: bool = False) -> SimpleNamespace:
    """ExaBGP's KA as timer_deadlines reads it: its send timer and its generator, whose local
    `generator` is a KEEPALIVE being written."""
    def _keepalive_loop():  # type: ignore[no-untyped-def]
        generator = iter(()) if sending else None
        while True:
            yield generator

    loop = _keepalive_loop()
    next(loop)
    return SimpleNamespace(send_timer=SimpleNamespace(keepalive=30, last_sent=1000), _generator=loop)


def _peer(fsm: int = ESTABLISHED, holdtime: int = 90, **neighbor: object) -> SimpleNamespace:
    fields = {"rate-limit": neighbor.get("rate_limit", 0)}

    class Neighbor(dict):  # type: ignore[type-arg]
        messages = neighbor.get("messages", [])
        refresh = neighbor.get("refresh", [])
        eor = neighbor.get("eor", [])

    return SimpleNamespace(fsm=fsm, neighbor=Neighbor(fields), _teardown=None, _neighbor=None, _calico_ka=_keepalive(),
                           recv_timer=SimpleNamespace(holdtime=holdtime, last_read=1010))


def test_the_deadlines_are_each_sessions_next_keepalive_and_hold_expiry_or_none_when_a_step_is_polled():
    assert timer_deadlines([_peer(), _peer(holdtime=0)], ESTABLISHED) == [1030, 1101, 1030]
    assert timer_deadlines([], ESTABLISHED) is None  # no neighbour yet: one is about to be configured
    assert timer_deadlines([_peer(), _peer(fsm=CONNECT)], ESTABLISHED) is None  # connecting, OPEN, back-off
    for busy in ({"messages": [1]}, {"refresh": [1]}, {"eor": [1]}, {"rate_limit": 5}):
        assert timer_deadlines([_peer(**busy)], ESTABLISHED) is None, busy
    torn, reconfigured, new_session, writing = _peer(), _peer(), _peer(), _peer()
    torn._teardown, reconfigured._neighbor, new_session._calico_ka = 3, object(), None
    writing._calico_ka = _keepalive(sending=True)
    for peer in (torn, reconfigured, new_session, writing):
        assert timer_deadlines([peer], ESTABLISHED) is None


# a reactor as far as _wait_for_io reads it: its poller (a real poll, what it returned recorded), its
# API queue and its listener's sockets
_PROBE = """
import os, select, signal, socket
from calico_bgp.speaker import exabgp_run
from exabgp.reactor.asynchronous import ASYNC
from exabgp.reactor.loop import Reactor
exabgp_run.patch()
timeouts, returned = [], []
class Poller:
    def __init__(self):
        self.poll_ = select.poll()
    def register(self, fd, events):
        self.poll_.register(fd, events)
    def unregister(self, fd):
        self.poll_.unregister(fd)
    def poll(self, timeout):
        timeouts.append(timeout)
        got = self.poll_.poll(timeout)
        returned.append(sorted(fd for fd, _ in got))
        return got
from exabgp.reactor.listener import Listener as ExaBGPListener
class Listener(ExaBGPListener):  # ExaBGP's, its incoming() as the loop calls it (its reactor set below)
    def __init__(self):
        self._sockets, self._accepted, self.serving = {}, {}, True
reactor = Reactor.__new__(Reactor)
reactor._poller, reactor.asynchronous, reactor.listener = Poller(), ASYNC(), Listener()
if reactor.listener is not None: reactor.listener._reactor = reactor
def wait(ms):
    return list(reactor._wait_for_io(ms))
"""


def test_the_wait_follows_the_api_queue_and_a_connection_or_signal_ends_it_unseen_by_the_loop(python):
    """The poll timeout ExaBGP's loop passes (10 ms when nothing asked for another turn, 0 when
    something did) becomes IDLE_WAIT_MS, and stays as it was with an API command queued. A listening socket with a
    connection waiting, and a signal, make the poll return at once (the patch's own descriptor
    readable) and what the loop is given stays empty: it maps every descriptor to a peer. Once the
    connection is accepted the wait is the timeout again; a listener closed (a reload) leaves the
    poll set. One child per interpreter for both: each pays ExaBGP's imports."""
    code = _PROBE + (
        "listening = socket.socket(); listening.bind(('127.0.0.1', 0)); listening.listen(4); listening.setblocking(False)\n"
        "reactor.listener._sockets = {listening: None}\n"
        "client = socket.create_connection(listening.getsockname())\n"
        "print(wait(5000), len(returned[-1]))\n"
        "conn, _ = listening.accept()\n"
        "print(wait(1), len(returned[-1]))\n"
        "signal.signal(signal.SIGUSR2, lambda *a: None)\n"
        "os.kill(os.getpid(), signal.SIGUSR2)\n"
        "print(wait(5000), len(returned[-1]))\n"
        "print(wait(1), len(returned[-1]))\n"
        "del timeouts[:]\n"
        "wait(10); wait(0)\n"
        "reactor.asynchronous._async.append(('service', iter(())))  # what schedule() queues\n"
        "wait(10)\n"
        "print(timeouts)\n"
        "listening.close(); reactor.listener._sockets = {}\n"
        "print(wait(0), len(returned[-1]), len(reactor._calico_wakeups.listening))\n")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout.split("\n")
    assert out[:4] == ["[] 1", "[] 0", "[] 1", "[] 0"]
    assert out[4] == f"[{IDLE_WAIT_MS}, 0, 10]"
    assert out[5] == "[] 0 0"


def test_the_listener_tries_accept_only_after_a_wait_saw_a_connection_or_signal(python):
    """ExaBGP's Listener.incoming called accept() on each listening socket at every turn of its
    loop; patched, it does so only after a wait reported the patch's descriptor readable (before
    the first wait it accepts as ExaBGP does), and what it accepts and returns is ExaBGP's: the
    connection is accepted on the turn after the wait that saw it, a second one waiting is accepted
    after the next wait (the descriptor stays readable), and a signal alone costs one accept()."""
    code = _PROBE.replace("reactor.listener = Poller(), ASYNC(), Listener()", "reactor.listener = Poller(), ASYNC(), None") + (
        "from exabgp.reactor.listener import Listener as ExaListener\n"
        "accepts = []\n"
        "class Counted(socket.socket):\n"
        "    def accept(self):\n"
        "        accepts.append(1)\n"
        "        return super().accept()\n"
        "listening = Counted(); listening.bind(('127.0.0.1', 0)); listening.listen(4); listening.setblocking(False)\n"
        "listener = reactor.listener = ExaListener(reactor); listener.serving = True; listener._sockets = {listening: None}\n"
        "print(listener.incoming(), len(accepts))\n"  # before any wait: ExaBGP's own accept (nothing there)
        "wait(0)\n"
        "print(listener.incoming(), listener.incoming(), len(accepts))\n"  # nothing seen: no accept at all
        "a = socket.create_connection(listening.getsockname()); b = socket.create_connection(listening.getsockname())\n"
        "print(listener.incoming(), len(accepts))\n"  # not seen by a wait yet
        "wait(5000)\n"
        "print(listener.incoming(), listener.incoming(), len(accepts))\n"  # accepted once, then gated again
        "listener._accepted.clear()\n"  # the loop's new_connections took it
        "wait(5000)\n"
        "print(listener.incoming(), len(accepts))\n"  # the second connection kept the descriptor readable
        "listener._accepted.clear(); wait(0)\n"
        "print(listener.incoming(), len(accepts))\n"
        "signal.signal(signal.SIGUSR2, lambda *a: None); os.kill(os.getpid(), signal.SIGUSR2); wait(5000)\n"
        "print(listener.incoming(), len(accepts))\n")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout.split("\n")
    assert out[:7] == ["False 1", "False False 1", "False 1", "True False 2", "True 3", "False 3", "False 4"]
def test_a_connection_that_cannot_be_accepted_does_not_make_the_loop_spin_and_an_accepted_one_rearms_at_once(python):
    """A listening socket stays readable while a connection waits; when ExaBGP's incoming() cannot
    take it (EMFILE, ENOBUFS: it tries once a turn and gives up), waking the loop each time would
    spin it (~60,000 turns in 0.5 s). A listener that woke the loop is left out of the poll set
    until incoming() accepts something or one idle wait has passed: ten waits without an accept
    take ~5 idle waits, not ~0. When incoming() does accept, the next connection waiting wakes the
    following wait at once."""
    code = _PROBE + (
        "import time\n"
        "listening = socket.socket(); listening.bind(('127.0.0.1', 0)); listening.listen(4); listening.setblocking(False)\n"
        "reactor.listener._sockets = {listening: None}\n"
        "clients = [socket.create_connection(listening.getsockname()) for _ in range(2)]\n"
        "start = time.monotonic()\n"
        "for _ in range(10): wait(10)\n"
        "print(round((time.monotonic() - start) * 1000))\n"
        "wait(10)\n"  # the listener armed again after an idle wait: a wake at once, unarmed again
        "print(reactor.listener.incoming(), len(reactor.listener._accepted))\n"
        "reactor.listener._accepted.clear()  # what new_connections() does with it\n"
        "start = time.monotonic()\n"
        "wait(5000)\n"
        "print(round((time.monotonic() - start) * 1000) < 1000, len(returned[-1]))\n")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout.split("\n")
    assert int(out[0]) >= 4 * IDLE_WAIT_MS
    assert out[1] == "True 1"
    assert out[2] == "True 1"


def test_the_wait_falls_back_to_exabgps_own_when_its_descriptors_cannot_be_made(python):
    """Out of descriptors (EMFILE) when the patch would make its epoll: the wait is ExaBGP's own
    (its timeout as given, the peers' descriptors yielded), the loop goes on, and the patch's
    descriptors are made once they can be."""
    code = _PROBE + (
        "import errno\n"
        "from calico_bgp.speaker import exabgp_idle\n"
        "real = select.epoll\n"
        "def refused(*a, **k): raise OSError(errno.EMFILE, 'Too many open files')\n"
        "select.epoll = refused\n"
        "peer_end, ours = socket.socketpair(); peer_end.send(b'x')\n"
        "reactor._poller.register(ours.fileno(), select.POLLIN)\n"
        "print(wait(10) == [ours.fileno()], timeouts[-1], '_calico_wakeups' in reactor.__dict__)\n"
        "select.epoll = real; exabgp_idle.RETRY_S = 0\n"
        "ours.recv(1)\n"
        "print(wait(10), timeouts[-1], reactor._calico_wakeups.fd > 0)\n")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout.split("\n")
    assert out[0] == "True 10 False"
    assert out[1] == f"[] {IDLE_WAIT_MS} True"


def test_a_connection_behind_one_the_loop_has_not_taken_is_accepted_without_waiting_for_the_listener(python):
    """ExaBGP's incoming() skips a listening socket that still holds an accepted connection its
    new_connections() has not taken. The listener that woke the loop is out of the poll set then, so
    the gate stays open: the turn after the loop takes the first connection accepts the second
    (and a burst of peers connecting at once is accepted turn by turn, not one per idle wait)."""
    code = _PROBE.replace("reactor.listener = Poller(), ASYNC(), Listener()", "reactor.listener = Poller(), ASYNC(), None") + (
        "from exabgp.reactor.listener import Listener as ExaListener\n"
        "listening = socket.socket(); listening.bind(('127.0.0.1', 0)); listening.listen(4); listening.setblocking(False)\n"
        "listener = reactor.listener = ExaListener(reactor); listener.serving = True; listener._sockets = {listening: None}\n"
        "a = socket.create_connection(listening.getsockname()); b = socket.create_connection(listening.getsockname())\n"
        "wait(5000)\n"
        "print(listener.incoming(), len(listener._accepted))\n"
        "wait(0)\n"  # the listener is back in the poll set (an accept), and wakes this wait: out again
        "print(listener.incoming(), len(listener._accepted))\n"  # skipped: the first is not taken yet
        "wait(0); listener._accepted.clear()\n"  # no wake-up from the listener now; the loop takes the first
        "print(listener.incoming(), len(listener._accepted))\n")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout.split("\n")
    assert out[:3] == ["True 1", "False 1", "True 1"]
