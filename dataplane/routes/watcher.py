"""The drift watcher: route and link events that show our routes drifting wake a reconcile.

A route of ours deleted or changed by hand, a foreign route appearing or going on one of our keys,
a stale route of ours (unless kept for the restart grace), a link going down (the kernel drops IPv4
routes through it without a word) are drift. A link coming up matters only to routes waiting for
a way out or naming it: a workload's veth appearing is no reason to dump and diff the whole table.
The decisions are pure functions; `DriftWatcher` reads the events and keeps the wake-up flag.
"""
from __future__ import annotations

import logging
from typing import Awaitable, Callable, Collection, Mapping

import trio

from dataplane import netlink
from dataplane.logfmt import event
from dataplane.routes import events
from dataplane.routes.desired_index import DesiredIndex
from dataplane.routes.dump import Link
from dataplane.routes.failures import FailureBook
from dataplane.routes.route import Forwarding, KernelRoute, RouteKey, forwarding_matches

log = logging.getLogger("dataplane.routes.programmer")

BUSY_POLL = 0.1  # seconds between looks at whether the programmer is still busy, while a resync waits

# someone else changed our state (as opposed to a stale route, a link change or lost events)
REPAIR_REASONS = frozenset({"route_deleted", "route_changed", "foreign_route"})


def route_drift(route: KernelRoute, deleted: bool, protocol: int, want: Forwarding | None,
                keep: Collection[RouteKey], ifindex: Mapping[str, int]) -> str | None:
    """Why a route event in our table shows drift (None: it does not). `want`: how the desired route
    on its key forwards, None when none is desired."""
    key = route.key
    if route.protocol != protocol:
        return "foreign_route" if want is not None else None  # a conflict appeared or cleared
    if deleted:
        return "route_deleted" if want is not None else None
    if want is None:
        return "stale_route" if key not in keep else None
    return None if forwarding_matches(want, route, ifindex) else "route_changed"


def link_drift(old: Link | None, link: Link, deleted: bool, named: Collection[str]) -> tuple[bool, bool]:
    """(lost, gained) for a link event: `lost` when the link may have carried our routes away,
    `gained` when a usable way out appeared. `named`: the devices desired routes name."""
    lost = deleted or (old is not None and (old.usable and not link.usable
                                           or old.name != link.name and old.name in named))
    gained = not deleted and link.usable and (old is None or not old.usable or old.name != link.name)
    return lost, gained


class LinkTable:
    """The links as last dumped and as events changed them since; `ifindex` by name."""

    def __init__(self) -> None:
        self.links: dict[int, Link] = {}
        self.ifindex: dict[str, int] = {}

    def set(self, links: dict[int, Link]) -> None:
        self.links = links
        self.ifindex = {link.name: link.index for link in links.values()}

    def apply(self, ev: events.LinkEvent) -> Link | None:
        """Take the event in; the link as it was before."""
        link = ev.link
        old = self.links.get(link.index)
        links = dict(self.links)
        if ev.deleted:
            links.pop(link.index, None)
        else:
            links[link.index] = link
        self.set(links)
        return old


class DriftWatcher:
    """Reads route and link events of table `table` and sets `dirty` when they show drift. Repairs
    (someone else changed our state) are counted in `repairs` per reason and told to `on_repair`.
    `reconcile_when_due` runs the reconciles: on drift, when a refused route's back-off is over,
    and at least every resync interval."""

    def __init__(self, table: int, protocol: int, desired: Callable[[], DesiredIndex],
                 keep: Callable[[], Collection[RouteKey]], links: LinkTable, book: FailureBook) -> None:
        self.table = table
        self.protocol = protocol
        self._desired = desired
        self._keep = keep
        self.links = links
        self.book = book
        self.dirty = trio.Event()
        self.repairs: dict[str, int] = {}
        self.on_repair: Callable[[str, RouteKey], None] | None = None

    def kick(self, why: str, key: RouteKey | None = None) -> None:
        if key is not None and why in REPAIR_REASONS:
            self.repairs[why] = self.repairs.get(why, 0) + 1
            if self.on_repair is not None:
                self.on_repair(why, key)
        # one log line per wake-up, not per event: a bulk change by hand is 100k events
        if not self.dirty.is_set():
            event(log, "reconcile_wanted", why=why, prefix=key.prefix() if key is not None else "-")
            self.dirty.set()

    async def watch(self, sock: object) -> None:
        async for batch in events.events(sock, lambda: self._desired().known_signatures(),  # type: ignore[arg-type]
                                         lambda: (self.protocol, self._desired().forwarding)):
            for ev in batch:
                if isinstance(ev, events.RouteEvent):
                    self.on_route(ev)
                elif isinstance(ev, events.LinkEvent):
                    self.on_link(ev)
                else:
                    self.kick("events_lost")

    def on_route(self, ev: events.RouteEvent) -> None:
        route = ev.route
        if route.table != self.table:
            return
        key = route.key
        why = route_drift(route, ev.deleted, self.protocol, self._desired().forwarding.get(key), self._keep(),
                          self.links.ifindex)
        if why is not None:
            self.kick(why, key)

    def on_link(self, ev: events.LinkEvent) -> None:
        link = ev.link
        old = self.links.apply(ev)
        book, named = self.book, self._desired().devices
        lost, gained = link_drift(old, link, ev.deleted, named)
        if gained and book.refused:
            book.retry_now()  # a way out appeared: what the kernel refused may fit now
        # a new way out matters to routes waiting for one, or to those naming the link
        if lost or (gained and (book.refused or book.unreachable or link.name in named)):
            event(log, "link_changed", ifindex=link.index, ifname=link.name, usable=link.usable and not ev.deleted,
                  deleted=ev.deleted)
            self.kick("link_changed")

    async def reconcile_now(self, reconcile: Callable[[], Awaitable[object]]) -> None:
        """One reconcile; one that fails (netlink, OS) is tried again a second later by the loop."""
        self.dirty = trio.Event()
        try:
            await reconcile()
        except (netlink.NetlinkError, OSError) as exc:
            event(log, "reconcile_failed", logging.ERROR, reason=str(exc))
            await trio.sleep(1.0)
            self.dirty.set()

    async def reconcile_when_due(self, reconcile: Callable[[], Awaitable[object]], resync_interval: float,
                                 debounce: float, busy: Callable[[], bool] = lambda: False) -> None:
        """Forever: wait for drift, a refused route due again, or the resync; let a burst of events
        settle for `debounce` seconds; reconcile. The periodic resync waits while `busy()` (a burst
        being programmed), by one more interval at most: a dump and diff of the whole table in the
        middle of 100k changes held the sends back by 0.2-0.5 s, at a random moment of the burst."""
        while True:
            wait = resync_interval
            retry = self.book.next_retry()  # a refused route due again before the periodic resync
            if retry is not None:
                wait = max(min(wait, retry - trio.current_time()), 0.0)
            with trio.move_on_after(wait) as waited:
                await self.dirty.wait()
            if waited.cancelled_caught and retry is None:  # only the periodic resync is due
                latest = trio.current_time() + resync_interval
                while busy() and not self.dirty.is_set() and trio.current_time() < latest:
                    with trio.move_on_after(BUSY_POLL):
                        await self.dirty.wait()
            await trio.sleep(debounce)
            await self.reconcile_now(reconcile)
