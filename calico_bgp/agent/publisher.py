"""status/<node> in etcd, bound to a lease so it disappears with the agent; survives etcd outages.

The agent marks the status dirty when something worth showing changed (every UPDATE, every kernel
batch, every session change). What a person or a script reading etcd needs is a document at most a
few seconds old, not one per UPDATE: each is a build of up to MAX_PUBLISHED_ROUTES routes in the
agent's loop, a put of a few hundred kB, and the same value coming back through every agent's watch.
So a document is written
- once UPDATEs pause for QUIET seconds (after a burst, a flap), at most every MIN_GAP seconds and
  never more than a twentieth of the time (a document of 100k routes costs ~0.1 s);
- while UPDATEs keep streaming, every CHURN_EVERY seconds (steady churn never pauses);
- with nothing changed, every IDLE_EVERY seconds (the uptimes move on; the CLI calls a document
  older than 30 s stale).
The lease is kept on its own schedule, so a slow build under load never lets the key expire while
the agent is alive.
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
QUIET = 0.25        # seconds without an UPDATE that end a burst
MIN_GAP = 0.5       # seconds between documents at least
CHURN_EVERY = 10.0  # seconds between documents while UPDATEs keep streaming
IDLE_EVERY = 10.0   # seconds between documents with nothing changed
DUTY = 20           # the gap after a document is at least DUTY x what building it cost


class StatusPublisher:
    def __init__(self, client: Any, key: str, ttl: int, build: Callable[[], st.NodeStatus],
                 last_update: Callable[[], float]) -> None:
        self.client, self.key, self.ttl = client, key, ttl
        self.build = build
        self.last_update = last_update  # trio time of the last UPDATE received
        self._dirty = trio.Event()
        self._lease = 0
        self._leased = trio.Event()  # set while a lease is held
        self._encoder = st.Encoder()  # keeps each route's JSON for the next document

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
                    self._leased.set()
                    self._dirty.set()  # re-publish under the new lease
            except DatastoreError as exc:
                event(log, "status_lease_failed", logging.WARNING, reason=str(exc), action="retry")
                self._lease = 0
                if self._leased.is_set():
                    self._leased = trio.Event()
                await trio.sleep(1.0)
                continue
            await trio.sleep(self.ttl / 3)

    async def _publish(self) -> None:
        last = float("-inf")  # trio time of the last document
        gap = MIN_GAP
        while True:
            with trio.move_on_after(max(IDLE_EVERY - (trio.current_time() - last), 0.0)):
                await self._dirty.wait()
            # while UPDATEs stream in, wait for a pause, or for CHURN_EVERY since the last document
            while True:
                now = trio.current_time()
                due = publish_at(now, last, self.last_update(), gap)
                if due <= now:
                    break
                await trio.sleep(due - now)
            self._dirty = trio.Event()
            if self._lease == 0:
                await self._leased.wait()  # the keeper is (re)granting one; no document without it
                continue
            cost = 0.0
            last = trio.current_time()
            try:
                started = time.perf_counter()
                doc = self._encoder.encode(self.build())
                cost = time.perf_counter() - started
                await self.client.put(self.key, doc, lease=self._lease)
            except DatastoreError as exc:
                event(log, "status_publish_failed", logging.WARNING, reason=str(exc), action="retry")
                await trio.sleep(1.0)
            except Exception:  # noqa: BLE001 - a status bug must not take the routing down with it
                event(log, "status_build_failed", logging.ERROR, exc_info=True)
                await trio.sleep(1.0)
            gap = max(MIN_GAP, DUTY * cost)


def publish_at(now: float, last: float, last_update: float, gap: float) -> float:
    """When the next document is due, something having changed: `gap` after the last one (`last`),
    and while UPDATEs stream (the last came less than QUIET ago) at the pause or CHURN_EVERY after
    the last document, whichever comes first. All trio times."""
    earliest = last + gap
    if now - last_update < QUIET:
        earliest = max(earliest, min(last_update + QUIET, last + CHURN_EVERY))
    return earliest
