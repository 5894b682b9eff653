"""The RIB: routes learned per peer, best path and ECMP set per prefix, route-reflector decisions.

Pure: no I/O, no clocks. The agent feeds it parsed UPDATEs and reads back what changed; the
speaker and the route programmer act on that. Decision process after RFC 4271 9.1.2 (as GoBGP's
destination.go and BIRD do it), multipath in the data-centre sense (equal through the eBGP/iBGP
step, distinct next hops, different neighbour ASes allowed: "as-path multipath-relax"), and
reflection after RFC 4456.
"""
from __future__ import annotations

import ipaddress
import itertools
from typing import Callable, ClassVar, Iterable, Iterator, Mapping, Sequence

import attrs

from calico_bgp.routing.nexthop import SCOPE, SessionLink, unusable

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_LOCAL_PREF = 100
_ORIGIN_RANK = {"igp": 0, "egp": 1, "incomplete": 2}


@attrs.frozen(slots=True)
class Peer:
    """One BGP session as the RIB sees it; `address` identifies it."""

    address: str
    asn: int
    router_id: str
    ibgp: bool
    rr_client: bool = False
    allow_own_as: int = 0   # allowas-in: our AS may appear this many times in a path from this peer
    link: SessionLink | None = None  # the interface, when the peer is directly connected (nexthop.session_link)
    origin_validation: str = "Reject"  # an origin-invalid path from this peer: Reject, Deprefer or Disabled


@attrs.frozen(slots=True)
class PathAttrs:
    """`next_hop` is the address the route goes via: a link-local one scoped to the session's
    interface ("fe80::1%eth0", nexthop.resolve); `link_local` the link-local next hop the peer sent
    beside a global one (RFC 2545), kept as it came."""

    next_hop: str
    as_path: tuple[int, ...] = ()   # the AS_SEQUENCE numbers, in order
    origin: str = "igp"
    local_pref: int | None = None
    med: int | None = None
    communities: tuple[tuple[int, int], ...] = ()
    large_communities: tuple[tuple[int, int, int], ...] = ()
    originator_id: str | None = None
    cluster_list: tuple[str, ...] = ()
    as_set: tuple[int, ...] = ()    # AS_SET members (an aggregate's); after the rest: positional users stay valid
    link_local: str | None = None


@attrs.frozen(slots=True)
class Path:
    prefix: Prefix
    peer: Peer
    attrs: PathAttrs
    invalid: ClassVar[str | None] = None  # a valid path; see DepreferredPath


@attrs.frozen(slots=True)
class DepreferredPath(Path):
    """A path whose origin is invalid (Rib.origin_check), kept but ranked below every valid path.
    A subclass, so that the 100k valid paths of a burst are built with three fields, not four."""

    invalid: str = ""  # type: ignore[misc]  # why its origin is invalid


def _path(prefix: Prefix, peer: Peer, pattrs: PathAttrs, invalid: str | None) -> Path:
    return Path(prefix, peer, pattrs) if invalid is None else DepreferredPath(prefix, peer, pattrs, invalid)


@attrs.frozen(slots=True)
class Selection:
    """The best path of a prefix and the ECMP set it belongs to (best first, distinct next hops)."""

    best: Path
    multipath: tuple[Path, ...]
    reason: str

    @property
    def next_hops(self) -> tuple[str, ...]:
        mp = self.multipath
        if len(mp) == 1:  # the common case, read for every learned route
            return (mp[0].attrs.next_hop,)
        return tuple(p.attrs.next_hop for p in mp)


@attrs.frozen(slots=True)
class LocalSpeaker:
    """This node as a BGP speaker: its AS, router id and, for a route reflector, its cluster id."""

    asn: int
    router_id: str
    cluster_id: str | None = None

    @property
    def is_reflector(self) -> bool:
        return self.cluster_id is not None


# An import policy returns None to accept a route or a short reason to reject it.
ImportPolicy = Callable[[Peer, Prefix, PathAttrs], "str | None"]
# An origin check returns None for a path that may be used as it is, or why its origin is invalid
# (calico_bgp.routing.origin); the peer's origin_validation says whether that rejects or de-prefers it.
OriginCheck = Callable[[Peer, Prefix, PathAttrs], "str | None"]


def loop_check(local: LocalSpeaker, peer: Peer, attrs_: PathAttrs) -> str | None:
    """Reasons a received route must be dropped whatever the filters say (RFC 4271 / RFC 4456).
    Our AS inside an AS_SET is a loop as much as in an AS_SEQUENCE (RFC 4271 9.1.2; BIRD's
    as_path_contains and FRR's aspath_loop_check count every segment)."""
    if not peer.ibgp and attrs_.as_path.count(local.asn) + attrs_.as_set.count(local.asn) > peer.allow_own_as:
        return "as-path loop"
    if peer.ibgp:
        if attrs_.originator_id == local.router_id:
            return "originator-id is ours"
        if local.cluster_id is not None and local.cluster_id in attrs_.cluster_list:
            return "cluster-list loop"
    return None


def _neighbor_as(path: Path, local_asn: int) -> int:
    return path.attrs.as_path[0] if path.attrs.as_path else local_asn


def _ip_key(text: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(text)
    return (addr.version, int(addr))


def _preference(path: Path) -> tuple[int, int, int, int]:
    """The part of the decision that ECMP members must share, as a tuple where smaller is better.
    Origin validity first: an origin-invalid path loses to any valid one, as an RPKI-invalid one
    does where invalids are de-preferred rather than dropped. LOCAL_PREF counts only from iBGP
    peers (RFC 4271 5.1.5: an external peer's is ignored)."""
    a = path.attrs
    lp = a.local_pref if a.local_pref is not None and path.peer.ibgp else DEFAULT_LOCAL_PREF
    # RFC 4271 9.1.2.2 (a): an AS_SET counts as one AS however many it holds
    return (path.invalid is not None, -lp, len(a.as_path) + (1 if a.as_set else 0), _ORIGIN_RANK.get(a.origin, 2))


_PREFERENCE_STEPS = ("origin-validation", "local-pref", "as-path", "origin")


def compare(a: Path, b: Path, local_asn: int) -> tuple[int, str]:
    """<0 if `a` is better, >0 if `b` is, with the step that decided; 0 only for the same peer."""
    pa, pb = _preference(a), _preference(b)
    for i, reason in enumerate(_PREFERENCE_STEPS):
        if pa[i] != pb[i]:
            return (-1 if pa[i] < pb[i] else 1), reason
    if _neighbor_as(a, local_asn) == _neighbor_as(b, local_asn):
        ma, mb = a.attrs.med or 0, b.attrs.med or 0
        if ma != mb:
            return (-1 if ma < mb else 1), "med"
    if a.peer.ibgp != b.peer.ibgp:
        return (1 if a.peer.ibgp else -1), "ebgp-over-ibgp"
    ida = _ip_key(a.attrs.originator_id or a.peer.router_id)
    idb = _ip_key(b.attrs.originator_id or b.peer.router_id)
    if ida != idb:
        return (-1 if ida < idb else 1), "router-id"
    if len(a.attrs.cluster_list) != len(b.attrs.cluster_list):
        return (-1 if len(a.attrs.cluster_list) < len(b.attrs.cluster_list) else 1), "cluster-list"
    ka, kb = _ip_key(a.peer.address), _ip_key(b.peer.address)
    if ka != kb:
        return (-1 if ka < kb else 1), "peer-address"
    return 0, "same-peer"


# At most this many next hops in one selection: the kernel's limit for one route
# (dataplane.routes.route.MAX_NEXTHOPS); a prefix announced by more peers than that uses the first ones.
MAX_MULTIPATH = 64

# Steps after which two paths count as equal for multipath: only tie-breakers remain.
_TIE_BREAKERS = frozenset({"router-id", "cluster-list", "peer-address", "same-peer"})


def select(paths: Sequence[Path], local_asn: int, multipath: bool = True) -> Selection | None:
    """Best path among `paths` (one per peer) and the ECMP set equal to it through the eBGP/iBGP step."""
    if not paths:
        return None
    ranked = sorted(paths, key=lambda p: _ip_key(p.peer.address))
    # RFC 4271 9.1.2.2 (a)-(d) as a whole, not pair by pair: the best local-pref, AS path length and
    # origin, then within each neighbouring AS only the lowest MED. (Pairwise, MED is not transitive
    # across ASes and the winner depended on which paths met.)
    prefs = [_preference(p) for p in ranked]
    top = min(prefs)
    contenders = [p for p, pref in zip(ranked, prefs) if pref == top]
    lowest_med: dict[int, int] = {}
    for p in contenders:
        n_as, med = _neighbor_as(p, local_asn), p.attrs.med or 0
        lowest_med[n_as] = min(lowest_med.get(n_as, med), med)
    survivors = [p for p in contenders if (p.attrs.med or 0) == lowest_med[_neighbor_as(p, local_asn)]]
    best = survivors[0]
    for p in survivors[1:]:
        if compare(p, best, local_asn)[0] < 0:
            best = p
    others = [p for p in ranked if p is not best]
    reason = "only-path"
    if others:
        runner_up = others[0]
        for p in others[1:]:
            if compare(p, runner_up, local_asn)[0] < 0:
                runner_up = p
        reason = compare(best, runner_up, local_asn)[1]
        if reason in _TIE_BREAKERS and all(runner_up is not p for p in survivors):
            reason = "med"  # it lost on MED to a path of its own AS
    members = [best]
    if multipath:
        seen = {best.attrs.next_hop}
        for p in survivors:
            if p is best:
                continue
            if len(members) == MAX_MULTIPATH:
                break  # `survivors` is in peer-address order: the same members every time
            if p.attrs.next_hop not in seen and compare(p, best, local_asn)[1] in _TIE_BREAKERS:
                members.append(p)
                seen.add(p.attrs.next_hop)
    return Selection(best, tuple(members), reason)


# Rejected paths kept per peer (for `routes --rejected` and so a policy change can accept them later
# without the peer sending them again). Beyond this a peer's rejected paths are counted, not kept:
# 10k paths with their attributes are a few MB; 200k rejected /128s were 140 MB that stayed.
MAX_REJECTED_PER_PEER = 10_000


@attrs.frozen(slots=True)
class Rejected:
    peer: str
    prefix: Prefix
    reason: str


class Rib:
    """Adj-RIB-In per peer plus the selection per prefix. No I/O: every method returns what changed."""

    def __init__(self, local: LocalSpeaker, import_policy: ImportPolicy | None = None, multipath: bool = True,
                 max_rejected: int = MAX_REJECTED_PER_PEER, origin_check: OriginCheck | None = None):
        self.local = local
        self.import_policy = import_policy
        self.origin_check = origin_check
        self.multipath = multipath
        self.max_rejected = max_rejected
        self._paths: dict[Prefix, dict[str, Path]] = {}
        self._selected: dict[Prefix, Selection] = {}
        self._rejected: dict[str, dict[Prefix, tuple[str, PathAttrs]]] = {}
        # per peer: rejected paths beyond max_rejected, counted, not kept (a withdrawal of a prefix the
        # RIB holds nothing of for the peer counts one down: an estimate, as a re-announcement of one
        # counts again)
        self._not_kept: dict[str, int] = {}
        self._stale: dict[str, set[Prefix]] = {}

    def rebuilt(self, local: LocalSpeaker) -> "Rib":
        """A RIB for a changed local speaker (AS, router id, cluster id) that still holds every path
        peers sent (they send increments only, never the table again). The paths wait, as rejected,
        until `reapply_policy` runs them through the loop checks and import policy of the new
        speaker; stale marks carry over."""
        new = Rib(local, self.import_policy, self.multipath, max_rejected=self.max_rejected,
                  origin_check=self.origin_check)
        for (address, prefix), pattrs in self.received():
            new._rejected.setdefault(address, {})[prefix] = ("re-evaluating", pattrs)
        new._stale = {address: set(stale) for address, stale in self._stale.items()}
        new._not_kept = dict(self._not_kept)
        return new

    # --- input -------------------------------------------------------------------------------
    def update(self, peer: Peer, announced: Mapping[Prefix, PathAttrs], withdrawn: Iterable[Prefix] = ()) -> set[Prefix]:
        """Apply one UPDATE from `peer`; returns the prefixes whose selection changed.

        The common cases of a table arriving or leaving skip the decision process: a withdraw that
        leaves no path, and the first path of a prefix, change the selection without ranking."""
        touched: set[Prefix] = set()  # prefixes whose paths changed among others: ranked below
        changed: set[Prefix] = set()
        rejected = self._rejected.setdefault(peer.address, {})
        stale = self._stale.get(peer.address)
        if stale:
            stale.difference_update(announced)
            stale.difference_update(withdrawn)
        local, policy, paths, address, selected = self.local, self.import_policy, self._paths, peer.address, self._selected
        not_kept = self._not_kept.get(address, 0)
        mode = peer.origin_validation
        origin = self.origin_check if mode != "Disabled" else None
        reject_invalid = mode == "Reject"
        invalid: str | None = None
        for prefix in withdrawn:
            was_rejected = rejected.pop(prefix, None) if rejected else None
            per_peer = paths.get(prefix)
            if per_peer and per_peer.pop(address, None) is not None:
                if per_peer:
                    touched.add(prefix)
                else:  # its last path: no selection left
                    del paths[prefix]
                    if selected.pop(prefix, None) is not None:
                        changed.add(prefix)
            elif not_kept and was_rejected is None:
                not_kept -= 1  # most likely one of the rejected paths not kept
        last: PathAttrs | None = None
        loop: str | None = None
        for prefix, pattrs in announced.items():
            if pattrs is not last:  # the prefixes of one UPDATE share one attributes object
                last, loop = pattrs, loop_check(local, peer, pattrs) or unusable(pattrs.next_hop)
            reason = loop
            if reason is None and policy is not None:
                reason = policy(peer, prefix, pattrs)
            if reason is None and origin is not None:
                invalid = origin(peer, prefix, pattrs)
                if invalid is not None and reject_invalid:
                    reason, invalid = invalid, None
            per_peer = paths.get(prefix)
            if reason is not None:
                if len(rejected) < self.max_rejected or prefix in rejected:
                    rejected[prefix] = (reason, pattrs)  # kept, so a policy change can accept it later
                else:
                    not_kept += 1
                if per_peer is not None and per_peer.pop(address, None) is not None:  # implicit withdraw of the old path
                    touched.add(prefix)
                continue
            if rejected:
                rejected.pop(prefix, None)
            if not per_peer and prefix not in selected:  # the first path of a prefix: it is the selection
                path = _path(prefix, peer, pattrs, invalid)
                paths[prefix] = {address: path}
                selected[prefix] = Selection(path, (path,), "only-path")
                changed.add(prefix)
                continue
            if per_peer is None:
                per_peer = paths[prefix] = {}
            old = per_peer.get(address)
            if (old is None or (old.attrs is not pattrs and old.attrs != pattrs) or (old.peer is not peer and old.peer != peer)
                    or old.invalid != invalid):
                per_peer[address] = _path(prefix, peer, pattrs, invalid)
                touched.add(prefix)
        if not_kept or address in self._not_kept:
            self._not_kept[address] = not_kept
        if touched:
            changed |= self._reselect(touched)
        return changed

    def mark_stale(self, peer_address: str) -> None:
        """Keep a peer's paths but remember them as stale (its session dropped for a reason of ours,
        e.g. our speaker restarted): whatever it does not re-announce is removed by sweep_stale."""
        self._stale[peer_address] = {p for p, per_peer in self._paths.items() if peer_address in per_peer}

    def stale_count(self, peer_address: str) -> int:
        return len(self._stale.get(peer_address, ()))

    def sweep_stale(self, peer_address: str) -> set[Prefix]:
        stale = self._stale.pop(peer_address, set())
        touched = {p for p in stale if (self._paths.get(p) or {}).pop(peer_address, None) is not None}
        return self._reselect(touched)

    def peer_down(self, peer_address: str) -> set[Prefix]:
        """Forget everything learned from a peer whose session went down."""
        self._stale.pop(peer_address, None)
        self._rejected.pop(peer_address, None)
        self._not_kept.pop(peer_address, None)
        touched = {p for p, per_peer in self._paths.items() if per_peer.pop(peer_address, None) is not None}
        return self._reselect(touched)

    def reapply_policy(self, peers: Iterable[Peer]) -> set[Prefix]:
        """Re-run import policy over everything received, accepted or not (soft reconfiguration);
        of the rejected paths only those kept (see MAX_REJECTED_PER_PEER): `rejected_not_kept` says
        how many a peer would have to send again (a route refresh) to be judged anew."""
        changed: set[Prefix] = set()
        for peer in peers:
            kept = {prefix: per_peer[peer.address].attrs for prefix, per_peer in self._paths.items()
                    if peer.address in per_peer}
            kept.update((prefix, pattrs) for prefix, (_, pattrs) in self._rejected.get(peer.address, {}).items())
            stale = self._stale.get(peer.address)
            saved = set(stale) if stale else None  # re-applying policy is not the peer re-announcing
            changed |= self.update(peer, kept)
            if saved is not None:
                self._stale[peer.address] = saved
        return changed

    def _reselect(self, prefixes: Iterable[Prefix]) -> set[Prefix]:
        changed: set[Prefix] = set()
        for prefix in prefixes:
            per_peer = self._paths.get(prefix) or {}
            if len(per_peer) == 1:  # what select() makes of one path, without ranking
                only = next(iter(per_peer.values()))
                old = self._selected.get(prefix)
                if old is None:  # a new prefix: nothing to compare with
                    self._selected[prefix] = Selection(only, (only,), "only-path")
                    changed.add(prefix)
                    continue
                sel: Selection | None = Selection(only, (only,), "only-path")
            else:
                sel = select(list(per_peer.values()), self.local.asn, self.multipath)
            if sel is None:
                self._paths.pop(prefix, None)
                if self._selected.pop(prefix, None) is not None:
                    changed.add(prefix)
            elif self._selected.get(prefix) != sel:
                self._selected[prefix] = sel
                changed.add(prefix)
        return changed

    # --- output ------------------------------------------------------------------------------
    def selection(self, prefix: Prefix) -> Selection | None:
        return self._selected.get(prefix)

    def selections(self) -> Iterator[tuple[Prefix, Selection]]:
        return iter(self._selected.items())

    def paths(self, prefix: Prefix) -> list[Path]:
        return list((self._paths.get(prefix) or {}).values())

    def accepted_count(self, peer_address: str) -> int:
        return sum(1 for per_peer in self._paths.values() if peer_address in per_peer)

    def depreferred_count(self, peer_address: str) -> int:
        """Paths from the peer kept though their origin is invalid (its origin_validation: Deprefer)."""
        return sum(1 for per_peer in self._paths.values()
                   if (p := per_peer.get(peer_address)) is not None and p.invalid is not None)

    def received(self) -> Iterator[tuple[tuple[str, Prefix], PathAttrs]]:
        """Every path a peer sent and still stands, accepted or rejected: ((peer address, prefix), attrs)."""
        for prefix, per_peer in self._paths.items():
            for address, path in per_peer.items():
                yield (address, prefix), path.attrs
        for address, rejected in self._rejected.items():
            for prefix, (_, pattrs) in rejected.items():
                yield (address, prefix), pattrs

    def rejected_count(self, peer_address: str) -> int:
        """The peer's rejected paths, those kept and those beyond the cap."""
        return len(self._rejected.get(peer_address, ())) + self._not_kept.get(peer_address, 0)

    def forget_not_kept(self, peer_address: str) -> None:
        """The peer is sending everything again (route refresh): what is beyond the cap is counted anew."""
        self._not_kept.pop(peer_address, None)

    def rejected_not_kept(self, peer_address: str) -> int:
        """The peer's rejected paths beyond max_rejected: counted, not kept (not in `rejected()`, and a
        policy change cannot accept them until the peer sends them again: a route refresh)."""
        return self._not_kept.get(peer_address, 0)

    def rejected(self, peer_address: str | None = None, limit: int | None = None) -> list[Rejected]:
        """The rejected paths kept (of one peer, or all by peer), at most `limit` of them."""
        peers = [peer_address] if peer_address else sorted(self._rejected)
        every = (Rejected(p, prefix, why) for p in peers for prefix, (why, _) in self._rejected.get(p, {}).items())
        return list(every) if limit is None else list(itertools.islice(every, limit))

    def holds(self, prefix: Prefix) -> bool:
        """Whether any peer's path for `prefix` is here, accepted or rejected and kept."""
        return prefix in self._paths or any(prefix in rejected for rejected in self._rejected.values())

    def held(self) -> int:
        """At least as many as the distinct prefixes `holds` is true of (cheap: no walk over paths)."""
        return len(self._paths) + sum(len(r) for r in self._rejected.values())

    def __len__(self) -> int:
        return len(self._selected)


# --- route reflection (RFC 4456) ------------------------------------------------------------------

def reflect_to(local: LocalSpeaker, sel: Selection, neighbor: Peer) -> PathAttrs | None:
    """What a route reflector advertises to one iBGP `neighbor` for a selection, or None.

    Only iBGP-learned best paths are reflected; routes from eBGP peers are not re-advertised (the
    fabric is each node's own business, and the safe export default forbids it). A client's route
    goes to every other iBGP neighbour; a non-client's route goes to clients only. ORIGINATOR_ID is
    set once, CLUSTER_LIST gets our cluster id prepended, the next hop is kept (a path via a link-local
    next hop is not reflected).
    """
    if local.cluster_id is None or not neighbor.ibgp:
        return None
    best = sel.best
    src = best.peer
    if not src.ibgp or src.address == neighbor.address:
        return None
    if not src.rr_client and not neighbor.rr_client:
        return None
    originator = best.attrs.originator_id or src.router_id
    if originator == neighbor.router_id:
        return None
    if SCOPE in best.attrs.next_hop:  # a link-local next hop means nothing off its link (RFC 2545 section 2)
        return None
    return attrs.evolve(
        best.attrs,
        originator_id=originator,
        cluster_list=(local.cluster_id, *best.attrs.cluster_list),
        local_pref=best.attrs.local_pref if best.attrs.local_pref is not None else DEFAULT_LOCAL_PREF,
    )


def reflections(local: LocalSpeaker, rib: Rib, neighbors: Sequence[Peer],
                prefixes: Iterable[Prefix] | None = None) -> dict[str, dict[Prefix, PathAttrs | None]]:
    """Per neighbour address: prefix -> attributes to advertise (None = withdraw), for `prefixes`
    (all selections when None). Feeding only the prefixes `Rib.update` reported keeps it incremental."""
    out: dict[str, dict[Prefix, PathAttrs | None]] = {n.address: {} for n in neighbors}
    if local.cluster_id is None:
        return out
    todo = rib._selected.keys() if prefixes is None else prefixes
    for prefix in todo:
        sel = rib.selection(prefix)
        for n in neighbors:
            out[n.address][prefix] = reflect_to(local, sel, n) if sel is not None else None
    if prefixes is None:  # a full recompute lists only what is advertised
        for adv in out.values():
            for prefix in [p for p, a in adv.items() if a is None]:
                del adv[prefix]
    return out
