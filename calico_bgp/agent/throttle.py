"""Events of one kind at most `burst` per `window` seconds, then one summary of the rest.

Pure: the caller passes `now` and emits what it is handed. Used where one cause can make many
events at once (a bulk `ip route flush` is thousands of repairs; a link going away fails every
route through it): the event ring keeps its room for other news, and the metric counts every one.
"""
from __future__ import annotations

from typing import Callable

import attrs

from dataplane.ratelimit import BurstLimiter


@attrs.frozen
class Emit:
    """One event to record, as EventLog.emit takes it."""

    kind: str
    prefix: str = ""
    detail: str = ""
    peer: str = ""


class EventThrottle:
    def __init__(self, burst: int, window: float, summary: Callable[[str, int], str]) -> None:
        self.limiter = BurstLimiter(burst, window)
        self.summary = summary  # (kind, how many more) -> the summary's detail

    @property
    def window(self) -> float:
        return self.limiter.window

    def admit(self, kind: str, now: float, prefix: str = "", detail: str = "") -> list[Emit]:
        """What to record for one more event of `kind`: the summary of its window that just ended
        (if it held some back), then the event itself if its window has room."""
        allowed, ended = self.limiter.allow(kind, now)
        out = [self._summary(kind, ended)] if ended else []
        if allowed:
            out.append(Emit(kind, prefix, detail))
        return out

    def due(self, now: float) -> list[Emit]:
        """The summaries of windows over by `now`: said as their window ends, not only when the next
        event of the kind comes."""
        return [self._summary(str(b.key), b.count) for b in self.limiter.due(now)]

    def _summary(self, kind: str, more: int) -> Emit:
        return Emit(kind, detail=self.summary(kind, more))


def repairs() -> EventThrottle:
    """Repairs of our kernel routes: 10 a second, then one summary."""
    return EventThrottle(10, 1.0, lambda _k, n: f"{n} more repairs within a second (the metric counts every one)")


def route_events() -> EventThrottle:
    """route_failed / route_recovered: the ratelimit module's burst per window, then one summary."""
    limiter = BurstLimiter()
    return EventThrottle(limiter.burst, limiter.window,
                         lambda _k, n: f"{n} more within {limiter.window:.0f}s (calico-bgp routes --failed lists them)")
