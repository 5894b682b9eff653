"""ExaBGP as a supervised child: started, watched, restarted with backoff, never orphaned.

- PR_SET_PDEATHSIG(SIGKILL) is set in the child before exec, so ExaBGP dies with the agent.
  It fires when the *thread* that forked exits, so we fork from the trio (main) thread, never
  from a worker thread (trio.lowlevel.open_process forks in one, which would kill ExaBGP when
  that idle worker retires).
- A pid file in the state dir lets a restarted agent find and kill a leftover ExaBGP.
- ExaBGP logs to its stdout, which we read line by line into our logging.
- ExaBGP runs under the agent's CPython unless CALICO_BGP_EXABGP_RUNTIME asks for PyPy (`pypy`:
  always, `auto`: when bootstrap.sh built its venv, `.venv-exabgp-pypy`, checked by a stamp);
  `exabgp_runtime()` decides (README "ExaBGP under PyPy" says why CPython is the default).
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import attrs
import trio

from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.speaker.process")

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


RUNTIME_ENV = "CALICO_BGP_EXABGP_RUNTIME"  # cpython (the default), auto or pypy
DEFAULT_RUNTIME = "cpython"
PYPY_VENV = Path(__file__).resolve().parents[2] / ".venv-exabgp-pypy"  # what bootstrap.sh builds
RUNTIMES = ("auto", "pypy", "cpython")


@attrs.frozen
class Runtime:
    """The interpreter ExaBGP runs under: its name ("pypy" or "cpython"), its executable, why, and
    whether CALICO_BGP_EXABGP_RUNTIME forced it (then it is never swapped for the other)."""

    name: str
    python: str
    why: str
    forced: bool = False


def pypy_ready(venv: Path | None = None) -> bool:
    """Whether bootstrap.sh finished ExaBGP's PyPy venv: its interpreter is there and a stamp says
    ExaBGP and our entry point imported under it (bootstrap writes the stamp only after that check)."""
    venv = PYPY_VENV if venv is None else venv
    return os.access(venv / "bin" / "python", os.X_OK) and any(venv.glob(".stamp-*"))


def exabgp_runtime(env: Mapping[str, str] | None = None, venv: Path | None = None) -> Runtime:
    """The agent's CPython by default; `CALICO_BGP_EXABGP_RUNTIME=auto`: PyPy when its venv is ready, else
    CPython; `pypy` forces it (a forced PyPy that is not ready is an error: a bench or test must not
    measure the other one)."""
    venv = PYPY_VENV if venv is None else venv
    given = (os.environ if env is None else env).get(RUNTIME_ENV, "").strip().lower()
    choice = given or DEFAULT_RUNTIME
    if choice not in RUNTIMES:
        raise ValueError(f"{RUNTIME_ENV}={choice!r}: one of {', '.join(RUNTIMES)}")
    if choice == "cpython":
        return Runtime("cpython", sys.executable, f"{RUNTIME_ENV}=cpython" if given else "the default", forced=bool(given))
    if pypy_ready(venv):
        forced = choice == "pypy"
        return Runtime("pypy", str(venv / "bin" / "python"), f"{RUNTIME_ENV}=pypy" if forced else "its venv is ready",
                       forced=forced)
    if choice == "pypy":
        raise FileNotFoundError(f"{RUNTIME_ENV}=pypy but {venv} is not ready (run ./bootstrap.sh setup)")
    return Runtime("cpython", sys.executable, f"no ready PyPy venv at {venv}")


def exabgp_command(runtime: Runtime | None = None) -> list[str]:
    """ExaBGP (the pinned PyPI package) through our entry point (calico_bgp.speaker.exabgp_run),
    under `runtime` (default: `exabgp_runtime()`)."""
    python = (runtime or exabgp_runtime()).python
    return [python, "-m", "calico_bgp.speaker.exabgp_run"]


def exabgp_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update({
        "exabgp_daemon_user": "root" if os.geteuid() == 0 else env.get("USER", "nobody"),
        "exabgp_daemon_daemonize": "false",
        "exabgp_api_cli": "false",
        "exabgp_api_ack": "true",
        "exabgp_api_compact": "true",  # an NLRI without a path id as a bare string: less JSON both ways
        "exabgp_log_destination": "stdout",
        "exabgp_log_short": "true",
        # one log line per API route is a cost at 100k routes; state changes still log
        "exabgp_log_processes": "false",
        "exabgp_log_routes": "false",
        "exabgp_log_statistics": "false",
        "exabgp_log_packets": "false",
        "exabgp_log_message": "false",
        "exabgp_log_rib": "false",
        "exabgp_log_timers": "false",
        "exabgp_log_parser": "false",
        "exabgp_tcp_bind": "",
        "TERM": "dumb",
    })
    env.update(extra)
    return env


def kill_leftover(pidfile: Path, marker: str = "exabgp") -> int | None:
    """Kill the ExaBGP a previous agent left (its pid in `pidfile`); return its pid if one was killed."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    try:
        cmdline = ""
        for _ in range(20):  # empty while a just-forked process has not exec'd yet
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if cmdline:
                break
            time.sleep(0.05)
    except OSError:
        event(log, "exabgp_leftover_gone", pid=pid)
        pidfile.unlink(missing_ok=True)
        return None
    if marker not in cmdline:  # the pid was reused by something else: not ours
        event(log, "exabgp_leftover_pid_reused", logging.WARNING, pid=pid, cmdline=cmdline[:200])
        pidfile.unlink(missing_ok=True)
        return None
    event(log, "exabgp_leftover_kill", logging.WARNING, pid=pid, cmdline=cmdline[:200])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


class ExaBGPProcess:
    """One run of ExaBGP. `wait()` returns its exit status; `stop()` ends it."""

    def __init__(self, popen: subprocess.Popen[bytes], pidfile: Path) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.pidfile = pidfile
        self._pidfd = os.pidfd_open(popen.pid)
        assert popen.stdout is not None
        fd = os.dup(popen.stdout.fileno())
        popen.stdout.close()
        os.set_blocking(fd, False)
        self._output = trio.lowlevel.FdStream(fd)
        self.returncode: int | None = None

    @classmethod
    def start(cls, cmd: Sequence[str], env: Mapping[str, str], pidfile: Path, cwd: Path) -> "ExaBGPProcess":
        # forked here, in the trio thread, on purpose (see the module docstring)
        popen = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, env=dict(env), cwd=str(cwd),
                                 preexec_fn=_die_with_parent, close_fds=True)
        pidfile.write_text(f"{popen.pid}\n")
        event(log, "exabgp_started", pid=popen.pid, cmd=" ".join(cmd))
        return cls(popen, pidfile)

    async def pump_log(self, on_line: Callable[[str], None] | None = None) -> None:
        buf = b""
        try:
            while True:
                data = await self._output.receive_some(65536)
                if not data:
                    break
                buf += data
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace").rstrip()
                    if line:
                        event(log, "exabgp_log", pid=self.pid, line=line)
                        if on_line:
                            on_line(line)
        finally:
            with trio.CancelScope(shield=True):
                await self._output.aclose()

    async def wait(self) -> int:
        await trio.lowlevel.wait_readable(self._pidfd)
        self.returncode = self.popen.wait()
        os.close(self._pidfd)
        self.pidfile.unlink(missing_ok=True)
        return self.returncode

    def signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    async def stop(self, grace: float = 3.0) -> None:
        self.signal(signal.SIGTERM)
        with trio.move_on_after(grace) as scope:
            while self.returncode is None:
                await trio.sleep(0.05)
                if self.popen.poll() is not None:
                    self.returncode = self.popen.returncode
        if scope.cancelled_caught:
            self.signal(signal.SIGKILL)


class Backoff:
    """Restart delays: doubling from `first` to `cap`; back to `first` after a run of `healthy` s."""

    def __init__(self, first: float = 0.5, cap: float = 30.0, healthy: float = 60.0) -> None:
        self.first, self.cap, self.healthy = first, cap, healthy
        self.delay = first

    def next(self, ran_for: float) -> float:
        if ran_for >= self.healthy:
            self.delay = self.first
        d = self.delay
        self.delay = min(self.delay * 2, self.cap)
        return d


__all__ = ["Backoff", "ExaBGPProcess", "Runtime", "exabgp_command", "exabgp_env", "exabgp_runtime", "kill_leftover",
           "pypy_ready"]
