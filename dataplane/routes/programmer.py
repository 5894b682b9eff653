"""RouteProgrammer: the one owner of our routes (one table, one protocol) in the kernel.

Reconcile = read our routes, plan (pure, dataplane.routes.route), send the plan in bulk. `run` keeps it so:
events that show our state drifting (a route of ours deleted or changed by hand, a link going down
or up) wake a reconcile; a periodic resync catches anything else. Routes of another protocol or
table are never read as ours, changed or deleted: dumps and deletes carry our table and protocol,
and adds are exclusive (a foreign route on the same key is reported as a conflict, left alone).

The parts: desired_index.py (the desired set by key), changes.py (the operations a change is made
of, pure), failures.py (what the kernel refused, and the back-off before a refused route is sent
again), watcher.py (the events that wake a reconcile).
"""
from __future__ import annotations

import errno
import logging
import time
from typing import Callable, Iterable, Mapping, Sequence

import trio

from dataplane import netlink
from dataplane.logfmt import event
from dataplane.ratelimit import RateLimitedLog
from dataplane.routes import dump, events
from dataplane.routes.changes import ChangeCounts, Op, PlannedOps, ReconcileResult, encoder, op_counts, pending_ops, plan_ops
from dataplane.routes.changes import installed_after_program, installed_after_reconcile
from dataplane.routes.desired_index import DesiredIndex
from dataplane.routes.failures import UNBUILDABLE, FailureBook, RouteFailure, programmable
from dataplane.routes.failures import program_refusals, reconcile_refusals
from dataplane.routes.protocol import DEFAULT_PROTOCOL, MAIN_TABLE, PROTOCOL_NAME, register_protocol_name
from dataplane.routes.route import Forwarding, Planner, Route, RouteKey
from dataplane.routes.watcher import DriftWatcher, LinkTable

log = logging.getLogger(__name__)

BUSY_FOR = 0.05  # seconds after a program() in which the programmer still counts as busy (a burst's sends follow closer)

# the values a RouteProgrammer's owner reads, importable from here as well
__all__ = ["UNBUILDABLE", "ChangeCounts", "ReconcileResult", "RouteFailure", "RouteProgrammer"]


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
        self._desired = DesiredIndex(table, protocol)
        self._keep: frozenset[RouteKey] = frozenset()
        # keys of ours in the kernel as far as we know (last reconcile + changes since): an incremental
        # change replaces only these; any other key is added exclusively, never over a foreign route
        self._installed: set[RouteKey] = set()
        self._pending: dict[RouteKey, None] = {}  # keys changed by update_desired, not yet sent
        self._links = LinkTable()
        self._counts = ChangeCounts()
        self._book = FailureBook()
        self._lock = trio.Lock()
        self._last_program = float("-inf")  # trio time the last program() ended
        self._watcher = DriftWatcher(table, protocol, lambda: self._desired, lambda: self._keep, self._links, self._book)
        self._request_sock = None
        self._dump_sock = None
        self._channel: netlink.RequestChannel | None = None
        self.adopted = 0
        self.reconciles = 0
        # after every full reconcile, whoever asked for it (the owner's, a resync, a retry, a repair)
        self.on_reconciled: Callable[[ReconcileResult], None] | None = None

    @property
    def repairs(self) -> dict[str, int]:
        """Someone else changed our state: how many times, per reason."""
        return self._watcher.repairs

    @property
    def on_repair(self) -> Callable[[str, RouteKey], None] | None:
        """Told (reason, key) of each repair, if set."""
        return self._watcher.on_repair

    @on_repair.setter
    def on_repair(self, fn: Callable[[str, RouteKey], None] | None) -> None:
        self._watcher.on_repair = fn

    @property
    def failure_changes(self) -> int:
        """Grows whenever `failures` may have changed: a cheap test for readers."""
        return self._book.changes

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
        event(log, "programmer_open", table=self.table, protocol=self.protocol, netns=self.netns or "-",
              adopted=self.adopted, grace=bool(self._keep))

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
        self._desired = DesiredIndex.of(routes, self.table, self.protocol)
        self._pending = {}  # the next reconcile covers everything
        self._book.set_unbuildable(unbuildable or {}, replace=True)
        self._watcher.dirty.set()

    def update_desired(self, routes: Iterable[Route] = (), removed: Iterable[RouteKey] = (),
                       unbuildable: Mapping[RouteKey, tuple[str, str]] | None = None) -> int:
        """Change part of the desired set: desire `routes` (each replacing the route on its key) and
        drop the keys in `removed` and in `unbuildable` (as set_desired has it). `program()` sends
        just these changes; returns how many there are."""
        desired = self._desired
        pending = self._pending
        before = len(pending)
        if self._book.unbuildable:
            routes = list(routes)
            removed = list(removed)
            self._book.forget_unbuildable((*removed, *(r.key for r in routes)))
        pending.update(dict.fromkeys(desired.drop_all(removed)))
        if unbuildable:
            for key in desired.drop_all(unbuildable):
                pending[key] = None
            self._book.set_unbuildable(unbuildable)
        pending.update(dict.fromkeys(desired.put_all(routes)))
        return len(pending) - before

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
            event(log, "grace_ended", adopted=len(self._keep))
        self._keep = frozenset()
        self._watcher.dirty.set()

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
        return self._book.all()

    @property
    def failure_count(self) -> int:
        return self._book.count()

    def in_kernel(self, key: RouteKey) -> bool:
        """Whether the route desired on `key` is in the kernel as desired (see in_kernel_count)."""
        return (key in self._installed and key in self._desired.routes and key not in self._book.refused
                and key not in self._pending)

    @property
    def warnings(self) -> RateLimitedLog:
        """The per-route warnings' log: what it holds back `flush_logs` says (its `on_held` wakes an owner)."""
        return self._book.warn

    def flush_logs(self) -> None:
        """Say how many per-route warnings were held back in windows that are over (a clock tick calls it)."""
        self._book.warn.flush()

    def in_kernel_count(self) -> int:
        """Desired routes the kernel holds as desired, as far as we know (what we sent and it took,
        and what the last reconcile found): not the refused, the unsent, or those waiting to be sent."""
        desired, installed = self._desired.routes, self._installed
        n = len(desired.keys() & installed)  # CPython walks the smaller of the two
        n -= sum(1 for k in self._book.refused if k in installed)  # a failed replace leaves our old route
        n -= sum(1 for k in self._pending if k in installed and k in desired)
        return n

    @property
    def unreachable(self) -> dict[str, str]:
        """Desired prefixes whose next hops cannot be used now (link down / gateway not on a link) -> why."""
        return {str(k.prefix()): why for k, why in self._book.unreachable.items()}

    def next_retry(self) -> float | None:
        """When (trio clock) the first refused route is due to be sent again; None: none is waiting."""
        return self._book.next_retry()

    def retry_now(self) -> None:
        """Forget the back-off of every refused route: the next reconcile sends them all again."""
        self._book.retry_now()

    # -- reconcile -------------------------------------------------------------------------

    async def _refresh_links(self) -> None:
        assert self._dump_sock is not None
        self._links.set(await dump.dump_links(self._dump_sock))

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
        ifindex = self._links.ifindex
        planner = Planner(forwarding, ifindex, keep)
        table, protocol = self.table, self.protocol
        sock = self._dump_sock
        await trio.to_thread.run_sync(dump.scan_routes_sync, sock, table, protocol, planner.visit, signatures, planner.visit_matching)
        plan = planner.finish()

        failures: list[RouteFailure] = []
        now = trio.current_time()
        book = self._book
        held = book.held_back(plan.adds, plan.replaces, routes, now)  # refused before, back-off not over: not sent
        plan_adds = [k for k in plan.adds if k not in held] if held else plan.adds
        plan_replaces = [k for k in plan.replaces if k not in held] if held else plan.replaces
        if live.devices:  # grows only: empty now, no route of the snapshot names a device
            adds = programmable(plan_adds, "add", routes, ifindex, failures)
            replaces = programmable(plan_replaces, "replace", routes, ifindex, failures)
        else:  # every route can be sent: no per-route look at its next hops
            adds, replaces = plan_adds, plan_replaces
        ops = plan_ops(adds, replaces, plan.deletes)
        refused = await self._send(ops, forwarding, ifindex, progress)

        n_add, n_rep, n_del = len(adds), len(replaces), len(plan.deletes)
        kernel_failures = reconcile_refusals(refused, ops, routes)
        failures += kernel_failures
        self._counts = self._counts.plus(n_add, n_rep, n_del, len(kernel_failures))
        failures = book.stamp(failures, now)
        book.record(failures, planner.down, routes, held)
        self._installed = installed_after_reconcile(forwarding, failures, held, planner.kept)
        for key in pending_before:  # sent as they were in the snapshot, unless changed since
            if routes.get(key) is live.routes.get(key):
                self._pending.pop(key, None)

        kept = plan.kept
        result = ReconcileResult(
            adds=n_add, replaces=n_rep, deletes=n_del, unchanged=plan.unchanged, kept=kept,
            failures=tuple(failures), seconds=time.perf_counter() - started,
        )
        self.reconciles += 1
        event(log, "reconcile", table=table, protocol=protocol, desired=len(routes), adds=n_add, replaces=n_rep,
              deletes=n_del, unchanged=plan.unchanged, kept=kept, failures=len(failures), held=len(held),
              seconds=result.seconds)
        if self.on_reconciled is not None:
            self.on_reconciled(result)
        return result

    async def _send(self, ops: Sequence[Op], forwarding: Mapping[RouteKey, Forwarding], ifindex: Mapping[str, int],
                    progress: Callable[[int, int], None] | None = None) -> list[netlink.RequestFailure]:
        if not ops:
            return []
        total = len(ops)
        report = (lambda done: progress(done, total)) if progress is not None else None
        assert self._channel is not None
        return await self._channel.transact(total, encoder(ops, self.table, self.protocol, forwarding, ifindex), report)

    def busy(self) -> bool:
        """Changes are pending or being sent, or were a moment ago (BUSY_FOR): a burst is in flight."""
        return bool(self._pending) or self._lock.locked() or trio.current_time() - self._last_program < BUSY_FOR

    async def program(self) -> ReconcileResult | None:
        """Send what update_desired changed, and only that: no dump, so its cost follows the size of the
        change, not of the table. A conflict it cannot settle alone (a route already on a key it
        believed free) leaves the kernel to the next full reconcile, which it asks for. None: nothing
        was pending."""
        if self._channel is None:
            raise RuntimeError("RouteProgrammer is not open")
        async with netlink.Held(self._lock):  # free but for a reconcile: no extra turn of the loop
            if not self._pending:
                return None
            started = time.perf_counter()
            pending, self._pending = self._pending, {}
            live = self._desired
            ops, routes, forwarding = pending_ops(pending, live, self._installed, self._keep)
            failures: list[RouteFailure] = []
            # learned routes name no device: only look when some desired route ever did
            if live.devices and any(h.device is not None for r in routes.values() for h in r.nexthops):
                if any(h.device is not None and h.device not in self._links.ifindex for r in routes.values() for h in r.nexthops):
                    await self._refresh_links()
                keys = set(programmable([*ops.adds, *ops.replaces], "add", routes, self._links.ifindex, failures))
                ops = PlannedOps([k for k in ops.adds if k in keys], [k for k in ops.replaces if k in keys], ops.deletes)
            try:
                refused = await self._send(ops, forwarding, self._links.ifindex)
            except BaseException:
                # what the kernel took of these is unknown, and they are no longer pending: the
                # full reconcile (a dump and a diff against everything desired) settles them
                event(log, "program_failed", logging.WARNING, changes=len(ops), action="full_reconcile")
                self._watcher.dirty.set()
                raise
            kernel_failures, conflicts, bad_keys = program_refusals(refused, ops, routes)
            failures += kernel_failures
            n_add, n_rep, n_del = op_counts(ops)
            installed_after_program(self._installed, ops, bad_keys)
            errors = len([f for f in failures if f.errno != errno.ENODEV])
            self._counts = self._counts.plus(n_add, n_rep, n_del, errors)
            failures = self._book.stamp(failures, trio.current_time())
            self._book.record_some(pending, failures)
            if conflicts:  # ours left from before, or a foreign route: the full reconcile decides
                event(log, "program_conflicts", count=conflicts, action="full_reconcile")
                self._watcher.dirty.set()
            result = ReconcileResult(adds=n_add, replaces=n_rep, deletes=n_del, unchanged=0, kept=0,
                                     failures=tuple(failures), seconds=time.perf_counter() - started)
            self._last_program = trio.current_time()
            event(log, "program", logging.DEBUG, table=self.table, desired=len(live.routes), adds=n_add,
                  replaces=n_rep, deletes=n_del, failures=len(failures), conflicts=conflicts, seconds=result.seconds)
            return result

    # -- watching ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile now, then whenever events show drift, and every `resync_interval` seconds."""
        sock = events.open_event_socket(self.netns)
        if self._request_sock is not None:  # our own changes are not drift: never read them back
            try:
                events.ignore_sender(sock, self._request_sock.getsockname()[0])
            except OSError as exc:  # only slower without it: each of our changes is read and matched
                event(log, "event_filter_unavailable", logging.WARNING, reason=str(exc))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watcher.watch, sock)
                await self._watcher.reconcile_now(self.reconcile)
                task_status.started()
                await self._watcher.reconcile_when_due(self.reconcile, self._resync_interval, self._debounce, self.busy)
        finally:
            sock.close()
