"""The route as a value, and the pure decision of what to send to the kernel.

A `Route` is what the caller wants; a `KernelRoute` is what a dump or an event says the kernel has.
Both reduce to the same `RouteKey` (prefix length, packed prefix, effective metric) so a diff is a
walk over two dicts. Nothing here does I/O.
"""
from __future__ import annotations

import enum
import ipaddress
from typing import Iterable, Mapping, NamedTuple, Union

import attrs

# the kernel's side of a route, shared with the codec (which must load without attrs)
from dataplane.routes.kernel import (  # noqa: F401 - re-exported: callers import them from here
    RTN_BLACKHOLE, RTN_UNICAST, RTN_UNREACHABLE, DesiredHop, KernelHop, KernelRoute, RouteKey,
)

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
# A learned route's prefix may also be any value with `version`, `prefixlen` and `packed` (the network
# address's bytes), such as calico_bgp.routing.prefix.Prefix: `Route.trusted` and `key_of` take one.


# the kernel stores an IPv6 route added with metric 0 as 1024 (IP6_RT_PRIO_USER)
IPV6_DEFAULT_METRIC = 1024
MAX_NEXTHOPS = 64


class InvalidRoute(ValueError):
    """A route value that cannot exist; names the field and the bad value."""

    def __init__(self, field: str, value: object, why: str) -> None:
        super().__init__(f"{field}={value!r}: {why}")
        self.field = field
        self.value = value
        self.why = why


class DuplicateRoute(ValueError):
    """Two desired routes share one kernel key (prefix + metric)."""


class RouteKind(enum.Enum):
    UNICAST = "unicast"
    BLACKHOLE = "blackhole"
    UNREACHABLE = "unreachable"

    @property
    def rtn(self) -> int:
        return _RTN[self]


_RTN = {RouteKind.UNICAST: RTN_UNICAST, RouteKind.BLACKHOLE: RTN_BLACKHOLE, RouteKind.UNREACHABLE: RTN_UNREACHABLE}
KIND_OF_RTN = {v: k for k, v in _RTN.items()}


def _network(value: object) -> IPNetwork:
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    try:
        return ipaddress.ip_network(value, strict=True)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise InvalidRoute("prefix", value, str(exc)) from None


def _address(value: object) -> IPAddress | None:
    if value is None or isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value  # type: ignore[return-value]
    try:
        return ipaddress.ip_address(value)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise InvalidRoute("gateway", value, str(exc)) from None


def _check_device(_inst: object, _attr: object, value: str | None) -> None:
    if value is not None and not (0 < len(value) < 16 and "/" not in value and not value.isspace()):
        raise InvalidRoute("device", value, "an interface name is 1-15 characters")


def _check_weight(_inst: object, _attr: object, value: int) -> None:
    if not 1 <= value <= 256:
        raise InvalidRoute("weight", value, "must be 1..256")


@attrs.frozen(slots=True)
class NextHop:
    """One way out: a gateway, a device, or both; `weight` matters only in a multipath route."""

    gateway: IPAddress | None = attrs.field(default=None, converter=_address)
    device: str | None = attrs.field(default=None, validator=_check_device)
    weight: int = attrs.field(default=1, validator=_check_weight)

    def __attrs_post_init__(self) -> None:
        if self.gateway is None and self.device is None:
            raise InvalidRoute("nexthop", self, "needs a gateway or a device")

    def sort_key(self) -> tuple[bytes, str, int]:
        return (self.gateway.packed if self.gateway is not None else b"", self.device or "", self.weight)


def _nexthops(value: Iterable[NextHop | str]) -> tuple[NextHop, ...]:
    if type(value) is tuple and len(value) == 1 and type(value[0]) is NextHop:
        return value  # shared as given: 100k routes via one hop hold one tuple
    hops = [NextHop(gateway=v) if isinstance(v, str) else v for v in value]
    hops.sort(key=NextHop.sort_key)
    return tuple(hops)


def _check_metric(_inst: object, _attr: object, value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise InvalidRoute("metric", value, "must be 0..4294967295")


@attrs.frozen(slots=True)
class Route:
    """One desired kernel route. Several next hops make an ECMP (multipath) route."""

    prefix: IPNetwork = attrs.field(converter=_network)
    nexthops: tuple[NextHop, ...] = attrs.field(default=(), converter=_nexthops)
    kind: RouteKind = RouteKind.UNICAST
    metric: int = attrs.field(default=0, validator=_check_metric)
    # computed once: the index of 100k desired routes shares these objects
    _key: "RouteKey" = attrs.field(init=False, eq=False, repr=False, hash=False)

    def __attrs_post_init__(self) -> None:
        if self.kind is RouteKind.UNICAST:
            if not self.nexthops:
                raise InvalidRoute("nexthops", (), "a unicast route needs at least one next hop")
            if len(self.nexthops) > MAX_NEXTHOPS:
                raise InvalidRoute("nexthops", len(self.nexthops), f"at most {MAX_NEXTHOPS}")
            seen = set()
            for hop in self.nexthops:
                if hop.gateway is not None and hop.gateway.version != self.prefix.version:
                    raise InvalidRoute("gateway", str(hop.gateway), f"not IPv{self.prefix.version} like {self.prefix}")
                ident = (hop.gateway, hop.device)
                if ident in seen:
                    raise InvalidRoute("nexthops", str(hop.gateway or hop.device), "listed twice")
                seen.add(ident)
        elif self.nexthops:
            raise InvalidRoute("nexthops", self.nexthops, f"a {self.kind.value} route has no next hop")
        net = self.prefix
        metric = self.metric
        if net.version == 6 and metric == 0:
            metric = IPV6_DEFAULT_METRIC
        object.__setattr__(self, "_key", RouteKey(net.prefixlen, net.network_address.packed, metric))

    @classmethod
    def trusted(cls, prefix: IPNetwork, nexthops: tuple[NextHop, ...], metric: int = 0) -> "Route":
        """A unicast route from values a Route already accepted: `nexthops` exactly as a Route of the
        same family holds them (sorted, checked), e.g. shared by 100k learned routes. Skips the
        converters and checks that each of those would repeat; equal to the checked construction."""
        if cls is not Route:  # a subclass may have slots of its own
            route = object.__new__(cls)
            setattr_ = object.__setattr__
            setattr_(route, "prefix", prefix)
            setattr_(route, "nexthops", nexthops)
            setattr_(route, "kind", RouteKind.UNICAST)
            setattr_(route, "metric", metric)
            if prefix.version == 6 and metric == 0:
                metric = IPV6_DEFAULT_METRIC
            setattr_(route, "_key", RouteKey(prefix.prefixlen, _dst(prefix), metric))
            return route
        # the slots' own setters and tuple.__new__: a third of the time of setattr by name and the
        # named tuple's constructor, for each of 100k learned routes
        route = _new_object(Route)
        _set_prefix(route, prefix)
        _set_nexthops(route, nexthops)
        _set_kind(route, _UNICAST)
        _set_metric(route, metric)
        if metric == 0 and prefix.version == 6:
            metric = IPV6_DEFAULT_METRIC
        _set_key(route, _new_tuple(RouteKey, (prefix.prefixlen, _dst(prefix), metric)))
        return route

    @classmethod
    def via(cls, prefix: str | IPNetwork, *gateways: str | IPAddress, device: str | None = None, metric: int = 0) -> "Route":
        hops = [NextHop(gateway=g, device=device) for g in gateways] or [NextHop(device=device)]
        return cls(prefix=prefix, nexthops=hops, metric=metric)

    @classmethod
    def blackhole(cls, prefix: str | IPNetwork, metric: int = 0) -> "Route":
        return cls(prefix=prefix, kind=RouteKind.BLACKHOLE, metric=metric)

    @classmethod
    def unreachable(cls, prefix: str | IPNetwork, metric: int = 0) -> "Route":
        return cls(prefix=prefix, kind=RouteKind.UNREACHABLE, metric=metric)

    @property
    def key(self) -> RouteKey:
        return self._key

    def forwarding(self) -> "Forwarding":
        # a weight means nothing on a lone next hop (the kernel keeps none, and reads back as 1):
        # compared as given, it would look changed at every reconcile
        single = len(self.nexthops) == 1
        hops = tuple((h.gateway.packed if h.gateway is not None else None, h.device, 1 if single else h.weight)
                     for h in self.nexthops)
        return Forwarding(self.kind.rtn, hops)

    def __str__(self) -> str:
        if self.kind is not RouteKind.UNICAST:
            return f"{self.kind.value} {self.prefix}"
        hops = " ".join(
            f"via {h.gateway}" + (f" dev {h.device}" if h.device else "") + (f" weight {h.weight}" if len(self.nexthops) > 1 else "")
            if h.gateway else f"dev {h.device}"
            for h in self.nexthops
        )
        return f"{self.prefix} {hops}" + (f" metric {self.metric}" if self.metric else "")


_new_object, _new_tuple, _UNICAST = object.__new__, tuple.__new__, RouteKind.UNICAST
_set_prefix, _set_nexthops, _set_kind = Route.prefix.__set__, Route.nexthops.__set__, Route.kind.__set__  # type: ignore[attr-defined]
_set_metric, _set_key = Route.metric.__set__, Route._key.__set__  # type: ignore[attr-defined]


class Forwarding(NamedTuple):
    """How a desired route forwards, in the kernel's terms; devices still by name."""

    rtype: int
    hops: tuple[DesiredHop, ...]


def forwarding_matches(want: Forwarding, have: KernelRoute, ifindex: Mapping[str, int]) -> bool:
    """True when the kernel route forwards as wanted; a hop without a device matches any device."""
    rtype = want.rtype
    if rtype != have.rtype:
        return False
    if rtype != RTN_UNICAST:
        return True
    whops, khops = want.hops, have.hops
    if len(whops) != len(khops):
        return False
    for (wg, wd, ww), (kg, ko, kw) in zip(whops, khops):
        if wg != kg or ww != kw:
            return False
        if wd is not None and ifindex.get(wd, -1) != ko:
            return False
    return True


@attrs.frozen(slots=True)
class Plan:
    """What one reconcile sends: adds (create, exclusive), replaces (NLM_F_REPLACE), deletes."""

    adds: tuple[RouteKey, ...]
    replaces: tuple[RouteKey, ...]
    deletes: tuple[RouteKey, ...]
    unchanged: int
    kept: int = 0  # stale routes not deleted because `keep` protects them

    @property
    def empty(self) -> bool:
        return not (self.adds or self.replaces or self.deletes)


class Planner:
    """Builds a Plan while the kernel's routes stream past, so none of them needs to be kept.

    Pure: fed KernelRoutes (ours only), it decides; it never talks to the kernel. Desired routes come
    as `desired` (key -> Forwarding); what the kernel has is marked in a set of those same keys, so a
    100k-route pass leaves no new objects behind for the garbage collector: a route to delete is
    kept by its key alone (100k decoded KernelRoutes held to the end of the dump would be ~400k
    tracked objects, and the full collections they set off cost more than the kernel's deletes).
    A route seen twice (a re-read dump) is decided once.
    """

    def __init__(
        self,
        desired: Mapping[RouteKey, Forwarding],
        ifindex: Mapping[str, int],
        keep: frozenset[RouteKey] | set[RouteKey] = frozenset(),
    ) -> None:
        self._desired = desired
        self._ifindex = ifindex
        self._keep = keep
        self._seen: set[RouteKey] = set()
        self._replaces: dict[RouteKey, None] = {}
        self._deletes: dict[RouteKey, None] = {}
        self.kept: set[RouteKey] = set()
        self.down: dict[RouteKey, int] = {}

    def visit(self, have: KernelRoute) -> None:
        key = have.key
        want = self._desired.get(key)
        if want is None:
            if key not in self._keep:
                self._deletes[key] = None
            else:
                self.kept.add(key)
            return
        self._seen.add(key)
        if have.down:
            self.down[key] = have.down
        whops, khops = want.hops, have.hops
        # the common shape inline: one hop, no device asked for
        if want.rtype == have.rtype and len(whops) == 1 and len(khops) == 1 and whops[0][1] is None:
            match = whops[0][0] == khops[0][0] and whops[0][2] == khops[0][2]
        else:
            match = forwarding_matches(want, have, self._ifindex)
        if match:
            self._replaces.pop(key, None)
        else:
            self._replaces[key] = None

    def visit_matching(self, key: RouteKey) -> None:
        """The kernel has desired route `key` exactly as wanted (a byte-level match, see dump_signature)."""
        if key not in self._desired:
            return
        self._seen.add(key)
        if self._replaces:
            self._replaces.pop(key, None)

    def finish(self) -> Plan:
        seen = self._seen
        adds: tuple[RouteKey, ...] = ()
        if len(seen) != len(self._desired):
            adds = tuple(k for k in self._desired if k not in seen)
        replaces = tuple(self._replaces)
        return Plan(adds, replaces, tuple(self._deletes), len(seen) - len(replaces), len(self.kept))


def plan_changes(
    desired: Mapping[RouteKey, Forwarding],
    actual: Iterable[KernelRoute],
    ifindex: Mapping[str, int],
    keep: frozenset[RouteKey] | set[RouteKey] = frozenset(),
) -> Plan:
    """Desired vs actual (both only ours) -> the changes; routes in `keep` are never deleted (grace)."""
    planner = Planner(desired, ifindex, keep)
    for have in actual:
        planner.visit(have)
    return planner.finish()


def key_of(prefix: IPNetwork, metric: int = 0) -> RouteKey:
    """The kernel key of a route to `prefix` with `metric` (as Route.key computes it)."""
    if prefix.version == 6 and metric == 0:
        metric = IPV6_DEFAULT_METRIC
    return _new_tuple(RouteKey, (prefix.prefixlen, _dst(prefix), metric))


def keys_of_numbered(prefixes: Iterable[tuple[int, int, int]]) -> list[RouteKey]:
    """`key_of` (metric 0) of each prefix given as a (version, network as an integer, length) tuple,
    as calico_bgp.routing.prefix.Prefix is one: a withdrawn table's keys in one loop, with no
    call per prefix."""
    new, key_type, v6_metric = _new_tuple, RouteKey, IPV6_DEFAULT_METRIC
    return [new(key_type, (plen, net.to_bytes(4, "big"), 0) if version == 4 else (plen, net.to_bytes(16, "big"), v6_metric))
            for version, net, plen in prefixes]


def _dst(prefix: IPNetwork) -> bytes:
    try:
        return prefix.packed  # type: ignore[union-attr]  # a prefix value that has its bytes
    except AttributeError:
        return prefix.network_address.packed


def index_routes(routes: Iterable[Route]) -> tuple[list[Route], dict[RouteKey, int]]:
    """Desired routes, each once, and their positions by kernel key; two routes for one key is the caller's bug."""
    unique: list[Route] = []
    index: dict[RouteKey, int] = {}
    for route in routes:
        key = route.key
        at = index.get(key)
        if at is None:
            index[key] = len(unique)
            unique.append(route)
        elif unique[at] != route:
            raise DuplicateRoute(f"{route} and {unique[at]} are the same kernel route (prefix and metric)")
    return unique, index
