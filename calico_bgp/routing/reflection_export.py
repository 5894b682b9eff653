"""A route reflector's export filters over what it reflects: each iBGP neighbour's BGPFilter export
rules, then the pool default, as Calico's BIRD configuration has them for every route it sends a
peer, reflected or its own. Pure.

Calico (confd/pkg/backends/calico/bgp_processor.go buildExportFilter; bird_ipam.cfg.template
calico_export_to_bgp_peers) gives each BGP protocol the export filter
    'bgp_<filter>_exportFilterV4'(); ...  calico_export_to_bgp_peers(<same AS>); reject;
and BIRD runs it over every route in the table that goes to the peer, reflected ones included:
- the peer's BGPFilters, in the order it lists them: the first rule that matches decides; Accept
  sends the route with the rule's operations (addCommunity, prependASPath, setPriority), Reject
  does not send it;
- else calico_export_to_bgp_peers: a route inside an IPPool with disableBGPExport is not sent
  (reject_disabled_pools); one inside a service CIDR (its /staticroutes) or inside any other IPPool
  is; anything else is not (the final `reject`).
Left out: prefixAdvertisements' communities on reflected routes (apply_communities; the node that
originated the route added its own), calico_aggr (no reflector here holds blocks it would
aggregate) and reject_tunnel_routes (no tunnels here).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import attrs

from calico_bgp.resources.ippool import IPPool
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.bgpfilter import Compiled, matching, operated
from calico_bgp.routing.nexthop import SessionLink
from calico_bgp.routing.prefix import Prefix

NOBODY: frozenset[str] = frozenset()


@attrs.frozen(slots=True)
class Variant:
    """Reflected attributes as some neighbours get them (their filters changed them, or not)."""

    attributes: PathAttributes
    targets: frozenset[str]


@attrs.frozen(eq=False)
class ReflectionExport:
    """What a reflector may send each neighbour. `rules`: per neighbour with any export rule, its
    compiled rules by address family (bgpfilter.compile_rules, in the order its filters list them)."""

    sent: tuple[Prefix, ...] = ()         # enabled pools and service CIDRs: sent when no rule decides
    withheld: tuple[Prefix, ...] = ()     # pools with disableBGPExport: never sent unless a rule accepts
    rules: Mapping[str, Mapping[int, Sequence[Compiled]]] = attrs.field(factory=dict)
    # the neighbours with rules, per family; and (version, length, network >> host bits) of each CIDR:
    # a containment test is integer compares
    _ruled: dict[int, frozenset[str]] = attrs.field(init=False, default=attrs.Factory(
        lambda self: {v: frozenset(n for n, by in self.rules.items() if by.get(v)) for v in (4, 6)}, takes_self=True))
    _withheld: tuple[tuple[int, int, int], ...] = attrs.field(init=False, default=attrs.Factory(
        lambda self: tuple(_bits(p) for p in self.withheld), takes_self=True))
    _sent: tuple[tuple[int, int, int], ...] = attrs.field(init=False, default=attrs.Factory(
        lambda self: tuple(_bits(p) for p in self.sent), takes_self=True))

    @classmethod
    def of(cls, pools: Iterable[IPPool], service_cidrs: Iterable[Prefix],
           rules: Mapping[str, Mapping[int, Sequence[Compiled]]]) -> ReflectionExport:
        pools = list(pools)
        withheld = tuple(Prefix.of(p.spec.network) for p in pools if p.spec.disable_bgp_export)
        sent = tuple(Prefix.of(p.spec.network) for p in pools if not p.spec.disable_bgp_export)
        return cls(sent + tuple(service_cidrs), withheld, {n: by for n, by in rules.items() if by.get(4) or by.get(6)})

    def by_default(self, prefix: Prefix) -> bool:
        """calico_export_to_bgp_peers' verdict: not in a pool with BGP export disabled, and inside a
        pool or service CIDR."""
        version, value, plen = prefix
        bits = 32 if version == 4 else 128
        for nv, nlen, nbits in self._withheld:
            if nv == version and plen >= nlen and value >> (bits - nlen) == nbits:
                return False
        for nv, nlen, nbits in self._sent:
            if nv == version and plen >= nlen and value >> (bits - nlen) == nbits:
                return True
        return False

    def unfiltered(self, version: int, targets: frozenset[str]) -> bool:
        """Whether no neighbour among `targets` has export rules for the family: the default decides."""
        ruled = self._ruled[version]
        return not ruled or ruled.isdisjoint(targets)

    def variants(self, prefix: Prefix, attributes: PathAttributes, targets: frozenset[str],
                 link: SessionLink | None = None) -> tuple[Variant, ...]:
        """Who among `targets` gets the reflected route, with which attributes: the first variant
        carries `attributes` unchanged (when anyone gets them), the others each a rule's operations,
        ordered by their neighbours. `link`: the session the route came in on (a rule's `interface`)."""
        ruled = self._ruled[prefix.version]
        default = self.by_default(prefix)
        if ruled.isdisjoint(targets):
            return (Variant(attributes, targets),) if default else ()
        plain = set(targets - ruled) if default else set()
        changed: dict[PathAttributes, set[str]] = {}
        for n in targets & ruled:
            rule = matching(self.rules[n][prefix.version], prefix, True, attributes, link)
            if rule is None:
                if default:
                    plain.add(n)
            elif rule.action == "Accept":
                if rule.operations:
                    changed.setdefault(operated(rule, attributes), set()).add(n)
                else:
                    plain.add(n)
        out = [Variant(attributes, frozenset(plain))] if plain else []
        others = [Variant(a, frozenset(ns)) for a, ns in changed.items() if a != attributes]
        if attributes in changed:  # operations that changed nothing
            out = [Variant(attributes, frozenset(plain | changed[attributes]))]
        return tuple(out + sorted(others, key=lambda v: sorted(v.targets)))


def _bits(p: Prefix) -> tuple[int, int, int]:
    return (p.version, p.prefixlen, p.network >> ((32 if p.version == 4 else 128) - p.prefixlen))
