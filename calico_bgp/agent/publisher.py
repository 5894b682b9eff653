"""status/<node> in etcd, bound to a lease so it disappears with the agent; survives etcd outages.

The agent marks the status dirty when something worth showing changed; this writes at most a few
documents a second, waits for a pause in an UPDATE burst (at most BURST_WAIT) and spends at most a
tenth of its time building them. The lease is kept on its own schedule, so a slow build under load
never lets the key expire while the agent is alive.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

import trio

from calico_bgp.agent import status as st
from calico_bgp.datastore import DatastoreError
from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.agent.publisher")
BURST_WAIT = 5.0  # seconds a status may lag a burst of UPDATEs (a full table takes ~2 s)


class StatusPublisher:
    def __init__(self, client: Any, key: str, ttl: int, build: Callable[[], st.NodeStatus],
                 last_update: Callable[[], float]) -> None:
        self.client, self.key, self.ttl = client, key, ttl
        self.build = build
        self.last_update = last_update  # trio time of the last UPDATE received
        self._dirty = trio.Event()
        self._lease = 0

    def mark_dirty(self) -> None:
        self._dirty.set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_lease)
            nursery.start_soon(self._publish)

    async def _keep_lease(self) -> None:
        while True:
            try:
                if self._lease == 0 or await self.client.lease_keepalive(self._lease) <= 0:
                    self._lease = await self.client.lease_grant(self.ttl)
                    self._dirty.set()  # re-publish under the new lease
            except DatastoreError as exc:
                event(log, "status_lease_failed", logging.WARNING, reason=str(exc), action="retry")
                self._lease = 0
                await trio.sleep(1.0)
                continue
            await trio.sleep(self.ttl / 3)

    async def _publish(self) -> None:
        while True:
            with trio.move_on_after(2.0):
                await self._dirty.wait()
            # while UPDATEs stream in, wait for a pause: building a status of 100k routes in the
            # middle of a burst (~0.15 s of the loop) only delays the burst
            woke = trio.current_time()
            while trio.current_time() - self.last_update() < 0.1 and trio.current_time() - woke < BURST_WAIT:
                await trio.sleep(0.05)
            self._dirty = trio.Event()
            if self._lease == 0:
                continue  # the keeper is (re)granting one; it wakes us when it has
            cost = 0.0
            try:
                started = time.perf_counter()
                doc = st.encode(self.build())
                cost = time.perf_counter() - started
                await self.client.put(self.key, doc, lease=self._lease)
            except DatastoreError as exc:
                event(log, "status_publish_failed", logging.WARNING, reason=str(exc), action="retry")
                await trio.sleep(1.0)
            except Exception:  # noqa: BLE001 - a status bug must not take the routing down with it
                event(log, "status_build_failed", logging.ERROR, exc_info=True)
                await trio.sleep(1.0)
            await trio.sleep(max(0.25, 9 * cost))
