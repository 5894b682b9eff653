"""ExaBGP kept running: started with the current configuration, restarted with back-off when it
exits, and watched for stalls (its send path can stop answering under load).

When ExaBGP exits, what it wrote last (an UPDATE, a session coming up) may still be on its way
through the bridge: the bridge gets BRIDGE_DRAIN seconds to deliver it before the sessions are
declared down, or it would land after, on routes already marked stale.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Mapping

import trio

from calico_bgp.speaker.channel import CommandWindow
from calico_bgp.speaker.process import Backoff, ExaBGPProcess
from calico_bgp.speaker.reload import ConfigReloader
from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.speaker")

BRIDGE_DRAIN = 2.0    # seconds a dead ExaBGP's bridge has to deliver its last lines
LOG_DRAIN = 1.0       # seconds to read a dead ExaBGP's last log lines (a crash's traceback)


class Supervisor:
    """Runs ExaBGP until `close()`. `argv()` is asked at every start (the command may change while
    ExaBGP cannot start, e.g. until its package is installed). `bridge_serves(pid)`: whether a
    bridge of that ExaBGP is still connected. `on_exit()`: called once it is gone and drained."""

    def __init__(self, argv: Callable[[], list[str]], pidfile: Path, cwd: Path,
                 backoff: Backoff, config: ConfigReloader, stats: dict[str, int],
                 bridge_serves: Callable[[int], bool], on_exit: Callable[[], None]) -> None:
        self.argv = argv
        self.pidfile = pidfile
        self.cwd = cwd
        self.backoff = backoff
        self.config = config
        self.stats = stats
        self.bridge_serves = bridge_serves
        self.on_exit = on_exit
        self.process: ExaBGPProcess | None = None
        self.early: ExaBGPProcess | None = None  # started by start_now(), taken over by run()
        self.closing = False

    def start_now(self, env: Mapping[str, str]) -> ExaBGPProcess | None:
        """Start ExaBGP at once, before `run()` (synchronous, callable before trio runs): `run()`
        takes it over as its first run, with the same `env`. A start that fails is logged and left
        to `run()` to try again (None)."""
        self.config.write()
        argv = self.argv()
        try:
            self.early = self.process = ExaBGPProcess.start(argv, env, self.pidfile, self.cwd)
        except OSError as e:
            event(log, "exabgp_start_failed", logging.ERROR, error=repr(e), argv=argv, retry_in=0.0)
            return None
        self.config.mark_loaded()
        return self.early

    async def run(self, env: Mapping[str, str]) -> None:
        """Start ExaBGP with `env` (or take over the one start_now() started) and restart it
        whenever it exits, until `close()`."""
        while not self.closing:
            started = trio.current_time()
            if self.early is not None:
                proc, self.early = self.early, None
            else:
                self.config.write()
                argv = self.argv()
                try:
                    self.process = proc = ExaBGPProcess.start(argv, env, self.pidfile, self.cwd)
                except OSError as e:
                    delay = self.backoff.next(0.0)
                    event(log, "exabgp_start_failed", logging.ERROR, error=repr(e), argv=argv, retry_in=delay)
                    await trio.sleep(delay)
                    continue
                self.config.mark_loaded()
            async with trio.open_nursery() as n:
                n.start_soon(proc.pump_log, self.config.on_log)
                code = await proc.wait()
                n.cancel_scope.deadline = trio.current_time() + LOG_DRAIN
            self.process = None
            if self.closing:
                return
            with trio.move_on_after(BRIDGE_DRAIN):
                while self.bridge_serves(proc.pid):
                    await trio.sleep(0.02)
            self.stats["restarts"] += 1
            delay = self.backoff.next(trio.current_time() - started)
            event(log, "exabgp_exited", logging.WARNING, pid=proc.pid, code=code, restart_in=delay)
            self.on_exit()
            await trio.sleep(delay)

    async def close(self) -> None:
        """Stop ExaBGP and start no other."""
        self.closing = True
        if self.process is not None:
            await self.process.stop()

    async def shutdown(self, wait: float = 3.0) -> None:
        """`close()`, then up to `wait` seconds for ExaBGP to be gone."""
        self.closing = True
        if self.process is not None:
            await self.process.stop()
            with trio.move_on_after(wait):
                await self.process.wait()


def stalled_for(window: CommandWindow, now: float) -> tuple[float, str]:
    """How long the oldest command in flight has waited for its answer (0 when none), and which."""
    oldest = window.in_flight[0] if window.in_flight else None
    return (now - oldest.sent_at, oldest.command) if oldest else (0.0, "")


async def watch_stalls(window: CommandWindow, stall_after: float, stats: dict[str, int]) -> None:
    """Say so when ExaBGP stops answering (its send path can stall under load: ExaBGP #652, #682)."""
    stalled = False
    while True:
        await trio.sleep(min(5.0, stall_after / 2))
        age, command = stalled_for(window, trio.current_time())
        if age > stall_after and not stalled:
            stalled = True
            stats["stalls"] += 1
            event(log, "exabgp_stalled", logging.ERROR, oldest_command_age=age,
                  in_flight=len(window.in_flight), command=command[:120])
        elif age <= stall_after and stalled:
            stalled = False
            event(log, "exabgp_unstalled", logging.WARNING)
