"""The agent's timed jobs: ending the kernel's grace, damping's releases, sweeping stale routes,
telling of kernel repairs and failing routes (rate-limited), giving memory back, releasing empty
IPAM blocks and keeping the policy filters and the pools' outgoing NAT enforced. Each is one task of the agent's nursery; what
each decides is in a pure module (damping, graceful_restart, throttle, memory, agent/policy).
"""
from __future__ import annotations

import logging
import math
from typing import Any

import trio

from calico_bgp.agent import throttle
from calico_bgp.agent.bulk_gc import bulks_since_full, collect_full
from calico_bgp.agent.kernel_writer import KernelWriter
from calico_bgp.agent.memory import CHURN_KEEP, CHURN_QUIET, give_back, release_memory
from calico_bgp.agent.neighbors import bgp_family
from calico_bgp.agent.reflection import reflect
from calico_bgp.agent.state import AgentState
from calico_bgp.datastore import DatastoreError
from calico_bgp.routing import topology
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.damping import DampingChange
from calico_bgp.routing.prefix import Prefix
from calico_bgp.speaker.speaker import Speaker
from calico_bgp.telemetry.eventlog import EventLog
from calico_bgp.telemetry.metrics import Metrics
from dataplane.logfmt import event
from dataplane.ratelimit import RateLimitedLog
from dataplane.routes.programmer import RouteFailure, RouteProgrammer

log = logging.getLogger("calico_bgp.agent.upkeep")


class Upkeep:
    def __init__(self, state: AgentState, name: str, speaker: Speaker, programmer: RouteProgrammer,
                 kernel: KernelWriter, events: EventLog, metrics: Metrics, warn: RateLimitedLog) -> None:
        self.state, self.name, self.speaker, self.programmer = state, name, speaker, programmer
        self.kernel, self.events, self.metrics, self.warn = kernel, events, metrics, warn
        self.repairs = throttle.repairs()
        self.route_events = throttle.route_events()
        self.policy_dirty = trio.Event()  # the cluster changed: reconcile the policy filters now
        self.nat_dirty = trio.Event()     # ... and the outgoing NAT
        # what wakes the damping timer and the stale sweeper while they have nothing to watch
        self.damping_news, self.stale_news = trio.Event(), trio.Event()
        state.dampener.on_news = lambda: self.damping_news.set()
        state.stale.on_news = lambda: self.stale_news.set()
        programmer.on_repair = self.on_repair
        kernel.on_failures = self.on_route_failures
        # ... and the summaries' writer, while nothing is held back
        self.held_news = trio.Event()
        warn.on_held = programmer.warnings.on_held = lambda: self.held_news.set()

    def policy_dirty_set(self) -> None:
        self.policy_dirty.set()
        self.nat_dirty.set()

    # ------------------------------------------------------------------ the kernel's grace
    async def grace(self, ready: trio.Event, timeout: float, settle: float) -> None:
        """End the programmer's grace once every session is up and UPDATEs went quiet, or on timeout."""
        with trio.move_on_after(timeout):
            await ready.wait()
            while True:
                await trio.sleep(0.2)
                if all(self._is_up(a) for a in self.state.sessions) and self.state.quiet(trio.current_time(), settle):
                    break
        self.programmer.end_grace()
        await self.speaker.routes_complete()  # End-of-RIB: helper peers drop what we did not re-announce
        self.events.emit("grace_end", detail=f"after {trio.current_time() - self.state.started:.1f}s, "
                                             f"{len(self.state.sessions)} sessions")
        self.kernel.mark_full()

    # ------------------------------------------------------------------ damping
    async def damping_timer(self) -> None:
        """Release suppressed paths as they become due (and forget decayed ones, every second while
        some are tracked); with nothing tracked it sleeps until a path flaps (Dampener.on_news), and a
        new suppression due before the release waited for brings that wake-up forward."""
        deadline = math.inf
        while True:
            self.damping_news = trio.Event()
            dampener = self.state.dampener
            if dampener.idle():
                deadline = math.inf
                await self.damping_news.wait()
                continue
            wait = dampener.next_release(trio.current_time())
            deadline = min(deadline, trio.current_time() + (min(wait + 0.01, 5.0) if wait is not None else 1.0))
            with trio.move_on_at(deadline):
                await self.damping_news.wait()
            if trio.current_time() < deadline:
                continue
            deadline = math.inf
            await self.released(self.state.dampener.release(trio.current_time()))

    async def released(self, out: DampingChange) -> None:
        """Paths damping let go of: an event each (withdrawn ones too), and the announced ones to the RIB."""
        state = self.state
        for key in out.reused:
            self.events.emit("damping_end", peer=key[0], prefix=str(key[1]))
            self.metrics.damping_events.labels("reuse").inc()
        if not out.announce or state.rib is None:
            return
        changed: set[Prefix] = set()
        by_peer: dict[str, dict[Prefix, PathAttributes]] = {}
        for (peer, prefix), a in out.announce.items():
            by_peer.setdefault(peer, {})[prefix] = a  # type: ignore[index]
        for peer, ann in by_peer.items():
            if peer in state.rib_peers:
                changed |= state.rib.update(state.rib_peers[peer], ann)
        if changed:
            self.kernel.mark_changed(changed)
            await reflect(state, self.speaker, changed)

    # ------------------------------------------------------------------ stale routes
    async def stale_sweeper(self, settle: float) -> None:
        """Drop stale routes when `StaleRoutes` says they are due (see calico_bgp/routing/graceful_restart.py)."""
        state = self.state
        while True:
            self.stale_news = trio.Event()
            if not state.stale:  # nothing kept: asleep until a session's routes are (StaleRoutes.on_news)
                await self.stale_news.wait()
                continue
            await trio.sleep(0.5)
            if state.rib is None:
                continue
            now = trio.current_time()
            for peer, is_up in state.stale.due(now, self._is_up, state.quiet(now, settle), self._sent_end_of_rib):
                changed = state.rib.sweep_stale(peer) if is_up else state.rib.peer_down(peer)
                self.events.emit("stale_swept", peer=peer, detail=f"session_up={is_up} removed={len(changed)}")
                if changed:
                    self.kernel.mark_changed(changed)
                    await reflect(state, self.speaker, changed)

    def _is_up(self, peer: str) -> bool:
        ps = self.speaker.peers.get(peer)
        return ps is not None and ps.state == "up"

    def _sent_end_of_rib(self, peer: str) -> bool:
        s = self.state.sessions.get(peer)
        return s is not None and (peer, bgp_family(s)) in self.state.eor

    # ------------------------------------------------------------------ kernel repairs and failures
    def on_repair(self, why: str, key: Any) -> None:
        """Someone changed our kernel routes; the programmer puts them back. At most 10 events a
        second: a bulk `ip route flush` must not flood the log (the metric counts every one)."""
        self.metrics.reconcile_repairs.labels("routes").inc()
        self._emit(self.repairs.admit("repair", trio.current_time(), prefix=str(key.prefix()), detail=why))
        self.held_news.set()

    def on_route_failures(self, failed: list[RouteFailure], recovered: list[str]) -> None:
        """A route that began to fail (or failed for a new reason), or that no longer fails: one event
        each, at most a burst per kind in a window and one summary of the rest (the metric counts all)."""
        now = trio.current_time()
        for kind, items in (("route_failed", [(f.prefix, f"{f.op}: {f.reason}") for f in failed]),
                            ("route_recovered", [(p, "in the kernel, or no longer wanted") for p in recovered])):
            for prefix, detail in items:
                self._emit(self.route_events.admit(kind, now, prefix=prefix, detail=detail))
        self.held_news.set()

    async def summaries(self) -> None:
        """The summary of a burst of repairs as its second ends, not only when some later repair comes;
        likewise of per-route events and warnings held back. Every second while some are held back;
        with none, asleep until one is (`on_held`, or a repair or route event admitted)."""
        while True:
            self.held_news = trio.Event()
            if not (self.repairs.limiter.pending() or self.route_events.limiter.pending()
                    or self.warn.pending() or self.programmer.warnings.pending()):
                await self.held_news.wait()
                continue
            await trio.sleep(1.0)
            now = trio.current_time()
            self._emit(self.repairs.due(now))
            self._emit(self.route_events.due(now))
            self.warn.flush()
            self.programmer.flush_logs()

    def _emit(self, out: list[throttle.Emit]) -> None:
        for e in out:
            self.events.emit(e.kind, peer=e.peer, prefix=e.prefix, detail=e.detail)

    # ------------------------------------------------------------------ memory, IPAM
    async def give_back_memory(self) -> None:
        """Once UPDATEs went quiet after a large table left, drop what nothing uses (memory.give_back)
        and hand the freed memory back to the system."""
        state = self.state
        while True:
            await trio.sleep(2.0)
            now = trio.current_time()
            if state.rib is None:
                continue
            held = state.rib.held()
            what = give_back(now - max(state.last_update, state.last_up), state.intake.cached, held, len(state.churn),
                             bulks_since_full())
            dropped = state.intake.trim(state.rib.holds) if what.trim_intake else 0
            settled = state.churn.forget_settled(now, CHURN_QUIET, CHURN_KEEP) if what.settle_churn else 0
            if dropped or settled:
                event(log, "memory_released", parsed_prefixes=dropped, churn_entries=settled, rss_mb=round(release_memory()))
            elif what.collect:
                collect_full()

    async def ipam_sweeper(self, client: Any, keys: Any, every: float) -> None:
        """Release this node's blocks once they have been seen empty by two sweeps, so a block does not
        stay affine to a node for the node's whole life (Calico keeps them forever)."""
        from ipam.allocator import BlockAllocator

        allocator = BlockAllocator(client, keys)
        while True:
            await trio.sleep(every)
            try:
                released = await allocator.reclaim_empty(self.name)
            except DatastoreError as exc:
                event(log, "ipam_sweep_failed", logging.WARNING, reason=str(exc))
                continue
            for cidr in released:
                self.events.emit("block_released", prefix=cidr, detail="empty for two sweeps")

    # ------------------------------------------------------------------ policy filters
    async def policy_filters(self, policy: Any) -> None:
        """PolicyFilters for this node -> XDP (or the nft/iptables fallback); counters -> metrics.
        On a change at once, and every 30 s regardless, which also repairs state changed behind our back."""
        from calico_bgp.agent.autodetect import EXCLUDED, read_interfaces

        last_forced = trio.current_time()
        while True:
            with trio.move_on_after(5.0):
                await self.policy_dirty.wait()
            self.policy_dirty = trio.Event()
            cluster = self.state.cluster
            me = cluster.nodes.get(self.name) if cluster else None
            if cluster is None or me is None:
                continue
            interfaces = await trio.to_thread.run_sync(read_interfaces)
            names = [i.name for i in interfaces]
            own = {a.address.split("/")[0] for a in me.spec.addresses} | set(topology.node_addresses(me).values())
            uplinks = [i.name for i in interfaces if not EXCLUDED.match(i.name) and any(str(a.ip) in own for a in i.addresses)]
            force = trio.current_time() - last_forced >= 30.0
            if force:
                last_forced = trio.current_time()
            before = policy.last_error
            mode = await policy.reconcile(cluster.policies.values(), me.labels, names, uplinks, force=force)
            if policy.last_error and policy.last_error != before:
                self.events.emit("filter_rejected", detail=policy.last_error)
            self.state.filter_mode = mode or ""
            try:
                await policy.export_metrics()
            except Exception:  # noqa: BLE001 - counters are best effort; enforcement is what matters
                event(log, "filter_metrics_failed", logging.ERROR, exc_info=True)

    # ------------------------------------------------------------------ outgoing NAT
    async def nat_outgoing(self, nat: Any, requested_mode: str) -> None:
        """IPPool natOutgoing -> masquerade rules, in the netfilter tool the policy filters use (the
        requested one until the filters have a mode; nftables first when they run at XDP or not at
        all). On a change at once, and every 30 s regardless, which repairs state changed behind our back."""
        while True:
            with trio.move_on_after(30.0):
                await self.nat_dirty.wait()
            self.nat_dirty = trio.Event()
            await self.nat_once(nat, requested_mode)

    async def nat_once(self, nat: Any, requested_mode: str) -> None:
        """One natOutgoing pass; what it leaves programmed (mode, CIDRs, error) goes into the state the
        status document and the metrics read."""
        cluster = self.state.cluster
        if cluster is None:
            return
        what = await nat.reconcile(cluster.pools.values(), self.state.filter_mode or requested_mode)
        self.state.nat_mode, self.state.nat_masquerade, self.state.nat_error = nat.status()
        if what == "repaired":
            self.metrics.reconcile_repairs.labels("nat").inc()
            self.events.emit("repair", detail=f"outgoing NAT restored ({nat.engine.mode})")
