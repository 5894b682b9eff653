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

A rule matches when all its conditions hold, each as confd renders it into BIRD
(projectcalico/calico confd/pkg/resource/template/template_funcs.go, filterStatement, and the
golden configs under confd/tests/compiled_templates/bgpfilter/):
- cidr/matchOperator/prefixLength: `net ~ [ cidr{min,max} ]` (resources/bgpfilter.py `matches`);
- source RemotePeers: `source ~ [ RTS_BGP ]`: a route learned from a BGP peer. Every imported route
  is, and so is every route a reflector reflects (routing/reflection_export.py runs the export
  rules over those); no route we originate is, so it matches none of ours on export;
- interface: `ifname ~ "glob"`, the route's outgoing interface, "" when it has none. A learned
  route's is the session's interface when its next hop is on that link (a directly connected peer,
  or a link-local next hop); a multihop peer's routes have "" (BIRD would resolve the next hop
  through the kernel; we do not). What we originate has none: a block is a blackhole route (BIRD's
  ifname of a blackhole is "" too), and a borrowed address's workload interface is not known to
  the agent. So `interface: "*"` matches every route and `eth*` none of ours;
- peerType eBGP/iBGP: the session's (confd's `is_same_as`: peer AS equal to the local AS);
- communities: `(aa, nn) ~ bgp_community` (or the large one): the route carries it. What we
  originate carries none when the rules run (confd applies prefixAdvertisements' communities
  after the BGPFilter functions, in calico_export_to_bgp_peers);
- asPathPrefix: `bgp_path ~ [= a b * =]`: the AS path starts with these numbers (ours: empty);
- priority: the route's priority in FelixConfiguration's route-priority units, carried in BGP as
  LOCAL_PREF = 2147483647 - priority (confd: `bgp_local_pref = 2147483647 - krt_metric`). A learned
  route without LOCAL_PREF (every eBGP one) has BIRD's default 100, priority 2147483547; one we
  originate has Felix's normal route priority, 1024.
The operations run, in order, when an Accept rule matches: addCommunity (standard or large, once),
prependASPath (the path then starts with the numbers as listed), setPriority (LOCAL_PREF
2147483647 - value). On import they change the path the RIB holds (a LOCAL_PREF set here counts in
best-path selection for eBGP paths too, as in BIRD); on export they shape what is sent, LOCAL_PREF to
iBGP peers only. A setPriority on import is also the route's kernel metric (confd renders it as
`krt_metric = value`: routing/desired.py kernel_metric).
"""
from __future__ import annotations

import ipaddress
from fnmatch import fnmatchcase
from typing import Callable, Collection, Iterable, Mapping, Sequence

import attrs

from calico_bgp.resources.bgpconfig import BGPConfigurationSpec
from calico_bgp.resources.bgpfilter import BGPFilter, BGPFilterRule, BGPFilterSpec
from calico_bgp.resources.ippool import IPPool
from calico_bgp.resources.model import Metadata
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.decision import DEFAULT_LOCAL_PREF
from calico_bgp.routing.nexthop import SCOPE, SessionLink, on_link
from calico_bgp.routing.path import Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import ImportPolicy

# A route we originate goes with next hop self and origin IGP. Its AS path is sent as given; ExaBGP
# sends an explicit path verbatim (it adds our AS only to an empty one), so a prepend towards an
# eBGP peer carries our own AS in front.
SELF = "self"

LOCAL_PREF_TOP = 2147483647    # priority p travels as LOCAL_PREF 2147483647 - p (confd's BIRD filters)
OWN_ROUTE_PRIORITY = 1024      # Felix's normal route priority: confd's `krt_metric = 1024` for ours


def _rules(f: BGPFilter, direction: str, version: int) -> Sequence[BGPFilterRule]:
    spec = f.spec
    return {("import", 4): spec.import_v4, ("import", 6): spec.import_v6,
            ("export", 4): spec.export_v4, ("export", 6): spec.export_v6}[(direction, version)]


def priority(pattrs: PathAttributes | None) -> int:
    """A route's priority: a learned one's from its LOCAL_PREF (BIRD's default 100 when it has none),
    ours (None) Felix's normal route priority."""
    if pattrs is None:
        return OWN_ROUTE_PRIORITY
    return LOCAL_PREF_TOP - (pattrs.local_pref if pattrs.local_pref is not None else DEFAULT_LOCAL_PREF)


def interface_of(pattrs: PathAttributes | None, link: SessionLink | None) -> str:
    """The outgoing interface of a route, "" when it has none or it is not known: a learned route's
    is its session's when the next hop is on that link (scoped link-local or on-link global)."""
    nh = pattrs.next_hop if pattrs is not None else None
    if not nh:
        return ""
    if SCOPE in nh:
        return nh.split(SCOPE, 1)[1]
    return link.name if link is not None and on_link(nh, link) else ""


def _community(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(":"))


def conditions_hold(rule: BGPFilterRule, ibgp: bool, pattrs: PathAttributes | None,
                    link: SessionLink | None = None) -> bool:
    """Whether the rule's conditions other than its CIDR hold for a route on a session: `ibgp` the
    session's type, `pattrs` the route's attributes (None: a route we originate), `link` the
    session's interface (a learned route's interface comes from it)."""
    if rule.peer_type and (rule.peer_type == "iBGP") != ibgp:
        return False
    if rule.source and pattrs is None:  # RemotePeers: learned from a BGP peer
        return False
    if rule.interface and not fnmatchcase(interface_of(pattrs, link), rule.interface):
        return False
    if rule.communities is not None:
        wanted = _community(rule.communities.values[0])
        if pattrs is None or wanted not in (pattrs.communities if len(wanted) == 2 else pattrs.large_communities):
            return False
    if rule.as_path_prefix:
        path = pattrs.as_path if pattrs is not None else ()
        if path[:len(rule.as_path_prefix)] != rule.as_path_prefix:
            return False
    return rule.priority is None or priority(pattrs) == rule.priority


# A rule as `matching` runs it: (rule, CIDR test, whether it has conditions besides its CIDR). The CIDR
# test is None (no CIDR) or (negate, min length, max length, host bits, network >> host bits): integer
# compares over Prefix, the same verdicts as BGPFilterRule.matches over `ipaddress` networks.
Compiled = tuple[BGPFilterRule, "tuple[bool, int, int, int, int] | None", bool]
_CONDITIONS = ("source", "interface", "peer_type", "communities", "as_path_prefix", "priority")


def compile_rules(filters: Iterable[BGPFilter], direction: str, version: int) -> list[Compiled]:
    """The rules of `filters` for one direction and address family, in order, ready for `matching`."""
    out: list[Compiled] = []
    for f in filters:
        for rule in _rules(f, direction, version):
            test = None
            if rule.cidr:
                net = ipaddress.ip_network(rule.cidr, strict=False)
                lo, hi = rule.prefix_range
                host = net.max_prefixlen - net.prefixlen
                if rule.match_operator in ("Equal", "NotEqual"):
                    lo = hi = net.prefixlen
                test = (rule.match_operator in ("NotEqual", "NotIn"), lo, hi, host, int(net.network_address) >> host)
            others = any(getattr(rule, c) not in ("", (), None) for c in _CONDITIONS)
            out.append((rule, test, others))
    return out


def matching(rules: Sequence[Compiled], prefix: Prefix, ibgp: bool = False, pattrs: PathAttributes | None = None,
             link: SessionLink | None = None) -> BGPFilterRule | None:
    """The first of `rules` (compile_rules, of the prefix's family) whose conditions all hold for the
    route; see conditions_hold for `ibgp`, `pattrs` and `link`."""
    _, value, plen = prefix
    for rule, test, others in rules:
        if test is not None:
            negate, lo, hi, host, bits = test
            hit = lo <= plen <= hi and value >> host == bits
            if hit == negate:
                continue
        if not others or conditions_hold(rule, ibgp, pattrs, link):
            return rule
    return None


def first_match(filters: Iterable[BGPFilter], direction: str, prefix: Prefix, ibgp: bool = False,
                pattrs: PathAttributes | None = None, link: SessionLink | None = None) -> BGPFilterRule | None:
    """The first rule of `filters` (in order) whose conditions all hold for the route."""
    return matching(compile_rules(filters, direction, prefix.version), prefix, ibgp, pattrs, link)


def rejected_by(f: BGPFilter, where: str, rule: BGPFilterRule) -> str:
    """What `routes --rejected` says of a route a rule rejected: "rejected by filter 'edge' importV4[1]
    (In 198.19.9.0/24)"."""
    return f"rejected by filter {f.name!r} {where}" + (f" ({rule.match_operator} {rule.cidr})" if rule.cidr else "")


def operated(rule: BGPFilterRule, pattrs: PathAttributes) -> PathAttributes:
    """`pattrs` after the rule's operations, in order (BIRD's bgp_community.add, bgp_path.prepend,
    `bgp_local_pref = 2147483647 - value`)."""
    communities, large = list(pattrs.communities), list(pattrs.large_communities)
    as_path, local_pref = pattrs.as_path, pattrs.local_pref
    for op in rule.operations:
        if op.add_community is not None:
            value = _community(op.add_community.value)
            into = communities if len(value) == 2 else large
            if value not in into:
                into.append(value)  # type: ignore[arg-type]
        elif op.prepend_as_path is not None:
            as_path = tuple(op.prepend_as_path.prefix) + as_path
        elif op.set_priority is not None:
            local_pref = LOCAL_PREF_TOP - op.set_priority.value
    return attrs.evolve(pattrs, communities=tuple(communities), large_communities=tuple(large),
                        as_path=as_path, local_pref=local_pref)


def import_policy(pools: Iterable[IPPool],
                  filters_of: Callable[[str], Sequence[BGPFilter]]) -> ImportPolicy:
    """The RIB's import policy: filters first (per peer address), then the pool default."""
    # (version, prefix length, network >> host bits): `prefix` is inside when its first bits match
    nets = [(n.version, n.prefixlen, n.network >> (n.max_prefixlen - n.prefixlen))
            for n in (Prefix.of(p.spec.network) for p in pools)]
    # per peer: its import rules by family, compiled once (the policy is rebuilt when filters change)
    rules: dict[str, dict[int, list[Compiled]]] = {}
    reasons: dict[int, str] = {}  # id of a Reject rule (its filter keeps it alive) -> the reason, made once
    last: list = [None, None, None]  # the last (rule, attributes in, attributes out): an UPDATE's share one

    def policy(peer: Peer, prefix: Prefix, pattrs: PathAttributes) -> str | PathAttributes | None:
        """None: accepted as they are; a reason: rejected; attributes: accepted with these."""
        mine = rules.get(peer.address)
        if mine is None:
            attached = filters_of(peer.address)
            mine = rules[peer.address] = {v: compile_rules(attached, "import", v) for v in (4, 6)}
            for f in attached:
                for v in (4, 6):
                    for i, r in enumerate(_rules(f, "import", v)):
                        reasons.setdefault(id(r), rejected_by(f, f"importV{v}[{i}]", r))
        sent = pattrs.received  # operations ran on an earlier verdict: judge what the peer sent
        if sent is not None:
            pattrs = sent
        table = mine[prefix[0]]
        if table:
            rule = matching(table, prefix, peer.ibgp, pattrs, peer.link)
            if rule is not None:
                if rule.action != "Accept":
                    return reasons[id(rule)]
                if not rule.operations:
                    return pattrs if sent is not None else None
                if last[0] is not rule or last[1] is not pattrs:
                    # an external peer's LOCAL_PREF is ignored (RFC 4271 5.1.5): only one setPriority
                    # sets ranks it, not one that merely rode along with another operation
                    base = pattrs if peer.ibgp else attrs.evolve(pattrs, local_pref=None)
                    # setPriority is Calico's `krt_metric = <value>;`: the metric, whatever LOCAL_PREF came
                    metric = next((op.set_priority.value for op in reversed(rule.operations)
                                   if op.set_priority is not None), 0)
                    last[:] = rule, pattrs, attrs.evolve(operated(rule, base), received=pattrs, kernel_metric=metric)
                return last[2]  # type: ignore[no-any-return]
        version, value, plen = prefix
        bits = 32 if version == 4 else 128
        for nv, nlen, nbits in nets:
            if nv == version and plen >= nlen and value >> (bits - nlen) == nbits:
                return pattrs if sent is not None else None
        return "outside every IP pool"

    return policy


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
    table = {v: compile_rules(filters, "export", v) for v in (4, 6)}
    for prefix in own:
        rule = matching(table[prefix[0]], prefix, ibgp)
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
            continue
        a = PathAttributes(SELF, communities=standard, large_communities=large,  # type: ignore[arg-type]
                           local_pref=rule.local_pref, as_path=tuple(rule.as_path_prepend))
        if rule.operations:
            a = operated(rule, a)
        out[prefix] = attrs.evolve(
            a, local_pref=a.local_pref if ibgp else None,  # LOCAL_PREF never crosses an AS boundary
            as_path=((local_as,) if not ibgp else ()) + a.as_path if a.as_path else ())
    return out


def filters_for(names: Sequence[str], available: Mapping[str, BGPFilter],
                unreadable: Collection[str] = ()) -> list[BGPFilter]:
    """The filters a peer lists, in its order; a missing one is skipped (apply refuses to store that).
    One stored that no longer reads (written by another version, edited behind apply's back) stands
    as a filter that rejects everything both ways: its Reject rules must not silently stop holding."""
    return [available[n] if n in available else unreadable_filter(n)
            for n in names if n in available or n in unreadable]


def unreadable_filter(name: str) -> BGPFilter:
    """What a BGPFilter that does not read stands for: every route rejected, in and out."""
    rejects = (BGPFilterRule(action="Reject"),)
    return BGPFilter(Metadata(name), BGPFilterSpec(export_v4=rejects, import_v4=rejects, export_v6=rejects,
                                                   import_v6=rejects))


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
