"""The control loop: the cluster view (one etcd watch) -> this node's sessions, the speaker's
neighbours, import policy over what peers sent, and what is announced to each peer.

Runs a sync on every datastore change (a burst coalesced), when a hold-down ends, and when poked
(a peer held idle). A sync that fails keeps the last good state. Deciding is in routing/
(topology, bgpfilter, martians, origin, desired, route_refresh) and neighbors.py; this moves values.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable

import trio

from calico_bgp.agent.kernel_writer import KernelWriter
from calico_bgp.agent.neighbors import bgp_family, listen_addresses, neighbor_for, read_password_files, rib_peer
from calico_bgp.agent.reflection import reflect
from calico_bgp.agent.session_events import SessionEvents
from calico_bgp.agent.state import AgentState
from calico_bgp.resources.bgpfilter import BGPFilter
from calico_bgp.resources.ippool import IPPool
from calico_bgp.resources.view import ClusterState, ClusterView
from calico_bgp.routing import advertise_services, bgpfilter, desired, martians, policy_scope, route_refresh, topology
from calico_bgp.routing.damping import DampingChange, DampingParams
from calico_bgp.routing.origin import OriginIndex
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.reflection_export import ReflectionExport
from calico_bgp.routing.rib import Rib
from calico_bgp.speaker import commands as speaker_cmds
from calico_bgp.speaker.neighbor import Neighbor
from calico_bgp.speaker.speaker import Speaker
from calico_bgp.telemetry.collector import PeerCounts
from calico_bgp.telemetry.eventlog import EventLog
from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.agent.control")


class ControlLoop:
    def __init__(self, state: AgentState, name: str, view: ClusterView, speaker: Speaker, events: EventLog,
                 kernel: KernelWriter, sessions: SessionEvents, released: Callable[[DampingChange], Any],
                 synced: Callable[[], None]) -> None:
        self.state, self.name, self.view, self.speaker, self.events = state, name, view, speaker, events
        self.kernel, self.sessions = kernel, sessions
        self.released = released  # async: paths damping let go of (turning damping off) into the RIB
        self.synced = synced      # after each sync (the policy filters follow the cluster too)
        self.ready = trio.Event()  # the first sync is done
        self._poke = trio.Event()
        # what import policy last judged the RIB with (policy_scope: the next sync re-judges the difference)
        self._judged: policy_scope.PolicyInputs | None = None
        self._judged_rib: Rib | None = None
        self._judged_peers: dict[str, Peer] = {}
        self._skipped: set[tuple[str, int]] = set()  # sessions to an address already run on another port
        self._reflected_with: tuple | None = None  # what the last sync's reflection depended on besides the RIB

    def poke(self) -> None:
        """Sync again without a datastore change (a peer held idle must leave the neighbours)."""
        self._poke.set()

    async def run(self) -> None:
        while True:
            try:
                await self.sync(self.view.snapshot())
            except Exception:  # noqa: BLE001 - one bad resource must not stop the agent
                event(log, "sync_failed", logging.ERROR, exc_info=True, action="keep_last_good")
            self.ready.set()
            end = self.state.backoff.next_end(trio.current_time())
            with trio.move_on_after(end - trio.current_time() + 0.01 if end is not None else math.inf):
                async with trio.open_nursery() as n:
                    async def first(wait: Any) -> None:
                        await wait()
                        n.cancel_scope.cancel()
                    n.start_soon(first, self.view.changed)
                    n.start_soon(first, self._poke.wait)
            self._poke = trio.Event()
            await trio.sleep(0.02)  # coalesce a burst of watch events into one pass

    async def sync(self, cluster: ClusterState) -> None:
        state = self.state
        state.cluster = cluster
        me = cluster.nodes.get(self.name)
        if me is None or me.spec.bgp is None:
            event(log, "no_node_resource", logging.WARNING, node=self.name, action="no_sessions")
            await self.speaker.set_neighbors([])
            state.configured = set()
            return
        cfg = cluster.config
        local = LocalSpeaker(topology.node_as(me, cfg), topology.router_id(me), topology.cluster_id(me) or None)
        pools = list(cluster.pools.values())
        if local != state.local:
            event(log, "local_speaker", asn=local.asn, router_id=local.router_id, cluster_id=local.cluster_id)
            state.local = local
            # a new cluster id changes loop checks and reflection, not the sessions: keep what the
            # peers sent (reapply_policy below re-evaluates it)
            state.rib = Rib(local) if state.rib is None else state.rib.rebuilt(local)
            state.rib_peers = {}
        assert state.rib is not None
        damp = cfg.spec.damping
        params = DampingParams(half_life=damp.half_life, reuse=damp.reuse, suppress=damp.suppress,
                               max_suppress=damp.max_suppress)
        if params != state.dampener.params or damp.enabled != state.dampener.enabled:
            # keep the paths seen and penalties earned; turning damping off releases what it suppressed
            state.dampener, released = state.dampener.reconfigured(params, damp.enabled, trio.current_time(),
                                                                   state.rib.received())
            await self.released(released)

        sessions, skipped = topology.runnable(topology.sessions_for(
            me, list(cluster.nodes.values()), cfg, cluster.peers.values(), cluster.node_configs))
        for sk in skipped:  # `node sessions` shows these too, with the same reason
            if sk.session.key not in self._skipped:
                event(log, "session_skipped", logging.WARNING, peer=sk.session.peer_address,
                      port=sk.session.peer_port, reason=sk.why)
        self._skipped = {sk.session.key for sk in skipped}
        configured, held = await self._neighbors(sessions, cluster, local)
        for gone in set(state.sessions) - set(sessions):
            if state.forget_peer(gone, trio.current_time()):
                self.kernel.mark_full()
        for addr, s in sessions.items():
            old = state.sessions.get(addr)
            if old is None or old.kind != s.kind:  # e.g. mesh -> rr-client: its counters start again
                state.counts[addr] = PeerCounts()
        state.sessions = sessions
        state.peer_routes = desired.peer_routes(sessions.values())
        state.rib_peers = {a: rib_peer(s, cluster, state.links.get(a)) for a, s in sessions.items()}
        await self.speaker.set_neighbors(configured.values(), abrupt=held)
        # a neighbour (re)configured starts from nothing in the speaker: it gets every export and reflection
        added, state.configured = configured.keys() - state.configured, set(configured)
        for addr in added:
            state.exported.pop(addr, None)

        # import policy follows pools and filters; re-run it over what peers sent (soft reconfiguration)
        # martians and unusable next hops (own addresses among them) go before any filter is asked
        own = martians.own_addresses([a.address for a in me.spec.addresses] + list(topology.node_addresses(me).values()))
        state.rib.import_policy = martians.guarded(bgpfilter.import_policy(pools, self.filters_of), own)
        origins = OriginIndex.of_cluster(self.name, cluster.nodes.values(), pools, cluster.blocks.values(), cfg)
        state.rib.origin_check = origins.check
        changed = self._rejudge(policy_scope.PolicyInputs(
            pools=tuple((p.metadata.name, p.spec) for p in pools),
            filters=tuple((a, tuple(self.filters_of(a))) for a in sessions), own=own,
            fabric_as=origins.fabric_as, origins=origins.origins, blocks=cluster.blocks))
        await self.refresh_capped(pools)

        for peer in list(sessions):  # a limit added or lowered applies to what the peer already sent
            await self.sessions.check_max_prefixes(peer)
        state.own = desired.announcements(self.name, cluster.blocks, pools)
        state.own |= advertise_services.service_prefixes(cfg.spec, me.labels, pools)  # serviceClusterIPs, ...
        self.kernel.keep_out = advertise_services.kept_out_of_kernel(cfg.spec)  # mark_full below applies it
        usage, state.borrowed = desired.pool_usage(self.name, cluster.blocks, pools)
        state.pool_usage = dict(usage)
        await self.export()
        if local.is_reflector:  # reflected routes go through each iBGP neighbour's export filters too
            # the service CIDRs this node announces are its /staticroutes, which Calico's filter accepts
            state.reflection_export = ReflectionExport.of(
                pools, advertise_services.service_prefixes(cfg.spec, me.labels, pools),
                {a: {v: bgpfilter.compile_rules(self.filters_of(a), "export", v) for v in (4, 6)}
                 for a, s in sessions.items() if s.ibgp and s.filters})
        # a neighbour just added needs every reflected route, not only what changed; so does every
        # neighbour when its export filters, the pools, the service CIDRs or the peers changed
        export = state.reflection_export
        reflected_with = (dict(state.rib_peers), export and (export.sent, export.withheld, export.rules))
        same, self._reflected_with = reflected_with == self._reflected_with, reflected_with
        await reflect(state, self.speaker, changed if changed and same and not added else None)
        self.kernel.mark_full()
        self.synced()

    def _rejudge(self, inputs: policy_scope.PolicyInputs) -> set[Prefix]:
        """Import policy re-run over what peers sent, as far as what changed since the last sync can
        change a verdict (policy_scope): a peer whose own values changed in full, the others over the
        prefixes concerned. Returns the prefixes whose selection changed."""
        rib = self.state.rib
        assert rib is not None
        peers = self.state.rib_peers
        scope = policy_scope.rejudge(self._judged if rib is self._judged_rib else None, inputs)
        if scope is None:
            changed = rib.reapply_policy(peers.values())
        else:
            changed = rib.reapply_policy([p for a, p in peers.items() if self._judged_peers.get(a) != p])
            if scope:
                changed |= rib.reapply_policy([p for a, p in peers.items() if self._judged_peers.get(a) == p], scope)
        self._judged, self._judged_rib, self._judged_peers = inputs, rib, dict(peers)
        return changed

    async def _neighbors(self, sessions: dict[str, topology.Session], cluster: ClusterState,
                         local: LocalSpeaker) -> tuple[dict[str, Neighbor], set[str]]:
        """The speaker's neighbours: every session but those held idle and those that cannot be
        configured (each with its reason in session_errors); and the peers held idle now. Password
        files are read in a worker thread, before anything is decided."""
        state = self.state
        state.session_errors = {}
        held = state.backoff.held(trio.current_time())
        for peer, hold in held.items():  # held idle: left out of the speaker's neighbours
            if peer in sessions:
                state.session_errors[peer] = hold.why
        wanted = [s for s in sessions.values() if s.peer_address not in state.session_errors]
        files = await trio.to_thread.run_sync(read_password_files, wanted) if any(
            s.password is not None and s.password.file for s in wanted) else {}
        out: dict[str, Neighbor] = {}
        port = topology.listen_port(self.name, cluster.config, cluster.node_configs)  # ours, or node.<name>'s
        listen_on = listen_addresses(cluster.config, cluster.nodes[self.name])  # bindMode: the global one, as confd
        for s in sessions.values():
            if s.peer_address in state.session_errors:
                continue
            try:
                n = neighbor_for(s, local.router_id, port, cluster.secrets, files, listen_on)
                out[n.key] = n
            except ValueError as exc:
                event(log, "bad_session", logging.ERROR, peer=s.peer_address, reason=str(exc), action="skip")
                state.session_errors[s.peer_address] = str(exc)
        return out, set(held)

    async def refresh_capped(self, pools: list[IPPool]) -> None:
        """Soft reconfiguration re-judges only the rejected paths the RIB kept; a peer that had more
        is asked for its routes again when its import policy changed (route_refresh decides)."""
        state = self.state
        assert state.rib is not None
        for addr, s in state.sessions.items():
            inputs = (tuple((p.metadata.name, p.spec) for p in pools), tuple(self.filters_of(addr)))
            before, state.policy_inputs[addr] = state.policy_inputs.get(addr), inputs
            op = state.peer_open.get(addr)
            ps = self.speaker.peers.get(addr)
            can = op is not None and op.route_refresh and ps is not None and ps.state == "up"
            plan = route_refresh.after_policy_change(before, inputs, state.rib.rejected_not_kept(addr), can)
            if plan is None:
                continue
            if plan.ask:
                state.rib.forget_not_kept(addr)  # counted again as they come back
                await self.speaker.send([speaker_cmds.route_refresh(addr, bgp_family(s))])
            self.events.emit("route_refresh", peer=addr, detail=plan.detail)

    def filters_of(self, peer: str) -> list[BGPFilter]:
        s = self.state.sessions.get(peer)
        cluster = self.state.cluster
        if s is None or cluster is None:
            return []
        unreadable = set()
        for key in cluster.corrupt:  # usually none
            found = self.view.store.kind_for_key(key)
            if found is not None and found[0] is BGPFilter:
                unreadable.add(found[1])
        return bgpfilter.filters_for(s.filters, cluster.filters, unreadable)

    async def export(self) -> None:
        """Announce what we originate to each peer, through its export filters; send only the difference."""
        state = self.state
        cluster = state.cluster
        tagged = bgpfilter.advertised_communities(  # the node's own prefixAdvertisements, else the cluster's
            topology.advertising_spec(self.name, cluster.config, cluster.node_configs), state.own) if cluster else {}
        want_all = {addr: bgpfilter.export_routes(state.own, self.filters_of(addr), s.ibgp, s.local_as, tagged)
                    for addr, s in state.sessions.items() if addr in state.configured}
        batches = bgpfilter.plan_exports(state.exported, want_all)
        state.exported = want_all
        sent = 0
        for b in batches:
            sent += len(b.prefixes) * len(b.neighbors)
            for n in b.neighbors:
                counts = state.peer_counts(n)
                if counts is not None and b.attrs is None:
                    counts.withdrawals_sent += len(b.prefixes)
                elif counts is not None:
                    counts.updates_sent += len(b.prefixes)
            prefixes = [str(p) for p in b.prefixes]
            if b.attrs is None:
                await self.speaker.withdraw(list(b.neighbors), prefixes)
            else:
                await self.speaker.announce(list(b.neighbors), prefixes, attributes=b.attrs)
        if sent:
            event(log, "exports", originated=len(state.own), peers=len(want_all), changes=sent)
