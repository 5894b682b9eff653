"""ExaBGP's configuration file, its reloads, and changes of neighbours.

- The file is rewritten only when its text changes; each change is a new generation, named in its
  first line, and the generation the running ExaBGP has loaded is remembered: one that changed
  while ExaBGP was starting is reloaded when its bridge connects (a SIGUSR1 before ExaBGP installs
  its handlers would kill it, so a reload is always the API's `reload`), unless ExaBGP's log said
  it loaded that generation already (exabgp_generation.py: it may well have read the file after
  the change, and a second parse of every neighbour only delays the sessions' replays).
- A reload is confirmed by ExaBGP's log line, and sent again until it comes: ExaBGP drops a reload
  that arrives while it still has routes queued for some peer.
- A removed neighbour that is up is sent our withdrawals (with graceful restart) and a Cease
  before the reload, unless it is held idle for errors (`abrupt`).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Awaitable, Callable, Collection, Mapping, Sequence

import trio

from calico_bgp.speaker import commands as cmds
from calico_bgp.speaker.channel import CommandSender
from calico_bgp.speaker.config import render_config
from calico_bgp.speaker.events import PeerState
from calico_bgp.speaker.exabgp_generation import header, loaded_generation
from calico_bgp.speaker.intent import RouteIntent
from calico_bgp.speaker.neighbor import Neighbor
from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.speaker")

RELOADED = "loaded new configuration successfully"  # ExaBGP's log line once a reload is done
RELOAD_CONFIRM = 2.0   # seconds to wait for it before sending the reload again
RELOAD_ATTEMPTS = 30
RELOAD_READ_WAIT = 30.0  # seconds an unconfirmed reload waits for ExaBGP to read it before another is sent
WITHDRAW_FLUSH = 0.2  # seconds for ExaBGP to put queued withdrawals on the wire before a teardown
DRAIN_WAIT = 10.0     # seconds a neighbour change waits for ExaBGP to answer what it was sent


def atomic_write(path: Path, text: str) -> bool:
    """Write if different; True when the file changed."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def leaving_politely(removed: Collection[str], peers: Mapping[str, PeerState], abrupt: Collection[str]) -> list[str]:
    """Of the removed neighbours, those to be told (withdrawals, Cease) before they go: the ones up,
    except those held idle for errors."""
    return [k for k in removed if peers.get(k) and peers[k].state == "up" and k not in abrupt]


class ConfigReloader:
    """Writes the configuration for the intent's neighbours, reloads ExaBGP and waits for its word.

    `wait_changed` returns after the next session state change (a teardown waits for the `down`).
    """

    def __init__(self, config_path: Path, bridge_command: Sequence[str], intent: RouteIntent,
                 sender: CommandSender, peers: dict[str, PeerState],
                 lines: Callable[[list[cmds.RouteChange]], list[str]],
                 wait_changed: Callable[[], Awaitable[None]]) -> None:
        self.config_path = config_path
        self.bridge_command = list(bridge_command)
        self.intent = intent
        self.sender = sender
        self.peers = peers
        self._lines = lines
        self._wait_changed = wait_changed
        self.lock = trio.Lock()  # one neighbour change at a time
        self.generation = 0  # config file versions written
        self.loaded_generation = -1  # the one the running ExaBGP has loaded
        self._written: str | None = None  # the last generation's text, but for its first line
        self._reloads_seen = 0  # "loaded new configuration" lines in ExaBGP's log
        self._reload_seen = trio.Event()

    # -- the file ------------------------------------------------------------------------------
    def write(self) -> bool:
        """Write the configuration if it changed (a new generation; the first write of this speaker is
        one too); True when it did."""
        text = render_config(self.intent.neighbors.values(), self.bridge_command)
        if text == self._written:
            return False
        atomic_write(self.config_path, header(self.generation + 1) + text.split("\n", 1)[1])
        self.generation += 1
        self._written = text
        return True

    def mark_loaded(self) -> None:
        """The running ExaBGP has (or is about to have) the file as written now."""
        self.loaded_generation = self.generation

    @property
    def stale(self) -> bool:
        """Whether the file changed since the running ExaBGP loaded it."""
        return self.loaded_generation != self.generation

    # -- reloads -------------------------------------------------------------------------------
    def on_log(self, line: str) -> None:
        """One line of ExaBGP's log: a reload's confirmation is counted; the generation it says it
        loaded is remembered (it read the file then, or a newer one)."""
        generation = loaded_generation(line)
        if generation is not None:
            self.loaded_generation = max(self.loaded_generation, generation)
        if RELOADED in line:
            self._reloads_seen += 1
            self._reload_seen.set()
            self._reload_seen = trio.Event()

    async def reload(self) -> None:
        """`reload`, until ExaBGP's log says it loaded the configuration. ExaBGP drops a reload that
        arrives while it still has routes queued for some peer (its reactor clears the signal, then
        finds updates pending and goes on without reloading): the new sessions were then missing
        until the next reload, a minute or more later. Sent again when RELOAD_CONFIRM seconds pass
        without the word, but only once ExaBGP has answered every command sent before it: a reload
        it has not read yet is not lost, and copies queued behind it would each cost a parse of
        every neighbour once ExaBGP gets to them, holding its sessions back all that time."""
        for attempt in range(1, RELOAD_ATTEMPTS + 1):
            seen = self._reloads_seen
            await self.sender.send(["reload"])
            if await self._confirmed(seen, RELOAD_CONFIRM):
                return
            if not self.sender.connected:  # ExaBGP is restarting: it reads the file when it starts
                return
            with trio.move_on_after(RELOAD_READ_WAIT):
                async with trio.open_nursery() as n:
                    async def confirmed_then_stop() -> None:
                        await self._confirmed(seen, math.inf)
                        n.cancel_scope.cancel()
                    n.start_soon(confirmed_then_stop)
                    await self.sender.window.drained()  # ExaBGP has read the reload (and all before it)
                    n.cancel_scope.cancel()
            if self._reloads_seen != seen:
                return
            if not self.sender.connected:
                return
            event(log, "exabgp_reload_unconfirmed", logging.WARNING, attempt=attempt, action="retry")
        event(log, "exabgp_reload_unconfirmed", logging.ERROR, attempts=RELOAD_ATTEMPTS, action="give_up")

    async def _confirmed(self, seen: int, wait: float) -> bool:
        """Whether a reload is confirmed (more than `seen` so far) within `wait` seconds."""
        with trio.move_on_after(wait):
            while self._reloads_seen == seen:
                await self._reload_seen.wait()
            return True
        return False

    # -- neighbours ----------------------------------------------------------------------------
    async def set_neighbors(self, new: dict[str, Neighbor], teardown_wait: float, abrupt: Collection[str] = ()) -> None:
        """Make the neighbours `new` (the caller holds `lock`); unchanged sessions stay up, and one
        whose reflected routes' next hop changed is sent them again."""
        removed = [k for k in self.intent.neighbors if k not in new]
        going = leaving_politely(removed, self.peers, abrupt)
        if going and self.sender.connected:
            await self._say_goodbye(going, teardown_wait)
        async with self.sender.lock:
            resend = self.intent.set_neighbors(new.values())
            if resend and self.sender.connected:  # a next-hop mode changed: those routes again, the session stays
                await self.sender.send_locked(self._lines(resend))
        for k in removed:
            self.peers.pop(k, None)
        if not self.write():
            return
        if self.sender.connected:
            event(log, "exabgp_reload", neighbors=len(new), removed=len(removed))
            self.mark_loaded()
            await self.reload()
        # else: ExaBGP is starting (or restarting) and is reloaded when its bridge connects

    async def _say_goodbye(self, going: list[str], teardown_wait: float) -> None:
        window = self.sender.window
        graceful = [k for k in going if self.intent.neighbors[k].graceful_restart is not None]
        if graceful:
            # with graceful restart negotiated ExaBGP closes the session without a NOTIFICATION, and
            # the peer would keep our routes (stale) for the restart time: take them back first
            await self.sender.send(self._lines([cmds.RouteChange(k, p, spec, False) for k in graceful
                                                for p, spec in self.intent.routes_for(k).items()]))
            with trio.move_on_after(DRAIN_WAIT):
                await window.drained()
            await trio.sleep(WITHDRAW_FLUSH)  # ExaBGP answers a command once queued, not once sent
        await self.sender.send([cmds.teardown(k, 2) for k in going])  # Cease/administrative shutdown
        with trio.move_on_after(DRAIN_WAIT):  # a stalled ExaBGP must not hold every session change
            await window.drained()
        with trio.move_on_after(teardown_wait):
            while any(self.peers.get(k) and self.peers[k].state == "up" for k in going):
                await self._wait_changed()
