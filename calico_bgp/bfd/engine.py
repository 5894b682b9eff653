"""BfdEngine: the node's BFD-only BIRD, kept running while there are sessions to run.

- started when the first BfdSession is set, stopped when none are left; a changed set of sessions
  is written and applied with `configure` (BIRD keeps the sessions that did not change);
- restarted with back-off when it exits (a SIGKILL included); meanwhile `available` is False and
  the states are forgotten: BGP sessions then live on their hold timers, nothing else is done;
- state changes come from BIRD's log (the trace of bfd_session_update_state, see config.py), which
  it appends to a file the agent reads when inotify says it grew; `show bfd sessions` is read every POLL seconds for the figures
  `status` shows (negotiated interval, detection time) and once at each start;
- `on_change(change, at)` hears every transition, with the unix time it was read; a session BIRD
  removes while Up and still wanted (its interface went down) is heard as Up -> Down.

BIRD runs in the agent's network namespace as its child, in its process group. It outlives an agent
that crashes (BFD tracks forwarding, and the kernel keeps the node's routes meanwhile): the next agent
adopts it by its pid file and `configure`s it, so its peers see no BFD failure; an agent that stops
stops it. A pid file that names anything else is cleaned up (speaker.process.kill_leftover).
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
# what talking to a BIRD that is going away raises
CONTROL_ERRORS = (OSError, BirdError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError)
LOG_POLL = 1.0      # seconds between reads of BIRD's log file when inotify says nothing
LOG_LIMIT = 1 << 20  # bytes of log file kept; then it starts again
SOCKET_WAIT = 5.0   # seconds a started BIRD has to open its control socket


_libc = ctypes.CDLL(None, use_errno=True)
IN_MODIFY = 0x00000002


def _inotify(path: Path) -> int:
    """A non-blocking inotify descriptor that turns readable when `path` is written to."""
    fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    if _libc.inotify_add_watch(fd, str(path).encode(), IN_MODIFY) < 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"inotify_add_watch {path}")
    return fd


class BfdEngine:
    def __init__(self, state_dir: Path, on_change: Callable[[BfdChange, float], None] | None = None,
                 backoff: Backoff | None = None, binary: str = "bird", wrapper: Sequence[str] = ()) -> None:
        self.dir = Path(state_dir)
        self.conf, self.ctl, self.pidfile = self.dir / "bird.conf", self.dir / "bird.ctl", self.dir / "bird.pid"
        self.logfile = self.dir / "bird.log"
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
        self.planned = False      # a plan was set: with none, a leftover BIRD is not ours to keep
        self.refused: set[BfdSession] = set()
        self.moving: set[str] = set()  # peers whose session is being re-made (another interface, timers)
        self.pid: int | None = None
        self._changed = trio.Event()
        self.news = trio.Event()  # set (and replaced) when availability, sessions or read states change
        self._control: BirdControl | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ what the agent sets and reads
    def set_sessions(self, sessions: Iterable[BfdSession]) -> bool:
        """The sessions BIRD must run; True when they changed (applied by `run`, soon). A session BIRD
        could not be told about (an interface name it cannot take) is left out alone, logged when the
        set of those changes; sessions that disagree on one interface's timers raise BfdConfigError
        here, in the caller, not in the engine's loop."""
        new_set, refused = set(), {}
        for s in set(sessions):
            try:
                config.check(s)
                new_set.add(s)
            except config.BfdConfigError as exc:
                refused[s] = str(exc)
        if set(refused) != self.refused:
            self.refused = set(refused)
            for reason in sorted(refused.values()):
                event(log, "bfd_session_refused", logging.WARNING, reason=reason)
        new = tuple(sorted(new_set))
        config.render(new)
        first = not self.planned
        self.planned = True
        if new == self.sessions:
            if first:
                self._changed.set()  # a plan exists now: a BIRD left running for none may go
            return False
        before = {s.peer: s.interface for s in self.sessions}
        # a peer moved to another interface: BIRD removes its neighbour and adds it again; no failure
        self.moving |= {s.peer for s in new if before.get(s.peer, s.interface) != s.interface}
        self.sessions = new
        self._changed.set()
        self._news()
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
        task_status.started()
        try:
            while True:
                if not self.sessions:
                    self._mark_unavailable(needed=False)
                    if self.planned:  # a BIRD a crashed agent left runs BFD nobody asks for now
                        await trio.to_thread.run_sync(kill_leftover, self.pidfile, "bird")
                    self._changed = trio.Event()
                    await self._changed.wait()
                    continue
                started = trio.current_time()
                try:
                    code = await self._run_once()
                except OSError as exc:  # no inotify, no disk, BIRD gone under us: unavailable, retried
                    event(log, "bfd_engine_failed", logging.ERROR, error=repr(exc), action="restart")
                    self._abandon()
                    code = -1
                if code is None:  # stopped on purpose: no sessions left
                    continue
                delay = self.backoff.next(trio.current_time() - started)
                event(log, "bfd_engine_exited", logging.WARNING, pid=self.pid, code=code, restart_in=delay)
                await trio.sleep(delay)
        finally:
            with trio.CancelScope(shield=True):
                await self._stop()

    async def _run_once(self) -> int | None:
        """One run of BIRD (a new one, or the one a previous agent left): its exit code (-1 when it
        was not our child), or None when stopped because no session is left."""
        pid = await trio.to_thread.run_sync(self._adopt)
        adopted = pid is not None
        if pid is None:
            await trio.to_thread.run_sync(kill_leftover, self.pidfile, "bird")
            pid = self._start()
            if pid is None:
                return -1
        self.pid = pid
        self.starts += 1
        self.states, self.since, self.last = {}, {}, {}
        try:
            offset = self.logfile.stat().st_size if adopted else 0  # an adopted BIRD's past is not news
        except FileNotFoundError:
            self.logfile.touch()
            offset = 0
        event(log, "bfd_engine_adopted" if adopted else "bfd_engine_started", pid=pid, sessions=len(self.sessions))
        pidfd = os.pidfd_open(pid)
        try:
            async with trio.open_nursery() as n:
                n.start_soon(self._follow, offset)
                n.start_soon(self._serve, n.cancel_scope, () if adopted else self.sessions)
                await trio.lowlevel.wait_readable(pidfd)
                await trio.sleep(0.05)  # its last lines (inotify wakes the reader)
                n.cancel_scope.cancel()
        finally:
            os.close(pidfd)
            with trio.CancelScope(shield=True):
                if self._control is not None:
                    await self._control.aclose()
                    self._control = None
        code = self._proc.wait() if self._proc is not None else -1
        stopped = not self.sessions
        self._proc = None
        self.pidfile.unlink(missing_ok=True)
        self._mark_unavailable(needed=not stopped)
        return None if stopped else code

    def _start(self) -> int | None:
        """BIRD, its stderr appended to the log file the agent follows. No PR_SET_PDEATHSIG: BFD
        tracks forwarding, which outlives an agent crash (the kernel keeps its routes), so BIRD does
        too and the next agent adopts it; it stays in the agent's process group, which a node's stop
        ends. Forked from the trio thread (see speaker/process.py)."""
        self.conf.write_text(config.render(self.sessions))
        self.ctl.unlink(missing_ok=True)
        try:
            with open(self.logfile, "wb") as out:  # the last run's lines are not news either
                pass
            with open(self.logfile, "ab") as out:  # O_APPEND: the agent may truncate it under BIRD
                self._proc = subprocess.Popen(
                    [*self.wrapper, self.binary, "-f", "-c", str(self.conf), "-s", str(self.ctl), "-P", str(self.pidfile)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True, cwd=str(self.dir))
        except OSError as exc:
            event(log, "bfd_engine_start_failed", logging.ERROR, error=repr(exc))
            return None
        return self._proc.pid

    def _adopt(self) -> int | None:
        """The BIRD a previous agent of this state directory left running (its pid file, its command
        line naming our config), or None."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        if not argv[0].endswith(b"bird") or str(self.conf).encode() not in argv:
            return None
        return pid

    async def _follow(self, offset: int) -> None:
        """BIRD's log lines as it appends them: woken by inotify (IN_MODIFY), read at least every
        LOG_POLL s all the same; the file is kept under LOG_LIMIT bytes."""
        buf = b""
        try:
            watch: int | None = _inotify(self.logfile)
        except OSError as exc:  # e.g. fs.inotify.max_user_instances reached: read every LOG_POLL s
            event(log, "bfd_log_inotify_failed", logging.WARNING, error=str(exc), action=f"poll {LOG_POLL}s")
            watch = None
        try:
            f = open(self.logfile, "rb", buffering=0)
        except OSError:
            if watch is not None:
                os.close(watch)
            raise
        with f:
            while True:
                size = os.fstat(f.fileno()).st_size
                if size < offset:  # truncated
                    offset, buf = 0, b""
                if size > offset:
                    f.seek(offset)
                    data = f.read(size - offset)
                    offset += len(data)
                    buf += data
                    *lines, buf = buf.split(b"\n")
                    for raw in lines:
                        self._line(raw.decode(errors="replace").rstrip())
                    if offset > LOG_LIMIT and not buf:
                        os.truncate(self.logfile, 0)
                        offset = 0
                if watch is None:
                    await trio.sleep(LOG_POLL)
                    continue
                try:
                    with trio.move_on_after(LOG_POLL):
                        await trio.lowlevel.wait_readable(watch)
                    with contextlib.suppress(BlockingIOError):
                        os.read(watch, 65536)  # the events say only "modified": drained, not read
                except BaseException:
                    os.close(watch)
                    raise

    async def _serve(self, scope: trio.CancelScope, applied: tuple[BfdSession, ...]) -> None:
        """Connect to the control socket, then poll it and apply new sessions until BIRD goes."""
        deadline = trio.current_time() + SOCKET_WAIT
        while self._control is None:
            try:
                self._control = await BirdControl.connect(self.ctl)
            except CONTROL_ERRORS:
                if trio.current_time() > deadline:
                    event(log, "bfd_engine_no_socket", logging.ERROR, pid=self.pid, action="restart")
                    self._signal(signal.SIGKILL)
                    return
                await trio.sleep(0.05)
        await self._poll()
        if self.sessions != applied:  # an adopted BIRD runs what the last agent asked for
            applied = await self._apply(self.sessions)
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
        except CONTROL_ERRORS as exc:
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
        except (*CONTROL_ERRORS, BfdParseError) as exc:
            if self.available:
                event(log, "bfd_engine_unanswered", logging.WARNING, error=str(exc))
            self._mark_unavailable(needed=True)
            return
        now = time.time()
        if {p: r.state for p, r in self.states.items()} != {r.peer: r.state for r in rows}:
            self._news()
        self.states = {r.peer: r for r in rows}
        for r in rows:
            self.since.setdefault(r.peer, now)
            known = self.last.setdefault(r.peer, r.state)
            if known != r.state:  # the log line was lost (truncated under BIRD): heard now
                self._heard(BfdChange(r.peer, known, r.state))
        if not self.available:
            self.available, self.unavailable_since = True, None
            self._news()

    def _line(self, line: str) -> None:
        if not line:
            return
        change = parse_change(line)
        if change is None:
            event(log, "bird_log", logging.DEBUG, line=line)
            gone = parse_removed(line)
            if gone is not None and gone in self.moving:  # re-made by our own configure
                self.moving.discard(gone)
                self.last.pop(gone, None)
                return
            wanted = gone is not None and any(s.peer == gone for s in self.sessions)
            if not wanted or self.last.pop(gone, None) != UP:
                return
            change = BfdChange(gone, UP, DOWN)  # its interface went down: the path is gone
        elif self.last.get(change.peer) == change.new:
            return  # already heard (from a poll)
        self._heard(change)

    def _heard(self, change: BfdChange) -> None:
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

    def _news(self) -> None:
        self.news.set()
        self.news = trio.Event()

    def _mark_unavailable(self, needed: bool) -> None:
        if self.available:
            self._news()
        self.available = False
        self.states = {}
        if needed and self.unavailable_since is None:
            self.unavailable_since = time.time()
        elif not needed:
            self.unavailable_since = None

    def _abandon(self) -> None:
        """After a failure inside a run: our child BIRD killed (the next run starts or adopts one)."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()
            self._proc = None
        self.pidfile.unlink(missing_ok=True)
        self._mark_unavailable(needed=True)

    def _alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.pid is not None and Path(f"/proc/{self.pid}").exists()

    def _signal(self, sig: int) -> None:
        if self.pid is not None and self._alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    async def _stop(self, grace: float = 2.0) -> None:
        """The agent stops (not a crash): BIRD with it."""
        if self.pid is None or not self._alive():
            return
        self._signal(signal.SIGTERM)
        with trio.move_on_after(grace):
            while self._alive():
                await trio.sleep(0.02)
        self._signal(signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait()
        self.pidfile.unlink(missing_ok=True)
