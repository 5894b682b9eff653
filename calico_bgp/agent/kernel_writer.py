"""The agent's path from RIB selections to the kernel: what changed becomes desired routes, and the
route programmer sends them, batch by batch, while UPDATEs keep streaming.

Two stages in one nursery: `_prepare` turns changed selections into desired routes (bounded
batches), `_send` sends whatever is desired and not yet sent. While the kernel applies one send (in
a worker thread, without the GIL) the next batch is prepared: at 100k prefixes the stages used to
alternate, and the kernel's half was ~0.5 s of idle loop after the last UPDATE. A full rebuild
(dump + diff) only when blocks, own prefixes or the RIB itself changed.

One route never holds up the others: a selection no kernel route can express is handed to the
programmer as unbuildable (reported, not desired), a route the kernel refuses is reported and sent
again after a back-off, and the rest of the batch or of the full rebuild is programmed.
`on_failures` hears of each failed prefix once per reason, and of its recovery.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Protocol

import trio

from calico_bgp.agent.bulk_gc import held_off
from calico_bgp.routing import desired
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import Rib
from calico_bgp.telemetry.metrics import Metrics
from dataplane.logfmt import event
from dataplane.routes.programmer import UNBUILDABLE, ReconcileResult, RouteFailure, RouteProgrammer
from dataplane.routes.route import Route, RouteKey

log = logging.getLogger(__name__)

KERNEL_BATCH = 2048  # prefixes per kernel batch while a burst streams in
WINDOW = 0.005  # seconds a batch waits for more changes while a burst streams in
SETTLE_TURNS = 16  # loop turns a batch after a quiet spell waits, at most, for UPDATEs already read


class Inputs(Protocol):
    """What the desired kernel routes are made of (the agent's current view); None until it has one."""

    def __call__(self) -> tuple[Rib, str, dict, Iterable[Prefix], list[Route]] | None: ...  # rib, node, blocks, own, static


class KernelWriter:
    def __init__(self, programmer: RouteProgrammer, metrics: Metrics, inputs: Inputs,
                 on_done: Callable[[], None]) -> None:
        self.programmer = programmer
        self.metrics = metrics
        self.inputs = inputs
        self.on_done = on_done  # after each send or reconcile (the agent republishes its status)
        self._dirty = trio.Event()
        self._full = True                  # rebuild every kernel route (not only the changed ones)
        self._changed: set[Prefix] = set()  # prefixes whose selection changed since the last batch
        self._skip: set[Prefix] = set()     # what we originate or blackhole: never a learned route
        self.keep_out: tuple[Prefix, ...] = ()  # no learned route inside these (the service CIDRs); set by the control loop
        self._metrics: dict[Prefix, int] = {}  # learned routes programmed with a metric other than 0 (setPriority)
        self._pending_since: float | None = None  # when the oldest change not yet prepared was noted
        self._send_ready = trio.Event()      # routes were made desired: the sender sends them
        self._send_since: float | None = None  # when the oldest change the next send carries was noted
        self._failed_runs = 0  # prepare passes that raised in a row (their back-off)
        self._last_batch = float("-inf")  # trio time the last batch was taken
        # how many UPDATEs were read and not yet applied (the session-events wiring sets it)
        self.backlog: Callable[[], int] = lambda: 0
        # what `on_failures` was told: key -> (a build failure, reason); and the programmer's
        # failure_changes it was told at
        self._reported: dict[RouteKey, tuple[bool, str]] = {}
        self._failure_seen = -1
        self.on_failures: Callable[[list[RouteFailure], list[str]], None] | None = None  # (new, recovered prefixes)
        programmer.on_reconciled = lambda _result: self._report()  # its own resyncs and retries too

    def mark_full(self) -> None:
        """Every kernel route may have changed (blocks, own prefixes, a new RIB): rebuild them all."""
        self._full = True
        self._dirty.set()

    def mark_changed(self, prefixes: set[Prefix], now: float | None = None) -> None:
        """Only these prefixes' selections changed (noted at `now`, for the latency histogram)."""
        if now is not None and self._pending_since is None:
            self._pending_since = now
        if not self._full:
            self._changed |= prefixes
        self._dirty.set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send)
            await self._prepare()

    async def _prepare(self) -> None:
        more = False
        while True:
            await self._dirty.wait()
            await self._gather(more)
            self._dirty = trio.Event()  # after the wait: what changed during it is in this batch
            self._last_batch = trio.current_time()
            inputs = self.inputs()
            if inputs is None:
                continue
            rib, node, blocks, own, static = inputs
            changed = self._changed
            # bounded batches: the kernel takes one while the next UPDATEs are parsed, and what is
            # left when the stream ends is one batch, not everything since the last one
            more = len(changed) > KERNEL_BATCH and not self._full
            if more:
                pop = changed.pop  # takes entries with their stored hashes: no prefix is hashed again
                changed, since = [pop() for _ in range(KERNEL_BATCH)], None  # type: ignore[assignment]
                self._dirty.set()
            else:
                self._changed = set()
                since, self._pending_since = self._pending_since, None
            full = self._full
            try:
                if full:
                    skip = desired.not_learned(node, blocks, own, static)
                    routes, unbuildable = desired.kernel_routes(node, blocks, rib, own, static, self.keep_out,
                                                                  self._metrics)
                    self.programmer.set_desired(routes, unbuildable)
                    self._full, self._skip = False, skip  # only once the new desired set is in place
                    self._done(await self.programmer.reconcile(), since)
                else:
                    with held_off(len(changed)):
                        upserts, removed, unbuildable = desired.kernel_changes(changed, rib, self._skip, self.keep_out,
                                                                                   self._metrics)
                        self.programmer.update_desired(upserts, removed, unbuildable)
                    if unbuildable:
                        self._report()
                    if since is not None and self._send_since is None:
                        self._send_since = since
                    self._send_ready.set()
                self._failed_runs = 0
            except Exception:  # noqa: BLE001 - a bug here must not stop the kernel path for good
                event(log, "kernel_prepare_failed", logging.ERROR, exc_info=True, full=full)
                if not full:
                    self._changed.update(changed)  # tried again with the next change
                # and again without one, after a back-off: a full rebuild waits for no other change
                self._failed_runs += 1
                await trio.sleep(min(0.5 * 2 ** (self._failed_runs - 1), 30.0))
                self._dirty.set()

    async def _gather(self, more: bool) -> None:
        """Wait for the changes that belong in the next batch. The rest of a large batch goes on at
        once. While a burst streams in (the last batch is less than WINDOW old) the batch waits
        WINDOW for more UPDATEs, so a burst is a few large batches. After a quiet spell (steady
        churn: a tick's UPDATEs every 100 ms) it waits only for the UPDATEs already read to be
        applied, a few loop turns, and goes while the caches are warm: a timer would make every
        change two wake-ups, each paying for cold code, and 5 ms more latency."""
        if more:
            await trio.sleep(0)
        elif trio.current_time() - self._last_batch < WINDOW:
            await trio.sleep(WINDOW)
        else:
            for _ in range(min(self.backlog(), SETTLE_TURNS)):
                await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()  # the turn in which the last of them is applied

    async def _send(self) -> None:
        """Sends what `_prepare` made desired since the last send, one send at a time."""
        while True:
            await self._send_ready.wait()
            self._send_ready = trio.Event()
            since, self._send_since = self._send_since, None  # everything it stands for is pending now
            try:
                result = await self.programmer.program()
            except Exception:  # noqa: BLE001 - the programmer retries on its own loop
                event(log, "kernel_program_failed", logging.ERROR, exc_info=True)
                continue
            if result is not None:
                self._done(result, since)

    def _done(self, result: ReconcileResult, since: float | None) -> None:
        self.metrics.reconcile_runs.labels("routes").inc()
        self.metrics.reconcile_changes.labels("routes").inc(result.changes)
        self.metrics.netlink_errors.inc(len(result.failures))
        if since is not None:
            self.metrics.programming_latency.observe(trio.current_time() - since)
        self._report()
        self.on_done()

    def _report(self) -> None:
        """Tell `on_failures` what failed anew (a new prefix, or a new reason) and what recovered since
        the last report: once per prefix and reason, never per retry. Counted in the metrics."""
        if self.programmer.failure_changes == self._failure_seen:
            return
        self._failure_seen = self.programmer.failure_changes
        failures = self.programmer.failures
        reported = self._reported
        new = [(k, f) for k, f in failures.items() if reported.get(k) != (f.op == UNBUILDABLE, f.reason)]
        recovered = [k for k in reported if k not in failures]
        for key in recovered:
            del reported[key]
        for key, f in new:
            reported[key] = (f.op == UNBUILDABLE, f.reason)
            self.metrics.route_failures.labels("build" if f.op == UNBUILDABLE else "kernel").inc()
        if (new or recovered) and self.on_failures is not None:
            self.on_failures([f for _, f in new], [str(k.prefix()) for k in recovered])
