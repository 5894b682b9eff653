"""Bursts of one kind of event for one peer, summarised instead of stored one by one. Pure: the
caller passes `now` (wall seconds, as events are stamped).

The event ring keeps a node's last 1,000 events; a peer resetting 600 times in 30 s used to push
everything else out of it. Per (kind, peer, what) the first `keep` events of a window are stored as
they come; the rest are counted, and when the window ends one summary stands for them (how many, the
first and the last). `what` is the detail up to its first colon: the same thing again and again
("notification sent (3,10)") is a burst, different things from one peer (one malformed_update per
reason) are not. Events that name no peer pass through: their own emitters bound them.
"""
from __future__ import annotations

import attrs

from dataplane.ratelimit import BurstLimiter

WINDOW = 30.0   # seconds
KEEP = 5        # events of one kind for one peer stored one by one per window


@attrs.frozen
class Summary:
    kind: str
    peer: str
    what: str      # the detail's category (up to its first colon)
    count: int     # events summarised (not stored one by one)
    first: float
    last: float


class BurstSummariser:
    """The event log's `BurstLimiter` (dataplane/ratelimit.py), keyed by (kind, peer, what)."""

    def __init__(self, window: float = WINDOW, keep: int = KEEP) -> None:
        if window <= 0 or keep < 1:
            raise ValueError(f"window must be > 0 and keep >= 1, got window={window} keep={keep}")
        self._limiter = BurstLimiter(keep, window)

    @property
    def window(self) -> float:
        return self._limiter.window

    def admit(self, kind: str, peer: str, now: float, detail: str = "") -> bool:
        """Whether to store this event one by one; False: it is counted into its window's summary.
        Call `due(now)` first, so a window that ended is summarised before a new one starts."""
        if not peer:
            return True
        return self._limiter.allow((kind, peer, detail.split(":", 1)[0]), now)[0]

    def due(self, now: float) -> list[Summary]:
        """Summaries of the windows that ended by `now` (in the order their bursts began); ended
        windows are forgotten, so memory follows the peers active in the last window."""
        return [Summary(*b.key, b.count, b.first, b.last) for b in self._limiter.due(now)]  # type: ignore[misc]

    def pending(self) -> int:
        """Events counted but not yet summarised."""
        return self._limiter.pending()
