"""Route reflection (RFC 4456): what a route reflector advertises, and to which iBGP neighbours. Pure.

A reflected route carries the same attributes to every neighbour that gets it (ORIGINATOR_ID,
CLUSTER_LIST and the next hop depend on the path, not on the receiver), so a selection is reflected
as one value: its attributes and the set of neighbours that receive them. The work for a change is
per prefix and set operations over the neighbours, never a value per (prefix, neighbour). Given a
ReflectionExport (routing/reflection_export.py), each neighbour's export filters and the pool default
then decide who gets it, and a filter's operations make `others`: the same route with other
attributes for other neighbours.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import attrs

from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.decision import DEFAULT_LOCAL_PREF
from calico_bgp.routing.nexthop import SCOPE
from calico_bgp.routing.path import LocalSpeaker, Peer, Selection
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.reflection_export import ReflectionExport
from calico_bgp.routing.rib import Rib


@attrs.frozen(slots=True)
class Reflected:
    """A selection as reflected: `attributes` go to the neighbours in `targets` (their addresses)."""

    attributes: PathAttributes
    targets: frozenset[str]
    others: tuple[Reflected, ...] = ()  # the route with other attributes for other neighbours (their filters')

    def per_neighbor(self) -> dict[str, PathAttributes]:
        """Each neighbour that gets the route -> the attributes it gets."""
        out = dict.fromkeys(self.targets, self.attributes)
        for o in self.others:
            out.update(dict.fromkeys(o.targets, o.attributes))
        return out


def reflected_attributes(local: LocalSpeaker, sel: Selection) -> PathAttributes | None:
    """What a route reflector advertises for a selection, whoever gets it; None if it reflects nothing.

    Only iBGP-learned best paths are reflected; routes from eBGP peers are not re-advertised (the
    fabric is each node's own business, and the safe export default forbids it). ORIGINATOR_ID is
    set once, CLUSTER_LIST gets our cluster id prepended, the next hop is kept (a path via a
    link-local next hop is not reflected: RFC 2545 section 2)."""
    best = sel.best
    src = best.peer
    if local.cluster_id is None or not src.ibgp or SCOPE in best.attrs.next_hop:
        return None
    return attrs.evolve(
        best.attrs,
        originator_id=best.attrs.originator_id or src.router_id,
        cluster_list=(local.cluster_id, *best.attrs.cluster_list),
        local_pref=best.attrs.local_pref if best.attrs.local_pref is not None else DEFAULT_LOCAL_PREF,
        received=None, kernel_metric=0,  # what our import policy kept of the sender's is ours alone
    )


def receives(source: Peer, reflected: PathAttributes, neighbor: Peer) -> bool:
    """Whether an iBGP `neighbor` gets a route `source` sent, reflected as `reflected`: a client's
    route goes to every other iBGP neighbour, a non-client's to clients only, never back to the
    sender nor to the router that originated it."""
    return (neighbor.ibgp and source.address != neighbor.address and (source.rr_client or neighbor.rr_client)
            and reflected.originator_id != neighbor.router_id)


def reflect_to(local: LocalSpeaker, sel: Selection, neighbor: Peer) -> PathAttributes | None:
    """What a route reflector advertises to one iBGP `neighbor` for a selection, or None."""
    a = reflected_attributes(local, sel)
    return a if a is not None and receives(sel.best.peer, a, neighbor) else None


class Audience:
    """The iBGP neighbours a reflector serves, indexed so that a selection's targets are two set
    differences: everyone (or the clients) less the sender and the originator's own sessions.
    Equal targets are one shared frozenset."""

    def __init__(self, neighbors: Iterable[Peer]) -> None:
        ibgp = [n for n in neighbors if n.ibgp]
        self.everyone = frozenset(n.address for n in ibgp)
        self.clients = frozenset(n.address for n in ibgp if n.rr_client)
        by_router_id: dict[str, set[str]] = {}
        for n in ibgp:
            by_router_id.setdefault(n.router_id, set()).add(n.address)
        self._by_router_id = by_router_id
        self._memo: dict[tuple[str, bool, str | None], frozenset[str]] = {}

    def targets(self, source: Peer, reflected: PathAttributes) -> frozenset[str]:
        key = (source.address, source.rr_client, reflected.originator_id)
        out = self._memo.get(key)
        if out is None:
            base = self.everyone if source.rr_client else self.clients
            out = base - {source.address} - self._by_router_id.get(reflected.originator_id or "", set())
            self._memo[key] = out
        return out


def reflection(local: LocalSpeaker, sel: Selection | None, audience: Audience, prefix: Prefix | None = None,
               export: ReflectionExport | None = None) -> Reflected | None:
    """A selection as reflected to `audience`, through `export` (the neighbours' export filters) when
    given, or None (nothing reflected, or to nobody)."""
    if sel is None:
        return None
    a = reflected_attributes(local, sel)
    if a is None:
        return None
    targets = audience.targets(sel.best.peer, a)
    if not targets:
        return None
    if export is None or prefix is None:
        return Reflected(a, targets)
    if export.unfiltered(prefix[0], targets):  # the usual case: no filters, the pool default decides
        return Reflected(a, targets) if export.by_default(prefix) else None
    variants = export.variants(prefix, a, targets, sel.best.peer.link)
    if not variants:
        return None
    first = variants[0]
    return Reflected(first.attributes, first.targets, tuple(Reflected(v.attributes, v.targets) for v in variants[1:]))


def reflections(local: LocalSpeaker, rib: Rib, neighbors: Sequence[Peer], prefixes: Iterable[Prefix] | None = None,
                export: ReflectionExport | None = None) -> Mapping[Prefix, Reflected | None]:
    """Prefix -> how it is reflected (None: not at all, i.e. withdrawn wherever it was), for
    `prefixes` (every selection when None, listing only what is reflected). Feeding only the
    prefixes `Rib.update` reported keeps it incremental. `export`: the neighbours' export filters."""
    out: dict[Prefix, Reflected | None] = {}
    if local.cluster_id is None:
        return out
    audience = Audience(neighbors)
    if prefixes is None:
        for prefix, sel in rib.selections():
            r = reflection(local, sel, audience, prefix, export)
            if r is not None:
                out[prefix] = r
    else:
        for prefix in prefixes:
            out[prefix] = reflection(local, rib.selection(prefix), audience, prefix, export)
    return out
