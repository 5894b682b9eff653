"""The BGP decision process: which path of a prefix is best and which form its ECMP set. Pure.

After RFC 4271 9.1.2 (as GoBGP's destination.go and BIRD do it), multipath in the data-centre
sense (equal through the eBGP/iBGP step, distinct next hops, different neighbour ASes allowed:
"as-path multipath-relax"), and the loop checks of RFC 4271 and RFC 4456.
"""
from __future__ import annotations

import ipaddress
from typing import Sequence

from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.path import LocalSpeaker, Path, Peer, Selection

DEFAULT_LOCAL_PREF = 100
_ORIGIN_RANK = {"igp": 0, "egp": 1, "incomplete": 2}


def loop_check(local: LocalSpeaker, peer: Peer, attrs_: PathAttributes) -> str | None:
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
    does where invalids are de-preferred rather than dropped. LOCAL_PREF counts from iBGP peers
    (RFC 4271 5.1.5: an external peer's is ignored) and when our import policy set it (`received`:
    a BGPFilter setPriority, which BIRD ranks by too)."""
    a = path.attrs
    lp = a.local_pref if a.local_pref is not None and (path.peer.ibgp or a.received is not None) else DEFAULT_LOCAL_PREF
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
