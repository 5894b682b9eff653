"""Peer stability and route churn bookkeeping. Pure: the caller passes `now` (monotonic seconds).

A flap is an Established session going down. Per peer we keep the transitions, the flaps inside
sliding windows, the last N sessions with how they ended, and an update-rate estimate; per prefix
the announce/withdraw counts. Memory is bounded: histories are capped rings.
"""
from __future__ import annotations

import collections
import heapq
import math
from typing import Deque, Hashable, Iterable

import attrs

FLAP_WINDOWS = (60.0, 900.0, 3600.0)   # 1 min, 15 min, 1 h
RATE_TAU = 10.0                        # seconds: time constant of the churn-rate average
CHURN_WINDOW = 10.0                    # seconds: a prefix changing more than CHURN_LIMIT times in one
CHURN_LIMIT = 10                       # ... is reported (prefix_churn), whether damping is on or off
TOP_KEPT = 64                          # the busiest prefixes ChurnTracker keeps ranked (top(n) for n up to it)


@attrs.frozen(slots=True)
class SessionRecord:
    """One past session: when it came up, how long it lasted, why it ended."""

    up_at: float
    down_at: float
    reason: str

    @property
    def duration(self) -> float:
        return self.down_at - self.up_at


@attrs.define(slots=True)
class PeerStability:
    peer: str
    state: str = "idle"
    established_at: float | None = None
    transitions: int = 0
    flaps: int = 0
    last_error: str = ""
    history: Deque[SessionRecord] = attrs.field(factory=lambda: collections.deque(maxlen=20))
    flap_times: Deque[float] = attrs.field(factory=lambda: collections.deque(maxlen=1000))
    updates_in: int = 0
    withdrawals_in: int = 0
    _rate: float = 0.0
    _rate_at: float | None = None

    def transition(self, state: str, now: float, reason: str = "") -> bool:
        """Record a session state change; returns True when it was a flap (Established -> down)."""
        if state == self.state:
            return False
        self.transitions += 1
        flapped = self.state == "established" and state != "established"
        if flapped:
            self.flaps += 1
            self.flap_times.append(now)
            self.history.append(SessionRecord(self.established_at or now, now, reason or "unknown"))
            self.established_at = None
        if reason and state != "established":
            self.last_error = reason
        if state == "established":
            self.established_at = now
        self.state = state
        return flapped

    def uptime(self, now: float) -> float:
        return now - self.established_at if self.established_at is not None else 0.0

    def flaps_within(self, window: float, now: float) -> int:
        return sum(1 for t in self.flap_times if now - t <= window)

    def flap_score(self, now: float) -> float:
        """Flaps weighted by recency (each flap counts 1, halving every 15 min): 0 is a quiet peer."""
        return sum(0.5 ** ((now - t) / 900.0) for t in self.flap_times)

    def count_updates(self, announced: int, withdrawn: int, now: float) -> None:
        self.updates_in += announced
        self.withdrawals_in += withdrawn
        self._decay_rate(now)
        self._rate += (announced + withdrawn) / RATE_TAU

    def churn_rate(self, now: float) -> float:
        """Prefix changes per second, exponentially averaged over ~RATE_TAU seconds."""
        self._decay_rate(now)
        return self._rate

    def _decay_rate(self, now: float) -> None:
        if self._rate_at is not None and now > self._rate_at:
            self._rate *= math.exp(-(now - self._rate_at) / RATE_TAU)
        self._rate_at = now


@attrs.define(slots=True)
class PrefixChurn:
    announces: int = 0
    withdraws: int = 0
    last_change: float = 0.0
    window_start: float = 0.0   # the current churn window: changes counted since, reported once
    window_changes: int = 0


class ChurnTracker:
    """Announce/withdraw counts per prefix, capped at `max_prefixes` (the quietest entries go first).
    `record` returns the prefixes that just went beyond `limit` changes within `window` seconds:
    one report per prefix per window (a window starts at a prefix's first change after the last one ended).

    The busiest TOP_KEPT prefixes are kept aside as they change (`_leaders`, with `_floor`: no other
    entry has more changes than that), so `top` sorts 64 entries, not every prefix seen (it ran
    for every status document: >100 ms after a 100k withdraw). A change costs one comparison unless
    it lifts its prefix above the floor."""

    def __init__(self, max_prefixes: int = 200_000, window: float = CHURN_WINDOW, limit: int = CHURN_LIMIT) -> None:
        self.max_prefixes = max_prefixes
        self.window = window
        self.limit = limit
        self._prefixes: dict[Hashable, PrefixChurn] = {}
        self._leaders: dict[Hashable, int] = {}  # prefix -> its changes: the busiest TOP_KEPT
        self._floor = 0  # with TOP_KEPT leaders: the fewest changes of one; no other entry has more

    def record(self, announced: Iterable[Hashable], withdrawn: Iterable[Hashable], now: float) -> list[Hashable]:
        prefixes = self._prefixes
        window, limit = self.window, self.limit
        churning = []
        for prefix in announced:
            entry = prefixes.get(prefix)
            if entry is None:  # not setdefault: that would build an entry per call
                entry = prefixes[prefix] = PrefixChurn(window_start=now)
            entry.announces += 1
            entry.last_change = now
            if now - entry.window_start >= window:
                entry.window_start, entry.window_changes = now, 0
            entry.window_changes += 1
            if entry.window_changes == limit + 1:
                churning.append(prefix)
            if entry.announces + entry.withdraws > self._floor:
                self._lead(prefix, entry.announces + entry.withdraws)
        for prefix in withdrawn:
            entry = prefixes.get(prefix)
            if entry is None:
                entry = prefixes[prefix] = PrefixChurn(window_start=now)
            entry.withdraws += 1
            entry.last_change = now
            if now - entry.window_start >= window:
                entry.window_start, entry.window_changes = now, 0
            entry.window_changes += 1
            if entry.window_changes == limit + 1:
                churning.append(prefix)
            if entry.announces + entry.withdraws > self._floor:
                self._lead(prefix, entry.announces + entry.withdraws)
        if len(self._prefixes) > self.max_prefixes:
            # down to 90% of the cap: one sort per many UPDATEs, not one per UPDATE once the cap is reached
            keep = self.max_prefixes - self.max_prefixes // 10
            by_quiet = sorted(self._prefixes.items(), key=lambda kv: kv[1].announces + kv[1].withdraws)
            for prefix, _ in by_quiet[: len(self._prefixes) - keep]:
                del self._prefixes[prefix]
            self._rank()
        return churning

    def _lead(self, prefix: Hashable, changes: int) -> None:
        """`prefix` now has `changes`, more than the floor: among the leaders, the quietest leaving
        when they are more than TOP_KEPT (every entry outside then has at most the new floor)."""
        leaders = self._leaders
        leaders[prefix] = changes
        if len(leaders) > TOP_KEPT:
            del leaders[min(leaders, key=leaders.__getitem__)]
            self._floor = min(leaders.values())

    def _rank(self) -> None:
        """The leaders again from every entry (after entries were dropped)."""
        ranked = heapq.nlargest(TOP_KEPT, ((p, c.announces + c.withdraws) for p, c in self._prefixes.items()),
                                key=lambda pc: pc[1])
        self._leaders = dict(ranked)
        self._floor = ranked[-1][1] if len(ranked) == TOP_KEPT else 0

    def get(self, prefix: Hashable) -> PrefixChurn | None:
        return self._prefixes.get(prefix)

    def forget_settled(self, now: float, quiet_for: float = 60.0, keep: int = 1000) -> int:
        """Drop the prefixes that have not changed for `quiet_for` seconds, but the `keep` busiest of
        them (what `routes --churn` shows): a table that came and went is no churn, and an entry per
        prefix ever seen held 100k prefixes after they were withdrawn. Returns how many."""
        prefixes = self._prefixes
        settled = [(p, c) for p, c in prefixes.items() if now - c.last_change >= quiet_for]
        if len(settled) <= keep:
            return 0
        busiest = heapq.nlargest(keep, settled, key=lambda kv: kv[1].announces + kv[1].withdraws)
        self._prefixes = {p: c for p, c in prefixes.items() if now - c.last_change < quiet_for}
        self._prefixes.update(busiest)
        self._rank()
        return len(prefixes) - len(self._prefixes)

    def __len__(self) -> int:
        return len(self._prefixes)

    def top(self, n: int = 20) -> list[tuple[Hashable, PrefixChurn]]:
        """The `n` busiest prefixes, most changes first."""
        if n > TOP_KEPT:
            return heapq.nlargest(n, self._prefixes.items(), key=lambda kv: kv[1].announces + kv[1].withdraws)
        leaders = self._leaders
        return [(p, self._prefixes[p]) for p in sorted(leaders, key=leaders.__getitem__, reverse=True)[:n]]
