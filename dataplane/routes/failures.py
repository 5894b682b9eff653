"""Routes not in the kernel as desired, and why: the programmer's failure bookkeeping.

Three kinds are kept apart: routes the kernel refused (each sent again after a doubling back-off,
by the reconcile that comes due; a changed route or a link coming up tries at once), routes the
owner could not express at all (op "build", until their key is desired or removed again), and
desired routes whose next hops cannot be used now (unreachable: logged when it starts and ends).
A route refused again for the same reason is not logged again; per-route lines are rate-limited.
"""
from __future__ import annotations

import errno
import logging
from typing import Iterable, Mapping, Sequence

import attrs

from dataplane import netlink
from dataplane import rtnl_codec as codec
from dataplane.ratelimit import RateLimitedLog
from dataplane.routes.route import Route, RouteKey

log = logging.getLogger("dataplane.routes.programmer")

# errnos that mean "no way to that next hop right now", not "bad route"
UNREACHABLE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENODEV, errno.ENETDOWN})
# a route the kernel refused is sent again (the same route) after 1 s, 2 s, 4 s ... at most 5 min
RETRY_FIRST = 1.0
RETRY_MAX = 300.0
UNBUILDABLE = "build"  # RouteFailure.op of a route its owner could not express (set_desired's `unbuildable`)


def retry_delay(attempts: int) -> float:
    """Seconds before a route refused `attempts` times in a row is sent again."""
    return min(RETRY_FIRST * 2 ** min(max(attempts, 1) - 1, 30), RETRY_MAX)


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


def programmable(keys: Iterable[RouteKey], op: str, routes: Mapping[RouteKey, Route], ifindex: Mapping[str, int],
                 failures: list[RouteFailure]) -> list[RouteKey]:
    """The keys whose devices exist; the others become failures (never sent: the kernel needs an ifindex)."""
    out = []
    for key in keys:
        route = routes[key]
        missing = [h.device for h in route.nexthops if h.device is not None and h.device not in ifindex]
        if missing:
            failures.append(RouteFailure(route, str(route.prefix), op, errno.ENODEV,
                                         netlink.describe_errno(errno.ENODEV, f"no device {missing[0]}")))
        else:
            out.append(key)
    return out


def _op(flags: int) -> str:
    return "add" if flags == codec.NEW_FLAGS else "replace" if flags else "delete"


def reconcile_refusals(refused: Iterable[netlink.RequestFailure], ops: Sequence[tuple[int, RouteKey]],
                       routes: Mapping[RouteKey, Route]) -> list[RouteFailure]:
    """What the kernel refused of a full reconcile's `ops` ((flags, key); flags 0: a delete). A
    delete of a route already gone met its goal."""
    failures = []
    for bad in refused:
        flags, key = ops[bad.index]
        if not flags and bad.errno == errno.ESRCH:
            continue
        route = routes.get(key) if flags else None
        failures.append(RouteFailure(route, str(route.prefix) if route else str(key.prefix()), _op(flags),
                                     bad.errno, bad.reason))
    return failures


def program_refusals(refused: Iterable[netlink.RequestFailure], ops: Sequence[tuple[int, RouteKey]],
                     routes: Mapping[RouteKey, Route]) -> tuple[list[RouteFailure], int, set[RouteKey]]:
    """What the kernel refused of an incremental change: (failures, conflicts, every refused key). An
    exclusive add that met a route on its key is a conflict (ours left from before, or a foreign
    route), for the full reconcile to settle; a delete of a route already gone met its goal."""
    failures, conflicts, bad_keys = [], 0, set()
    for bad in refused:
        flags, key = ops[bad.index]
        bad_keys.add(key)
        if not flags:
            if bad.errno != errno.ESRCH:
                failures.append(RouteFailure(None, str(key.prefix()), "delete", bad.errno, bad.reason))
            continue
        if flags == codec.NEW_FLAGS and bad.errno == errno.EEXIST:
            conflicts += 1
            continue
        route = routes[key]
        failures.append(RouteFailure(route, str(route.prefix), _op(flags), bad.errno, bad.reason))
    return failures, conflicts, bad_keys


class FailureBook:
    """The failures as of the last reconcile and the changes since. `changes` grows whenever what
    `all()` says may have changed: a cheap test for readers."""

    def __init__(self) -> None:
        self.refused: dict[RouteKey, RouteFailure] = {}  # sent again after a back-off
        self.unbuildable: dict[RouteKey, RouteFailure] = {}  # what the owner wanted and could not express
        self.unreachable: dict[RouteKey, str] = {}
        self.changes = 0
        self.warn = RateLimitedLog(log)

    def all(self) -> dict[RouteKey, RouteFailure]:
        if not self.unbuildable:
            return dict(self.refused)
        return {**self.refused, **self.unbuildable}

    def count(self) -> int:
        return len(self.refused) + len(self.unbuildable)

    # -- refused routes ------------------------------------------------------------------------
    def held_back(self, adds: Iterable[RouteKey], replaces: Iterable[RouteKey], routes: Mapping[RouteKey, Route],
                  now: float) -> dict[RouteKey, RouteFailure]:
        """Of the keys to add or replace, those whose same route was refused and whose back-off is
        not over, with their failure records."""
        if not self.refused:
            return {}
        wanted = set(adds)
        wanted.update(replaces)
        return {k: f for k, f in self.refused.items()
                if f.retry_at > now and f.route is not None and k in wanted and routes.get(k) == f.route}

    def stamp(self, failures: list[RouteFailure], now: float) -> list[RouteFailure]:
        """Failures with their attempt count (the same route refused again counts up) and the time
        of the next try; a route refused for a new reason is logged (a retry refused alike is not)."""
        out = []
        previous = self.refused
        for f in failures:
            key = f.route.key if f.route is not None else None
            prev = previous.get(key) if key is not None else None
            attempts = prev.attempts + 1 if prev is not None and prev.route == f.route else 1
            if prev is None or prev.reason != f.reason or prev.op != f.op:
                self.warn.warning("route_failed", op=f.op, prefix=f.prefix, route=str(f.route or f.prefix),
                                  errno=f.errno, reason=f.reason)
            out.append(attrs.evolve(f, attempts=attempts, retry_at=now + retry_delay(attempts)))
        return out

    def next_retry(self) -> float | None:
        """When (trio clock) the first refused route is due to be sent again; None: none is waiting."""
        return min((f.retry_at for f in self.refused.values() if f.route is not None), default=None)

    def retry_now(self) -> None:
        """Forget the back-off of every refused route: the next reconcile sends them all again."""
        if self.refused:
            self.refused = {k: attrs.evolve(f, retry_at=0.0) for k, f in self.refused.items()}

    def record(self, failures: list[RouteFailure], down: Mapping[RouteKey, int], routes: Mapping[RouteKey, Route],
               held: Mapping[RouteKey, RouteFailure]) -> None:
        """After a full reconcile: its failures (and those held back) are all there are. `down`: the
        keys with next hops on a link that is down, and how many."""
        self.refused = dict(held)
        self.changes += 1
        unreachable: dict[RouteKey, str] = {k: f.reason for k, f in held.items() if f.unreachable}
        for failure in failures:
            if failure.route is not None:
                key = failure.route.key
                self.refused[key] = failure
                if failure.unreachable:
                    unreachable[key] = failure.reason
        for key, n_down in down.items():
            route = routes[key]
            if n_down >= len(route.nexthops):
                unreachable[route.key] = "all next hops are dead or link-down"
            else:
                self.warn.warning("route_degraded", prefix=route.prefix, nexthops_down=n_down, of=len(route.nexthops))
        self._set_unreachable(unreachable)

    def record_some(self, keys: Iterable[RouteKey], failures: list[RouteFailure]) -> None:
        """After an incremental change: the outcome for `keys` replaces what was said of them."""
        if not (failures or self.refused or self.unreachable):
            return
        self.changes += 1
        unreachable = dict(self.unreachable)
        for key in keys:
            self.refused.pop(key, None)
            unreachable.pop(key, None)
        for failure in failures:
            if failure.route is not None:
                self.refused[failure.route.key] = failure
                if failure.unreachable:
                    unreachable[failure.route.key] = failure.reason
        self._set_unreachable(unreachable)

    def _set_unreachable(self, unreachable: dict[RouteKey, str]) -> None:
        for key in unreachable.keys() - self.unreachable.keys():
            self.warn.warning("nexthop_unreachable", prefix=key.prefix(), reason=unreachable[key])
        for key in self.unreachable.keys() - unreachable.keys():
            self.warn.info("nexthop_reachable", prefix=key.prefix())
        self.unreachable = unreachable

    # -- routes the owner could not build ------------------------------------------------------
    def set_unbuildable(self, unbuildable: Mapping[RouteKey, tuple[str, str]], replace: bool = False) -> None:
        """key -> (prefix, why): added to those known, or (`replace`) instead of them. One already
        known for the same reason keeps its record and is not logged again."""
        old = self.unbuildable
        new = {} if replace else dict(old)
        for key, (prefix, why) in unbuildable.items():
            known = old.get(key)
            if known is not None and known.reason == why:
                new[key] = known
                continue
            new[key] = RouteFailure(None, prefix, UNBUILDABLE, errno.EINVAL, why)
            self.warn.warning("route_unbuildable", prefix=prefix, reason=why)
        if new or old:
            self.changes += 1
        self.unbuildable = new

    def forget_unbuildable(self, keys: Iterable[RouteKey]) -> None:
        """These keys are desired again, or not at all: no longer unbuildable."""
        gone = [k for k in keys if k in self.unbuildable]
        for key in gone:
            del self.unbuildable[key]
        if gone:
            self.changes += 1
