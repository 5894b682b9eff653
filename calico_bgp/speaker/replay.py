"""What a session is owed when it comes up, and the one task that sends it.

ExaBGP does not replay API routes to a neighbour that a reload added, nor to one whose session
restarted: when a session comes up it is sent everything the intent says it should have, then
End-of-RIB if it does graceful restart and the agent's routes are complete. A new bridge to the
same ExaBGP (sessions unchanged, no `up` coming) owes its up sessions the same, after the
withdrawals the old bridge may have lost. The work is typed values on one queue, done by one
task: the bridge reader must never wait on the command window it feeds acks to.
"""
from __future__ import annotations

import logging
import math
from typing import Awaitable, Callable, Iterable, Mapping

import attrs
import trio

from calico_bgp.speaker import commands as cmds
from calico_bgp.speaker.channel import CommandSender
from calico_bgp.speaker.events import PeerState
from calico_bgp.speaker.intent import RouteIntent
from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.speaker")


@attrs.frozen
class ReplayTo:
    """Send `peer` every route it should have (its session came up, or a new bridge serves it)."""

    peer: str


@attrs.frozen
class ResendWithdrawals:
    """Send again the withdrawals a lost bridge may have dropped (the same ExaBGP lives on)."""


@attrs.frozen
class Reload:
    """Have ExaBGP reload its configuration (`reason` says why, for the log)."""

    reason: str


Work = ReplayTo | ResendWithdrawals | Reload


def came_up(prev: PeerState | None, now: PeerState) -> bool:
    """Whether `now` is a session coming up (not one already up saying so again)."""
    return now.state == "up" and (prev is None or prev.state != "up")


def owed_to_new_bridge(*, config_stale: bool, same_exabgp: bool, lost_withdrawals: bool,
                       up: Iterable[str]) -> list[Work]:
    """The work a newly connected bridge brings, in order. `config_stale`: the file changed while
    ExaBGP was starting (it may have read the old one). `same_exabgp`: the ExaBGP an earlier bridge
    served, whose sessions (and what they were sent) live on; a new ExaBGP starts empty and is
    owed nothing but the reload: its sessions come up, and each `up` brings its replay."""
    work: list[Work] = [Reload("config_changed_during_start")] if config_stale else []
    if same_exabgp:
        if lost_withdrawals:
            work.append(ResendWithdrawals())
        work.extend(ReplayTo(peer) for peer in up)
    return work


class Replayer:
    """Does the queued work, one item at a time, holding the sender's lock for each batch so that
    no announce or withdraw slips into the middle of a replay."""

    def __init__(self, sender: CommandSender, intent: RouteIntent, peers: Mapping[str, PeerState],
                 stats: dict[str, int], max_nlri: int, reload: Callable[[], Awaitable[None]]) -> None:
        self.sender = sender
        self.intent = intent
        self.peers = peers
        self.stats = stats
        self.max_nlri = max_nlri
        self._reload = reload
        self._tx, self._rx = trio.open_memory_channel[Work](math.inf)
        self.holding_back: set[str] = set()  # neighbours on their way out: no replay to them
        # End-of-RIB (neighbours with graceful restart): sent after a neighbour's routes once the
        # agent says its routes are complete; owed to those that came up before
        self.routes_complete = False
        self.eor_owed: set[str] = set()

    def put(self, work: Work) -> None:
        self._tx.send_nowait(work)

    def hold_back(self, key: str) -> None:
        self.holding_back.add(key)

    def release(self, key: str) -> None:
        self.holding_back.discard(key)

    async def run(self) -> None:
        pending: list[Work] = []
        while True:
            work = pending.pop(0) if pending else await self._rx.receive()
            if isinstance(work, ResendWithdrawals):
                async with self.sender.lock:
                    lines = self.sender.take_lost()
                    event(log, "resend_withdrawals", logging.WARNING, commands=len(lines), reason="bridge_reconnected")
                    await self.sender.send_locked(lines)
            elif isinstance(work, Reload):
                event(log, "exabgp_reload", reason=work.reason)
                await self._reload()
            else:
                # sessions that came up while earlier work was sent are replayed together: a route
                # that several of them get is one command line for all (a rack's bring-up)
                peers = [work.peer]
                while not pending:
                    try:
                        more = self._rx.receive_nowait()
                    except trio.WouldBlock:
                        break
                    if isinstance(more, ReplayTo):
                        peers.append(more.peer)
                    else:
                        pending.append(more)
                await self._replay(list(dict.fromkeys(peers)))

    async def _replay(self, keys: list[str]) -> None:
        async with self.sender.lock:
            keys = [k for k in keys if k in self.intent.neighbors and k not in self.holding_back]
            if not keys:
                return
            groups, counts = self.intent.replay_groups(keys)
            for key in keys:
                self.stats["replays"] += 1
                self.stats["replayed_routes"] += counts[key]
                event(log, "replay", peer=key, routes=counts[key])
            await self.sender.send_locked(cmds.render_groups(groups, self.max_nlri))
            # a neighbour may have gone while the routes went out (e.g. a peer held idle after a
            # reset): a KeyError here ended the whole agent
            for key in keys:
                neighbor = self.intent.neighbors.get(key)
                if neighbor is not None and neighbor.graceful_restart is not None:
                    if self.routes_complete:
                        await self.sender.send_locked(self._eor_lines(key))
                    else:
                        self.eor_owed.add(key)

    def _eor_lines(self, key: str) -> list[str]:
        return [cmds.announce_eor(key, family) for family in self.intent.neighbors[key].families]

    async def complete(self) -> None:
        """The agent's routes are complete: End-of-RIB goes after each replay from now on, and now to
        the sessions that are up and owed it."""
        if self.routes_complete:
            return
        async with self.sender.lock:
            self.routes_complete = True
            owed, self.eor_owed = sorted(self.eor_owed), set()
            for key in owed:
                st = self.peers.get(key)
                if key in self.intent.neighbors and st is not None and st.state == "up":
                    event(log, "eor", peer=key, families=",".join(self.intent.neighbors[key].families))
                    await self.sender.send_locked(self._eor_lines(key))
