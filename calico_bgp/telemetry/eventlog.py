"""The per-node event log: session up/down with reasons, damping start/end, max-prefix actions,
reconcile repairs, speaker restarts. Stored in etcd as a bounded ring per node, so
`calico-bgp events` works from any machine, like `status`.

    events/<node>/<slot>   slot = seq % capacity, value = one Event as JSON

Writing is fire-and-forget from the agent's point of view: events queue in memory (bounded) and
a writer task flushes them; an etcd outage loses no event unless the queue overflows, and then the
loss itself is counted and logged. A burst of one kind of event for one peer is summarised beyond
its first few (calico_bgp/telemetry/bursts.py): one event with `count` and `first` stands for the rest, so
a peer resetting hundreds of times does not push everything else out of the ring.
"""
from __future__ import annotations

import collections
import itertools
import logging
import math
import time
from typing import Any, Deque

import attrs
import trio

from calico_bgp.datastore import DatastoreError
from calico_bgp.datastore.types import Put
from calico_bgp.resources import codec
from calico_bgp.telemetry.bursts import BurstSummariser, Summary
from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.events")

CAPACITY = 1000          # events kept per node in etcd
QUEUE_LIMIT = 10_000     # events waiting for etcd before the oldest are dropped
MAX_TXN_PUTS = 100       # events written per transaction (etcd's default --max-txn-ops is 128)
KINDS = ("session_up", "session_down", "damping_start", "damping_end", "max_prefixes", "repair",
         "speaker_restart", "graceful_restart", "grace_end", "stale_swept", "block_released", "filter_rejected",
         "route_failed", "route_recovered", "route_refresh",
         "session_backoff", "prefix_churn", "malformed_update", "origin_invalid")


@attrs.frozen
class Event:
    seq: int
    time: float          # wall clock, seconds
    node: str
    kind: str
    peer: str = ""
    prefix: str = ""
    detail: str = ""
    count: int = 1       # events this one stands for (a burst's summary: > 1)
    first: float = 0.0   # a summary's first event (wall clock); `time` is its last


def slot_key(prefix: str, seq: int, capacity: int = CAPACITY) -> str:
    return f"{prefix}{seq % capacity:06d}"


def decode(raw: bytes, where: str) -> Event:
    return codec.decode(Event, raw, where=where)


def ordered(events: list[Event], since: float | None = None) -> list[Event]:
    """Oldest first; the ring's slots are not in time order once it wrapped."""
    out = sorted(events, key=lambda e: (e.time, e.seq))
    return [e for e in out if since is None or e.time >= since]


class EventLog:
    def __init__(self, client: Any, prefix: str, node: str, capacity: int = CAPACITY) -> None:
        self.client = client
        self.prefix = prefix          # keys.events(node)
        self.node = node
        self.capacity = capacity
        self.seq = 0
        self.dropped = 0
        self._queue: Deque[Event] = collections.deque()
        self._wake = trio.Event()
        self._timed = True  # the writer wakes every second by itself (a burst is being counted)
        self.recent: Deque[Event] = collections.deque(maxlen=200)  # for tests and the status page
        self.bursts = BurstSummariser()

    def emit(self, kind: str, peer: str = "", prefix: str = "", detail: str = "") -> Event | None:
        """Queue one event; None when it went into a burst's summary instead."""
        now = time.time()
        self.flush_bursts(now)
        if not self.bursts.admit(kind, peer, now, detail):
            event(log, kind, logging.DEBUG, node=self.node, peer=peer or "-", prefix=prefix or "-", detail=detail,
                  summarised="true")
            if not self._timed:
                self._wake.set()  # the writer sleeps without a deadline: its summary must be written
            return None
        return self._queued(Event(self.seq + 1, now, self.node, kind, peer, prefix, detail))

    def flush_bursts(self, now: float) -> list[Event]:
        """Queue a summary for each burst whose window ended."""
        return [self._queued(_summary_event(self.seq + 1, self.node, s, self.bursts.window))
                for s in self.bursts.due(now)]

    def _queued(self, ev: Event) -> Event:
        self.seq = ev.seq
        kind, peer, prefix, detail = ev.kind, ev.peer, ev.prefix, ev.detail
        if len(self._queue) >= QUEUE_LIMIT:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(ev)
        self.recent.append(ev)
        event(log, kind, node=self.node, peer=peer or "-", prefix=prefix or "-", detail=detail)
        self._wake.set()
        return ev

    async def resume(self) -> None:
        """Continue numbering after what a previous run of this node stored."""
        res = await self.client.range(self.prefix)
        seqs = []
        for kv in res.kvs:
            try:
                seqs.append(decode(kv.value, kv.key).seq)
            except codec.DecodeError:
                continue
        self.seq = max(seqs, default=0)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        while True:
            try:
                await self.resume()
                break
            except DatastoreError as exc:
                event(log, "eventlog_resume_failed", logging.WARNING, reason=str(exc))
                await trio.sleep(1.0)
        task_status.started()
        while True:
            # a burst's summary is written as its window ends (checked every second while one is
            # counted); with none, the writer sleeps until an event comes
            self._timed = self.bursts.pending() > 0
            with trio.move_on_after(1.0 if self._timed else math.inf):
                await self._wake.wait()
            self.flush_bursts(time.time())
            self._wake = trio.Event()
            while self._queue:
                # up to MAX_TXN_PUTS events in one transaction: a rack's bring-up brings hundreds at
                # once (session_up, origin_invalid, ...), and a request each cost the agent more CPU
                # than reflecting their routes. Within the ring's capacity no two share a slot.
                batch = list(itertools.islice(self._queue, min(MAX_TXN_PUTS, self.capacity)))
                try:
                    await self.client.txn([], [Put(slot_key(self.prefix, ev.seq, self.capacity), codec.encode(ev))
                                               for ev in batch], [])
                except DatastoreError as exc:
                    event(log, "eventlog_write_failed", logging.WARNING, pending=len(self._queue), reason=str(exc))
                    await trio.sleep(1.0)
                    continue
                for ev in batch:  # emit() may have dropped some (overflow) meanwhile
                    if self._queue and self._queue[0] is ev:
                        self._queue.popleft()
            if self.dropped:
                event(log, "eventlog_overflow", logging.ERROR, dropped=self.dropped)
                self.dropped = 0


def _summary_event(seq: int, node: str, s: Summary, window: float) -> Event:
    first, last = (time.strftime("%H:%M:%S", time.gmtime(t)) for t in (s.first, s.last))
    what = f" ({s.what})" if s.what else ""
    return Event(seq, s.last, node, s.kind, s.peer, "", f"{s.count} more {s.kind}{what} within {window:.0f}s "
                 f"({first} to {last} UTC), summarised", count=s.count, first=s.first)
