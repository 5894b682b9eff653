"""BGPFilter: import and export rules a BGPPeer names in its `filters` (Calico's shape, plus export
actions: communities, local preference, AS-path prepending). What they decide: routing/bgpfilter.py.

Field bounds as Calico's API sets them (projectcalico/calico api/pkg/apis/projectcalico/v3/bgpfilter.go):
priority and setPriority 1..2147483646, one community to match, 1..10 operations, 1..10 AS numbers to
prepend."""
from __future__ import annotations

import ipaddress
import re
from typing import Any, ClassVar

import attrs

from calico_bgp.resources import codec
from calico_bgp.resources.fields import (
    AS_MAX,
    ASNumber,
    Integer,
    as_number,
    bad,
    checked,
    cidr,
    community_parser,
    int_range,
    missing,
    one_of,
    optional,
    tuple_of,
)
from calico_bgp.resources.model import Metadata


@attrs.frozen
class PrefixLength:
    min: Integer | None = attrs.field(default=None, converter=checked(optional(int_range(0, 128))))
    max: Integer | None = attrs.field(default=None, converter=checked(optional(int_range(0, 128))))

    def __attrs_post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise bad("min", self.min, f"must not exceed max ({self.max})")


_INTERFACE = re.compile(r"^[a-zA-Z0-9_.*+-]{1,15}$")  # an interface name or glob (IFNAMSIZ is 16)


def _interface(value: Any) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not _INTERFACE.match(value):
        raise ValueError("expected an interface name or glob like 'eth*' (1..15 of [a-zA-Z0-9_.*+-])")
    return value


PRIORITY_MAX = 2147483646  # Calico: a priority is 1..2147483646, FelixConfiguration's route-priority units


def _bounded(lo: int, hi: int, what: str) -> Any:
    def check(values: tuple[Any, ...]) -> tuple[Any, ...]:
        if not lo <= len(values) <= hi:
            raise ValueError(f"expected {lo}..{hi} {what}, got {len(values)}" if lo != hi
                             else f"expected exactly {lo} {what}, got {len(values)}")
        return values
    return check


@attrs.frozen
class CommunityMatch:
    """The route carries this community (Calico takes exactly one value: aa:nn or aa:nn:mm)."""
    values: tuple[str, ...] = attrs.field(converter=checked(
        lambda v: _bounded(1, 1, "community")(tuple_of(community_parser(True))(v))))


@attrs.frozen
class AddCommunity:
    value: str = attrs.field(converter=checked(community_parser(True)))


@attrs.frozen
class PrependASPath:
    prefix: tuple[ASNumber, ...] = attrs.field(converter=checked(
        lambda v: _bounded(1, 10, "AS numbers")(tuple_of(as_number)(v))))


@attrs.frozen
class SetPriority:
    value: Integer = attrs.field(converter=checked(int_range(1, PRIORITY_MAX)))


@attrs.frozen
class Operation:
    """One of Calico's rule operations: exactly one of addCommunity, prependASPath, setPriority."""
    add_community: AddCommunity | None = None
    prepend_as_path: PrependASPath | None = None
    set_priority: SetPriority | None = None

    def __attrs_post_init__(self) -> None:
        given = [f for f in ("add_community", "prepend_as_path", "set_priority") if getattr(self, f) is not None]
        if len(given) != 1:
            raise bad("", {codec.json_name(f): "..." for f in given},
                      "an operation is exactly one of addCommunity, prependASPath, setPriority")

    @property
    def name(self) -> str:
        """Its JSON name: addCommunity, prependASPath or setPriority."""
        return codec.json_name(next(f for f in ("add_community", "prepend_as_path", "set_priority")
                                    if getattr(self, f) is not None))


@attrs.frozen
class BGPFilterRule:
    action: str = attrs.field(converter=checked(one_of("Accept", "Reject")))
    cidr: str = attrs.field(default="", converter=checked(lambda v: "" if v in (None, "") else cidr(v)))
    match_operator: str = attrs.field(default="", converter=checked(
        lambda v: "" if v in (None, "") else one_of("Equal", "NotEqual", "In", "NotIn")(v)))
    prefix_length: PrefixLength | None = None
    # Export actions (Accept only). Calico's rule `communities` is a *match*; ours are named add* to stay distinct.
    add_communities: tuple[str, ...] = attrs.field(default=(), converter=checked(tuple_of(community_parser(False))))
    add_large_communities: tuple[str, ...] = attrs.field(
        default=(), converter=checked(tuple_of(community_parser(True, standard_ok=False))))
    local_pref: Integer | None = attrs.field(default=None, converter=checked(optional(int_range(0, AS_MAX))))
    as_path_prepend: tuple[ASNumber, ...] = attrs.field(default=(), converter=checked(tuple_of(as_number)))
    # Calico's other conditions and its operations (api bgpfilter.go); routing/bgpfilter.py evaluates them
    source: str = attrs.field(default="", converter=checked(
        lambda v: "" if v in (None, "") else one_of("RemotePeers")(v)))
    interface: str = attrs.field(default="", converter=checked(_interface))
    peer_type: str = attrs.field(default="", converter=checked(
        lambda v: "" if v in (None, "") else one_of("eBGP", "iBGP")(v)))
    communities: CommunityMatch | None = None
    as_path_prefix: tuple[ASNumber, ...] = attrs.field(default=(), converter=checked(tuple_of(as_number)))
    priority: Integer | None = attrs.field(default=None, converter=checked(optional(int_range(1, PRIORITY_MAX))))
    operations: tuple[Operation, ...] = attrs.field(default=(), converter=checked(
        lambda v: _bounded(0, 10, "operations")(tuple(v))))

    calico_only: ClassVar[frozenset[str]] = frozenset()

    def __attrs_post_init__(self) -> None:
        if bool(self.cidr) != bool(self.match_operator):
            field = "matchOperator" if self.cidr else "cidr"
            raise missing(field, "cidr and matchOperator go together")
        if self.prefix_length is not None and not self.cidr:
            raise missing("cidr", "prefixLength needs a cidr and matchOperator")
        if self.action == "Reject":
            for f in ("add_communities", "add_large_communities", "local_pref", "as_path_prepend", "operations"):
                if getattr(self, f) not in ((), None):
                    shown = [o.name for o in self.operations] if f == "operations" else getattr(self, f)
                    raise bad(codec.json_name(f), shown, "actions are only allowed with action Accept")
        if self.local_pref is not None and any(o.set_priority for o in self.operations):
            raise bad("localPref", self.local_pref, "both localPref and a setPriority operation set LOCAL_PREF: give one")

    @property
    def has_actions(self) -> bool:
        return bool(self.add_communities or self.add_large_communities or self.as_path_prepend) \
            or self.local_pref is not None

    @property
    def prefix_range(self) -> tuple[int, int]:
        """(min, max) prefix length this rule's CIDR match allows: the CIDR's length .. 32/128, narrowed
        by prefixLength and clamped to that, as Calico's BIRD filters do (a min below the CIDR's own
        length is the CIDR's length; max below it matches nothing)."""
        net = ipaddress.ip_network(self.cidr)
        pl = self.prefix_length or PrefixLength()
        return (max(net.prefixlen, pl.min if pl.min is not None else 0),
                min(net.max_prefixlen, pl.max if pl.max is not None else net.max_prefixlen))

    def matches(self, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        """Does the rule's CIDR condition match `prefix`? (No CIDR: matches everything.) The other
        conditions look at the route and the session: routing/bgpfilter.py `conditions_hold`."""
        if not self.cidr:
            return True
        net = ipaddress.ip_network(self.cidr)
        if net.version != prefix.version:
            return False
        lo, hi = self.prefix_range
        in_len = lo <= prefix.prefixlen <= hi
        if self.match_operator in ("Equal", "NotEqual"):
            hit = prefix == net
        else:
            hit = prefix.subnet_of(net) and in_len  # type: ignore[arg-type]
        return hit if self.match_operator in ("Equal", "In") else not hit


@attrs.frozen
class BGPFilterSpec:
    export_v4: tuple[BGPFilterRule, ...] = ()
    import_v4: tuple[BGPFilterRule, ...] = ()
    export_v6: tuple[BGPFilterRule, ...] = ()
    import_v6: tuple[BGPFilterRule, ...] = ()

    def __attrs_post_init__(self) -> None:
        for attr, version in (("export_v4", 4), ("import_v4", 4), ("export_v6", 6), ("import_v6", 6)):
            field = codec.json_name(attr)
            for i, rule in enumerate(getattr(self, attr)):
                where = f"{field}[{i}]"
                if rule.cidr and ipaddress.ip_network(rule.cidr).version != version:
                    raise bad(f"{where}.cidr", rule.cidr, f"{field} rules take IPv{version} CIDRs")
                if rule.cidr:
                    top = 32 if version == 4 else 128
                    pl = rule.prefix_length or PrefixLength()
                    for bound in ("min", "max"):
                        v = getattr(pl, bound)
                        if v is not None and not 0 <= v <= top:
                            raise bad(f"{where}.prefixLength.{bound}", v, f"must be within 0..{top} for an IPv{version} rule")
                if attr.startswith("import") and rule.has_actions:
                    raise bad(where, "actions", "community/localPref/asPathPrepend actions apply to export rules only")


@attrs.frozen
class BGPFilter:
    kind: ClassVar[str] = "BGPFilter"
    metadata: Metadata
    spec: BGPFilterSpec = attrs.field(factory=BGPFilterSpec)

    @property
    def name(self) -> str:
        return self.metadata.name
