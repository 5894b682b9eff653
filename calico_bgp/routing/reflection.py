"""Route reflection (RFC 4456): what a route reflector advertises to each iBGP neighbour. Pure."""
from __future__ import annotations

from typing import Iterable, Sequence

import attrs

from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.decision import DEFAULT_LOCAL_PREF
from calico_bgp.routing.nexthop import SCOPE
from calico_bgp.routing.path import LocalSpeaker, Peer, Selection
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import Rib


def reflect_to(local: LocalSpeaker, sel: Selection, neighbor: Peer) -> PathAttributes | None:
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
                prefixes: Iterable[Prefix] | None = None) -> dict[str, dict[Prefix, PathAttributes | None]]:
    """Per neighbour address: prefix -> attributes to advertise (None = withdraw), for `prefixes`
    (all selections when None). Feeding only the prefixes `Rib.update` reported keeps it incremental."""
    out: dict[str, dict[Prefix, PathAttributes | None]] = {n.address: {} for n in neighbors}
    if local.cluster_id is None:
        return out
    todo = [p for p, _ in rib.selections()] if prefixes is None else prefixes
    for prefix in todo:
        sel = rib.selection(prefix)
        for n in neighbors:
            out[n.address][prefix] = reflect_to(local, sel, n) if sel is not None else None
    if prefixes is None:  # a full recompute lists only what is advertised
        for adv in out.values():
            for prefix in [p for p, a in adv.items() if a is None]:
                del adv[prefix]
    return out
