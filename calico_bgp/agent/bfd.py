"""BFD in the agent: the sessions the plan asks for handed to the engine, and what a failed BFD
session does to its BGP session.

On Up -> Down (only that: a Down right after the engine (re)started is no failure), at once:
1. the peer's session goes down in the agent the way a dropped session does (session_events, with
   reason session_down.BFD_DOWN): its routes leave the RIB and the kernel (an ECMP route shrinks to
   its other next hops, a single-path route goes), never kept stale for graceful restart;
2. ExaBGP tears the BGP session down (Cease, Administrative Reset) instead of waiting for the hold
   timer; it reconnects by itself, so when the path is back the session comes back the normal way;
3. a `bfd_down` event, `calico_bgp_bfd_session_up{peer}` 0 and the transitions counter.
While the engine is unavailable (BIRD dead, restarting) nothing is done to BGP: sessions live on
their hold timers, and `status` says BFD is unavailable.

Which sessions: `planner(state, interfaces)`, run after each sync (`replan`) and every PLAN_EVERY
seconds while BFD is wanted (PLAN_IDLE_EVERY otherwise) against the agent's state and this
namespace's interfaces; `node_planner(name)` is routing/bfd.py's plan_bfd over this node's
BFDConfigurations and BGP sessions (peers it skips are logged, with why, when they change).
"""
from __future__ import annotations

import ipaddress
import logging
import math
from pathlib import Path
from typing import Callable, Iterable

import trio

from calico_bgp.agent.autodetect import Interface, read_interfaces
from calico_bgp.agent.session_events import SessionEvents
from calico_bgp.agent.state import AgentState
from calico_bgp.bfd.engine import BfdEngine
from calico_bgp.bfd.report import BfdSessionStatus, BfdStatus
from calico_bgp.bfd.state import UP, BfdChange
from calico_bgp.routing.bfd import BFD_IF_DIRECTLY_CONNECTED, BfdSession, Link, Skipped, plan_bfd
from calico_bgp.routing.session_down import BFD_DOWN
from calico_bgp.speaker import commands as speaker_cmds
from calico_bgp.speaker.events import PeerState
from calico_bgp.speaker.speaker import Speaker
from calico_bgp.telemetry.eventlog import EventLog
from calico_bgp.telemetry.metrics import Metrics
from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.agent.bfd")
PLAN_EVERY = 1.0        # seconds between runs of the plan
WATCH_EVERY = 1.0       # seconds between looks at the engine when it says nothing
PLAN_IDLE_EVERY = 10.0  # ... between runs of the plan while no session asks for BFD (a sync wakes it)
ADMINISTRATIVE_RESET = 4  # Cease subcode (RFC 4486)
Planner = Callable[[AgentState, list[Interface]], "Iterable[BfdSession] | None"]


def node_planner(name: str) -> Planner:
    """The plan of node `name`: None (no plan yet, not "no sessions") until the cluster view and our
    Node are known. Skipped peers and ignored BFDConfigurations are logged when they change."""
    said: list[tuple[tuple[Skipped, ...], tuple[str, ...]]] = [((), ())]

    def plan(state: AgentState, interfaces: list[Interface]) -> tuple[BfdSession, ...] | None:
        cluster = state.cluster
        node = cluster.nodes.get(name) if cluster is not None else None
        if cluster is None or node is None:
            return None
        links = [Link(i.name, tuple(str(a) for a in i.addresses)) for i in interfaces]
        got = plan_bfd(node, cluster.bfd_configs.values(), state.sessions.values(), links)
        if (got.skipped, got.ignored) != said[0]:
            said[0] = (got.skipped, got.ignored)
            for s in got.skipped:
                event(log, "bfd_skipped", logging.WARNING, peer=s.peer, reason=s.reason)
            for name_ in got.ignored:
                event(log, "bfd_config_ignored", logging.WARNING, name=name_, in_force=got.configuration,
                      reason="one BFDConfiguration per node: the lowest name is in force")
        return got.sessions
    return plan


class BfdAgent:
    def __init__(self, state: AgentState, sessions: SessionEvents, speaker: Speaker, events: EventLog,
                 metrics: Metrics, state_dir: Path, planner: Planner | None,
                 status_dirty: Callable[[], None]) -> None:
        self.state, self.sessions, self.speaker, self.events = state, sessions, speaker, events
        self.metrics = metrics.bfd
        self.planner = planner
        self.status_dirty = status_dirty
        self.engine = BfdEngine(Path(state_dir) / "bfd", on_change=self._on_change)
        self._failed_tx, self._failed_rx = trio.open_memory_channel[str](math.inf)
        self._peers: set[str] = set()  # peers with a metric series
        self._replan = trio.Event()

    def replan(self) -> None:
        """The cluster or the sessions changed: plan again now."""
        self._replan.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as n:
            await n.start(self.engine.run)
            n.start_soon(self._act)
            if self.planner is not None:
                n.start_soon(self._plan)
            n.start_soon(self._watch_engine)
            task_status.started()

    def set_sessions(self, sessions: Iterable[BfdSession]) -> None:
        """The sessions to run (the plan's); series of peers that left go."""
        sessions = tuple(sessions)
        if self.engine.set_sessions(sessions):
            peers = {s.peer for s in sessions}
            for gone in self._peers - peers:
                self.metrics.up.remove(gone)
            for new in peers - self._peers:
                self.metrics.up.labels(new).set(0)
            self._peers = peers
            event(log, "bfd_sessions", count=len(sessions), peers=",".join(sorted(peers)))
            self.status_dirty()

    async def _plan(self) -> None:
        assert self.planner is not None
        while True:
            wanted = True
            self._replan = trio.Event()  # a sync during this pass plans again at once
            try:
                # the links only matter to a peer asking for BFD (or to take down what runs)
                wanted = self.engine.sessions or any(
                    s.failure_detection_mode == BFD_IF_DIRECTLY_CONNECTED for s in self.state.sessions.values())
                interfaces = await trio.to_thread.run_sync(read_interfaces) if wanted else []
                planned = self.planner(self.state, interfaces)
                if planned is not None:
                    self.set_sessions(planned)
            except Exception:  # noqa: BLE001 - a bad plan keeps the sessions BIRD runs; said once per pass
                event(log, "bfd_plan_failed", logging.ERROR, exc_info=True, action="keep_sessions")
            # the links (read each pass) matter only while BFD is wanted; otherwise only the cluster
            # and the sessions change the plan, and a sync says so (`replan`)
            with trio.move_on_after(PLAN_EVERY if wanted else PLAN_IDLE_EVERY):
                await self._replan.wait()

    def _on_change(self, change: BfdChange, at: float) -> None:
        self.metrics.transitions.labels(change.peer, change.new.lower()).inc()
        if change.peer in self._peers:
            self.metrics.up.labels(change.peer).set(1 if change.new == UP else 0)
        if change.failed:
            self.metrics.failures.labels(change.peer).inc()
            self._failed_tx.send_nowait(change.peer)
        elif change.new == UP:
            self.events.emit("bfd_up", peer=change.peer, detail=f"from {change.old}")
        self.status_dirty()

    async def _act(self) -> None:
        async for peer in self._failed_rx:
            try:
                await self.bfd_failed(peer)
            except Exception:  # noqa: BLE001 - the hold timer still ends the session
                event(log, "bfd_down_failed", logging.ERROR, exc_info=True, peer=peer, action="hold_timer")

    async def bfd_failed(self, peer: str) -> None:
        """The path to `peer` failed: its routes out now, its BGP session reset, an event."""
        key = self._session_key(peer)
        bgp = self.speaker.peers.get(key) if key else None
        established = bgp is not None and bgp.state == "up"
        self.events.emit("bfd_down", peer=peer, detail="BGP session reset, routes withdrawn" if established
                         else "no BGP session up")
        event(log, "bfd_down", logging.WARNING, peer=peer, bgp_established=established)
        if key is None or not established:
            return
        await self.sessions.on_peer_state(PeerState(key, "down", reason=BFD_DOWN))
        await self.speaker.send([speaker_cmds.teardown(key, ADMINISTRATIVE_RESET)])

    def _session_key(self, peer: str) -> str | None:
        """The BGP session toward the address BIRD names (its spelling may differ from ours)."""
        if peer in self.state.sessions:
            return peer
        ip = ipaddress.ip_address(peer)
        return next((k for k, s in self.state.sessions.items() if ipaddress.ip_address(s.peer_address) == ip), None)

    async def _watch_engine(self) -> None:
        """The availability gauge and an event when the engine goes away and comes back."""
        was: bool | None = None
        while True:
            needed = bool(self.engine.sessions)
            now = self.engine.available if needed else None
            if now != was:
                if now is None:
                    self.metrics.available.set(1)
                else:
                    self.metrics.available.set(1 if now else 0)
                if was is not None and now is not None:
                    self.events.emit("bfd_engine_available" if now else "bfd_engine_unavailable",
                                     detail=f"BIRD pid {self.engine.pid}, started {self.engine.starts} times")
                was = now
                self.status_dirty()
            for p in self._peers:  # from the engine's states: an adopted BIRD's Up sessions log no change
                self.metrics.up.labels(p).set(1 if self.engine.state_of(p) == UP else 0)
            # woken at once by what the engine learns; with no sessions it has nothing to look at
            with trio.move_on_after(WATCH_EVERY if needed else math.inf):
                await self.engine.news.wait()

    def status(self) -> BfdStatus:
        e = self.engine
        if not e.sessions:
            return BfdStatus()
        rows = []
        for s in e.sessions:
            row = e.states.get(s.peer)
            rows.append(BfdSessionStatus(s.peer, s.interface, e.state_of(s.peer),
                                         row.interval_ms if row and e.available else 0,
                                         row.timeout_ms if row and e.available else 0, e.since.get(s.peer, 0.0)))
        return BfdStatus("running" if e.available else "unavailable", e.unavailable_since or 0.0,
                         max(0, e.starts - 1), tuple(rows))
