"""What one node agent knows: the values its jobs (control loop, session events, upkeep) share.

Each job reads and changes this in the agent's trio thread only; the status document and the
metrics are read from it as snapshot values (sampling.py). Decisions over it live in pure modules;
this holds no behaviour but the bookkeeping of a peer leaving.
"""
from __future__ import annotations

import time
from typing import Any

import attrs

from calico_bgp.resources.view import ClusterState
from calico_bgp.routing import malformed
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.backoff import SessionBackoff
from calico_bgp.routing.damping import Dampener, DampingParams
from calico_bgp.routing.graceful_restart import StaleRoutes
from calico_bgp.routing.intake import UpdateIntake
from calico_bgp.routing.max_prefixes import Limit
from calico_bgp.routing.nexthop import SessionLink
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.reflection_export import ReflectionExport
from calico_bgp.routing.rib import Rib
from calico_bgp.routing.topology import Session
from calico_bgp.speaker.events import PeerOpen
from calico_bgp.telemetry.collector import PeerCounts
from calico_bgp.telemetry.stability import ChurnTracker, PeerStability
from dataplane.routes.route import Route


@attrs.define(eq=False)
class AgentState:
    # the cluster, and this node's speaker in it
    cluster: ClusterState | None = None
    local: LocalSpeaker | None = None
    rib: Rib | None = None
    dampener: Dampener[PathAttributes] = attrs.field(factory=lambda: Dampener(DampingParams(), enabled=False))
    intake: UpdateIntake = attrs.field(factory=UpdateIntake)
    own: set[Prefix] = attrs.field(factory=set)                      # what this node originates
    peer_routes: list[Route] = attrs.field(factory=list)             # host routes to peers behind a gateway (reachableBy)
    pool_usage: dict[str, tuple[float, int]] = attrs.field(factory=dict)  # pool -> (utilisation, blocks claimed)
    borrowed: int = 0                                                # addresses held in other nodes' blocks
    # sessions and what each peer is to the RIB and to the speaker
    sessions: dict[str, Session] = attrs.field(factory=dict)
    rib_peers: dict[str, Peer] = attrs.field(factory=dict)
    links: dict[str, SessionLink | None] = attrs.field(factory=dict)  # IPv6 peer -> its link when directly connected
    configured: set[str] = attrs.field(factory=set)                   # sessions the speaker has as neighbours
    session_errors: dict[str, str] = attrs.field(factory=dict)        # peer -> why its session is not configured
    exported: dict[str, dict[Prefix, PathAttributes]] = attrs.field(factory=dict)  # what each peer was sent
    reflection_export: ReflectionExport | None = None  # as a route reflector: the neighbours' export filters
    policy_inputs: dict[str, tuple[Any, ...]] = attrs.field(factory=dict)  # per peer: what its import policy was made of
    # per peer, from the speaker
    peer_open: dict[str, PeerOpen] = attrs.field(factory=dict)         # each peer's last OPEN
    eor: set[tuple[str, str]] = attrs.field(factory=set)               # (peer, family) End-of-RIB received
    since: dict[str, float] = attrs.field(factory=dict)                # peer -> wall time of its last state change
    max_prefix_hit: dict[str, Limit] = attrs.field(factory=dict)       # peer -> the limit acted on
    backoff: SessionBackoff = attrs.field(factory=SessionBackoff)       # peers held idle
    stale: StaleRoutes = attrs.field(factory=StaleRoutes)               # peers whose routes outlive their session
    malformed_reports: malformed.MalformedReports = attrs.field(factory=malformed.MalformedReports)
    origin_flagged: frozenset[str] = frozenset()                      # peers whose origin-invalid paths had their event
    # what the agent tells about itself
    stability: dict[str, PeerStability] = attrs.field(factory=dict)
    churn: ChurnTracker = attrs.field(factory=ChurnTracker)
    counts: dict[str, PeerCounts] = attrs.field(factory=dict)           # configured peers' event counters
    stray_notifications: dict[tuple[str, str], int] = attrs.field(factory=dict)  # (peer, code): no session of ours
    filter_mode: str = ""
    # IPPool natOutgoing as programmed (agent/nat.py): the netfilter tool ("nft", "iptables"; "": no NAT
    # programmed), the pool CIDRs masqueraded, and the last failure ("": none)
    nat_mode: str = ""
    nat_masquerade: tuple[str, ...] = ()
    nat_error: str = ""
    # the routes of the last status document: prefix -> (its selection then, its kernel key, what was
    # said); reused while the selection is the same value and the kernel state the same (sampling.node)
    status_routes: dict[Prefix, tuple[Any, Any, Any]] = attrs.field(factory=dict)
    started_wall: float = attrs.field(factory=time.time)
    started: float = 0.0       # trio time the agent started
    last_update: float = 0.0   # trio time of the last UPDATE
    last_up: float = 0.0       # and of the last session to come up

    def stab(self, peer: str) -> PeerStability:
        s = self.stability.get(peer)
        if s is None:
            s = self.stability[peer] = PeerStability(peer)
        return s

    def peer_counts(self, peer: str) -> PeerCounts | None:
        """The counters of a configured peer (None: no session of ours)."""
        return self.counts.get(peer)

    def quiet(self, now: float, settle: float) -> bool:
        """No UPDATE and no session coming up for `settle` seconds."""
        return now - max(self.last_update, self.last_up) >= settle

    def forget_peer(self, peer: str, now: float) -> set[Prefix]:
        """A session removed: everything kept about its peer goes (nothing stale is kept for it);
        returns the prefixes whose selection changed."""
        changed = self.rib.peer_down(peer) if self.rib is not None else set()
        self.dampener.peer_down(peer, now)
        self.stability.pop(peer, None)
        self.policy_inputs.pop(peer, None)
        self.backoff.forget(peer)
        self.stale.forget(peer)
        self.malformed_reports.forget(peer)
        self.peer_open.pop(peer, None)
        self.links.pop(peer, None)
        self.counts.pop(peer, None)
        return changed
