"""Import and export policy: BGPFilter rules over safe defaults. Pure.

Calico imports everything and exports what BIRD's templates allow. Here the defaults are safe:
- import: a prefix inside a configured IP pool, or one an attached filter Accepts explicitly
  (so a default route is only taken when a rule accepts 0.0.0.0/0 or ::/0). A filter's Reject
  wins over the pool default.
- export: only what this node originates (its blocks and borrowed host routes), never a pool with
  disableBGPExport (that is decided before here); an attached filter may Reject one of them or
  Accept it with actions (communities, large communities, local-pref on iBGP, AS-path prepend).
Filters attached to a peer are evaluated in the order the peer lists them; inside a filter the
rules are ordered; the first rule that matches decides.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import attrs

from calico_bgp.resources.bgpconfig import BGPConfigurationSpec
from calico_bgp.resources.bgpfilter import BGPFilter, BGPFilterRule
from calico_bgp.resources.ippool import IPPool
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.path import Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import ImportPolicy

# A route we originate goes with next hop self and origin IGP. Its AS path is sent as given; ExaBGP
# sends an explicit path verbatim (it adds our AS only to an empty one), so a prepend towards an
# eBGP peer carries our own AS in front.
SELF = "self"


def _rules(f: BGPFilter, direction: str, version: int) -> Sequence[BGPFilterRule]:
    spec = f.spec
    return {("import", 4): spec.import_v4, ("import", 6): spec.import_v6,
            ("export", 4): spec.export_v4, ("export", 6): spec.export_v6}[(direction, version)]


def first_match(filters: Iterable[BGPFilter], direction: str, prefix: Prefix) -> BGPFilterRule | None:
    net = None  # the rules match `ipaddress` networks: converted once, when a rule is asked
    for f in filters:
        for rule in _rules(f, direction, prefix.version):
            if net is None:
                net = prefix.to_ipaddress()
            if rule.matches(net):
                return rule
    return None


def import_policy(pools: Iterable[IPPool],
                  filters_of: Callable[[str], Sequence[BGPFilter]]) -> ImportPolicy:
    """The RIB's import policy: filters first (per peer address), then the pool default."""
    # (version, prefix length, network >> host bits): `prefix` is inside when its first bits match
    nets = [(n.version, n.prefixlen, n.network >> (n.max_prefixlen - n.prefixlen))
            for n in (Prefix.of(p.spec.network) for p in pools)]
    filters: dict[str, Sequence[BGPFilter]] = {}  # per peer: the policy is rebuilt when they change

    def policy(peer: Peer, prefix: Prefix, _attrs: PathAttributes) -> str | None:
        mine = filters.get(peer.address)
        if mine is None:
            mine = filters[peer.address] = filters_of(peer.address)
        if mine:
            rule = first_match(mine, "import", prefix)
            if rule is not None:
                return None if rule.action == "Accept" else f"rejected by filter ({rule.match_operator} {rule.cidr})".replace(" ()", "")
        version, value, plen = prefix
        bits = 32 if version == 4 else 128
        for nv, nlen, nbits in nets:
            if nv == version and plen >= nlen and value >> (bits - nlen) == nbits:
                return None
        return "outside every IP pool"

    return policy


def _community(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(":"))


def advertised_communities(config: BGPConfigurationSpec, prefixes: Iterable[Prefix]) -> dict[Prefix, tuple[str, ...]]:
    """Calico's prefixAdvertisements: the communities (values, names resolved) each prefix inside an
    advertisement's CIDR carries, in the order the advertisements list them."""
    ads = [(Prefix.of(a.cidr), tuple(config.community_value(c) for c in a.communities))
           for a in config.prefix_advertisements]
    out: dict[Prefix, tuple[str, ...]] = {}
    if not ads:
        return out
    for prefix in prefixes:
        values = [v for net, vs in ads if net.contains(prefix) for v in vs]
        if values:
            out[prefix] = tuple(dict.fromkeys(values))
    return out


def export_routes(own: Iterable[Prefix], filters: Sequence[BGPFilter], ibgp: bool,
                  local_as: int = 0, tagged: Mapping[Prefix, tuple[str, ...]] | None = None) -> dict[Prefix, PathAttributes]:
    """What to announce to one peer: each originated prefix its filters do not reject, with actions.
    `tagged`: communities a prefix carries to every peer (advertised_communities), before the
    filter's own. A prepend works as BIRD's `bgp_path.prepend`: eBGP peers see our AS, then the
    prepended ones."""
    out: dict[Prefix, PathAttributes] = {}
    tagged = tagged or {}
    for prefix in own:
        rule = first_match(filters, "export", prefix)
        if rule is not None and rule.action != "Accept":
            continue
        values = tagged.get(prefix, ())
        if rule is not None:
            values += tuple(rule.add_communities) + tuple(rule.add_large_communities)
        values = tuple(dict.fromkeys(values))
        standard = tuple(_community(c) for c in values if c.count(":") == 1)
        large = tuple(_community(c) for c in values if c.count(":") == 2)
        if rule is None:
            out[prefix] = PathAttributes(SELF, communities=standard, large_communities=large)  # type: ignore[arg-type]
        else:
            out[prefix] = PathAttributes(
                SELF, communities=standard, large_communities=large,  # type: ignore[arg-type]
                local_pref=rule.local_pref if ibgp else None,  # LOCAL_PREF never crosses an AS boundary
                as_path=(((local_as,) if not ibgp else ()) + tuple(rule.as_path_prepend))
                if rule.as_path_prepend else ())
    return out


def filters_for(names: Sequence[str], available: Mapping[str, BGPFilter]) -> list[BGPFilter]:
    """The filters a peer lists, in its order; a missing one is skipped (apply refuses to store that)."""
    return [available[n] for n in names if n in available]


@attrs.frozen(slots=True)
class ExportBatch:
    """One speaker command's worth: these prefixes to these neighbours with these attributes
    (None: withdraw them)."""

    attrs: PathAttributes | None
    neighbors: tuple[str, ...]
    prefixes: tuple[Prefix, ...]


def plan_exports(have: Mapping[str, Mapping[Prefix, PathAttributes]],
                 want: Mapping[str, Mapping[Prefix, PathAttributes]]) -> list[ExportBatch]:
    """The difference between what each neighbour was sent and what it should have, grouped so that
    prefixes going to the same neighbours with the same attributes share one command (ExaBGP sends
    fastest that way). Neighbours absent from `want` are gone: nothing is withdrawn from them."""
    todo: dict[PathAttributes | None, dict[Prefix, set[str]]] = {}
    for addr, wanted in want.items():
        sent = have.get(addr, {})
        for prefix in sent.keys() - wanted.keys():
            todo.setdefault(None, {}).setdefault(prefix, set()).add(addr)
        for prefix, a in wanted.items():
            if sent.get(prefix) != a:
                todo.setdefault(a, {}).setdefault(prefix, set()).add(addr)
    batches = []
    for a, per_prefix in todo.items():
        groups: dict[frozenset[str], list[Prefix]] = {}
        for prefix in sorted(per_prefix):
            groups.setdefault(frozenset(per_prefix[prefix]), []).append(prefix)
        batches += [ExportBatch(a, tuple(sorted(n)), tuple(ps)) for n, ps in groups.items()]
    return batches
