"""What the speaker tells, wired to the routing core: UPDATEs through the intake and damping into
the RIB (then the kernel writer and reflection), session state changes into stability, back-off
and the fate of the peer's routes (routing/session_down.py), OPENs and NOTIFICATIONs.

Decisions are elsewhere: the intake (routing/intake.py), the maxPrefixes verdict
(routing/max_prefixes.py), what a peer's routes become when it goes down (routing/session_down.py),
the back-off (routing/backoff.py). This moves values between them and the edges.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Callable

import trio

from calico_bgp.agent.bulk_gc import held_off
from calico_bgp.agent.kernel_writer import KernelWriter
from calico_bgp.agent.neighbors import bgp_family, rib_peer
from calico_bgp.agent.reflection import reflect
from calico_bgp.agent.snapshot import FSM_STATE
from calico_bgp.agent.state import AgentState
from calico_bgp.routing import malformed, max_prefixes, session_down
from calico_bgp.routing.backoff import MAX_PREFIXES, Hold
from calico_bgp.routing.intake import Intake
from calico_bgp.routing.nexthop import session_link
from calico_bgp.routing.topology import Session
from calico_bgp.speaker import commands as speaker_cmds
from calico_bgp.speaker.events import EXABGP_EXITED, EndOfRib, Notification, PeerOpen, PeerState, Update
from calico_bgp.speaker.speaker import Speaker
from calico_bgp.telemetry.collector import count
from calico_bgp.telemetry.eventlog import EventLog
from calico_bgp.telemetry.metrics import Metrics
from dataplane.logfmt import event
from dataplane.ratelimit import RateLimitedLog

log = logging.getLogger("calico_bgp.agent.session_events")


class SessionEvents:
    def __init__(self, state: AgentState, speaker: Speaker, events: EventLog, metrics: Metrics, kernel: KernelWriter,
                 grace_timeout: float, status_dirty: Callable[[], None], poke: Callable[[], None]) -> None:
        self.state, self.speaker, self.events, self.metrics, self.kernel = state, speaker, events, metrics, kernel
        self.grace_timeout = grace_timeout  # how long routes are kept stale when our own speaker exited
        self.status_dirty = status_dirty
        self.poke = poke  # re-run the control loop's sync (a peer held idle must leave the neighbours)
        self.warn = RateLimitedLog(log)  # per-route warnings (bad_nlri, ...)
        self._hold_tx, self._hold_rx = trio.open_memory_channel[tuple[str, Hold]](math.inf)
        speaker.on_state = self.state_now
        # a kernel batch after a quiet spell waits for the UPDATEs already read to be applied
        kernel.backlog = lambda: speaker.events.statistics().current_buffer_used

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._enforce_holds)
            async for ev in self.speaker.events:
                try:
                    if isinstance(ev, Update):
                        await self.on_update(ev)
                    elif isinstance(ev, PeerState):
                        await self.on_peer_state(ev)
                    elif isinstance(ev, EndOfRib):
                        self.state.eor.add((ev.peer, ev.family))
                    elif isinstance(ev, PeerOpen):
                        self.on_open(ev)
                    elif isinstance(ev, Notification):
                        self.on_notification(ev)
                except Exception:  # noqa: BLE001 - a bad UPDATE is logged and dropped, never fatal
                    event(log, "speaker_event_failed", logging.ERROR, exc_info=True, kind=type(ev).__name__)

    def on_open(self, ev: PeerOpen) -> None:
        self.state.peer_open[ev.peer] = ev
        s = self.state.sessions.get(ev.peer)
        if session_down.stale_ends_on_open(self.state.stale.why(ev.peer), bgp_family(s) if s else None,
                                           ev.forwarding_kept):
            self.state.stale.end_now(ev.peer)

    def on_notification(self, ev: Notification) -> None:
        counts = self.state.peer_counts(ev.peer)
        if counts is not None:
            count(counts.notifications, str(ev.code))
        else:
            key = (ev.peer, str(ev.code))
            self.state.stray_notifications[key] = self.state.stray_notifications.get(key, 0) + 1

    async def on_update(self, ev: Update) -> None:
        state = self.state
        peer = state.rib_peers.get(ev.peer)
        if peer is None or state.rib is None:
            event(log, "update_from_unknown_peer", logging.WARNING, peer=ev.peer, action="ignore")
            return
        now = trio.current_time()
        with held_off(len(ev.announced) + len(ev.withdrawn)):  # not across the awaits below: no other task's turn
            got = state.intake.apply(ev, peer, state.rib, state.dampener, now)
            churning = state.churn.record(got.announced, got.withdrawn, now)
        for text, next_hop in got.bad:
            self.warn.warning("bad_nlri", peer=ev.peer, prefix=text, next_hop=next_hop, action="ignore")
        if got.malformed:
            self.report_malformed(ev.peer, got)
        announced, withdrawn, changed = got.announced, got.withdrawn, got.changed
        state.stab(ev.peer).count_updates(len(announced), len(withdrawn), now)
        counts = state.peer_counts(ev.peer)
        if counts is not None:
            counts.updates_received += len(announced)
            counts.withdrawals_received += len(withdrawn)
        for prefix in churning:  # reported whether damping is on or off
            self.events.emit("prefix_churn", peer=ev.peer, prefix=str(prefix),
                             detail=f"more than {state.churn.limit} changes within {state.churn.window:.0f}s"
                                    f" (damping {'on' if state.dampener.enabled else 'off'})")
        for key in got.suppressed:
            self.events.emit("damping_start", peer=key[0], prefix=str(key[1]))
            self.metrics.damping_events.labels("suppress").inc()
        state.last_update = now
        await self.check_max_prefixes(ev.peer)
        if changed:
            self.kernel.mark_changed(changed, now)
            await reflect(state, self.speaker, changed)
        self.status_dirty()

    def report_malformed(self, peer: str, got: Intake) -> None:
        """Count every malformed UPDATE by reason; log and record an event for the first of each
        reason from a peer in its session (malformed.MalformedReports), not for every UPDATE."""
        counts = self.state.peer_counts(peer)
        for m in got.malformed:
            if counts is not None:
                count(counts.malformed, m.reason)
            if not self.state.malformed_reports.first(peer, m.reason):
                continue
            what = malformed.action(m.reason)
            if what == malformed.TREAT_AS_WITHDRAW:
                what = f"{what} ({got.treated_as_withdrawn} prefixes)"
            event(log, "malformed_update", logging.WARNING, peer=peer, reason=m.reason, detail=m.detail, action=what)
            self.events.emit("malformed_update", peer=peer,
                             detail=f"{m.reason}: {m.detail}; {what}; further ones only counted "
                                    f"(calico_bgp_peer_malformed_updates_total)")

    async def check_max_prefixes(self, peer: str) -> None:
        """A limit broken is acted on once (max_prefixes.check): an event, the counter, and for
        `teardown` a Cease and the peer held idle for a while (doubling on repeat)."""
        state = self.state
        s = state.sessions.get(peer)
        if s is None or s.max_prefixes is None or state.rib is None:
            return  # no limit: nothing changes (and counting walks the whole RIB)
        verdict = max_prefixes.check(state.rib.accepted_count(peer) + state.rib.rejected_count(peer),
                                     max_prefixes.Limit(s.max_prefixes, s.max_prefix_action),
                                     state.max_prefix_hit.get(peer))
        if verdict.acted_on is None:
            state.max_prefix_hit.pop(peer, None)
        else:
            state.max_prefix_hit[peer] = verdict.acted_on
        if not verdict.act:
            return
        self.events.emit("max_prefixes", peer=peer, detail=verdict.detail)
        counts = state.peer_counts(peer)
        if counts is not None:
            count(counts.max_prefix_actions, s.max_prefix_action)
        if verdict.teardown:  # Cease / Maximum Number of Prefixes Reached (RFC 4486)
            await self.speaker.send([speaker_cmds.teardown(peer, 1)])
            state.backoff.hold(peer, trio.current_time(), MAX_PREFIXES, "max-prefixes", verdict.hold_why)
            self.poke()

    async def on_peer_state(self, ev: PeerState) -> None:
        state = self.state
        now = trio.current_time()
        s = state.sessions.get(ev.peer)
        if s is None:
            # a session we removed reporting its teardown: forget_peer cleaned up after it, and a
            # gone peer gets no stability record nor metric series (a "down" one would keep alerting)
            return
        if ev.state == "up" and ":" in ev.peer:
            await self._find_link(ev, s)
        stab = state.stab(ev.peer)
        fsm = FSM_STATE.get(ev.state, ev.state)
        was = stab.state
        counts = state.peer_counts(ev.peer)
        if stab.transition(fsm, now, ev.reason) and counts is not None:
            counts.flaps += 1
        if fsm == "established" and was != "established":
            self.events.emit("session_up", peer=ev.peer, detail=s.kind)
        elif was == "established" and fsm != "established":
            self.events.emit("session_down", peer=ev.peer, detail=ev.reason or "unknown")
            state.malformed_reports.forget(ev.peer)  # a new session reports its malformed UPDATEs afresh
        if counts is not None:
            counts.transitions += 1
        state.since[ev.peer] = time.time()
        if fsm == "established":
            state.last_up = now
        if ev.state == "down":
            await self._session_down(ev, s, now)
        self.status_dirty()

    async def _session_down(self, ev: PeerState, s: Session, now: float) -> None:
        state = self.state
        state.eor = {e for e in state.eor if e[0] != ev.peer}  # the next End-of-RIB ends a stale period
        if state.rib is None:
            return
        op = state.peer_open.get(ev.peer)
        restart = session_down.restart_time(bgp_family(s), op.graceful_restart, op.graceful_families) if op else None
        keep = session_down.on_down(ev.reason, ev.reason == EXABGP_EXITED, restart, self.grace_timeout)
        if keep is not None:
            if state.stale.keep(ev.peer, now, keep.keep_for, keep.why):
                state.rib.mark_stale(ev.peer)
                self.events.emit(keep.why, peer=ev.peer, detail=f"kept {state.rib.stale_count(ev.peer)} routes stale "
                                                                f"for at most {keep.keep_for:.0f}s")
            return
        state.stale.forget(ev.peer)
        state.max_prefix_hit.pop(ev.peer, None)
        for key in state.dampener.peer_down(ev.peer, now):
            self.events.emit("damping_start", peer=key[0], prefix=str(key[1]))
            self.metrics.damping_events.labels("suppress").inc()
        changed = state.rib.peer_down(ev.peer)
        if changed:
            self.kernel.mark_changed(changed, now)
            await reflect(state, self.speaker, changed)

    def state_now(self, ev: PeerState) -> None:
        """A session's state as the bridge reads it, before the UPDATEs queued ahead of it are through:
        the back-off decides here (RFC 4271 8.1.1), and a peer it holds leaves ExaBGP at once."""
        if ev.peer not in self.state.sessions:
            return
        if ev.state == "up":
            self.state.backoff.established(ev.peer, trio.current_time())
        elif ev.state == "down":
            hold = self.state.backoff.went_down(ev.peer, trio.current_time(), ev.reason)
            if hold is not None:
                self.speaker.hold_back(ev.peer)
                self._hold_tx.send_nowait((ev.peer, hold))

    async def _enforce_holds(self) -> None:
        """A peer reset for errors again and again: out of ExaBGP now (while it is a neighbour, a peer
        that reconnects at once gets in), an event, and the next sync leaves it out until the hold ends."""
        async for peer, hold in self._hold_rx:
            self.events.emit("session_backoff", peer=peer, detail=hold.why)
            try:
                await self.speaker.drop_neighbor(peer)
                self.state.configured.discard(peer)
            except Exception:  # noqa: BLE001 - the next sync leaves the peer out all the same
                event(log, "hold_apply_failed", logging.ERROR, exc_info=True, peer=peer, action="next_sync")
            self.poke()

    async def _find_link(self, ev: PeerState, s: Session) -> None:
        """On an IPv6 session coming up, before its first UPDATE: the link it runs over when the peer is
        directly connected (read from the kernel), which a link-local next hop from it is scoped to."""
        from calico_bgp.agent.autodetect import read_interfaces

        try:
            interfaces = await trio.to_thread.run_sync(read_interfaces)
        except OSError as exc:  # keep what we knew: its routes stay as they are
            event(log, "session_link_failed", logging.WARNING, peer=ev.peer, error=str(exc))
            return
        local = ev.local_address or s.local_address
        link = session_link(ev.peer, local, [(i.name, i.addresses) for i in interfaces])
        state = self.state
        if ev.peer in state.links and state.links[ev.peer] == link:
            return
        state.links[ev.peer] = link
        event(log, "session_link", peer=ev.peer, local=local,
              interface=link.name if link else "none (not directly connected)")
        if ev.peer in state.rib_peers and state.cluster is not None:
            state.rib_peers[ev.peer] = rib_peer(s, state.cluster, link)
