"""The agent's state as values, taken in its thread at one instant (sampling.py takes them):
status.build turns a NodeSnapshot into the status document, `metrics_sample` turns the peers into
what the metrics collector exposes. Both are pure; neither touches the live state.
"""
from __future__ import annotations

import attrs

from calico_bgp.agent import status as st
from calico_bgp.agent.throttle import Emit
from calico_bgp.telemetry.collector import NodeSample, PeerCounts, PeerSample, PoolSample

# ExaBGP's session states -> the FSM state names of the stability record and the metrics
FSM_STATE = {"up": "established", "down": "idle", "connected": "connect"}


@attrs.frozen
class PeerSnapshot:
    peer: str
    kind: str                    # the session's kind (topology.SessionKind): the metrics' peer_type
    peer_name: str = ""
    peer_node: str = ""
    peer_as: int = 0
    has_password: bool = False
    speaker_state: str = ""      # ExaBGP's: up / down / connected; "" when it told nothing yet
    speaker_reason: str = ""
    session_error: str = ""      # why the session is not configured (held idle, unusable password, ...)
    since: float = 0.0
    tracked: bool = False        # the session reported a state (it has a stability record)
    fsm_state: str = ""          # the stability record's state, when tracked
    last_error: str = ""
    flaps: int = 0
    uptime: float = 0.0
    flap_score: float = 0.0
    churn_rate: float = 0.0
    accepted: int = 0
    rejected: int = 0            # every rejected path, kept or not
    rejected_not_kept: int = 0
    damped: int = 0
    origin_rejected: int = 0     # rejected for an invalid origin (of the rejected paths kept)
    origin_depreferred: int = 0
    origin_first: tuple[str, str] | None = None  # (prefix, reason) of the first rejected for its origin
    counts: PeerCounts = attrs.field(factory=PeerCounts)

    @property
    def received(self) -> int:
        return self.accepted + self.rejected + self.damped


@attrs.frozen
class NodeSnapshot:
    node: str
    version: str
    address: str = ""
    asn: int = 0
    router_id: str = ""
    reflector: bool = False
    now: float = 0.0             # wall clock at the snapshot
    started: float = 0.0
    peers: tuple[PeerSnapshot, ...] = ()   # in address order
    routes: tuple[st.RouteStatus, ...] = ()
    routes_total: int = 0
    kernel_routes: int = 0
    routes_failed: int = 0
    failed: tuple[st.FailedRoute, ...] = ()  # the first of them by prefix
    rejected: tuple[st.RejectedRoute, ...] = ()
    damped: tuple[st.DampedRoute, ...] = ()
    announced: tuple[str, ...] = ()
    in_grace: bool = False
    filter_mode: str = ""
    nat_mode: str = ""
    nat_masquerade: tuple[str, ...] = ()
    nat_error: str = ""
    churn: tuple[st.PrefixChurnStatus, ...] = ()


def metrics_sample(peers: tuple[PeerSnapshot, ...], *, stray_notifications: tuple[tuple[str, str, int], ...] = (),
                   kernel_unicast: int = 0, kernel_blackhole: int = 0, failed_build: int = 0,
                   failed_kernel: int = 0, damped: int = 0,
                   pools: dict[str, tuple[float, int]] | None = None, borrowed: int = 0,
                   nat_mode: str = "", nat_masquerade: int = 0) -> NodeSample:
    """What the collector exposes: each configured peer's state (once it reported one), figures and
    counters; the kernel's, damping's and IPAM's figures."""
    return NodeSample(
        peers=tuple(PeerSample(p.peer, p.kind, p.fsm_state if p.tracked else None,
                               p.uptime if p.tracked else None, p.flap_score if p.tracked else None,
                               (p.received, p.accepted, p.rejected, p.damped),
                               (p.origin_rejected, p.origin_depreferred), p.counts) for p in peers),
        stray_notifications=stray_notifications, kernel_unicast=kernel_unicast, kernel_blackhole=kernel_blackhole,
        failed_build=failed_build, failed_kernel=failed_kernel, damped=damped, pools=tuple(PoolSample(name, ratio, blocks) for name, (ratio, blocks) in sorted((pools or {}).items())),
        borrowed=borrowed, nat_mode=nat_mode or None, nat_masquerade=nat_masquerade)


def origin_invalid_news(flagged: frozenset[str], peers: tuple[PeerSnapshot, ...]) -> tuple[list[Emit], frozenset[str]]:
    """One `origin_invalid` event for a peer that starts sending paths whose origin IPAM says is
    invalid (again after it stopped), so a hijack or a leak shows in `events`, not only in a gauge.
    Returns the events and the peers flagged now."""
    out, now_flagged = [], set(flagged)
    for p in peers:
        if not (p.origin_rejected or p.origin_depreferred):
            now_flagged.discard(p.peer)
        elif p.peer not in now_flagged:
            now_flagged.add(p.peer)
            detail = f"{p.origin_rejected} rejected, {p.origin_depreferred} de-preferred"
            prefix = ""
            if p.origin_first is not None:
                prefix, reason = p.origin_first
                detail += f"; {reason}"
            out.append(Emit("origin_invalid", prefix, detail, peer=p.peer))
    return out, frozenset(now_flagged)
