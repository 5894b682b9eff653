"""What an agent publishes about itself under status/<node> (bound to a lease), and how the CLI reads it.

The document is built by a pure function (`build`) from a snapshot of the agent's state
(snapshot.NodeSnapshot), so `calico-bgp status` and `calico-bgp routes` work from any machine that
reaches etcd, like `calicoctl node status` does through the datastore rather than through BIRD's
socket.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Iterable

import attrs

from calico_bgp.bfd.report import BfdStatus
from calico_bgp.resources import codec

if TYPE_CHECKING:
    from calico_bgp.agent.snapshot import NodeSnapshot, PeerSnapshot

MAX_PUBLISHED_ROUTES = 5000  # beyond this the document carries counts only: etcd values stay small

# a TCP MD5 mismatch is invisible to BGP: the kernel drops the segments, so the session just never opens
MD5_HINT = "TCP MD5 is configured: a password mismatch keeps the session from opening, silently"
# ExaBGP's session states as BIRD and calicoctl name them
SESSION_STATES = {"up": "Established", "down": "Idle", "connected": "Connect"}

PEER_TYPES = {"mesh": "node-to-node mesh", "rr-client": "route reflector client", "to-rr": "route reflector",
              "rr-peer": "route reflector peer", "node-peer": "node specific", "fabric": "global"}


@attrs.frozen
class SessionStatus:
    peer: str
    peer_type: str
    state: str
    since: float = 0.0           # wall-clock seconds of the last state change
    info: str = ""
    peer_name: str = ""
    peer_node: str = ""
    peer_as: int = 0
    received: int = 0
    accepted: int = 0
    rejected: int = 0            # every rejected path, kept or not
    rejected_not_kept: int = 0   # of those, beyond the per-peer cap (rib.MAX_REJECTED_PER_PEER): counted only
    damped: int = 0
    flaps: int = 0
    uptime: float = 0.0
    churn_rate: float = 0.0


@attrs.frozen
class RouteStatus:
    prefix: str
    next_hops: tuple[str, ...]
    peers: tuple[str, ...]
    in_kernel: bool
    best_reason: str = ""


@attrs.frozen
class RejectedRoute:
    peer: str
    prefix: str
    reason: str


@attrs.frozen
class FailedRoute:
    """A route wanted in the kernel and not there: `stage` build (no kernel route can express the
    selection, e.g. its next hop is no address) or kernel (netlink refused it; sent again after a
    back-off: `attempts` so far)."""

    prefix: str
    stage: str
    reason: str
    attempts: int = 1


@attrs.frozen
class DampedRoute:
    peer: str
    prefix: str
    penalty: float
    reuse_in: float
    flaps: int


@attrs.frozen
class PrefixChurnStatus:
    prefix: str
    announces: int
    withdraws: int
    last_change: float        # wall clock


@attrs.frozen
class NodeStatus:
    node: str
    version: str
    address: str
    asn: int
    router_id: str
    role: str                              # "node" or "route-reflector"
    updated: float
    started: float
    sessions: tuple[SessionStatus, ...] = ()
    routes: tuple[RouteStatus, ...] = ()
    routes_total: int = 0                  # learned: the RIB's selections
    kernel_routes: int = 0                 # routes of ours in the kernel as desired now (blackholes too)
    routes_failed: int = 0                 # wanted in the kernel and not there (`failed` lists them)
    failed: tuple[FailedRoute, ...] = ()
    rejected: tuple[RejectedRoute, ...] = ()
    damped: tuple[DampedRoute, ...] = ()
    announced: tuple[str, ...] = ()
    filter_mode: str = ""
    nat_mode: str = ""                     # IPPool natOutgoing: the netfilter tool masquerading ("": none)
    nat_masquerade: tuple[str, ...] = ()   # the natOutgoing pools' CIDRs it masquerades from
    nat_error: str = ""                    # why the last NAT pass failed ("": it did not)
    in_grace: bool = False
    churn: tuple[PrefixChurnStatus, ...] = ()   # the busiest prefixes, most changes first
    bfd: BfdStatus = BfdStatus()                # the BFD engine and its sessions (bfd/report.py)


def session_state(p: PeerSnapshot) -> str:
    """Established / Idle / Connect as the speaker says; before it says anything: Idle when the
    session is not configured (held idle, unusable password) or never reported, else Active."""
    return SESSION_STATES.get(p.speaker_state, "Idle" if not p.tracked or p.session_error else "Active")


def session_info(p: PeerSnapshot, state: str) -> str:
    """Why a session is not Established, the first known of: not configured, the speaker's reason,
    the last error seen; and the MD5 hint while a session with a password is not up."""
    reason = (p.session_error or (p.speaker_reason if p.speaker_state and p.speaker_state != "up" else "")
              or (p.last_error if p.tracked and state != "Established" else ""))
    md5 = p.has_password and state != "Established"
    return "; ".join(x for x in (reason, MD5_HINT if md5 else "") if x)


def session_status(p: PeerSnapshot) -> SessionStatus:
    state = session_state(p)
    return SessionStatus(
        peer=p.peer, peer_type=PEER_TYPES.get(p.kind, p.kind), state=state, since=p.since, info=session_info(p, state),
        peer_name=p.peer_name, peer_node=p.peer_node, peer_as=p.peer_as, received=p.received, accepted=p.accepted,
        rejected=p.rejected, damped=p.damped, rejected_not_kept=p.rejected_not_kept, flaps=p.flaps,
        uptime=p.uptime, churn_rate=round(p.churn_rate, 3))


def build(s: NodeSnapshot) -> NodeStatus:
    """The document of one snapshot."""
    return NodeStatus(
        node=s.node, version=s.version, address=s.address, asn=s.asn, router_id=s.router_id,
        role="route-reflector" if s.reflector else "node", updated=s.now, started=s.started,
        sessions=tuple(session_status(p) for p in s.peers), routes=cap(s.routes), routes_total=s.routes_total,
        kernel_routes=s.kernel_routes, routes_failed=s.routes_failed, failed=cap(s.failed), rejected=cap(s.rejected),
        damped=cap(s.damped), announced=s.announced, in_grace=s.in_grace, filter_mode=s.filter_mode, nat_mode=s.nat_mode,
        nat_masquerade=s.nat_masquerade, nat_error=s.nat_error, churn=s.churn)


def encode(status: NodeStatus) -> bytes:
    return codec.encode(status)


class Encoder:
    """`encode`, byte for byte, keeping each route's JSON for the next document: under churn most of
    the (up to MAX_PUBLISHED_ROUTES) routes are the same values as last time, and encoding them
    again was most of a document's cost."""

    def __init__(self) -> None:
        # the routes of the last document, by identity (sampling.node hands the same RouteStatus for
        # a route that did not change; hashing 5,000 of them cost more than the reuse saved)
        self._routes: dict[int, tuple[RouteStatus, str]] = {}

    def encode(self, status: NodeStatus) -> bytes:
        last, now = self._routes, {}
        texts = []
        for r in status.routes:
            seen = last.get(id(r))
            if seen is not None and seen[0] is r:
                text = seen[1]
            else:
                text = route_json(r)
            now[id(r)] = (r, text)
            texts.append(text)
        self._routes = now
        rest = codec.to_dict(attrs.evolve(status, routes=()))
        if status.routes:
            rest["routes"] = None  # its place among the sorted keys
        parts = []
        for key in sorted(rest):
            value = "[" + ",".join(texts) + "]" if key == "routes" else _dumps(rest[key])
            parts.append(f"{json.dumps(key)}:{value}")
        return ("{" + ",".join(parts) + "}").encode()


def route_json(r: RouteStatus) -> str:
    """One route as codec.encode writes it (keys sorted, bestReason left out when empty), without
    the generic unstructure and dumps: a document under churn is mostly new routes."""
    reason = f'"bestReason":{_str(r.best_reason)},' if r.best_reason else ""
    return (f'{{{reason}"inKernel":{"true" if r.in_kernel else "false"},'
            f'"nextHops":[{",".join(map(_str, r.next_hops))}],"peers":[{",".join(map(_str, r.peers))}],'
            f'"prefix":{_str(r.prefix)}}}')


_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]  # a str as json.dumps writes it


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)  # as codec.encode writes


def decode(raw: bytes, where: str) -> NodeStatus:
    return codec.decode(NodeStatus, raw, where=where)


def cap(items: Iterable[Any], limit: int = MAX_PUBLISHED_ROUTES) -> tuple[Any, ...]:
    out = []
    for i, item in enumerate(items):
        if i >= limit:
            break
        out.append(item)
    return tuple(out)


def as_json(status: NodeStatus) -> Any:
    """Every field, defaults included (scripts want stable keys), in the stored camelCase spelling."""
    return _full(status)


def _full(value: Any) -> Any:
    if attrs.has(type(value)):
        return {codec.json_name(f.name): _full(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, (list, tuple)):
        return [_full(v) for v in value]
    return value
