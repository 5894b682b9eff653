"""Snapshots of the agent's live state (the RIB, the dampener, the speaker's sessions, the route
programmer), taken in the agent's thread: reading only, nothing decided, nothing changed (but the
routes of the last status document, kept to be reused: AgentState.status_routes). The status
document (status.build) and the metrics (snapshot.metrics_sample) are made from them.
"""
from __future__ import annotations

import heapq
import ipaddress
from collections import Counter
from operator import itemgetter
from typing import Mapping

from calico_bgp.agent import status as st
from calico_bgp.agent.snapshot import NodeSnapshot, PeerSnapshot, metrics_sample
from calico_bgp.agent.state import AgentState
from calico_bgp.routing import desired, topology
from calico_bgp.routing.origin import REASON_PREFIX as ORIGIN_INVALID
from calico_bgp.speaker.events import PeerState
from calico_bgp.telemetry.collector import NodeSample, PeerCounts
from dataplane.routes.programmer import UNBUILDABLE, RouteProgrammer
from dataplane.routes.route import RouteKind, key_of


def peers(state: AgentState, speaker_peers: Mapping[str, PeerState], now: float) -> tuple[PeerSnapshot, ...]:
    """Every configured session, in address order (`now`: trio time)."""
    rib = state.rib
    damped = Counter(peer for (peer, _), _f in state.dampener.suppressed(now))
    out = []
    for addr, s in sorted(state.sessions.items(), key=lambda kv: _akey(kv[0])):
        ps, stab = speaker_peers.get(addr), state.stability.get(addr)
        invalid = [r for r in rib.rejected(addr) if r.reason.startswith(ORIGIN_INVALID)] if rib is not None else []
        counts = state.counts.get(addr)
        out.append(PeerSnapshot(
            peer=addr, kind=s.kind, peer_name=s.peer_name, peer_node=s.peer_node, peer_as=s.peer_as,
            has_password=s.password is not None, speaker_state=ps.state if ps else "", speaker_reason=ps.reason if ps else "",
            session_error=state.session_errors.get(addr, ""), since=state.since.get(addr, 0.0), tracked=stab is not None,
            fsm_state=stab.state if stab else "", last_error=stab.last_error if stab else "",
            flaps=stab.flaps if stab else 0, uptime=stab.uptime(now) if stab else 0.0,
            flap_score=stab.flap_score(now) if stab else 0.0, churn_rate=stab.churn_rate(now) if stab else 0.0,
            accepted=rib.accepted_count(addr) if rib is not None else 0,
            rejected=rib.rejected_count(addr) if rib is not None else 0,
            rejected_not_kept=rib.rejected_not_kept(addr) if rib is not None else 0, damped=damped.get(addr, 0),
            origin_rejected=len(invalid), origin_depreferred=rib.depreferred_count(addr) if rib is not None else 0,
            origin_first=(str(invalid[0].prefix), invalid[0].reason) if invalid else None,
            counts=counts.copy() if counts is not None else PeerCounts()))
    return tuple(out)


def node(state: AgentState, name: str, version: str, speaker_peers: Mapping[str, PeerState],
         programmer: RouteProgrammer, now: float, wall: float) -> NodeSnapshot:
    """The whole node, for its status document (`now`: trio time, `wall`: the wall clock)."""
    rib, local = state.rib, state.local
    routes: list[st.RouteStatus] = []
    if rib is not None:
        # the published list stops at MAX_PUBLISHED_ROUTES: pick those without sorting 100k. A route
        # whose selection (the same value) and kernel state did not change since the last document
        # is the RouteStatus it was then (state.status_routes): under churn, most of them.
        last, now_routes = state.status_routes, {}
        own, in_kernel_of = state.own, programmer.in_kernel
        for prefix, sel in heapq.nsmallest(st.MAX_PUBLISHED_ROUTES, rib.selections(), key=itemgetter(0)):
            seen = last.get(prefix)
            # the kernel key carries the route's metric (a setPriority on import: desired.kernel_metric)
            key = key_of(prefix, desired.kernel_metric(sel.best.attrs)) if seen is None or seen[0] is not sel else seen[1]
            in_kernel = prefix not in own and in_kernel_of(key)
            if seen is not None and seen[0] is sel and seen[2].in_kernel == in_kernel:
                r = seen[2]
            else:
                r = st.RouteStatus(str(prefix), sel.next_hops, tuple(p.peer.address for p in sel.multipath),
                                   in_kernel, sel.reason)
            now_routes[prefix] = (sel, key, r)
            routes.append(r)
        state.status_routes = now_routes
    rejected = st.cap(st.RejectedRoute(r.peer, str(r.prefix), r.reason)
                      for r in (rib.rejected(limit=st.MAX_PUBLISHED_ROUTES) if rib is not None else []))
    params = state.dampener.params
    damped = st.cap(st.DampedRoute(k[0], str(k[1]), round(f.penalty, 1), round(params.time_to(f.penalty, params.reuse), 1),
                                   f.flaps) for k, f in state.dampener.suppressed(now))
    me = state.cluster.nodes.get(name) if state.cluster else None
    addr = topology.node_addresses(me) if me is not None else {}
    wall_offset = wall - now
    churn = tuple(st.PrefixChurnStatus(str(p), c.announces, c.withdraws, round(c.last_change + wall_offset, 3))
                  for p, c in state.churn.top(20))
    failed = programmer.failures  # counted over everything: the published list stops at MAX_PUBLISHED_ROUTES
    failed_list = st.cap(st.FailedRoute(f.prefix, "build" if f.op == UNBUILDABLE else "kernel", f.reason, f.attempts)
                         for f in sorted(failed.values(), key=lambda f: f.prefix))
    return NodeSnapshot(
        node=name, version=version, address=addr.get("ipv4", addr.get("ipv6", "")),
        asn=local.asn if local else 0, router_id=local.router_id if local else "",
        reflector=bool(local and local.is_reflector), now=wall, started=state.started_wall,
        peers=peers(state, speaker_peers, now), routes=tuple(routes), routes_total=len(rib) if rib is not None else 0,
        kernel_routes=programmer.in_kernel_count(), routes_failed=len(failed), failed=failed_list, rejected=rejected,
        damped=damped, announced=tuple(str(p) for p in sorted(state.own)), in_grace=programmer.in_grace,
        filter_mode=state.filter_mode, nat_mode=state.nat_mode, nat_masquerade=state.nat_masquerade,
        nat_error=state.nat_error, churn=churn)


def metrics(state: AgentState, name: str, speaker_peers: Mapping[str, PeerState], programmer: RouteProgrammer,
            now: float) -> NodeSample:
    """What the metrics collector exposes at a scrape."""
    blackholes = len(desired.local_blocks(name, state.cluster.blocks)) if state.cluster else 0
    return metrics_sample(
        peers(state, speaker_peers, now),
        stray_notifications=tuple((p, code, n) for (p, code), n in sorted(state.stray_notifications.items())),
        kernel_blackhole=blackholes, damped=len(state.dampener.suppressed(now)),
        pools=state.pool_usage, borrowed=state.borrowed, nat_mode=state.nat_mode,
        nat_masquerade=len(state.nat_masquerade), **kernel_figures(programmer))


def kernel_figures(programmer: RouteProgrammer) -> dict[str, int]:
    """The programmer's unicast routes in the kernel as desired now, and its failures by stage."""
    failed = programmer.failures
    unicast = programmer.desired_unicast - sum(
        1 for k, f in failed.items()
        if f.route is not None and f.route.kind is RouteKind.UNICAST and programmer.is_desired(k))
    build = sum(1 for f in failed.values() if f.op == UNBUILDABLE)
    return {"kernel_unicast": unicast, "failed_build": build, "failed_kernel": len(failed) - build}


def _akey(a: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(a)
    return (ip.version, int(ip))
