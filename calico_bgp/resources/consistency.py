"""Consistency across resources (pure, over a snapshot): what an apply or a delete may not break.

Pools may not overlap nor change their CIDR or block size; a BGPPeer's filters must exist, and stay
while it names them. A BGPPeer's node need not exist yet (calicoctl takes it: nodes register later),
but a node may not be deleted while a BGPPeer names it.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Mapping, Sequence

from calico_bgp.resources.bgppeer import BGPPeer
from calico_bgp.resources.fields import InvalidResource
from calico_bgp.resources.ippool import IPPool
from calico_bgp.resources.kinds import Resource


class ResourceInUse(InvalidResource):
    """A delete would leave another resource pointing at nothing."""


State = Mapping[str, Mapping[str, Any]]   # kind -> name -> resource


def _pools_overlap(a: IPPool, b: IPPool) -> bool:
    na, nb = a.spec.network, b.spec.network
    return na.version == nb.version and na.overlaps(nb)  # type: ignore[arg-type]


def check_apply(current: State, batch: Sequence[Resource]) -> None:
    """Raise InvalidResource naming every problem `batch` would create on top of `current`."""
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in current.items()}
    for r in batch:
        merged.setdefault(r.kind, {})[r.metadata.name] = r
    errors: list[str] = []
    pools = merged.get("IPPool", {})
    reported: set[frozenset[str]] = set()
    for r in batch:
        if isinstance(r, IPPool):
            old = current.get("IPPool", {}).get(r.name)
            if old is not None and old.spec.cidr != r.spec.cidr:
                errors.append(f"IPPool {r.name!r}: spec.cidr cannot change ({old.spec.cidr} -> {r.spec.cidr}); "
                              "create a new pool and delete this one")
            elif old is not None and old.spec.block_size != r.spec.block_size:
                errors.append(f"IPPool {r.name!r}: spec.blockSize cannot change ({old.spec.block_size} -> "
                              f"{r.spec.block_size}); create a new pool and delete this one")
            for other in pools.values():
                pair = frozenset((r.name, other.name))
                if other.name != r.name and pair not in reported and _pools_overlap(r, other):
                    reported.add(pair)
                    errors.append(f"IPPool {r.name!r} ({r.spec.cidr}) overlaps IPPool {other.name!r} "
                                  f"({other.spec.cidr})")
        elif isinstance(r, BGPPeer):
            for f in r.spec.filters:
                if f not in merged.get("BGPFilter", {}):
                    errors.append(f"BGPPeer {r.name!r}: spec.filters: BGPFilter {f!r} does not exist")
    if errors:
        raise InvalidResource("; ".join(errors))


def check_delete(current: State, kind: str, name: str) -> None:
    if kind == "BGPFilter":
        users = sorted(p.name for p in current.get("BGPPeer", {}).values() if name in p.spec.filters)
        if users:
            raise ResourceInUse(f"BGPFilter {name!r} is used by BGPPeer {', '.join(repr(u) for u in users)}; "
                                "remove it from their spec.filters first")
    if kind == "Node":
        users = sorted(p.name for p in current.get("BGPPeer", {}).values() if p.spec.node == name)
        if users:
            raise ResourceInUse(f"Node {name!r} is the spec.node of BGPPeer {', '.join(repr(u) for u in users)}; "
                                "delete those peers (or point them elsewhere) first")


def dependencies(current: State, batch: Sequence[Resource]) -> list[tuple[str, str]]:
    """(kind, name) of the stored resources a decision about `batch` was based on."""
    deps: set[tuple[str, str]] = set()
    for r in batch:
        if isinstance(r, IPPool):
            deps.update(("IPPool", p.name) for p in current.get("IPPool", {}).values() if p.name != r.name
                        and p.spec.version == r.spec.version)
        elif isinstance(r, BGPPeer):
            deps.update(("BGPFilter", f) for f in r.spec.filters if f in current.get("BGPFilter", {}))
            if r.spec.node and r.spec.node in current.get("Node", {}):
                deps.add(("Node", r.spec.node))
    return sorted(deps)


def overlapping(pools: Iterable[IPPool], cidr: str) -> list[IPPool]:
    """Pools whose CIDR overlaps `cidr` (for callers outside the store, e.g. diagnostics)."""
    net = ipaddress.ip_network(cidr)
    return [p for p in pools if p.spec.network.version == net.version and p.spec.network.overlaps(net)]  # type: ignore[arg-type]
