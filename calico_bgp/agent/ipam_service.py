"""The node's warm IPAM: the agent owns the process that answers calico-bgp-ipam's invocations
(and calico-bgp-cni's, wiring included).

The agent binds the service's socket (calico_bgp/cni/warm.py, named by cni/service.py: root-only,
for this code and network namespace) when it starts, and starts the warm process on the first
connection, the listening socket passed down (socket activation, as systemd does it: a node that
runs no containers pays nothing, and no invocation is refused while the process starts or
restarts; it waits in the backlog). The process leaves after `idle` seconds without an invocation
and comes back on the next one. It is supervised: its stderr (its own errors and the log lines of
every invocation it runs) goes into the agent's log; when it exits with an error (its watchdog's
SIGALRM included: an invocation ran past its executable's deadline), the next start waits
a back-off, and meanwhile every connection is closed at once, so the executables do their
operations themselves instead of waiting; when the agent stops it is told (its stdin closes),
given a few seconds to finish the invocation it runs, then killed, and the socket is removed. An
agent killed outright closes the process's stdin all the same. The socket is named for the code on
disk; when that changes (an upgrade), the agent moves to the new name within CODE_RECHECK seconds
(the process, which holds the old code, goes). Nothing here needs the IPAM code: the agent loads
none of it.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any, Callable

import trio

from calico_bgp.cni import service, warm
from calico_bgp.speaker.process import Backoff
from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.agent.ipam_service")
STOP_WAIT = 3.0  # seconds a stopping agent gives the process to finish its invocation
CODE_RECHECK = 30.0  # seconds between looks at the code on disk (its stamps name the socket), and bind retries
START_FAILED = 127  # the exit status given to a process that could not be started (a failure: back-off)


class IpamServiceOwner:
    """Serves calico-bgp-ipam's socket for as long as `run()` runs. `path`: the socket (default: the
    one this code's plugins look for)."""

    def __init__(self, idle: float = 600.0, path: str | None = None, backoff: Backoff | None = None,
                 recheck: float = CODE_RECHECK) -> None:
        self.idle = idle
        self.fixed_path = path
        self.path: str | None = None      # the socket served now
        self.backoff = backoff or Backoff(first=1.0, cap=30.0, healthy=10.0)
        self.recheck = recheck
        self.pid: int | None = None       # the warm process's, while it runs
        self.starts = 0
        self.failures = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; when the code on disk changes (an upgrade), the plugins look for
        another socket: the old one and its process go, and the new one is served. The service is
        optional: nothing here ends the agent. A socket that cannot be had (another owner holds it,
        e.g. an old agent in its stop; /run unusable; the package moved aside mid-upgrade) is tried
        again every `recheck` seconds, and any other error is logged and the service started again
        after a back-off; meanwhile the plugins run in their own process. Started once the first
        bind was tried."""
        quiet = False  # "not served" is logged once per outage, not every recheck
        pending = [task_status]

        def started() -> None:
            if pending:
                pending.pop().started()

        while True:
            try:
                served = await self._serve_one_name(quiet, started)
            except Exception as exc:  # noqa: BLE001 - optional service: logged, tried again
                event(log, "ipam_service_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}",
                      restart_in=self.recheck)
                served = False
            started()
            quiet = not served
            if not served:
                await trio.sleep(self.recheck)

    async def _serve_one_name(self, quiet: bool, started: Callable[[], None]) -> bool:
        """Serve the socket the code on disk names until that name changes; False when it cannot be had."""
        path = None
        try:
            path = self.fixed_path or service.socket_path()
            bound = warm.bind(path)
        except OSError as exc:
            if not quiet:
                event(log, "ipam_service_unavailable", logging.WARNING, socket=path,
                      error=exc.strerror or str(exc), retry_in=self.recheck)
            started()
            return False
        if bound is None:
            if not quiet:
                event(log, "ipam_service_not_served", logging.WARNING, socket=path, retry_in=self.recheck,
                      why="another process serves it: the plugins run in their own process meanwhile")
            started()
            return False
        server, lock = bound
        server.setblocking(False)
        self.path = path
        event(log, "ipam_service_listening", socket=path, idle=self.idle)
        try:
            async with trio.open_nursery() as n:
                n.start_soon(self._serve, server)
                started()
                if self.fixed_path is None:
                    await self._until_code_changes(path)
                    n.cancel_scope.cancel()
        finally:
            self.path = None
            warm.unbind(path, server, lock)
        return True

    async def _until_code_changes(self, path: str) -> None:
        while True:
            await trio.sleep(self.recheck)
            try:
                now = service.socket_path()
            except OSError as exc:  # the package moved aside mid-upgrade: look again next time
                event(log, "ipam_service_code_unreadable", logging.WARNING, error=exc.strerror or str(exc))
                continue
            if now != path:
                event(log, "ipam_service_code_changed", old_socket=path, socket=now)
                return

    async def _serve(self, server: Any) -> None:
        while True:
            await trio.lowlevel.wait_readable(server)
            started = trio.current_time()
            code = await self._serve_once(server)
            if code == 0:
                continue  # idle, and gone: the next connection starts it again
            self.failures += 1
            delay = self.backoff.next(trio.current_time() - started)
            event(log, "ipam_service_exited", logging.WARNING, code=code, restart_in=delay)
            with trio.move_on_after(delay):
                await _turn_away(server)

    async def _serve_once(self, server: Any) -> int:
        """Start the process on the listening socket and wait for it to exit; its exit status."""
        code = (f"import sys; sys.path[:0] = {sys.path!r}; from calico_bgp.cni.warm import child; "
                f"child({server.fileno()}, {self.idle!r})")
        # forked from the trio thread (as ExaBGP is: speaker/process.py), with the socket passed down
        try:
            proc = subprocess.Popen([sys.executable, "-S", "-c", code], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    pass_fds=(server.fileno(),), close_fds=True)
        except (OSError, subprocess.SubprocessError) as exc:  # interpreter replaced mid-upgrade, EMFILE, ...
            event(log, "ipam_service_start_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
            return START_FAILED
        self.pid, self.starts = proc.pid, self.starts + 1
        event(log, "ipam_service_started", pid=proc.pid)
        assert proc.stderr is not None and proc.stdin is not None
        err = pidfd = -1
        try:
            err = os.dup(proc.stderr.fileno())
            os.set_blocking(err, False)
            pidfd = os.pidfd_open(proc.pid)
        except OSError as exc:
            event(log, "ipam_service_start_failed", logging.WARNING, pid=proc.pid, error=exc.strerror or str(exc))
            proc.kill()
            proc.wait()
            if err >= 0:
                os.close(err)
            proc.stdin.close()
            proc.stderr.close()
            self.pid = None
            return START_FAILED
        proc.stderr.close()
        try:
            async with trio.open_nursery() as n:
                n.start_soon(_pump, trio.lowlevel.FdStream(err), proc.pid)
                await trio.lowlevel.wait_readable(pidfd)
                n.cancel_scope.deadline = trio.current_time() + 1.0  # its last lines
            return proc.wait()
        finally:
            with trio.CancelScope(shield=True):
                proc.stdin.close()  # the agent is going: it finishes its invocation and leaves
                with trio.move_on_after(STOP_WAIT):
                    await trio.lowlevel.wait_readable(pidfd)
                if proc.poll() is None:
                    proc.kill()
                    event(log, "ipam_service_killed", logging.WARNING, pid=proc.pid, after=STOP_WAIT)
                proc.wait()
                os.close(pidfd)
                self.pid = None


async def _pump(stream: trio.lowlevel.FdStream, pid: int) -> None:
    """The process's stderr, line by line, into the agent's log."""
    buf = b""
    async with stream:
        while data := await stream.receive_some(65536):
            *lines, buf = (buf + data).split(b"\n")
            for raw in lines:
                if raw.strip():
                    event(log, "ipam_service_log", pid=pid, line=raw.decode(errors="replace").rstrip())
    if buf.strip():
        event(log, "ipam_service_log", pid=pid, line=buf.decode(errors="replace").rstrip())


async def _turn_away(server: Any) -> None:
    """Close every connection at once (the executables then do their operations themselves)."""
    while True:
        await trio.lowlevel.wait_readable(server)
        try:
            conn, _ = server.accept()
        except (BlockingIOError, InterruptedError):
            continue
        conn.close()


def main() -> None:
    """`python -m calico_bgp.agent.ipam_service [IDLE]`: what the agent starts, without the agent (benches);
    until SIGINT or SIGTERM."""
    import signal

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    idle = float(sys.argv[1]) if len(sys.argv) > 1 else 600.0

    async def serve() -> None:
        async with trio.open_nursery() as n:
            await n.start(IpamServiceOwner(idle).run)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    n.cancel_scope.cancel()
                    return

    trio.run(serve)


if __name__ == "__main__":
    main()
