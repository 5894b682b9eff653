"""RouteProgrammer: the one owner of our routes (one table, one protocol) in the kernel.

Reconcile = read our routes, plan (pure, dataplane.routes.route), send the plan in bulk. `run` keeps it so:
events that show our state drifting (a route of ours deleted or changed by hand, a link going down
or up) wake a reconcile; a periodic resync catches anything else. Routes of another protocol or
table are never read as ours, changed or deleted: dumps and deletes carry our table and protocol,
and adds are exclusive (a foreign route on the same key is reported as a conflict, left alone).
"""
from __future__ import annotations

import errno
import logging
import time
from typing import Callable, Iterable, Mapping

import attrs
import trio

from dataplane import netlink
from dataplane import rtnl_codec as codec
from dataplane.ratelimit import RateLimitedLog
from dataplane.routes import dump, events
from dataplane.routes.protocol import DEFAULT_PROTOCOL, MAIN_TABLE, PROTOCOL_NAME, register_protocol_name
from dataplane.routes.route import (
    Forwarding,
    KernelRoute,
    Planner,
    Route,
    RouteKey,
    RouteKind,
    forwarding_matches,
    index_routes,
)

log = logging.getLogger(__name__)

# errnos that mean "no way to that next hop right now", not "bad route"
UNREACHABLE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENODEV, errno.ENETDOWN})
# a route the kernel refused is sent again (the same route) after 1 s, 2 s, 4 s ... at most 5 min,
# by the full reconcile that comes due; a changed route or a link coming up tries at once
RETRY_FIRST = 1.0
RETRY_MAX = 300.0
UNBUILDABLE = "build"  # RouteFailure.op of a route its owner could not express (set_desired's `unbuildable`)


def retry_delay(attempts: int) -> float:
    """Seconds before a route refused `attempts` times in a row is sent again."""
    return min(RETRY_FIRST * 2 ** min(max(attempts, 1) - 1, 30), RETRY_MAX)


@attrs.frozen(slots=True)
class ChangeCounts:
    """Netlink changes sent since the programmer was made (errors: how many the kernel refused)."""

    adds: int = 0
    replaces: int = 0
    deletes: int = 0
    errors: int = 0

    @property
    def changes(self) -> int:
        return self.adds + self.replaces + self.deletes

    def __sub__(self, other: "ChangeCounts") -> "ChangeCounts":
        return ChangeCounts(self.adds - other.adds, self.replaces - other.replaces, self.deletes - other.deletes, self.errors - other.errors)


@attrs.frozen(slots=True)
class RouteFailure:
    """The kernel (or the link table) refused one route; `reason` is the kernel's own text. Or, with
    op "build", the owner could not make a route of what it wanted (`reason` says why)."""

    route: Route | None  # None for a delete of a stale route we no longer have a value for, or a build failure
    prefix: str
    op: str  # add | replace | delete | build
    errno: int
    reason: str
    attempts: int = 1  # times in a row this same route was refused
    retry_at: float = 0.0  # (trio clock) not sent again before this

    @property
    def unreachable(self) -> bool:
        return self.errno in UNREACHABLE_ERRNOS


@attrs.frozen(slots=True)
class ReconcileResult:
    adds: int
    replaces: int
    deletes: int
    unchanged: int
    kept: int  # stale routes kept because the grace period is on
    failures: tuple[RouteFailure, ...]
    seconds: float

    @property
    def changes(self) -> int:
        return self.adds + self.replaces + self.deletes


class _Desired:
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


def _index(routes: Iterable[Route], table: int, protocol: int) -> _Desired:
    unique, _ = index_routes(routes)  # raises DuplicateRoute
    desired = _Desired(table, protocol)
    for route in unique:
        desired.put(route)
    return desired


def _programmable(keys: Iterable[RouteKey], op: str, routes: Mapping[RouteKey, Route], ifindex: Mapping[str, int], failures: list[RouteFailure]) -> list[RouteKey]:
    """The keys whose devices exist; the others become failures (never sent: the kernel needs an ifindex)."""
    out = []
    for key in keys:
        route = routes[key]
        missing = [h.device for h in route.nexthops if h.device is not None and h.device not in ifindex]
        if missing:
            failures.append(RouteFailure(route, str(route.prefix), op, errno.ENODEV, netlink.describe_errno(errno.ENODEV, f"no device {missing[0]}")))
        else:
            out.append(key)
    return out


REPAIR_REASONS = frozenset({"route_deleted", "route_changed", "foreign_route"})


class RouteProgrammer:
    """Keeps the kernel's routes of (table, protocol) equal to the desired set.

    Use as `async with RouteProgrammer(...) as rp:`; entering adopts the routes of our protocol that
    already exist and keeps them (grace) until `end_grace()`, so a restart removes nothing still wanted.
    """

    def __init__(
        self,
        *,
        table: int = MAIN_TABLE,
        protocol: int = DEFAULT_PROTOCOL,
        netns: str | None = None,
        window: int = netlink.DEFAULT_WINDOW,
        resync_interval: float = 30.0,
        debounce: float = 0.02,
        grace: bool = True,
        register_name: bool = True,
    ) -> None:
        if not 0 < table < 2**32 or table == 255:
            raise ValueError(f"table={table!r}: must be 1..2^32-1 and not the local table (255)")
        if not 0 < protocol < 256 or protocol in (1, 2, 3, 4):
            raise ValueError(f"protocol={protocol!r}: must be 5..255 and not a kernel/boot/static protocol")
        self.table = table
        self.protocol = protocol
        self.netns = netns
        self._window = window
        self._resync_interval = resync_interval
        self._debounce = debounce
        self._grace_on_start = grace
        self._register_name = register_name
        self._desired = _Desired(table, protocol)
        self._keep: frozenset[RouteKey] = frozenset()
        # keys of ours in the kernel as far as we know (last reconcile + changes since): an incremental
        # change replaces only these; any other key is added exclusively, never over a foreign route
        self._installed: set[RouteKey] = set()
        self._pending: dict[RouteKey, None] = {}  # keys changed by update_desired, not yet sent
        self._links: dict[int, dump.Link] = {}
        self._ifindex: dict[str, int] = {}
        self._counts = ChangeCounts()
        self._failures: dict[RouteKey, RouteFailure] = {}  # refused by the kernel: sent again after a back-off
        self._unbuildable: dict[RouteKey, RouteFailure] = {}  # what the owner wanted and could not express
        self.failure_changes = 0  # grows whenever `failures` may have changed: a cheap test for readers
        self._warn = RateLimitedLog(log)
        self._unreachable: dict[RouteKey, str] = {}
        self._lock = trio.Lock()
        self._dirty = trio.Event()
        self._request_sock = None
        self._dump_sock = None
        self._channel: netlink.RequestChannel | None = None
        self.adopted = 0
        self.reconciles = 0
        # someone else changed our state: counted per reason, and reported to the owner if it asks
        self.repairs: dict[str, int] = {}
        self.on_repair: Callable[[str, RouteKey], None] | None = None
        # after every full reconcile, whoever asked for it (the owner's, a resync, a retry, a repair)
        self.on_reconciled: Callable[[ReconcileResult], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._register_name:
            register_protocol_name(self.protocol, PROTOCOL_NAME if self.protocol == DEFAULT_PROTOCOL else f"calico-bgp-{self.protocol}")
        self._request_sock = netlink.open_rtnl_socket(self.netns)
        self._dump_sock = netlink.open_rtnl_socket(self.netns)
        self._channel = netlink.RequestChannel(self._request_sock, self._window)
        await self._refresh_links()
        existing: set[RouteKey] = set()
        await trio.to_thread.run_sync(dump.scan_routes_sync, self._dump_sock, self.table, self.protocol, lambda kr: existing.add(kr.key))
        self.adopted = len(existing)
        self._installed = existing
        if self._grace_on_start:
            self._keep = frozenset(existing)
        log.info(
            "event=programmer_open table=%d protocol=%d netns=%s adopted=%d grace=%s",
            self.table, self.protocol, self.netns or "-", self.adopted, bool(self._keep),
        )

    async def aclose(self) -> None:
        for sock in (self._request_sock, self._dump_sock):
            if sock is not None:
                sock.close()
        self._request_sock = self._dump_sock = None
        self._channel = None

    async def __aenter__(self) -> "RouteProgrammer":
        try:
            await self.open()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- desired state ---------------------------------------------------------------------

    def set_desired(self, routes: Iterable[Route], unbuildable: Mapping[RouteKey, tuple[str, str]] | None = None) -> None:
        """Replace the desired set (raises DuplicateRoute); a running programmer reconciles soon.
        `unbuildable`: key -> (prefix, why) of routes the owner wanted but could not make; none is
        desired (a route of ours on such a key goes), each is reported in `failures` (op "build")."""
        self._desired = _index(routes, self.table, self.protocol)
        self._pending = {}  # the next reconcile covers everything
        self._set_unbuildable(unbuildable or {}, replace=True)
        self._dirty.set()

    def update_desired(self, routes: Iterable[Route] = (), removed: Iterable[RouteKey] = (),
                       unbuildable: Mapping[RouteKey, tuple[str, str]] | None = None) -> int:
        """Change part of the desired set: desire `routes` (each replacing the route on its key) and
        drop the keys in `removed` and in `unbuildable` (as set_desired has it). `program()` sends
        just these changes; returns how many there are."""
        desired = self._desired
        pending = self._pending
        before = len(pending)
        if self._unbuildable:
            routes = list(routes)
            removed = list(removed)
            gone = [k for k in (*removed, *(r.key for r in routes)) if k in self._unbuildable]
            for key in gone:
                del self._unbuildable[key]
            if gone:
                self.failure_changes += 1
        for key in desired.drop_all(removed):
            pending[key] = None
        if unbuildable:
            for key in desired.drop_all(unbuildable):
                pending[key] = None
            self._set_unbuildable(unbuildable)
        for route in routes:
            if desired.put(route):
                pending[route.key] = None
        return len(pending) - before

    def _set_unbuildable(self, unbuildable: Mapping[RouteKey, tuple[str, str]], replace: bool = False) -> None:
        old = self._unbuildable
        new = {} if replace else dict(old)
        for key, (prefix, why) in unbuildable.items():
            known = old.get(key)
            if known is not None and known.reason == why:
                new[key] = known
                continue
            new[key] = RouteFailure(None, prefix, UNBUILDABLE, errno.EINVAL, why)
            self._warn.warning("route_unbuildable", "prefix=%s reason=%r", prefix, why)
        if new or old:
            self.failure_changes += 1
        self._unbuildable = new

    @property
    def pending(self) -> int:
        """Changes made by update_desired and not yet sent."""
        return len(self._pending)

    @property
    def desired(self) -> list[Route]:
        return list(self._desired.routes.values())

    def is_desired(self, key: RouteKey) -> bool:
        return key in self._desired.routes

    @property
    def desired_count(self) -> int:
        return len(self._desired.routes)

    @property
    def desired_unicast(self) -> int:
        return len(self._desired.routes) - self._desired.special

    def end_grace(self) -> None:
        """The desired set is complete: stale adopted routes may go now."""
        if self._keep:
            log.info("event=grace_ended adopted=%d", len(self._keep))
        self._keep = frozenset()
        self._dirty.set()

    @property
    def in_grace(self) -> bool:
        return bool(self._keep)

    @property
    def counts(self) -> ChangeCounts:
        return self._counts

    @property
    def failures(self) -> Mapping[RouteKey, RouteFailure]:
        """Desired routes not in the kernel as desired: those the kernel refused (the last reconcile
        and the changes since; each is sent again after a back-off) and those the owner could not
        build (op "build", until their key is desired or removed again)."""
        if not self._unbuildable:
            return dict(self._failures)
        return {**self._failures, **self._unbuildable}

    @property
    def failure_count(self) -> int:
        return len(self._failures) + len(self._unbuildable)

    def in_kernel(self, key: RouteKey) -> bool:
        """Whether the route desired on `key` is in the kernel as desired (see in_kernel_count)."""
        return (key in self._installed and key in self._desired.routes and key not in self._failures
                and key not in self._pending)

    def flush_logs(self) -> None:
        """Say how many per-route warnings were held back in windows that are over (a clock tick calls it)."""
        self._warn.flush()

    def in_kernel_count(self) -> int:
        """Desired routes the kernel holds as desired, as far as we know (what we sent and it took,
        and what the last reconcile found): not the refused, the unsent, or those waiting to be sent."""
        desired, installed = self._desired.routes, self._installed
        n = len(desired.keys() & installed)  # CPython walks the smaller of the two
        n -= sum(1 for k in self._failures if k in installed)  # a failed replace leaves our old route
        n -= sum(1 for k in self._pending if k in installed and k in desired)
        return n

    @property
    def unreachable(self) -> dict[str, str]:
        """Desired prefixes whose next hops cannot be used now (link down / gateway not on a link) -> why."""
        return {str(k.prefix()): why for k, why in self._unreachable.items()}

    # -- reconcile -------------------------------------------------------------------------

    async def _refresh_links(self) -> None:
        assert self._dump_sock is not None
        links = await dump.dump_links(self._dump_sock)
        self._set_links(links)

    def _set_links(self, links: dict[int, dump.Link]) -> None:
        self._links = links
        self._ifindex = {link.name: link.index for link in links.values()}

    async def reconcile(self, progress: Callable[[int, int], None] | None = None) -> ReconcileResult:
        """Make the kernel match the desired set once; unchanged state sends nothing."""
        if self._channel is None or self._dump_sock is None:
            raise RuntimeError("RouteProgrammer is not open")
        async with self._lock:
            return await self._reconcile(progress)

    async def _reconcile(self, progress: Callable[[int, int], None] | None) -> ReconcileResult:
        started = time.perf_counter()
        live = self._desired
        keep = self._keep
        if live.devices:
            await self._refresh_links()
        # a snapshot: the owner may change the desired set while the dump and the sends are awaited;
        # what changes meanwhile stays pending for program()
        pending_before = set(self._pending)
        routes, forwarding, signatures = dict(live.routes), dict(live.forwarding), dict(live.signatures)
        ifindex = self._ifindex
        planner = Planner(forwarding, ifindex, keep)
        table, protocol = self.table, self.protocol
        sock = self._dump_sock
        await trio.to_thread.run_sync(dump.scan_routes_sync, sock, table, protocol, planner.visit, signatures, planner.visit_matching)
        plan = planner.finish()

        failures: list[RouteFailure] = []
        now = trio.current_time()
        held = self._held_back(plan, routes, now)  # refused before, their back-off not over: not sent
        plan_adds = [k for k in plan.adds if k not in held] if held else plan.adds
        plan_replaces = [k for k in plan.replaces if k not in held] if held else plan.replaces
        adds = _programmable(plan_adds, "add", routes, ifindex, failures)
        replaces = _programmable(plan_replaces, "replace", routes, ifindex, failures)
        # (flags, key): adds and replaces first, so a metric change is make-before-break; 0 = delete
        ops = [(codec.NEW_FLAGS, k) for k in adds] + [(codec.REPLACE_FLAGS, k) for k in replaces] + [(0, kr.key) for kr in plan.deletes]
        refused = await self._send(ops, forwarding, ifindex, progress)

        n_add, n_rep, n_del = len(adds), len(replaces), len(plan.deletes)
        errors = 0
        for bad in refused:
            flags, key = ops[bad.index]
            if not flags and bad.errno == errno.ESRCH:
                continue  # already gone: the goal of a delete
            errors += 1
            op = "add" if flags == codec.NEW_FLAGS else "replace" if flags else "delete"
            route = routes.get(key) if flags else None
            failures.append(RouteFailure(route, str(route.prefix) if route else str(key.prefix()), op, bad.errno, bad.reason))
        c = self._counts
        self._counts = ChangeCounts(c.adds + n_add, c.replaces + n_rep, c.deletes + n_del, c.errors + errors)
        failures = self._stamp(failures, now)
        self._record(failures, planner.down, routes, held)
        installed = set(forwarding)
        # a failed add leaves the key without a route of ours; a failed replace leaves our old one
        # there, still ours to replace or delete (program() must not take it for free)
        installed.difference_update(f.route.key for f in failures if f.route is not None and f.op == "add")
        installed.difference_update(k for k in held if held[k].op == "add")
        installed.update(planner.kept)
        self._installed = installed
        for key in pending_before:  # sent as they were in the snapshot, unless changed since
            if routes.get(key) is live.routes.get(key):
                self._pending.pop(key, None)

        kept = plan.kept
        result = ReconcileResult(
            adds=n_add, replaces=n_rep, deletes=n_del, unchanged=plan.unchanged, kept=kept,
            failures=tuple(failures), seconds=time.perf_counter() - started,
        )
        self.reconciles += 1
        log.info(
            "event=reconcile table=%d protocol=%d desired=%d adds=%d replaces=%d deletes=%d unchanged=%d kept=%d failures=%d held=%d seconds=%.3f",
            table, protocol, len(routes), n_add, n_rep, n_del, plan.unchanged, kept, len(failures), len(held), result.seconds,
        )
        if self.on_reconciled is not None:
            self.on_reconciled(result)
        return result

    async def _send(self, ops: list[tuple[int, RouteKey]], forwarding: Mapping[RouteKey, Forwarding],
                    ifindex: Mapping[str, int], progress: Callable[[int, int], None] | None = None) -> list[netlink.RequestFailure]:
        if not ops:
            return []
        table, protocol = self.table, self.protocol
        ifindex_of = ifindex.__getitem__
        encode_new, encode_del = codec.encode_newroute, codec.encode_delroute

        def encode(i: int, seq: int) -> bytes:
            flags, key = ops[i]
            if not flags:
                return encode_del(seq, table, protocol, key)
            fwd = forwarding[key]
            return encode_new(seq, flags, table, protocol, key, fwd.rtype, fwd.hops, ifindex_of)

        total = len(ops)
        report = (lambda done: progress(done, total)) if progress is not None else None
        assert self._channel is not None
        return await self._channel.transact(total, encode, report)

    async def program(self) -> ReconcileResult | None:
        """Send what update_desired changed, and only that: no dump, so its cost follows the size of the
        change, not of the table. A conflict it cannot settle alone (a route already on a key it
        believed free) leaves the kernel to the next full reconcile, which it asks for. None: nothing
        was pending."""
        if self._channel is None:
            raise RuntimeError("RouteProgrammer is not open")
        async with self._lock:
            if not self._pending:
                return None
            started = time.perf_counter()
            pending, self._pending = self._pending, {}
            live = self._desired
            keep = self._keep
            installed = self._installed
            routes: dict[RouteKey, Route] = {}
            forwarding: dict[RouteKey, Forwarding] = {}
            ops: list[tuple[int, RouteKey]] = []
            desired_fwd, desired_routes, add = live.forwarding.get, live.routes, ops.append
            replace, new = codec.REPLACE_FLAGS, codec.NEW_FLAGS
            for key in pending:
                fwd = desired_fwd(key)
                if fwd is None:
                    if key in installed and key not in keep:
                        add((0, key))
                    continue
                routes[key] = desired_routes[key]
                forwarding[key] = fwd
                add((replace if key in installed else new, key))
            failures: list[RouteFailure] = []
            # learned routes name no device: only look when some desired route ever did
            if live.devices and any(h.device is not None for r in routes.values() for h in r.nexthops):
                if any(h.device is not None and h.device not in self._ifindex for r in routes.values() for h in r.nexthops):
                    await self._refresh_links()
                keys = set(_programmable([k for f, k in ops if f], "add", routes, self._ifindex, failures))
                ops = [(f, k) for f, k in ops if not f or k in keys]
            try:
                refused = await self._send(ops, forwarding, self._ifindex)
            except BaseException:
                # what the kernel took of these is unknown, and they are no longer pending: the
                # full reconcile (a dump and a diff against everything desired) settles them
                log.warning("event=program_failed changes=%d action=full_reconcile", len(ops))
                self._dirty.set()
                raise

            conflicts = 0
            bad_keys = set()
            for bad in refused:
                flags, key = ops[bad.index]
                bad_keys.add(key)
                if not flags:
                    if bad.errno != errno.ESRCH:
                        failures.append(RouteFailure(None, str(key.prefix()), "delete", bad.errno, bad.reason))
                    continue
                if flags == codec.NEW_FLAGS and bad.errno == errno.EEXIST:
                    conflicts += 1  # ours left from before, or a foreign route: the full reconcile decides
                    continue
                route = routes[key]
                failures.append(RouteFailure(route, str(route.prefix), "add" if flags == codec.NEW_FLAGS else "replace",
                                             bad.errno, bad.reason))
            deleted = [key for flags, key in ops if not flags]
            n_del = len(deleted)
            n_add = sum(1 for flags, _ in ops if flags == new)
            n_rep = len(ops) - n_del - n_add
            installed.difference_update(deleted)
            if n_add or n_rep:
                installed.update(key for flags, key in ops if flags and key not in bad_keys)
            c = self._counts
            errors = len([f for f in failures if f.errno != errno.ENODEV])
            self._counts = ChangeCounts(c.adds + n_add, c.replaces + n_rep, c.deletes + n_del, c.errors + errors)
            failures = self._stamp(failures, trio.current_time())
            self._record_some(pending, failures)
            if conflicts:
                log.info("event=program_conflicts count=%d action=full_reconcile", conflicts)
                self._dirty.set()
            result = ReconcileResult(adds=n_add, replaces=n_rep, deletes=n_del, unchanged=0, kept=0,
                                     failures=tuple(failures), seconds=time.perf_counter() - started)
            log.debug("event=program table=%d desired=%d adds=%d replaces=%d deletes=%d failures=%d conflicts=%d seconds=%.3f",
                      self.table, len(live.routes), n_add, n_rep, n_del, len(failures), conflicts, result.seconds)
            return result

    def _held_back(self, plan: object, routes: Mapping[RouteKey, Route], now: float) -> dict[RouteKey, RouteFailure]:
        """Of the keys `plan` would add or replace, those whose same route was refused and whose
        back-off is not over, with their failure records."""
        if not self._failures:
            return {}
        wanted = set(plan.adds)  # type: ignore[attr-defined]
        wanted.update(plan.replaces)  # type: ignore[attr-defined]
        return {k: f for k, f in self._failures.items()
                if f.retry_at > now and f.route is not None and k in wanted and routes.get(k) == f.route}

    def _stamp(self, failures: list[RouteFailure], now: float) -> list[RouteFailure]:
        """Failures with their attempt count (the same route refused again counts up) and the time
        of the next try; a route refused for a new reason is logged (a retry refused alike is not)."""
        out = []
        previous = self._failures
        for f in failures:
            key = f.route.key if f.route is not None else None
            prev = previous.get(key) if key is not None else None
            attempts = prev.attempts + 1 if prev is not None and prev.route == f.route else 1
            if prev is None or prev.reason != f.reason or prev.op != f.op:
                self._warn.warning("route_failed", "op=%s prefix=%s route=%r errno=%d reason=%r",
                                   f.op, f.prefix, str(f.route or f.prefix), f.errno, f.reason)
            out.append(attrs.evolve(f, attempts=attempts, retry_at=now + retry_delay(attempts)))
        return out

    def next_retry(self) -> float | None:
        """When (trio clock) the first refused route is due to be sent again; None: none is waiting."""
        return min((f.retry_at for f in self._failures.values() if f.route is not None), default=None)

    def retry_now(self) -> None:
        """Forget the back-off of every refused route: the next reconcile sends them all again."""
        if self._failures:
            self._failures = {k: attrs.evolve(f, retry_at=0.0) for k, f in self._failures.items()}

    def _record(self, failures: list[RouteFailure], down: Mapping[RouteKey, int], routes: Mapping[RouteKey, Route],
                held: Mapping[RouteKey, RouteFailure] = {}) -> None:  # noqa: B006 - read only
        self._failures = dict(held)
        self.failure_changes += 1
        unreachable: dict[RouteKey, str] = {k: f.reason for k, f in held.items() if f.unreachable}
        for failure in failures:
            if failure.route is not None:
                key = failure.route.key
                self._failures[key] = failure
                if failure.unreachable:
                    unreachable[key] = failure.reason
        for key, n_down in down.items():
            route = routes[key]
            if n_down >= len(route.nexthops):
                unreachable[route.key] = "all next hops are dead or link-down"
            else:
                self._warn.warning("route_degraded", "prefix=%s nexthops_down=%d of=%d", route.prefix, n_down, len(route.nexthops))
        self._set_unreachable(unreachable)

    def _record_some(self, keys: Iterable[RouteKey], failures: list[RouteFailure]) -> None:
        """After program(): the outcome for `keys` replaces what the last reconcile said of them."""
        if not (failures or self._failures or self._unreachable):
            return
        self.failure_changes += 1
        unreachable = dict(self._unreachable)
        for key in keys:
            self._failures.pop(key, None)
            unreachable.pop(key, None)
        for failure in failures:
            if failure.route is not None:
                self._failures[failure.route.key] = failure
                if failure.unreachable:
                    unreachable[failure.route.key] = failure.reason
        self._set_unreachable(unreachable)

    def _set_unreachable(self, unreachable: dict[RouteKey, str]) -> None:
        for key in unreachable.keys() - self._unreachable.keys():
            self._warn.warning("nexthop_unreachable", "prefix=%s reason=%r", key.prefix(), unreachable[key])
        for key in self._unreachable.keys() - unreachable.keys():
            self._warn.info("nexthop_reachable", "prefix=%s", key.prefix())
        self._unreachable = unreachable

    # -- watching ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile now, then whenever events show drift, and every `resync_interval` seconds."""
        sock = events.open_event_socket(self.netns)
        if self._request_sock is not None:  # our own changes are not drift: never read them back
            try:
                events.ignore_sender(sock, self._request_sock.getsockname()[0])
            except OSError as exc:  # only slower without it: each of our changes is read and matched
                log.warning("event=event_filter_unavailable reason=%r", str(exc))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, sock)
                await self._reconcile_guarded()
                task_status.started()
                await self._reconcile_loop()
        finally:
            sock.close()

    async def _reconcile_loop(self) -> None:
        while True:
            wait = self._resync_interval
            retry = self.next_retry()  # a refused route due again before the periodic resync
            if retry is not None:
                wait = max(min(wait, retry - trio.current_time()), 0.0)
            with trio.move_on_after(wait):
                await self._dirty.wait()
            await trio.sleep(self._debounce)
            await self._reconcile_guarded()

    async def _reconcile_guarded(self) -> None:
        self._dirty = trio.Event()
        try:
            await self.reconcile()
        except (netlink.NetlinkError, OSError) as exc:
            log.error("event=reconcile_failed reason=%r", str(exc))
            await trio.sleep(1.0)
            self._dirty.set()

    def _kick(self, why: str, key: RouteKey | None = None) -> None:
        if key is not None and why in REPAIR_REASONS:
            self.repairs[why] = self.repairs.get(why, 0) + 1
            if self.on_repair is not None:
                self.on_repair(why, key)
        # one log line per wake-up, not per event: a bulk change by hand is 100k events
        if not self._dirty.is_set():
            log.info("event=reconcile_wanted why=%s prefix=%s", why, key.prefix() if key is not None else "-")
            self._dirty.set()

    async def _watch(self, sock: object) -> None:
        async for batch in events.events(sock, lambda: self._desired.signatures,  # type: ignore[arg-type]
                                         lambda: (self.protocol, self._desired.forwarding)):
            for event in batch:
                if isinstance(event, events.RouteEvent):
                    self._on_route(event)
                elif isinstance(event, events.LinkEvent):
                    self._on_link(event)
                else:
                    self._kick("events_lost")

    def _on_route(self, event: events.RouteEvent) -> None:
        route: KernelRoute = event.route
        if route.table != self.table:
            return
        key = route.key
        want = self._desired.forwarding.get(key)
        if route.protocol != self.protocol:
            if want is not None:  # a foreign route on one of our keys: conflict appeared or cleared
                self._kick("foreign_route", key)
            return
        if event.deleted:
            if want is not None:
                self._kick("route_deleted", key)
        elif want is None:
            if key not in self._keep:
                self._kick("stale_route", key)
        elif not forwarding_matches(want, route, self._ifindex):
            self._kick("route_changed", key)

    def _on_link(self, event: events.LinkEvent) -> None:
        link = event.link
        old = self._links.get(link.index)
        links = dict(self._links)
        if event.deleted:
            links.pop(link.index, None)
        else:
            links[link.index] = link
        self._set_links(links)
        lost = event.deleted or (old is not None and (old.usable and not link.usable
                                                       or old.name != link.name and old.name in self._desired.devices))
        gained = not event.deleted and link.usable and (old is None or not old.usable or old.name != link.name)
        # a link that goes away may have carried our routes (the kernel drops IPv4 routes through it
        # without a word); a new or usable one matters only to routes waiting for a way out, or named
        # by device: a workload's veth appearing is no reason to dump and diff the whole table
        if gained and self._failures:
            self.retry_now()  # a way out appeared: what the kernel refused may fit now
        if lost or (gained and (self._failures or self._unreachable or link.name in self._desired.devices)):
            log.info("event=link_changed ifindex=%d name=%s usable=%s deleted=%s", link.index, link.name,
                     link.usable and not event.deleted, event.deleted)
            self._kick("link_changed")
