"""The agent's path from RIB selections to the kernel: what changed becomes desired routes, and the
route programmer sends them, batch by batch, while UPDATEs keep streaming.

Two stages in one nursery: `_prepare` turns changed selections into desired routes (bounded
batches), `_send` sends whatever is desired and not yet sent. While the kernel applies one send (in
a worker thread, without the GIL) the next batch is prepared: at 100k prefixes the stages used to
alternate, and the kernel's half was ~0.5 s of idle loop after the last UPDATE. A full rebuild
(dump + diff) only when blocks, own prefixes or the RIB itself changed.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Protocol

import trio

from calico_bgp import desired
from calico_bgp.rib import Prefix, Rib
from calico_bgp.telemetry import Metrics
from dataplane.programmer import ReconcileResult, RouteProgrammer
from dataplane.route import Route

log = logging.getLogger(__name__)

KERNEL_BATCH = 2048  # prefixes per kernel batch while a burst streams in


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
        self._pending_since: float | None = None  # when the oldest change not yet prepared was noted
        self._send_ready = trio.Event()      # routes were made desired: the sender sends them
        self._send_since: float | None = None  # when the oldest change the next send carries was noted

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
            self._dirty = trio.Event()
            # let a burst of UPDATEs land in one batch; the rest of a large one goes on at once
            await trio.sleep(0 if more else 0.005)
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
                    skip = set(own) | set(desired.local_blocks(node, blocks)) | {r.prefix for r in static}
                    self.programmer.set_desired(desired.kernel_routes(node, blocks, rib, own, static))
                    self._full, self._skip = False, skip  # only once the new desired set is in place
                    self._done(await self.programmer.reconcile(), since)
                else:
                    upserts, removed = desired.kernel_changes(changed, rib, self._skip)
                    self.programmer.update_desired(upserts, removed)
                    if since is not None and self._send_since is None:
                        self._send_since = since
                    self._send_ready.set()
            except Exception:  # noqa: BLE001 - a bug here must not stop the kernel path for good
                log.exception("event=kernel_prepare_failed full=%s", full)
                if not full:
                    self._changed.update(changed)  # tried again with the next change

    async def _send(self) -> None:
        """Sends what `_prepare` made desired since the last send, one send at a time."""
        while True:
            await self._send_ready.wait()
            self._send_ready = trio.Event()
            since, self._send_since = self._send_since, None  # everything it stands for is pending now
            try:
                result = await self.programmer.program()
            except Exception:  # noqa: BLE001 - the programmer retries on its own loop
                log.exception("event=kernel_program_failed")
                continue
            if result is not None:
                self._done(result, since)

    def _done(self, result: ReconcileResult, since: float | None) -> None:
        self.metrics.reconcile_runs.labels("routes").inc()
        self.metrics.reconcile_changes.labels("routes").inc(result.changes)
        self.metrics.netlink_errors.inc(len(result.failures))
        if since is not None:
            self.metrics.programming_latency.observe(trio.current_time() - since)
        self.on_done()
