"""The desired routes indexed by kernel key, kept so a reconcile and the event watcher never rebuild them.

For each key: the route, how it forwards (a Forwarding shared between routes that forward alike:
100k learned routes through one next-hop set hold one), and for the common shape (IPv4 unicast) the
byte signature a route dump carries, so a dump of 100k unchanged routes is matched without
decoding each. Changed in place by `put` / `drop`; `devices` (every device a route ever named)
tells the programmer whether links must be read at all.

The signatures are made when asked for (a reconcile's dump), not as routes are put and dropped: a
burst of 100k changes made and dropped 100k byte strings in a dict nobody read until the next
reconcile, a fifth of the index's time.
"""
from __future__ import annotations

from collections import deque
from itertools import compress, repeat
from operator import is_not
from typing import Iterable

from dataplane import rtnl_codec as codec
from dataplane.routes.route import Forwarding, Route, RouteKey, RouteKind, index_routes


class DesiredIndex:
    """The desired set by kernel key: the routes, how each forwards (shared between routes that forward
    alike), and the dump signature of each common-shape route. Changed in place by `put`/`drop`."""

    __slots__ = ("table", "protocol", "routes", "forwarding", "devices", "_signatures", "special", "_shared", "_last")

    def __init__(self, table: int, protocol: int) -> None:
        self.table = table
        self.protocol = protocol
        self.routes: dict[RouteKey, Route] = {}
        self.forwarding: dict[RouteKey, Forwarding] = {}
        self.devices: set[str] = set()  # grows only: it decides whether links are re-read
        # codec.dump_signature -> key, for the common shape; None: not made since the routes changed
        self._signatures: dict[bytes, RouteKey] | None = {}
        self.special = 0  # routes that are not unicast (blackholes, unreachables)
        self._shared: dict[tuple[object, ...], Forwarding] = {}
        self._last: tuple[object, object, Forwarding | None] = ((), None, None)
        # the signature parts of the last (forwarding, prefix length, metric): what 100k learned routes share

    def route(self, key: RouteKey) -> Route | None:
        return self.routes.get(key)

    @property
    def signatures(self) -> dict[bytes, RouteKey]:
        """codec.dump_signature -> key of every desired route of the common shape (made now if the
        routes changed since they were last asked for)."""
        sigs = self._signatures
        if sigs is None:
            sigs = self._signatures = {}
            # the parts are shared by the routes of one forwarding, length and metric: made once per run
            sig_fwd: Forwarding | None = None
            sig_len = sig_metric = -1
            parts: tuple[bytes, bytes] | None = None
            table, protocol = self.table, self.protocol
            for key, fwd in self.forwarding.items():
                dst = key.dst
                if len(dst) != 4:
                    continue
                if fwd is not sig_fwd or key.dst_len != sig_len or key.metric != sig_metric:
                    sig_fwd, sig_len, sig_metric = fwd, key.dst_len, key.metric
                    parts = codec.signature_parts(table, protocol, sig_len, sig_metric, fwd.rtype, fwd.hops)
                if parts is not None:
                    sigs[parts[0] + dst + parts[1]] = key
        return sigs

    def known_signatures(self) -> dict[bytes, RouteKey]:
        """`signatures` if they are made, else none: for a reader that only saves work with them (an
        event not matched is decoded and compared), and must not make 100k of them per event while
        a burst changes the routes."""
        return self._signatures if self._signatures is not None else {}

    def put(self, route: Route) -> bool:
        """Desire `route` (replacing the one on its key); False when it was desired exactly so already."""
        return bool(self.put_all((route,)))

    def _forwarding(self, route: Route) -> Forwarding:
        """The Forwarding shared by the routes that forward as `route` does."""
        ident = (route.kind, route.nexthops)
        fwd = self._shared.get(ident)
        if fwd is None:
            if len(self._shared) > 4096:  # next-hop sets come and go: do not keep every one ever seen
                self._shared.clear()
            fwd = self._shared[ident] = route.forwarding()
            self.devices.update(h.device for h in route.nexthops if h.device is not None)
        self._last = (route.nexthops, route.kind, fwd)
        return fwd

    def put_all(self, routes: Iterable[Route]) -> list[RouteKey]:
        """`put` of each route (a burst's worth at once); the keys whose desired route changed. One
        loop with the lookups bound once: it runs for each of 100k learned routes."""
        changed: list[RouteKey] = []
        by_key, forwarding = self.routes, self.forwarding
        get, unicast, forwarding_of = by_key.get, RouteKind.UNICAST, self._forwarding
        last_hops, last_kind, last_fwd = self._last
        for route in routes:
            key = route.key
            old = get(key)
            if old is not None:
                if old == route:
                    continue
                self.drop(key)
            hops, kind = route.nexthops, route.kind
            if hops is last_hops and kind is last_kind:  # learned routes share one hops tuple
                fwd = last_fwd
            else:
                fwd = forwarding_of(route)
                last_hops, last_kind, last_fwd = hops, kind, fwd
            by_key[key] = route
            forwarding[key] = fwd  # type: ignore[assignment]
            if kind is not unicast:
                self.special += 1
            changed.append(key)
        if changed:
            self._signatures = None
        return changed

    def drop(self, key: RouteKey) -> bool:
        return bool(self.drop_all((key,)))

    def drop_all(self, keys: Iterable[RouteKey]) -> list[RouteKey]:
        """`drop` of each key (a whole table's worth at once); the keys that were desired. C loops
        (map, compress): it runs for each of 100k withdrawn routes."""
        keys = keys if isinstance(keys, (list, tuple)) else list(keys)
        gone = list(map(self.routes.pop, keys, repeat(None)))
        dropped = list(compress(keys, map(is_not, gone, repeat(None))))
        if dropped:
            deque(map(self.forwarding.pop, dropped), 0)  # the forwarding of each dropped key goes too
            if self.special:
                unicast = RouteKind.UNICAST
                self.special -= sum(1 for route in gone if route is not None and route.kind is not unicast)
            self._signatures = None
        return dropped

    @classmethod
    def of(cls, routes: Iterable[Route], table: int, protocol: int) -> "DesiredIndex":
        """The index of `routes` (raises DuplicateRoute when two share a key)."""
        unique, _ = index_routes(routes)
        desired = cls(table, protocol)
        desired.put_all(unique)
        return desired
