"""BfdEngine: the node's BFD-only BIRD, kept running while there are sessions to run.

- started when the first BfdSession is set, stopped when none are left; a changed set of sessions
  is written and applied with `configure` (BIRD keeps the sessions that did not change);
- restarted with back-off when it exits (a SIGKILL included); meanwhile `available` is False and
  the states are forgotten: BGP sessions then live on their hold timers, nothing else is done;
- state changes come from BIRD's log stream (the trace of bfd_session_update_state, see config.py),
  read the moment BIRD writes them; `show bfd sessions` is read every POLL seconds for the figures
  `status` shows (negotiated interval, detection time) and once at each start;
- `on_change(change, at)` hears every transition, with the unix time it was read; a session BIRD
  removes while Up and still wanted (its interface went down) is heard as Up -> Down.

BIRD runs in the agent's network namespace as its child: PR_SET_PDEATHSIG so it dies with the agent,
a pid file so a restarted agent kills the one a crashed agent left (speaker.process.kill_leftover).
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import trio

from calico_bgp.bfd import config
from calico_bgp.bfd.control import RECONFIGURED, BirdControl, BirdError
from calico_bgp.bfd.state import DOWN, UP, BfdChange, BfdParseError, BfdPeerState, parse_change, parse_removed, parse_sessions
from calico_bgp.routing.bfd import BfdSession
from calico_bgp.speaker.process import Backoff, kill_leftover
from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.bfd")
POLL = 2.0          # seconds between reads of `show bfd sessions` (figures for status, a missed change)
SOCKET_WAIT = 5.0   # seconds a started BIRD has to open its control socket
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: BIRD goes with the agent


class BfdEngine:
    def __init__(self, state_dir: Path, on_change: Callable[[BfdChange, float], None] | None = None,
                 backoff: Backoff | None = None, binary: str = "bird", wrapper: Sequence[str] = ()) -> None:
        self.dir = Path(state_dir)
        self.conf, self.ctl, self.pidfile = self.dir / "bird.conf", self.dir / "bird.ctl", self.dir / "bird.pid"
        self.on_change = on_change or (lambda change, at: None)
        self.backoff = backoff or Backoff(first=0.25, cap=10.0, healthy=30.0)
        self.binary = binary
        self.wrapper = list(wrapper)  # e.g. ["ip", "netns", "exec", NS] (a test's namespace; it execs BIRD)
        self.sessions: tuple[BfdSession, ...] = ()
        self.available = False
        self.unavailable_since: float | None = None  # unix time BIRD stopped answering (None: up or never needed)
        self.states: dict[str, BfdPeerState] = {}    # peer -> the last row read
        self.since: dict[str, float] = {}            # peer -> unix time of its last state change seen
        self.last: dict[str, str] = {}               # peer -> its state by the log (this run of BIRD)
        self.starts = 0
        self.pid: int | None = None
        self._changed = trio.Event()
        self._control: BirdControl | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ what the agent sets and reads
    def set_sessions(self, sessions: Iterable[BfdSession]) -> bool:
        """The sessions BIRD must run; True when they changed (applied by `run`, soon)."""
        new = tuple(sorted(set(sessions)))
        config.render(new)  # a BfdConfigError here, in the caller, not in the engine's loop
        if new == self.sessions:
            return False
        self.sessions = new
        self._changed.set()
        return True

    def state_of(self, peer: str) -> str:
        """The session's RFC 5880 state, "Unavailable" while BIRD is not answering, "" for no session."""
        if not any(s.peer == peer for s in self.sessions):
            return ""
        if not self.available:
            return "Unavailable"
        row = self.states.get(peer)
        return row.state if row else "Down"

    # ------------------------------------------------------------------ the loop
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        await trio.to_thread.run_sync(kill_leftover, self.pidfile, "bird")
        task_status.started()
        try:
            while True:
                if not self.sessions:
                    self._mark_unavailable(needed=False)
                    self._changed = trio.Event()
                    await self._changed.wait()
                    continue
                started = trio.current_time()
                code = await self._run_once()
                if code is None:  # stopped on purpose: no sessions left
                    continue
                delay = self.backoff.next(trio.current_time() - started)
                event(log, "bfd_engine_exited", logging.WARNING, pid=self.pid, code=code, restart_in=delay)
                await trio.sleep(delay)
        finally:
            with trio.CancelScope(shield=True):
                await self._stop()

    async def _run_once(self) -> int | None:
        """One run of BIRD: its exit code, or None when stopped because no session is left."""
        self.conf.write_text(config.render(self.sessions))
        applied = self.sessions
        self.ctl.unlink(missing_ok=True)
        try:
            proc = subprocess.Popen([*self.wrapper, self.binary, "-f", "-c", str(self.conf), "-s", str(self.ctl), "-P", str(self.pidfile)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    preexec_fn=_die_with_parent, close_fds=True, cwd=str(self.dir))
        except OSError as exc:
            event(log, "bfd_engine_start_failed", logging.ERROR, error=repr(exc))
            return -1
        self._proc, self.pid = proc, proc.pid
        self.starts += 1
        self.states, self.since, self.last = {}, {}, {}
        event(log, "bfd_engine_started", pid=proc.pid, sessions=len(applied))
        pidfd = os.pidfd_open(proc.pid)
        assert proc.stdout is not None
        out = trio.lowlevel.FdStream(os.dup(proc.stdout.fileno()))
        proc.stdout.close()
        stopped = False
        try:
            async with trio.open_nursery() as n:
                n.start_soon(self._pump, out)
                n.start_soon(self._serve, n.cancel_scope, applied)
                await trio.lowlevel.wait_readable(pidfd)
                n.cancel_scope.cancel()
        finally:
            os.close(pidfd)
            with trio.CancelScope(shield=True):
                await out.aclose()
                if self._control is not None:
                    await self._control.aclose()
                    self._control = None
        code = proc.wait()
        stopped = not self.sessions
        self._proc = None
        self.pidfile.unlink(missing_ok=True)
        self._mark_unavailable(needed=not stopped)
        return None if stopped else code

    async def _serve(self, scope: trio.CancelScope, applied: tuple[BfdSession, ...]) -> None:
        """Connect to the control socket, then poll it and apply new sessions until BIRD goes."""
        deadline = trio.current_time() + SOCKET_WAIT
        while self._control is None:
            try:
                self._control = await BirdControl.connect(self.ctl)
            except (OSError, BirdError, trio.TooSlowError):
                if trio.current_time() > deadline:
                    event(log, "bfd_engine_no_socket", logging.ERROR, pid=self.pid, action="restart")
                    self._signal(signal.SIGKILL)
                    return
                await trio.sleep(0.05)
        await self._poll()
        if self.available:
            event(log, "bfd_engine_ready", pid=self.pid, version=self._control.version)
        while True:
            with trio.move_on_after(POLL):
                await self._changed.wait()
            if self._changed.is_set():
                self._changed = trio.Event()
                if not self.sessions:
                    self._signal(signal.SIGTERM)
                    return
                if self.sessions != applied:
                    applied = await self._apply(self.sessions)
            await self._poll()

    async def _apply(self, sessions: tuple[BfdSession, ...]) -> tuple[BfdSession, ...]:
        self.conf.write_text(config.render(sessions))
        assert self._control is not None
        try:
            reply = await self._control.command("configure")
        except (BirdError, OSError, trio.TooSlowError) as exc:
            event(log, "bfd_configure_failed", logging.ERROR, error=str(exc), action="restart")
            self._signal(signal.SIGKILL)
            return sessions
        if reply.code not in RECONFIGURED:
            event(log, "bfd_configure_unexpected", logging.WARNING, code=reply.code, text=reply.text)
        event(log, "bfd_configured", sessions=len(sessions))
        return sessions

    async def _poll(self) -> None:
        assert self._control is not None
        try:
            reply = await self._control.command(f"show bfd sessions {config.PROTOCOL}")
            rows = parse_sessions(reply.text)
        except (BirdError, OSError, trio.TooSlowError, BfdParseError) as exc:
            if self.available:
                event(log, "bfd_engine_unanswered", logging.WARNING, error=str(exc))
            self._mark_unavailable(needed=True)
            return
        now = time.time()
        self.states = {r.peer: r for r in rows}
        for r in rows:
            self.since.setdefault(r.peer, now)
        if not self.available:
            self.available, self.unavailable_since = True, None

    async def _pump(self, out: trio.lowlevel.FdStream) -> None:
        buf = b""
        while True:
            data = await out.receive_some(65536)
            if not data:
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                self._line(raw.decode(errors="replace").rstrip())

    def _line(self, line: str) -> None:
        if not line:
            return
        change = parse_change(line)
        if change is None:
            event(log, "bird_log", logging.DEBUG, line=line)
            gone = parse_removed(line)
            wanted = gone is not None and any(s.peer == gone for s in self.sessions)
            if not wanted or self.last.pop(gone, None) != UP:
                return
            change = BfdChange(gone, UP, DOWN)  # its interface went down: the path is gone
        now = time.time()
        self.last[change.peer] = change.new
        self.since[change.peer] = now
        row = self.states.get(change.peer)
        if row is not None:
            self.states[change.peer] = BfdPeerState(row.peer, row.interface, change.new, row.since,
                                                    row.interval_ms, row.timeout_ms)
        event(log, "bfd_state", logging.WARNING if change.failed else logging.INFO,
              peer=change.peer, old=change.old, new=change.new)
        self.on_change(change, now)

    def _mark_unavailable(self, needed: bool) -> None:
        self.available = False
        self.states = {}
        if needed and self.unavailable_since is None:
            self.unavailable_since = time.time()
        elif not needed:
            self.unavailable_since = None

    def _signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, sig)

    async def _stop(self, grace: float = 2.0) -> None:
        proc = self._proc
        if proc is None:
            return
        self._signal(signal.SIGTERM)
        with trio.move_on_after(grace):
            while proc.poll() is None:
                await trio.sleep(0.02)
        self._signal(signal.SIGKILL)
        proc.wait()
        self.pidfile.unlink(missing_ok=True)
