"""What this node wants, computed from the cluster state and the RIB. Pure.

- announcements: each block affine to this node as one aggregate, each address this node borrowed
  from another node's block as a host route; never a pool with disableBGPExport.
- kernel routes: a blackhole per local block (an unallocated address is dropped here rather than
  following the default route) and the RIB's selections via their next hops (ECMP when several),
  but none inside a `keep_out` prefix (the service CIDRs: advertise_services.kept_out_of_kernel).
  A learned route's metric is 0 (the kernel's default), or the priority a BGPFilter setPriority
  gave it on import: Calico renders setPriority as `krt_metric = <value>;` (projectcalico/calico
  confd/pkg/resource/template/template_funcs.go filterOperationStatements) and BIRD's kernel
  protocol programs krt_metric as the route's metric. Calico's mesh import filter also sets
  krt_metric (BGPConfiguration ipv4/ipv6NormalRoutePriority, or 2147483647 - LOCAL_PREF): not here.
"""
from __future__ import annotations

import ipaddress
from typing import Container, Iterable, Mapping

from calico_bgp.resources.ippool import IPPool
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.nexthop import split
from calico_bgp.routing.prefix import Network, Prefix
from calico_bgp.routing.rib import Rib
from calico_bgp.routing.topology import Session
from dataplane.routes.route import InvalidRoute, NextHop, Route, RouteKey, key_of, keys_of_numbered
from ipam.block import Block


def _pool_of(prefix: Network, pools: Iterable[IPPool]) -> IPPool | None:
    for pool in pools:
        net = pool.spec.network
        if net.version == prefix.version and prefix.subnet_of(net):  # type: ignore[arg-type]
            return pool
    return None


def local_blocks(node: str, blocks: Mapping[str, Block]) -> list[Prefix]:
    return sorted(Prefix.of(b.network) for b in blocks.values() if b.host == node)


def announcements(node: str, blocks: Mapping[str, Block], pools: Iterable[IPPool]) -> set[Prefix]:
    """The prefixes this node originates."""
    pools = list(pools)
    out: set[Prefix] = set()
    for block in blocks.values():
        pool = _pool_of(block.network, pools)
        if pool is None or pool.spec.disable_bgp_export:
            continue
        if block.host == node:
            out.add(Prefix.of(block.network))
            continue
        for use in block.in_use():
            if use.node == node:  # borrowed from another node's block: announce the host route
                out.add(Prefix.host(ipaddress.ip_address(use.ip)))
    return out


def peer_routes(sessions: Iterable[Session]) -> list[Route]:
    """Calico's reachableBy: a host route to each peer that is on no link of ours, via the gateway
    that reaches it (a ToR's loopback behind its link address), so the session can open at all."""
    out: dict[Network, Route] = {}
    for s in sessions:
        if s.reachable_by:
            route = Route.via(str(ipaddress.ip_interface(s.peer_address)), s.reachable_by)
            out.setdefault(route.prefix, route)
    return list(out.values())


# kernel key -> (prefix, why) of a selection no kernel route can express (RouteProgrammer's `unbuildable`)
Unbuildable = dict[RouteKey, tuple[str, str]]


def kernel_metric(a: PathAttributes) -> int:
    """The kernel metric of a learned path: the priority an import setPriority gave it, whatever
    LOCAL_PREF the peer sent (bgpfilter.import_policy marks it on the path), else 0."""
    return a.kernel_metric


# per family: (the shortest CIDR's length, its host bits, each CIDR's first bits at that length,
# each CIDR's (length, host bits, network >> host bits))
_Cover = dict[int, tuple[int, int, frozenset[int], tuple[tuple[int, int, int], ...]]]
_COVERS: dict[tuple[Prefix, ...], _Cover] = {}


def _cover(covering: tuple[Prefix, ...]) -> _Cover:
    """`covering` made integers once (the service CIDRs: a handful, set per sync)."""
    known = _COVERS.get(covering)
    if known is None:
        known = {}
        for version in {c.version for c in covering}:
            bits = 32 if version == 4 else 128
            nets = [c for c in covering if c.version == version]
            host = bits - min(c.prefixlen for c in nets)
            known[version] = (bits - host, host, frozenset(c.network >> host for c in nets),
                              tuple((c.prefixlen, bits - c.prefixlen, c.network >> (bits - c.prefixlen)) for c in nets))
        if len(_COVERS) > 16:
            _COVERS.clear()
        _COVERS[covering] = known
    return known


def _within(prefix: Prefix, nets: tuple[tuple[int, int, int], ...]) -> bool:
    return any(prefix[2] >= length and prefix[1] >> host == first for length, host, first in nets)


def outside(prefixes: Iterable[Prefix], covering: tuple[Prefix, ...]) -> list[Prefix]:
    """The prefixes inside none of `covering`, in order. No call per prefix: one set lookup of its
    first bits at the shortest CIDR's length; only a prefix sharing them is compared with each CIDR."""
    cover = _cover(covering).get
    return [p for p in prefixes
            if (c := cover(p[0])) is None or p[2] < c[0] or p[1] >> c[1] not in c[2] or not _within(p, c[3])]


def inside(prefixes: Iterable[Prefix], covering: tuple[Prefix, ...]) -> set[Prefix]:
    """The prefixes inside one of `covering` (`outside`'s others, at its cost)."""
    cover = _cover(covering).get
    return {p for p in prefixes
            if (c := cover(p[0])) is not None and p[2] >= c[0] and p[1] >> c[1] in c[2] and _within(p, c[3])}


def kernel_routes(node: str, blocks: Mapping[str, Block], rib: Rib, own: Iterable[Prefix] = (),
                  static: Iterable[Route] = (), keep_out: tuple[Prefix, ...] = (),
                  metrics: dict[Prefix, int] | None = None) -> tuple[list[Route], Unbuildable]:
    """Blackholes for local blocks, `static` routes (peer_routes), and every selected route that is
    none of those, not one we originate and inside no `keep_out` prefix; and the selections that make
    no route (a next hop that is no address, of the other family, ...), each with the reason: one
    never keeps out the others. `metrics`, when given, is made the learned routes' metrics other
    than 0 (what `kernel_changes` needs to replace a route whose metric changes)."""
    mine = set(own)
    routes = [Route.blackhole(prefix.to_ipaddress()) for prefix in local_blocks(node, blocks)]
    blackholed = {r.prefix for r in routes}
    routes += [r for r in static if r.prefix not in blackholed]
    taken = {Prefix.of(r.prefix) for r in routes}
    unbuildable: Unbuildable = {}
    if keep_out:  # only when service CIDRs are configured: no cost per prefix otherwise
        taken |= inside([p for p, _ in rib.selections()], keep_out)
    if metrics is not None:
        metrics.clear()
    for prefix, sel in rib.selections():
        if prefix in mine or prefix in taken:
            continue
        metric = sel.best.attrs.kernel_metric
        if metric and metrics is not None:
            metrics[prefix] = metric
        _add_learned(prefix, sel.next_hops, routes, unbuildable, metric)
    return routes, unbuildable


def not_learned(node: str, blocks: Mapping[str, Block], own: Iterable[Prefix], static: Iterable[Route]) -> set[Prefix]:
    """The prefixes a learned route never takes: what we originate, blackhole (our blocks) or route
    statically (peer_routes); `kernel_changes` skips them, as `kernel_routes` does."""
    return set(own) | set(local_blocks(node, blocks)) | {Prefix.of(r.prefix) for r in static}


def kernel_changes(prefixes: Iterable[Prefix], rib: Rib, skip: Container[Prefix],
                   keep_out: tuple[Prefix, ...] = (),
                   metrics: dict[Prefix, int] | None = None) -> tuple[list[Route], list[RouteKey], Unbuildable]:
    """For prefixes whose selection changed: the learned routes to program, the keys of those to
    remove, and the selections that make no route, as `kernel_routes` would have them. `skip`: what we
    originate or blackhole (never learned routes); `keep_out`: as kernel_routes' (never programmed, so
    nothing to remove either: a change of it is a full rebuild); `metrics`: the learned routes'
    metrics other than 0, as kernel_routes made them, kept up to date here once every prefix is done
    (a route whose metric changes is a new kernel key: the old one is removed, even when the new one
    is unbuildable; a call that raises changes nothing, so a retry removes the key the kernel has).
    The incremental form of kernel_routes: its cost follows the change, not the RIB."""
    upserts: list[Route] = []
    gone: list[Prefix] = []  # no selection left: their keys are made together at the end
    unbuildable: Unbuildable = {}
    selection, trusted, add, lost = rib.selection_lookup, Route.trusted, upserts.append, gone.append
    # the prefixes of a burst share a few attributes objects: their next hops are checked once per
    # object (and family), not once per route
    last_attrs: object = None
    last_version = 0
    last_hops: tuple[NextHop, ...] | None = ()  # None: no route can have them (last_error says why)
    last_error = ""
    last_metric = 0
    if metrics is None:
        metrics = {}
    replaced: list[RouteKey] = []  # keys of routes whose metric changed (and of lost ones that had one)
    remetered: dict[Prefix, int] = {}  # new metrics: into `metrics` once every prefix is done
    if keep_out:  # only when service CIDRs are configured: no cost per prefix otherwise
        prefixes = outside(prefixes, keep_out)
    for prefix in prefixes:
        if prefix in skip:
            continue
        sel = selection(prefix)
        if sel is None:
            if metrics and prefix in metrics:
                replaced.append(key_of(prefix, metrics[prefix]))
                remetered[prefix] = 0
            else:
                lost(prefix)
            continue
        mp = sel.multipath
        if len(mp) == 1:
            a = mp[0].attrs
            if a is not last_attrs or prefix.version != last_version:
                last_attrs, last_version, last_metric = a, prefix.version, a.kernel_metric
                try:
                    last_hops = _hops(prefix, (a.next_hop,))
                except InvalidRoute as exc:
                    last_hops, last_error = None, str(exc)
            if last_metric or metrics:  # priorities are rare: no lookup per prefix without them
                _remetric(prefix, last_metric, metrics, remetered, replaced)
            if last_hops is None:  # the route at its old metric is removed all the same
                unbuildable[key_of(prefix, last_metric)] = (str(prefix), last_error)
                continue
            add(trusted(prefix, last_hops, last_metric))
            continue
        metric = sel.best.attrs.kernel_metric
        if metric or metrics:
            _remetric(prefix, metric, metrics, remetered, replaced)
        _add_learned(prefix, sel.next_hops, upserts, unbuildable, metric)
    for prefix, metric in remetered.items():
        if metric:
            metrics[prefix] = metric
        else:
            del metrics[prefix]
    return upserts, keys_of_numbered(gone) + replaced, unbuildable


def _remetric(prefix: Prefix, metric: int, metrics: dict[Prefix, int], remetered: dict[Prefix, int],
              replaced: list[RouteKey]) -> None:
    """Notes `prefix`'s new metric in `remetered` when it changes; the key it had goes to `replaced`."""
    old = metrics.get(prefix, 0)
    if old != metric:
        replaced.append(key_of(prefix, old))
        remetered[prefix] = metric


def _add_learned(prefix: Prefix, next_hops: Iterable[str], routes: list[Route], unbuildable: Unbuildable,
                 metric: int = 0) -> None:
    """The learned route to `routes`, or, when no kernel route can express it, the reason to `unbuildable`."""
    try:
        routes.append(learned_route(prefix, next_hops, metric))
    except InvalidRoute as exc:
        unbuildable[key_of(prefix, metric)] = (str(prefix), str(exc))


_HOPS: dict[tuple[str, ...], tuple[int, tuple[NextHop, ...]]] = {}


def learned_route(prefix: Prefix, next_hops: Iterable[str], metric: int = 0) -> Route:
    """The kernel route for a selection's next hops: addresses, or link-local ones scoped to the
    session's interface ("fe80::1%eth0": via fe80::1 dev eth0, nexthop.resolve)."""
    return Route.trusted(prefix, _hops(prefix, tuple(next_hops)), metric)


def _hops(prefix: Prefix, gateways: tuple[str, ...]) -> tuple[NextHop, ...]:
    """The checked next hops of a route to `prefix` via `gateways` (InvalidRoute when no route can
    have them): a handful of next-hop sets serve every learned route, each parsed and checked once
    per family. The device is in the text: the cache is keyed with it."""
    known = _HOPS.get(gateways)
    if known is None or known[0] != prefix.version:
        checked = Route(prefix.to_ipaddress(), nexthops=tuple(NextHop(*split(h)) for h in gateways))
        if len(_HOPS) > 4096:
            _HOPS.clear()
        known = _HOPS[gateways] = (prefix.version, checked.nexthops)
    return known[1]


def pool_usage(node: str, blocks: Mapping[str, Block], pools: Iterable[IPPool]) -> tuple[dict[str, tuple[float, int]], int]:
    """Per pool: (allocated / pool size, blocks claimed); and how many addresses `node` borrowed."""
    pools = list(pools)
    usage = {p.metadata.name: [0, 0] for p in pools}
    borrowed = 0
    for block in blocks.values():
        pool = _pool_of(block.network, pools)
        if pool is not None:
            usage[pool.metadata.name][0] += block.used_count
            usage[pool.metadata.name][1] += 1
        if block.host != node:
            borrowed += sum(1 for use in block.in_use() if use.node == node)
    return ({p.metadata.name: (usage[p.metadata.name][0] / p.spec.network.num_addresses, usage[p.metadata.name][1])
             for p in pools}, borrowed)
