"""Bounded per-route warnings: the first few of a burst in full, the rest counted and said once.

A peer can send 20k prefixes with host bits, the kernel can refuse 10k routes at once: one line per
route floods the log and costs the agent more than the routes do. `BurstLimiter` decides (pure: the
caller passes the time); `RateLimitedLog` is the logging front used wherever a per-route warning is
logged, in `dataplane` and in `calico_bgp` alike (it lives here because `dataplane` imports nothing
of `calico_bgp`). The agent's event log uses a `BurstLimiter` the same way for per-route events.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Hashable, NamedTuple

from dataplane import logfmt

BURST = 10       # lines per key in one window
WINDOW = 10.0    # seconds


class Burst(NamedTuple):
    """What one ended window of a key held back: how many, and when the first and the last came."""

    key: Hashable
    count: int
    first: float
    last: float


class BurstLimiter:
    """Per key: the first `burst` calls of each `window` seconds are allowed, the rest counted.
    A window opens with its first call; `due(now)` closes the windows that are over and returns a
    `Burst` for each that held something back, in the order their held-back calls began."""

    __slots__ = ("burst", "window", "_open", "_earliest")

    def __init__(self, burst: int = BURST, window: float = WINDOW) -> None:
        if burst < 1 or not window > 0:
            raise ValueError(f"burst={burst!r} window={window!r}: need burst >= 1 and window > 0")
        self.burst = burst
        self.window = window
        self._open: dict[Hashable, list[float]] = {}  # key -> [window start, calls, held back, first, last held]
        self._earliest = float("inf")  # the oldest open window's start: `due` is one comparison until then

    def allow(self, key: Hashable, now: float) -> tuple[bool, int]:
        """(whether this call may go out, how many a window of `key` that just ended held back)."""
        w = self._open.get(key)
        ended = 0
        if w is None or now - w[0] >= self.window:
            ended = int(w[2]) if w is not None else 0
            w = self._open[key] = [now, 0, 0, 0.0, 0.0]
            self._earliest = min(self._earliest, now)
        w[1] += 1
        if w[1] <= self.burst:
            return True, ended
        if not w[2]:
            w[3] = now
        w[2] += 1
        w[4] = now
        return False, ended

    def due(self, now: float) -> list[Burst]:
        """The windows over by `now` that held something back; every window over is forgotten, so
        memory follows the keys active in the last window."""
        if now - self._earliest < self.window:
            return []
        out = []
        for key, w in list(self._open.items()):
            if now - w[0] >= self.window:
                del self._open[key]
                if w[2]:
                    out.append(Burst(key, int(w[2]), w[3], w[4]))
        self._earliest = min((w[0] for w in self._open.values()), default=float("inf"))
        return sorted(out, key=lambda b: b.first)

    def pending(self) -> int:
        """Calls held back in windows not yet over."""
        return sum(int(w[2]) for w in self._open.values())


class RateLimitedLog:
    """`event=NAME ...` lines at most `burst` per `window` seconds per NAME; what is held back is
    logged as one `event=log_suppressed of=NAME count=N` line when the window ends (on the next line
    of that NAME, or at `flush()`, which an owner with a clock tick calls)."""

    def __init__(self, logger: logging.Logger, burst: int = BURST, window: float = WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.limiter = BurstLimiter(burst, window)
        self.clock = clock
        self.suppressed = 0  # lines held back since this was made (tests, metrics)
        self.on_held: Callable[[], None] | None = None  # a line held back: an owner asleep must `flush()`

    def log(self, level: int, event: str, fmt: str = "", *args: object, **fields: Any) -> bool:
        """One line, unless this window of `event` is full: `fmt % args` after `event=NAME`, or
        `fields` as logfmt.event renders them."""
        allowed, ended = self.limiter.allow(event, self.clock())
        if ended:
            self._summary(event, ended)
        if not allowed:
            self.suppressed += 1
            if self.on_held is not None:
                self.on_held()
            return False
        if fields:
            self.logger.log(level, "%s", logfmt.line(event, **fields))
        else:
            self.logger.log(level, "event=%s " + fmt, event, *args)
        return True

    def warning(self, event: str, fmt: str = "", *args: object, **fields: Any) -> bool:
        return self.log(logging.WARNING, event, fmt, *args, **fields)

    def info(self, event: str, fmt: str = "", *args: object, **fields: Any) -> bool:
        return self.log(logging.INFO, event, fmt, *args, **fields)

    def pending(self) -> int:
        """Lines held back whose summary `flush()` has yet to say."""
        return self.limiter.pending()

    def flush(self) -> None:
        for burst in self.limiter.due(self.clock()):
            self._summary(str(burst.key), burst.count)

    def _summary(self, event: str, count: int) -> None:
        self.logger.warning("event=log_suppressed of=%s count=%d window=%gs", event, count, self.limiter.window)
