"""The desired routes indexed by kernel key, kept so a reconcile and the event watcher never rebuild them.

For each key: the route, how it forwards (a Forwarding shared between routes that forward alike:
100k learned routes through one next-hop set hold one), and for the common shape (IPv4 unicast) the
byte signature a route dump carries, so a dump of 100k unchanged routes is matched without
decoding each. Changed in place by `put` / `drop`; `devices` (every device a route ever named)
tells the programmer whether links must be read at all.
"""
from __future__ import annotations

from typing import Iterable

from dataplane import rtnl_codec as codec
from dataplane.routes.route import Forwarding, Route, RouteKey, RouteKind, index_routes


class DesiredIndex:
    """The desired set by kernel key: the routes, how each forwards (shared between routes that forward
    alike), and the dump signature of each common-shape route. Changed in place by `put`/`drop`."""

    __slots__ = ("table", "protocol", "routes", "forwarding", "devices", "signatures", "special", "_shared", "_last",
                 "_sig_last")

    def __init__(self, table: int, protocol: int) -> None:
        self.table = table
        self.protocol = protocol
        self.routes: dict[RouteKey, Route] = {}
        self.forwarding: dict[RouteKey, Forwarding] = {}
        self.devices: set[str] = set()  # grows only: it decides whether links are re-read
        self.signatures: dict[bytes, RouteKey] = {}  # codec.dump_signature -> key, for the common shape
        self.special = 0  # routes that are not unicast (blackholes, unreachables)
        self._shared: dict[tuple[object, ...], Forwarding] = {}
        self._last: tuple[object, object, Forwarding | None] = ((), None, None)
        # the signature parts of the last (forwarding, prefix length, metric): what 100k learned routes share
        self._sig_last: tuple[object, int, int, tuple[bytes, bytes] | None] = (None, -1, -1, None)

    def route(self, key: RouteKey) -> Route | None:
        return self.routes.get(key)

    def _signature(self, key: RouteKey, fwd: Forwarding) -> bytes | None:
        """codec.dump_signature of `key` forwarding as `fwd`, from the parts routes alike share."""
        if len(key.dst) != 4:
            return None
        last = self._sig_last
        if last[0] is not fwd or last[1] != key.dst_len or last[2] != key.metric:
            parts = codec.signature_parts(self.table, self.protocol, key.dst_len, key.metric, fwd.rtype, fwd.hops)
            last = self._sig_last = (fwd, key.dst_len, key.metric, parts)
        parts = last[3]
        return None if parts is None else parts[0] + key.dst + parts[1]

    def put(self, route: Route) -> bool:
        """Desire `route` (replacing the one on its key); False when it was desired exactly so already."""
        key = route.key
        old = self.routes.get(key)
        if old is not None:
            if old == route:
                return False
            self.drop(key)
        last = self._last
        if route.nexthops is last[0] and route.kind is last[1]:  # learned routes share one hops tuple
            fwd = last[2]
        else:
            ident = (route.kind, route.nexthops)
            fwd = self._shared.get(ident)
            if fwd is None:
                if len(self._shared) > 4096:  # next-hop sets come and go: do not keep every one ever seen
                    self._shared.clear()
                fwd = self._shared[ident] = route.forwarding()
                self.devices.update(h.device for h in route.nexthops if h.device is not None)
            self._last = (route.nexthops, route.kind, fwd)
        self.routes[key] = route
        self.forwarding[key] = fwd
        if route.kind is not RouteKind.UNICAST:
            self.special += 1
        sig = self._signature(key, fwd)  # type: ignore[arg-type]
        if sig is not None:
            self.signatures[sig] = key
        return True

    def drop(self, key: RouteKey) -> bool:
        return bool(self.drop_all((key,)))

    def drop_all(self, keys: Iterable[RouteKey]) -> list[RouteKey]:
        """`drop` of each key (a whole table's worth at once); the keys that were desired."""
        routes_pop, forwarding_pop, signatures_pop = self.routes.pop, self.forwarding.pop, self.signatures.pop
        signature, unicast = self._signature, RouteKind.UNICAST
        dropped: list[RouteKey] = []
        for key in keys:
            route = routes_pop(key, None)
            if route is None:
                continue
            fwd = forwarding_pop(key)
            if route.kind is not unicast:
                self.special -= 1
            sig = signature(key, fwd)
            if sig is not None:
                signatures_pop(sig, None)
            dropped.append(key)
        return dropped

    @classmethod
    def of(cls, routes: Iterable[Route], table: int, protocol: int) -> "DesiredIndex":
        """The index of `routes` (raises DuplicateRoute when two share a key)."""
        unique, _ = index_routes(routes)
        desired = cls(table, protocol)
        for route in unique:
            desired.put(route)
        return desired
