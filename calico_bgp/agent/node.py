"""The node agent: one trio nursery wiring etcd, the speaker, the RIB and the kernel.

    cluster view (etcd watch) --> _control: sessions, announcements, import policy
    speaker events (ExaBGP)   --> _on_update / _on_peer_state: damping -> RIB -> reflection
    RIB + local blocks        --> kernel_writer.KernelWriter: the route programmer (coalesced batches)
    everything                --> StatusPublisher: status/<node> bound to a lease; Prometheus metrics

Decisions live in pure modules (topology, rib, desired, damping, stability); this file only
moves values between them and the edges.
"""
from __future__ import annotations

import gc
import heapq
import ipaddress
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import trio

from calico_bgp.agent import status as st
from calico_bgp.agent.kernel_writer import KernelWriter
from calico_bgp.agent.publisher import StatusPublisher
from calico_bgp.datastore import DatastoreError, Keys
from calico_bgp.resources import model
from calico_bgp.resources.bgpfilter import BGPFilter
from calico_bgp.resources.ippool import IPPool
from calico_bgp.resources.node import Node, NodeAddress, NodeBGPSpec, NodeSpec
from calico_bgp.resources.store import ResourceStore
from calico_bgp.resources.view import ClusterState, ClusterView
from calico_bgp.routing import bgpfilter, desired, malformed, martians, topology
from calico_bgp.routing.backoff import MAX_PREFIXES, Hold, SessionBackoff
from calico_bgp.routing.damping import Dampener, DampingChange, DampingParams
from calico_bgp.routing.graceful_restart import GRACEFUL_RESTART, SPEAKER_RESTART, StaleRoutes, graceful
from calico_bgp.routing.intake import Intake, UpdateIntake
from calico_bgp.routing.nexthop import SessionLink, session_link
from calico_bgp.routing.origin import REASON_PREFIX as ORIGIN_INVALID
from calico_bgp.routing.origin import OriginIndex
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.reflection import reflections
from calico_bgp.routing.rib import Rib
from calico_bgp.routing.topology import Session
from calico_bgp.speaker import commands as speaker_cmds
from calico_bgp.speaker.events import EXABGP_EXITED, EndOfRib, Notification, PeerOpen, PeerState, Update
from calico_bgp.speaker.neighbor import IPV4_UNICAST, IPV6_UNICAST, Neighbor
from calico_bgp.speaker.speaker import Speaker
from calico_bgp.telemetry.eventlog import EventLog
from calico_bgp.telemetry.metrics import Metrics
from calico_bgp.telemetry.stability import ChurnTracker, PeerStability
from dataplane.ratelimit import BurstLimiter, RateLimitedLog
from dataplane.routes.programmer import UNBUILDABLE, RouteFailure, RouteProgrammer
from dataplane.routes.route import Route, RouteKind, key_of

log = logging.getLogger("calico_bgp.agent.node")
# a TCP MD5 mismatch is invisible to BGP: the kernel drops the segments, so the session just never opens
MD5_HINT = "TCP MD5 is configured: a password mismatch keeps the session from opening, silently"
VERSION = "0.1.0"
TRIM_AT = 50_000  # parsed prefixes beyond what the RIB holds before the intake cache is trimmed
CHURN_QUIET = 10.0  # seconds without a change before a prefix's churn entry may go (all but the busiest)
CHURN_KEEP = 1000  # churn entries kept beyond what the RIB holds: the busiest, for `routes --churn`


@attrs.frozen
class AgentOptions:
    name: str
    ip: str | None = None                  # "198.18.0.1/24" or bare; None: autodetect or keep the Node's
    ip6: str | None = None
    ip_autodetect: str | None = None
    table: int = 254
    protocol: int | None = None            # None: dataplane's default
    metrics_port: int | None = None
    state_dir: Path = Path("/run/calico-bgp")
    grace_timeout: float = 30.0            # keep adopted kernel routes at most this long after start
    settle: float = 1.0                    # quiet time after the last session came up before ending grace
    status_ttl: int = 15
    ipam_sweep: float = 60.0               # seconds between sweeps releasing this node's empty blocks
    filter_mode: str = "auto"              # PolicyFilter enforcement: auto | xdp | nft | iptables | off


class NodeAgent:
    def __init__(self, client: Any, keys: Keys, opts: AgentOptions, metrics: Metrics | None = None) -> None:
        self.client = client
        self.keys = keys
        self.opts = opts
        self.store = ResourceStore(client, keys)
        self.view = ClusterView(client, keys)
        self.metrics = metrics or Metrics()
        self.speaker = Speaker(Path(opts.state_dir) / "speaker")
        kw = {} if opts.protocol is None else {"protocol": opts.protocol}
        self.programmer = RouteProgrammer(table=opts.table, **kw)
        self.events = EventLog(client, keys.events(opts.name), opts.name)
        self.policy = None
        if opts.filter_mode != "off":
            from calico_bgp.agent.policy import PolicyFilterReconciler
            from dataplane.filters.engine import FilterEngine

            state = Path(opts.state_dir)
            self.policy = PolicyFilterReconciler(
                FilterEngine(opts.filter_mode, pin_root=state / "bpf", state_dir=state / "filters"), self.metrics)
        self._policy_dirty = trio.Event()
        self.programmer.on_repair = self._on_repair
        self.local: LocalSpeaker | None = None
        self.rib: Rib | None = None
        self.dampener: Dampener[PathAttributes] = Dampener(DampingParams(), enabled=False)
        self.intake = UpdateIntake()
        self.malformed_reports = malformed.MalformedReports()
        self.churn = ChurnTracker()
        self.stability: dict[str, PeerStability] = {}
        self.sessions: dict[str, Session] = {}
        self.rib_peers: dict[str, Peer] = {}
        self.links: dict[str, SessionLink | None] = {}  # IPv6 peer -> its link when directly connected
        self.own: set[Prefix] = set()
        self.exported: dict[str, dict[Prefix, PathAttributes]] = {}
        self.configured: set[str] = set()  # the sessions the speaker has as neighbours (not failed to configure)
        self.peer_routes: list[Route] = []  # host routes to peers behind a gateway (reachableBy), per session set
        self._pools_seen: set[str] = set()  # pools with metric series
        self.state: ClusterState | None = None
        self.started_wall = time.time()
        self.started = trio.current_time()
        self.since: dict[str, float] = {}
        self.eor: set[tuple[str, str]] = set()
        self.max_prefix_hit: dict[str, tuple[int, str]] = {}  # peer -> the (limit, action) acted on
        self.backoff = SessionBackoff()  # peers held idle: reset for errors again and again, or maxPrefixes
        self._origin_flagged: set[str] = set()  # peers whose origin-invalid paths have had their event
        self.speaker.on_state = self._state_now
        self._hold_tx, self._hold_rx = trio.open_memory_channel[tuple[str, Hold]](math.inf)
        self._poke = trio.Event()  # re-run _sync without a datastore change (a hold-down ended)
        self.stale = StaleRoutes()  # peers whose routes are kept after their session dropped
        self.peer_open: dict[str, PeerOpen] = {}  # each peer's last OPEN (its graceful-restart capability)
        self.session_errors: dict[str, str] = {}  # peer -> why its session is not configured
        self._repairs = BurstLimiter(10, 1.0)  # repair events: 10 a second, then one summary
        self._policy_inputs: dict[str, tuple[Any, ...]] = {}  # per peer: what its import policy was made of
        self.filter_mode = ""
        self.publisher = StatusPublisher(client, keys.status(opts.name), opts.status_ttl, self.build_status,
                                         lambda: self._last_update)
        self.kernel = KernelWriter(self.programmer, self.metrics, self._kernel_inputs, self.publisher.mark_dirty)
        self.kernel.on_failures = self._on_route_failures
        self._per_route_events = BurstLimiter()  # route_failed / route_recovered: a burst is summarised
        self._warn = RateLimitedLog(log)  # per-route warnings (bad_nlri, ...)
        self._last_update = 0.0
        self._last_up = 0.0
        self.ready = trio.Event()

    # ------------------------------------------------------------------ lifecycle
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        Path(self.opts.state_dir).mkdir(parents=True, exist_ok=True)
        async with self.programmer:
            log.info("event=agent_start node=%s adopted_routes=%d", self.opts.name, self.programmer.adopted)
            async with trio.open_nursery() as nursery:
                await self._start_view(nursery)
                await nursery.start(self.events.run)
                await self._ensure_node()
                await nursery.start(self.speaker.run)
                await nursery.start(self.programmer.run)
                nursery.start_soon(self._events)
                nursery.start_soon(self._enforce_holds)
                nursery.start_soon(self._control)
                nursery.start_soon(self.kernel.run)
                nursery.start_soon(self._grace)
                nursery.start_soon(self._damping_timer)
                nursery.start_soon(self.publisher.run)
                nursery.start_soon(self._stale_sweeper)
                nursery.start_soon(self._give_back_memory)
                nursery.start_soon(self._repair_summaries)
                nursery.start_soon(self._ipam_sweeper)
                if self.policy is not None:
                    nursery.start_soon(self._policy_filters)
                if self.opts.metrics_port:
                    self.metrics.serve(self.opts.metrics_port, addr="0.0.0.0")
                task_status.started()

    async def _start_view(self, nursery: trio.Nursery) -> None:
        """The first sync waits for etcd with back-off: an agent started before its datastore just waits."""
        delay = 0.5
        while True:
            try:
                await nursery.start(self.view.run)
                return
            except DatastoreError as exc:
                log.warning("event=etcd_wait reason=%r retry_in=%.1fs", str(exc), delay)
                await trio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _ensure_node(self) -> None:
        """Create or update our Node: BGP addresses from the flags (or autodetected when the Node has
        none) and spec.addresses from this host's interfaces, so sessions to a ToR on another link of a
        dual-homed node start from the address on that link."""
        from calico_bgp.agent.autodetect import EXCLUDED, detect, read_interfaces

        opts = self.opts
        current = self.view.snapshot().nodes.get(opts.name)
        bgp = current.spec.bgp if current is not None else None
        v4 = _with_len(opts.ip) if opts.ip else (bgp.ipv4_address if bgp else "")
        v6 = _with_len(opts.ip6) if opts.ip6 else (bgp.ipv6_address if bgp else "")
        if not v4 and not v6 and opts.ip_autodetect:
            v4 = str(await trio.to_thread.run_sync(detect, opts.ip_autodetect))
        interfaces = await trio.to_thread.run_sync(read_interfaces)
        addresses = tuple(NodeAddress(str(a), "InternalIP") for i in interfaces if not EXCLUDED.match(i.name)
                          for a in i.addresses if not (a.ip.is_link_local or a.ip.is_loopback))
        new_bgp = NodeBGPSpec(ipv4_address=v4, ipv6_address=v6, as_number=bgp.as_number if bgp else None,
                              route_reflector_cluster_id=bgp.route_reflector_cluster_id if bgp else "")
        meta = current.metadata if current is not None else model.Metadata(opts.name)
        spec = current.spec if current is not None else NodeSpec()
        node = Node(meta, attrs.evolve(spec, bgp=new_bgp, addresses=addresses))
        if node != current:
            await self.store.apply(node)
            log.info("event=node_registered node=%s ipv4=%s ipv6=%s addresses=%d", opts.name, v4, v6, len(addresses))

    # ------------------------------------------------------------------ cluster -> desired state
    async def _control(self) -> None:
        while True:
            try:
                await self._sync(self.view.snapshot())
            except Exception:  # noqa: BLE001 - one bad resource must not stop the agent
                log.exception("event=sync_failed action=keep_last_good")
            self.ready.set()
            end = self.backoff.next_end(trio.current_time())
            with trio.move_on_after(end - trio.current_time() + 0.01 if end is not None else math.inf):
                async with trio.open_nursery() as n:
                    async def first(wait: Any) -> None:
                        await wait()
                        n.cancel_scope.cancel()
                    n.start_soon(first, self.view.changed)
                    n.start_soon(first, self._poke.wait)
            self._poke = trio.Event()
            await trio.sleep(0.02)  # coalesce a burst of watch events into one pass

    async def _sync(self, state: ClusterState) -> None:
        self.state = state
        me = state.nodes.get(self.opts.name)
        if me is None or me.spec.bgp is None:
            log.warning("event=no_node_resource node=%s action=no_sessions", self.opts.name)
            await self.speaker.set_neighbors([])
            self.configured = set()
            return
        cfg = state.config
        local = LocalSpeaker(topology.node_as(me, cfg), topology.router_id(me),
                             topology.cluster_id(me) or None)
        pools = list(state.pools.values())
        if local != self.local:
            log.info("event=local_speaker asn=%d router_id=%s cluster_id=%s", local.asn, local.router_id,
                     local.cluster_id)
            self.local = local
            # a new cluster id changes loop checks and reflection, not the sessions: keep what the
            # peers sent (reapply_policy below re-evaluates it)
            self.rib = Rib(local) if self.rib is None else self.rib.rebuilt(local)
            self.rib_peers = {}
        assert self.rib is not None
        damp = cfg.spec.damping
        params = DampingParams(half_life=damp.half_life, reuse=damp.reuse, suppress=damp.suppress,
                               max_suppress=damp.max_suppress)
        if params != self.dampener.params or damp.enabled != self.dampener.enabled:
            # keep the paths seen and penalties earned; turning damping off releases what it suppressed
            self.dampener, released = self.dampener.reconfigured(params, damp.enabled, trio.current_time(),
                                                                 self.rib.received())
            await self._released(released)

        sessions = {s.peer_address: s for s in topology.sessions_for(me, list(state.nodes.values()), cfg,
                                                                      state.peers.values())}
        self.session_errors = {}
        now = trio.current_time()
        held = self.backoff.held(now)
        for peer, hold in held.items():  # held idle: left out of the speaker's neighbours
            if peer in sessions:
                self.session_errors[peer] = hold.why
        neighbors = [self._neighbor(s, local) for s in sessions.values() if s.peer_address not in self.session_errors]
        for gone in set(self.sessions) - set(sessions):
            self._forget_peer(gone)
        for addr in set(self.sessions) & set(sessions):
            if self.sessions[addr].kind != sessions[addr].kind:  # e.g. mesh -> rr-client: new series
                self.metrics.forget_peer(addr, self.sessions[addr].kind)
        self.sessions = sessions
        self.peer_routes = desired.peer_routes(sessions.values())
        for addr, sess in sessions.items():
            self.metrics.init_peer(addr, sess.kind)
        self.rib_peers = {a: self._rib_peer(s, state) for a, s in sessions.items()}
        configured = {n.key: n for n in neighbors if n is not None}
        await self.speaker.set_neighbors(configured.values(), abrupt=held.keys())
        # a neighbour (re)configured starts from nothing in the speaker: it gets every export and reflection
        added, self.configured = configured.keys() - self.configured, set(configured)
        for addr in added:
            self.exported.pop(addr, None)

        # import policy follows pools and filters; re-run it over what peers sent (soft reconfiguration)
        # martians and unusable next hops (own addresses among them) go before any filter is asked
        own = martians.own_addresses([a.address for a in me.spec.addresses] + list(topology.node_addresses(me).values()))
        self.rib.import_policy = martians.guarded(bgpfilter.import_policy(pools, self._filters_of), own)
        self.rib.origin_check = OriginIndex.of_cluster(self.opts.name, state.nodes.values(), pools,
                                                       state.blocks.values(), cfg).check
        changed = self.rib.reapply_policy(self.rib_peers.values())
        await self._refresh_capped(pools)

        for peer in list(sessions):  # a limit added or lowered applies to what the peer already sent
            await self._check_max_prefixes(peer)
        self.own = desired.announcements(self.opts.name, state.blocks, pools)
        usage, borrowed = desired.pool_usage(self.opts.name, state.blocks, pools)
        for name, (ratio, nblocks) in usage.items():
            self.metrics.pool_utilisation.labels(name).set(ratio)
            self.metrics.pool_blocks.labels(name).set(nblocks)
        for name in self._pools_seen - usage.keys():  # a deleted pool must not keep alerting
            self.metrics.forget_pool(name)
        self._pools_seen = set(usage)
        self.metrics.borrowed_addresses.set(borrowed)
        await self._export()
        # a neighbour just added needs every reflected route, not only what changed
        await self._reflect(changed if changed and not added else None)
        self.kernel.mark_full()
        self._policy_dirty.set()

    async def _refresh_capped(self, pools: list[IPPool]) -> None:
        """Soft reconfiguration re-judges only the rejected paths the RIB kept (rib.MAX_REJECTED_PER_PEER
        per peer). When a peer's import policy changed and it had more, ask it to send its routes again
        (ROUTE-REFRESH, RFC 2918) if it takes that; else say what it keeps out until its session resets."""
        assert self.rib is not None
        for addr, s in self.sessions.items():
            inputs = (tuple((p.metadata.name, p.spec) for p in pools), tuple(self._filters_of(addr)))
            before, self._policy_inputs[addr] = self._policy_inputs.get(addr), inputs
            lost = self.rib.rejected_not_kept(addr)
            if before is None or before == inputs or not lost:
                continue
            op = self.peer_open.get(addr)
            if op is not None and op.route_refresh and self._is_up(addr):
                self.rib.forget_not_kept(addr)  # counted again as they come back
                await self.speaker.send([speaker_cmds.route_refresh(addr, _bgp_family(s))])
                self.events.emit("route_refresh", peer=addr, detail=f"import policy changed; {lost} rejected paths were not kept")
            else:
                self.events.emit("route_refresh", peer=addr, detail=f"import policy changed; {lost} rejected paths were not "
                                                                    "kept and the peer takes no ROUTE-REFRESH: they stay "
                                                                    "out until it sends them again")

    def _filters_of(self, peer: str) -> list[BGPFilter]:
        s = self.sessions.get(peer)
        return bgpfilter.filters_for(s.filters, self.state.filters) if s is not None and self.state else []

    async def _export(self) -> None:
        """Announce what we originate to each peer, through its export filters; send only the difference."""
        tagged = bgpfilter.advertised_communities(self.state.config.spec, self.own) if self.state else {}
        want_all = {addr: bgpfilter.export_routes(self.own, self._filters_of(addr), s.ibgp, s.local_as, tagged)
                    for addr, s in self.sessions.items() if addr in self.configured}
        batches = bgpfilter.plan_exports(self.exported, want_all)
        self.exported = want_all
        sent = 0
        for b in batches:
            sent += len(b.prefixes) * len(b.neighbors)
            for n in b.neighbors:
                counter = self.metrics.withdrawals_sent if b.attrs is None else self.metrics.updates_sent
                counter.labels(n, self.sessions[n].kind).inc(len(b.prefixes))
            prefixes = [str(p) for p in b.prefixes]
            if b.attrs is None:
                await self.speaker.withdraw(list(b.neighbors), prefixes)
            else:
                await self.speaker.announce(list(b.neighbors), prefixes, attributes=b.attrs)
        if sent:
            log.info("event=exports originated=%d peers=%d changes=%d", len(self.own), len(want_all), sent)

    def _neighbor(self, s: Session, local: LocalSpeaker) -> Neighbor | None:
        family = _bgp_family(s)
        try:
            return Neighbor(peer_address=s.peer_address, peer_as=s.peer_as, local_as=s.local_as,
                            local_address=s.local_address, router_id=local.router_id, peer_port=s.peer_port,
                            listen_port=self.state.config.spec.listen_port if self.state else 179,
                            passive=s.passive, hold_time=s.hold_time, md5_password=self._password(s),
                            families=(family,), description=s.peer_name or s.peer_node or None,
                            graceful_restart=s.restart_time or None)
        except ValueError as exc:
            log.error("event=bad_session peer=%s reason=%r action=skip", s.peer_address, str(exc))
            self.session_errors[s.peer_address] = str(exc)
            return None

    def _password(self, s: Session) -> str | None:
        if s.password is None:
            return None
        if s.password.file:
            try:
                return Path(s.password.file).read_text().strip()
            except OSError as exc:
                raise ValueError(f"password file {s.password.file} unreadable: {exc.strerror}") from None
        ref = s.password.secret_key_ref
        assert ref is not None
        value = (self.state.secrets.get(ref.name, {}) if self.state else {}).get(ref.key)
        if value is None:  # never fall back to an unauthenticated session
            raise ValueError(f"password secret {ref.name}/{ref.key} not found")
        return value

    def _rib_peer(self, s: Session, state: ClusterState) -> Peer:
        rid = s.peer_address
        if s.peer_node and s.peer_node in state.nodes:
            rid = topology.router_id(state.nodes[s.peer_node])
        return Peer(s.peer_address, s.peer_as, rid, ibgp=s.ibgp, rr_client=s.rr_client, allow_own_as=s.allow_own_as,
                    link=self.links.get(s.peer_address),
                    origin_validation=s.origin_validation or state.config.spec.origin_validation)

    async def _find_link(self, ev: PeerState, s: Session) -> None:
        """On an IPv6 session coming up, before its first UPDATE: the link it runs over when the peer is
        directly connected (read from the kernel), which a link-local next hop from it is scoped to."""
        from calico_bgp.agent.autodetect import read_interfaces

        try:
            interfaces = await trio.to_thread.run_sync(read_interfaces)
        except OSError as exc:  # keep what we knew: its routes stay as they are
            log.warning("event=session_link_failed peer=%s error=%r", ev.peer, str(exc))
            return
        link = session_link(ev.peer, ev.local_address or s.local_address, [(i.name, i.addresses) for i in interfaces])
        if ev.peer in self.links and self.links[ev.peer] == link:
            return
        self.links[ev.peer] = link
        log.info("event=session_link peer=%s local=%s interface=%s", ev.peer, ev.local_address or s.local_address,
                 link.name if link else "none (not directly connected)")
        if ev.peer in self.rib_peers and self.state is not None:
            self.rib_peers[ev.peer] = self._rib_peer(s, self.state)

    def _forget_peer(self, peer: str) -> None:
        old = self.sessions.get(peer)
        if self.rib is not None:
            changed = self.rib.peer_down(peer)
            if changed:
                self.kernel.mark_full()
        self.dampener.peer_down(peer, trio.current_time())
        self.stability.pop(peer, None)
        self._policy_inputs.pop(peer, None)
        self.backoff.forget(peer)
        self.stale.forget(peer)  # a removed session keeps nothing stale
        self.malformed_reports.forget(peer)
        self.peer_open.pop(peer, None)
        self.links.pop(peer, None)
        if old is not None:
            self.metrics.forget_peer(peer, old.kind)

    # ------------------------------------------------------------------ speaker events
    async def _events(self) -> None:
        async for event in self.speaker.events:
            try:
                if isinstance(event, Update):
                    await self._on_update(event)
                elif isinstance(event, PeerState):
                    await self._on_peer_state(event)
                elif isinstance(event, EndOfRib):
                    self.eor.add((event.peer, event.family))
                elif isinstance(event, PeerOpen):
                    self.peer_open[event.peer] = event
                    s = self.sessions.get(event.peer)
                    if (self.stale.why(event.peer) == GRACEFUL_RESTART
                            and (s is None or _bgp_family(s) not in event.forwarding_kept)):
                        # back without the capability, or without its forwarding state (RFC 4724 4.2):
                        # what it had before is not what it forwards now, its stale routes go at once
                        self.stale.end_now(event.peer)
                elif isinstance(event, Notification):
                    s = self.sessions.get(event.peer)
                    self.metrics.peer_notifications.labels(event.peer, s.kind if s else "unknown",
                                                           str(event.code)).inc()
            except Exception:  # noqa: BLE001 - a bad UPDATE is logged and dropped, never fatal
                log.exception("event=speaker_event_failed kind=%s", type(event).__name__)

    async def _on_update(self, ev: Update) -> None:
        peer = self.rib_peers.get(ev.peer)
        if peer is None or self.rib is None:
            log.warning("event=update_from_unknown_peer peer=%s action=ignore", ev.peer)
            return
        now = trio.current_time()
        got = self.intake.apply(ev, peer, self.rib, self.dampener, now)
        for text, next_hop in got.bad:
            self._warn.warning("bad_nlri", "peer=%s prefix=%r next_hop=%r action=ignore", ev.peer, text, next_hop)
        if got.malformed:
            self._report_malformed(ev.peer, got)
        announced, withdrawn, changed = got.announced, got.withdrawn, got.changed
        stab = self._stab(ev.peer)
        stab.count_updates(len(announced), len(withdrawn), now)
        s = self.sessions.get(ev.peer)
        kind = s.kind if s else "unknown"
        self.metrics.updates_received.labels(ev.peer, kind).inc(len(announced))
        self.metrics.withdrawals_received.labels(ev.peer, kind).inc(len(withdrawn))
        for prefix in self.churn.record(announced, withdrawn, now):  # reported whether damping is on or off
            self.events.emit("prefix_churn", peer=ev.peer, prefix=str(prefix),
                             detail=f"more than {self.churn.limit} changes within {self.churn.window:.0f}s"
                                    f" (damping {'on' if self.dampener.enabled else 'off'})")
        for key in got.suppressed:
            self.events.emit("damping_start", peer=key[0], prefix=str(key[1]))
            self.metrics.damping_events.labels("suppress").inc()
        self._last_update = now
        await self._check_max_prefixes(ev.peer)
        if changed:
            self.kernel.mark_changed(changed, now)
            await self._reflect(changed)
        self.publisher.mark_dirty()

    def _report_malformed(self, peer: str, got: Intake) -> None:
        """Count every malformed UPDATE by reason; log and record an event for the first of each
        reason from a peer in its session (malformed.MalformedReports), not for every UPDATE."""
        for m in got.malformed:
            self.metrics.malformed_updates.labels(peer, m.reason).inc()
            if not self.malformed_reports.first(peer, m.reason):
                continue
            what = malformed.action(m.reason)
            if what == malformed.TREAT_AS_WITHDRAW:
                what = f"{what} ({got.treated_as_withdrawn} prefixes)"
            log.warning("event=malformed_update peer=%s reason=%s detail=%r action=%r", peer, m.reason, m.detail, what)
            self.events.emit("malformed_update", peer=peer,
                             detail=f"{m.reason}: {m.detail}; {what}; further ones only counted "
                                    f"(calico_bgp_peer_malformed_updates_total)")

    async def _check_max_prefixes(self, peer: str) -> None:
        s = self.sessions.get(peer)
        if s is None or s.max_prefixes is None or self.rib is None:
            return
        count = self.rib.accepted_count(peer) + self.rib.rejected_count(peer)
        if count <= s.max_prefixes:
            self.max_prefix_hit.pop(peer, None)
            return
        if self.max_prefix_hit.get(peer) == (s.max_prefixes, s.max_prefix_action):
            return  # already acted on this limit; a changed limit or action acts again
        self.max_prefix_hit[peer] = (s.max_prefixes, s.max_prefix_action)
        self.events.emit("max_prefixes", peer=peer,
                         detail=f"received {count} > limit {s.max_prefixes}: {s.max_prefix_action}")
        self.metrics.max_prefix_actions.labels(peer, s.kind, s.max_prefix_action).inc()
        if s.max_prefix_action == "teardown":  # Cease / Maximum Number of Prefixes Reached (RFC 4486)
            await self.speaker.send([speaker_cmds.teardown(peer, 1)])
            # and keep it down for a while (doubling on repeat) rather than let it flap straight back
            self.backoff.hold(peer, trio.current_time(), MAX_PREFIXES, "max-prefixes",
                              f"max prefixes exceeded ({count} > {s.max_prefixes})")
            self._poke.set()

    async def _on_peer_state(self, ev: PeerState) -> None:
        now = trio.current_time()
        s = self.sessions.get(ev.peer)
        if s is None:
            # a session we removed reporting its teardown: _forget_peer cleaned up after it, and a
            # gone peer gets no stability record nor metric series (a "down" one would keep alerting)
            return
        kind = s.kind
        if ev.state == "up" and ":" in ev.peer:
            await self._find_link(ev, s)
        stab = self._stab(ev.peer)
        state = {"up": "established", "down": "idle", "connected": "connect"}.get(ev.state, ev.state)
        was = stab.state
        if stab.transition(state, now, ev.reason):
            self.metrics.peer_flaps.labels(ev.peer, kind).inc()
        if state == "established" and was != "established":
            self.events.emit("session_up", peer=ev.peer, detail=kind)
        elif was == "established" and state != "established":
            self.events.emit("session_down", peer=ev.peer, detail=ev.reason or "unknown")
            self.malformed_reports.forget(ev.peer)  # a new session reports its malformed UPDATEs afresh
        self.metrics.peer_transitions.labels(ev.peer, kind).inc()
        self.metrics.set_peer_state(ev.peer, kind, state)
        self.since[ev.peer] = time.time()
        if state == "established":
            self._last_up = now
        restart_time = self._peer_restart_time(ev.peer)
        if ev.state == "down":
            self.eor = {e for e in self.eor if e[0] != ev.peer}  # the next End-of-RIB ends a stale period
        if ev.state == "down" and ev.reason == EXABGP_EXITED and self.rib is not None:
            # our ExaBGP died, not the peer: keep its routes (stale) until the session is back and re-sent them
            self._keep_stale(ev.peer, now, self.opts.grace_timeout, SPEAKER_RESTART)
        elif ev.state == "down" and restart_time and graceful(ev.reason) and self.rib is not None:
            # RFC 4724 helper: the peer advertised graceful restart and its session dropped without a
            # NOTIFICATION (it is restarting): keep its routes for its restart time or until its End-of-RIB
            self._keep_stale(ev.peer, now, restart_time, GRACEFUL_RESTART)
        elif ev.state == "down" and self.rib is not None:
            self.stale.forget(ev.peer)
            self.max_prefix_hit.pop(ev.peer, None)
            for key in self.dampener.peer_down(ev.peer, now):
                self.events.emit("damping_start", peer=key[0], prefix=str(key[1]))
                self.metrics.damping_events.labels("suppress").inc()
            changed = self.rib.peer_down(ev.peer)
            if changed:
                self.kernel.mark_changed(changed, now)
                await self._reflect(changed)
        self.publisher.mark_dirty()

    def _state_now(self, ev: PeerState) -> None:
        """A session's state as the bridge reads it, before the UPDATEs queued ahead of it are through:
        the back-off decides here (RFC 4271 8.1.1), and a peer it holds leaves ExaBGP at once."""
        if ev.peer not in self.sessions:
            return
        if ev.state == "up":
            self.backoff.established(ev.peer, trio.current_time())
        elif ev.state == "down":
            hold = self.backoff.went_down(ev.peer, trio.current_time(), ev.reason)
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
                self.configured.discard(peer)
            except Exception:  # noqa: BLE001 - the next sync leaves the peer out all the same
                log.exception("event=hold_apply_failed peer=%s action=next_sync", peer)
            self._poke.set()

    def _peer_restart_time(self, peer: str) -> int | None:
        """How long the peer asked us to keep its routes when its session drops (RFC 4724): its restart
        time, when its last OPEN listed the session's family; else None (routes go with the session)."""
        op, s = self.peer_open.get(peer), self.sessions.get(peer)
        if op is None or s is None or _bgp_family(s) not in op.graceful_families:
            return None
        return op.graceful_restart

    def _keep_stale(self, peer: str, now: float, keep_for: float, why: str) -> None:
        assert self.rib is not None
        if not self.stale.keep(peer, now, keep_for, why):
            return
        self.rib.mark_stale(peer)
        self.events.emit(why, peer=peer, detail=f"kept {self.rib.stale_count(peer)} routes stale for at most {keep_for:.0f}s")

    async def _policy_filters(self) -> None:
        """PolicyFilters for this node -> XDP (or the nft/iptables fallback); counters -> metrics.
        On a change at once, and every 30 s regardless, which also repairs state changed behind our back."""
        from calico_bgp.agent.autodetect import EXCLUDED, read_interfaces

        assert self.policy is not None
        last_forced = trio.current_time()
        while True:
            with trio.move_on_after(5.0):
                await self._policy_dirty.wait()
            self._policy_dirty = trio.Event()
            state = self.state
            me = state.nodes.get(self.opts.name) if state else None
            if state is None or me is None:
                continue
            interfaces = await trio.to_thread.run_sync(read_interfaces)
            names = [i.name for i in interfaces]
            own = {a.address.split("/")[0] for a in me.spec.addresses} | set(topology.node_addresses(me).values())
            uplinks = [i.name for i in interfaces if not EXCLUDED.match(i.name) and any(str(a.ip) in own for a in i.addresses)]
            force = trio.current_time() - last_forced >= 30.0
            if force:
                last_forced = trio.current_time()
            before = self.policy.last_error
            mode = await self.policy.reconcile(state.policies.values(), me.labels, names, uplinks, force=force)
            if self.policy.last_error and self.policy.last_error != before:
                self.events.emit("filter_rejected", detail=self.policy.last_error)
            self.filter_mode = mode or ""
            try:
                await self.policy.export_metrics()
            except Exception:  # noqa: BLE001 - counters are best effort; enforcement is what matters
                log.exception("event=filter_metrics_failed")

    async def _ipam_sweeper(self) -> None:
        """Release this node's blocks once they have been seen empty by two sweeps, so a block does not
        stay affine to a node for the node's whole life (Calico keeps them forever)."""
        from ipam.allocator import BlockAllocator

        allocator = BlockAllocator(self.client, self.keys)
        while True:
            await trio.sleep(self.opts.ipam_sweep)
            try:
                released = await allocator.reclaim_empty(self.opts.name)
            except DatastoreError as exc:
                log.warning("event=ipam_sweep_failed reason=%r", str(exc))
                continue
            for cidr in released:
                self.events.emit("block_released", prefix=cidr, detail="empty for two sweeps")

    async def _stale_sweeper(self) -> None:
        """Drop stale routes when `StaleRoutes` says they are due (see calico_bgp/routing/graceful_restart.py)."""
        while True:
            await trio.sleep(0.5)
            if self.rib is None:
                continue
            now = trio.current_time()
            for peer, is_up in self.stale.due(now, self._is_up, self._quiet(now), self._sent_end_of_rib):
                changed = self.rib.sweep_stale(peer) if is_up else self.rib.peer_down(peer)
                self.events.emit("stale_swept", peer=peer, detail=f"session_up={is_up} removed={len(changed)}")
                if changed:
                    self.kernel.mark_changed(changed)
                    await self._reflect(changed)

    async def _give_back_memory(self) -> None:
        """Once UPDATEs went quiet after a large table left (withdrawn, or rejected and not kept), drop
        the parsed prefixes nothing uses from the intake cache and hand the freed memory back to the
        system (it used to be: 200k rejected routes took 140 MB that stayed after their withdrawal)."""
        while True:
            await trio.sleep(2.0)
            now = trio.current_time()
            quiet_for = now - max(self._last_update, self._last_up)
            if self.rib is None or quiet_for < 5.0:
                continue
            held = self.rib.held()
            dropped = self.intake.trim(self.rib.holds) if self.intake.cached - held >= TRIM_AT else 0
            settled = 0
            if quiet_for >= CHURN_QUIET and len(self.churn) > held + CHURN_KEEP:
                settled = self.churn.forget_settled(now, CHURN_QUIET, CHURN_KEEP)
            if dropped or settled:
                rss = release_memory()
                log.info("event=memory_released parsed_prefixes=%d churn_entries=%d rss_mb=%.0f", dropped, settled, rss)

    def _quiet(self, now: float) -> bool:
        """No UPDATE and no session coming up for `settle` seconds."""
        return now - max(self._last_update, self._last_up) >= self.opts.settle

    def _is_up(self, peer: str) -> bool:
        st_ = self.speaker.peers.get(peer)
        return st_ is not None and st_.state == "up"

    def _sent_end_of_rib(self, peer: str) -> bool:
        s = self.sessions.get(peer)
        return s is not None and (peer, _bgp_family(s)) in self.eor

    def _on_repair(self, why: str, key: object) -> None:
        """Someone changed our kernel routes; the programmer puts them back. At most 10 events a
        second: a bulk `ip route flush` must not flood the log (the metric counts every one)."""
        self.metrics.reconcile_repairs.labels("routes").inc()
        allowed, ended = self._repairs.allow("repair", trio.current_time())
        if ended:
            self._repair_summary(ended)
        if allowed:
            self.events.emit("repair", prefix=str(key.prefix()), detail=why)  # type: ignore[attr-defined]

    def _repair_summary(self, more: int) -> None:
        self.events.emit("repair", detail=f"{more} more repairs within a second (the metric counts every one)")

    async def _repair_summaries(self) -> None:
        """The summary of a burst of repairs as its second ends, not only when some later repair comes;
        likewise of per-route events and warnings held back."""
        while True:
            await trio.sleep(1.0)
            now = trio.current_time()
            for burst in self._repairs.due(now):
                self._repair_summary(burst.count)
            for burst in self._per_route_events.due(now):
                self._route_event_summary(str(burst.key), burst.count)
            self._warn.flush()
            self.programmer.flush_logs()

    def _on_route_failures(self, failed: list[RouteFailure], recovered: list[str]) -> None:
        """A route that began to fail (or failed for a new reason), or that no longer fails: one event
        each, at most BURST per kind in a window and one summary of the rest (the metric counts all)."""
        now = trio.current_time()
        for kind, items in (("route_failed", [(f.prefix, f"{f.op}: {f.reason}") for f in failed]),
                            ("route_recovered", [(p, "in the kernel, or no longer wanted") for p in recovered])):
            for prefix, detail in items:
                allowed, ended = self._per_route_events.allow(kind, now)
                if ended:
                    self._route_event_summary(kind, ended)
                if allowed:
                    self.events.emit(kind, prefix=prefix, detail=detail)

    def _route_event_summary(self, kind: str, more: int) -> None:
        self.events.emit(kind, detail=f"{more} more within {self._per_route_events.window:.0f}s "
                                      f"(calico-bgp routes --failed lists them)")

    def _stab(self, peer: str) -> PeerStability:
        s = self.stability.get(peer)
        if s is None:
            s = self.stability[peer] = PeerStability(peer)
        return s

    async def _reflect(self, changed: set[Prefix] | None) -> None:
        """As a route reflector, re-announce what changed to the iBGP neighbours it concerns."""
        if self.local is None or not self.local.is_reflector or self.rib is None:
            return
        neighbors = [p for p in self.rib_peers.values() if p.ibgp]
        out = reflections(self.local, self.rib, neighbors, changed)
        for neighbor, per_prefix in out.items():
            withdraw = [str(p) for p, a in per_prefix.items() if a is None]
            if withdraw:
                await self.speaker.withdraw([neighbor], withdraw)
            groups: dict[PathAttributes, list[str]] = {}
            for p, a in per_prefix.items():
                if a is not None:
                    groups.setdefault(a, []).append(str(p))
            for a, prefixes in groups.items():
                await self.speaker.announce([neighbor], prefixes, attributes=a)

    # ------------------------------------------------------------------ kernel
    def _kernel_inputs(self) -> tuple[Rib, str, dict, set[Prefix], list[Route]] | None:
        if self.rib is None or self.state is None:
            return None
        return self.rib, self.opts.name, self.state.blocks, self.own, self.peer_routes

    async def _grace(self) -> None:
        """End the programmer's grace once every session is up and UPDATEs went quiet, or on timeout."""
        with trio.move_on_after(self.opts.grace_timeout):
            await self.ready.wait()
            while True:
                await trio.sleep(0.2)
                now = trio.current_time()
                if all(self._is_up(a) for a in self.sessions) and self._quiet(now):
                    break
        self.programmer.end_grace()
        await self.speaker.routes_complete()  # End-of-RIB: helper peers drop what we did not re-announce
        self.events.emit("grace_end", detail=f"after {trio.current_time() - self.started:.1f}s, "
                                             f"{len(self.sessions)} sessions")
        self.kernel.mark_full()

    async def _damping_timer(self) -> None:
        while True:
            wait = self.dampener.next_release(trio.current_time())
            await trio.sleep(min(wait + 0.01, 5.0) if wait is not None else 1.0)
            out = self.dampener.release(trio.current_time())
            self.metrics.damped_prefixes.set(len(self.dampener.suppressed(trio.current_time())))
            await self._released(out)

    async def _released(self, out: DampingChange) -> None:
        """Paths damping let go of: an event each (withdrawn ones too), and the announced ones to the RIB."""
        for key in out.reused:
            self.events.emit("damping_end", peer=key[0], prefix=str(key[1]))
            self.metrics.damping_events.labels("reuse").inc()
        if not out.announce or self.rib is None:
            return
        changed: set[Prefix] = set()
        by_peer: dict[str, dict[Prefix, PathAttributes]] = {}
        for (peer, prefix), a in out.announce.items():
            by_peer.setdefault(peer, {})[prefix] = a  # type: ignore[index]
        for peer, ann in by_peer.items():
            if peer in self.rib_peers:
                changed |= self.rib.update(self.rib_peers[peer], ann)
        if changed:
            self.kernel.mark_changed(changed)
            await self._reflect(changed)

    # ------------------------------------------------------------------ status
    def _origin_invalid(self, addr: str, kind: str) -> None:
        """The peer's origin-invalid paths into the metric, and one event when it starts sending them
        (again after it stopped): a hijack or a leak shows in `events`, not only in a gauge."""
        assert self.rib is not None
        invalid = [r for r in self.rib.rejected(addr) if r.reason.startswith(ORIGIN_INVALID)]
        depreferred = self.rib.depreferred_count(addr)
        self.metrics.origin_invalid.labels(addr, kind, "rejected").set(len(invalid))
        self.metrics.origin_invalid.labels(addr, kind, "depreferred").set(depreferred)
        if (invalid or depreferred) and addr not in self._origin_flagged:
            self._origin_flagged.add(addr)
            first = invalid[0] if invalid else None
            self.events.emit("origin_invalid", peer=addr, prefix=str(first.prefix) if first else "",
                             detail=f"{len(invalid)} rejected, {depreferred} de-preferred"
                                    + (f"; {first.reason}" if first else ""))
        elif not (invalid or depreferred):
            self._origin_flagged.discard(addr)

    def build_status(self) -> st.NodeStatus:
        now_m, now_w = trio.current_time(), time.time()
        sessions = []
        for addr, s in sorted(self.sessions.items(), key=lambda kv: _akey(kv[0])):
            peer_state = self.speaker.peers.get(addr)
            stab = self.stability.get(addr)
            state = {"up": "Established", "down": "Idle", "connected": "Connect"}.get(
                peer_state.state if peer_state else "",
                "Idle" if stab is None or addr in self.session_errors else "Active")  # held idle or not configured
            damped = sum(1 for (p, _), _s in self.dampener.suppressed(now_m) if p == addr)
            accepted = self.rib.accepted_count(addr) if self.rib is not None else 0
            rejected = self.rib.rejected_count(addr) if self.rib is not None else 0
            not_kept = self.rib.rejected_not_kept(addr) if self.rib is not None else 0
            sessions.append(st.SessionStatus(
                peer=addr, peer_type=st.PEER_TYPES.get(s.kind, s.kind), state=state, since=self.since.get(addr, 0.0),
                info=_session_info(self.session_errors.get(addr, "") or
                                   (peer_state.reason if peer_state and peer_state.state != "up" else "") or
                                   (stab.last_error if stab and state != "Established" else ""),
                                   md5=s.password is not None and state != "Established"),
                peer_name=s.peer_name, peer_node=s.peer_node, peer_as=s.peer_as,
                received=accepted + rejected + damped, accepted=accepted, rejected=rejected, damped=damped,
                rejected_not_kept=not_kept,
                flaps=stab.flaps if stab else 0, uptime=stab.uptime(now_m) if stab else 0.0,
                churn_rate=round(stab.churn_rate(now_m), 3) if stab else 0.0))
            if stab is not None:
                self.metrics.peer_established_seconds.labels(addr, s.kind).set(stab.uptime(now_m))
                self.metrics.peer_flap_score.labels(addr, s.kind).set(stab.flap_score(now_m))
            for kind_, value in (("received", accepted + rejected + damped), ("accepted", accepted),
                                 ("rejected", rejected), ("damped", damped)):
                self.metrics.peer_prefixes.labels(addr, s.kind, kind_).set(value)
            if self.rib is not None:
                self._origin_invalid(addr, s.kind)
        routes = []
        total = 0
        if self.rib is not None:
            total = len(self.rib)
            # the published list stops at MAX_PUBLISHED_ROUTES: pick those without sorting 100k
            first = heapq.nsmallest(st.MAX_PUBLISHED_ROUTES, self.rib.selections(), key=lambda kv: _pkey(kv[0]))
            for prefix, sel in first:
                in_kernel = prefix not in self.own and self.programmer.in_kernel(key_of(prefix))
                routes.append(st.RouteStatus(str(prefix), sel.next_hops, tuple(p.peer.address for p in sel.multipath),
                                             in_kernel, sel.reason))
        rejected = st.cap(st.RejectedRoute(r.peer, str(r.prefix), r.reason) for r in (self.rib.rejected(limit=st.MAX_PUBLISHED_ROUTES) if self.rib is not None else []))
        damped = st.cap(st.DampedRoute(k[0], str(k[1]), round(f.penalty, 1),
                                       round(self.dampener.params.time_to(f.penalty, self.dampener.params.reuse), 1),
                                       f.flaps) for k, f in self.dampener.suppressed(now_m))
        me = self.state.nodes.get(self.opts.name) if self.state else None
        addr = topology.node_addresses(me) if me is not None else {}
        wall_offset = now_w - now_m
        churn = tuple(st.PrefixChurnStatus(str(p), c.announces, c.withdraws, round(c.last_change + wall_offset, 3))
                      for p, c in self.churn.top(20))
        self.metrics.kernel_routes.labels("blackhole").set(len(desired.local_blocks(self.opts.name, self.state.blocks)) if self.state else 0)
        failed = self.programmer.failures  # counted over everything: the published list stops at MAX_PUBLISHED_ROUTES
        self.metrics.kernel_routes.labels("unicast").set(self.programmer.desired_unicast - sum(
            1 for k, f in failed.items() if f.route is not None and f.route.kind is RouteKind.UNICAST and self.programmer.is_desired(k)))
        failed_list = st.cap(st.FailedRoute(f.prefix, "build" if f.op == UNBUILDABLE else "kernel", f.reason, f.attempts)
                             for f in sorted(failed.values(), key=lambda f: f.prefix))
        return st.NodeStatus(
            node=self.opts.name, version=VERSION, address=addr.get("ipv4", addr.get("ipv6", "")),
            asn=self.local.asn if self.local else 0, router_id=self.local.router_id if self.local else "",
            role="route-reflector" if self.local and self.local.is_reflector else "node",
            updated=now_w, started=self.started_wall, sessions=tuple(sessions), routes=tuple(routes),
            routes_total=total, kernel_routes=self.programmer.in_kernel_count(), routes_failed=len(failed),
            failed=failed_list, rejected=rejected, damped=damped,
            announced=tuple(str(p) for p in sorted(self.own, key=_pkey)), in_grace=self.programmer.in_grace,
            filter_mode=self.filter_mode, churn=churn)


def _bgp_family(s: Session) -> str:
    """The one address family a session carries, as ExaBGP names it."""
    return IPV6_UNICAST if s.family == "ipv6" else IPV4_UNICAST


def _session_info(reason: str, md5: bool) -> str:
    return "; ".join(x for x in (reason, MD5_HINT if md5 else "") if x)


def _with_len(ip: str) -> str:
    """'198.18.0.1' -> '198.18.0.1/32'; a given prefix length is kept."""
    return str(ipaddress.ip_interface(ip))


def _pkey(p: Prefix) -> tuple[int, int, int]:
    return (p.version, p.network, p.prefixlen)


def _akey(a: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(a)
    return (ip.version, int(ip))


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("httpx", "httpcore"):  # one line per HTTP request is not an event
        logging.getLogger(noisy).setLevel(logging.WARNING)


def tune_gc() -> None:
    """Fewer full garbage collections. A RIB of 100k routes is about a million tracked objects, and
    with the default thresholds Python walks them all each time the heap grows by a quarter: ~35% of
    the CPU of learning 100k prefixes. Full passes now come after ~8M allocations instead of ~70k.
    And a shorter GIL switch interval: the kernel writer thread takes the GIL several times per
    netlink chunk, and waiting 5 ms each time behind the UPDATE parser made it lag a burst."""
    gc.set_threshold(2000, 20, 200)
    sys.setswitchinterval(0.0005)


def release_memory() -> float:
    """A full collection, then glibc's malloc_trim: Python returns freed arenas to malloc, but glibc
    keeps the memory of a large release in its heap until asked. Returns the RSS in MB after."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to ask
        pass
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def state_dir_for(name: str) -> Path:
    base = Path(os.environ.get("CALICO_BGP_STATE_DIR", "/run/calico-bgp"))
    return base / name
