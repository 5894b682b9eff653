"""Route flap damping in the spirit of RFC 2439, applied between the speaker and the RIB.

Pure: the caller passes `now` (monotonic seconds). Each (peer, prefix) carries a figure of merit
(penalty) that rises by `withdraw_penalty` on every withdrawal and `attribute_penalty` on every
attribute change, and decays exponentially with `half_life`. Above `suppress` the path is hidden
from the RIB (so the kernel stops churning); once it decays below `reuse` the latest announcement,
if any, is handed back. The penalty is capped so no path stays suppressed longer than
`max_suppress` after its last flap. Defaults are the usual vendor ones (Cisco/Juniper/FRR).
"""
from __future__ import annotations

import math
from typing import Callable, Generic, Hashable, Iterable, Mapping, TypeVar

import attrs

A = TypeVar("A")  # path attributes, opaque here
Key = tuple[str, Hashable]  # (peer address, prefix)


@attrs.frozen(slots=True)
class DampingParams:
    half_life: float = 900.0          # seconds for the penalty to halve
    reuse: float = 750.0
    suppress: float = 2000.0
    max_suppress: float = 3600.0      # seconds a stable path may stay suppressed at most
    withdraw_penalty: float = 1000.0
    attribute_penalty: float = 500.0

    def __attrs_post_init__(self) -> None:
        if not 0 < self.reuse < self.suppress:
            raise ValueError(f"damping: need 0 < reuse ({self.reuse}) < suppress ({self.suppress})")
        if self.half_life <= 0 or self.max_suppress <= 0:
            raise ValueError("damping: halfLife and maxSuppress must be positive")

    @property
    def ceiling(self) -> float:
        """Penalty that decays to `reuse` in exactly `max_suppress` (RFC 2439 4.2)."""
        return self.reuse * 2 ** (self.max_suppress / self.half_life)

    def decay(self, penalty: float, elapsed: float) -> float:
        return penalty * 2 ** (-elapsed / self.half_life) if elapsed > 0 else penalty

    def time_to(self, penalty: float, target: float) -> float:
        """Seconds until `penalty` decays to `target`."""
        return 0.0 if penalty <= target else self.half_life * math.log2(penalty / target)


@attrs.frozen(slots=True)
class FlapState:
    penalty: float
    updated: float
    suppressed: bool
    flaps: int


@attrs.frozen(slots=True)
class DampingChange:
    """What the RIB should see after damping: paths to install and paths to remove."""

    announce: dict[Key, object]
    withdraw: list[Key]
    suppressed: list[Key]     # newly suppressed
    reused: list[Key]         # released from suppression


class Dampener(Generic[A]):
    """Tracks penalties per (peer, prefix) and filters the stream of updates the RIB sees."""

    def __init__(self, params: DampingParams, enabled: bool = True) -> None:
        self.params = params
        self.enabled = enabled
        self._state: dict[Key, FlapState] = {}
        self._latest: dict[Key, A] = {}   # the last announcement, kept while suppressed
        # called when the first path is tracked or a path is suppressed: the timer waiting on `idle` or
        # on a later release wakes
        self.on_news: Callable[[], None] | None = None

    def state(self, key: Key, now: float) -> FlapState | None:
        st = self._state.get(key)
        if st is None:
            return None
        return attrs.evolve(st, penalty=self.params.decay(st.penalty, now - st.updated), updated=now)

    def update(self, peer: str, announced: Mapping[Hashable, A], withdrawn: Iterable[Hashable], now: float) -> DampingChange:
        out = DampingChange({}, [], [], [])
        for prefix in withdrawn:
            key = (peer, prefix)
            had = self._latest.pop(key, None)
            if not self.enabled:
                out.withdraw.append(key)
                continue
            self._penalise(key, now, self.params.withdraw_penalty if had is not None else 0.0, flap=had is not None, out=out)
            out.withdraw.append(key)  # harmless when the RIB never saw it (suppressed)
        for prefix, path_attrs in announced.items():
            key = (peer, prefix)
            previous = self._latest.get(key)
            self._latest[key] = path_attrs
            if not self.enabled:
                out.announce[key] = path_attrs
                continue
            changed = previous is not None and previous != path_attrs
            st = self._penalise(key, now, self.params.attribute_penalty if changed else 0.0, flap=False, out=out)
            if not st.suppressed:
                out.announce[key] = path_attrs
        return out

    def _penalise(self, key: Key, now: float, amount: float, flap: bool, out: DampingChange) -> FlapState:
        p = self.params
        st = self._state.get(key)
        if st is None and amount == 0:
            return FlapState(0.0, now, False, 0)
        penalty = p.decay(st.penalty, now - st.updated) if st else 0.0
        penalty = min(penalty + amount, p.ceiling)
        suppressed = bool(st and st.suppressed)
        if not suppressed and penalty > p.suppress:
            suppressed = True
            out.suppressed.append(key)
            if key in self._latest:  # hide the path that is installed now
                out.withdraw.append(key)
        new = FlapState(penalty, now, suppressed, (st.flaps if st else 0) + int(flap))
        self._state[key] = new
        if self.on_news is not None and (len(self._state) == 1 and st is None or suppressed and not (st and st.suppressed)):
            self.on_news()
        return new

    def reconfigured(self, params: DampingParams, enabled: bool, now: float,
                     received: Iterable[tuple[Key, A]] = ()) -> tuple["Dampener[A]", DampingChange]:
        """The same paths and penalties under new parameters. Turned off, everything suppressed is
        released (returned like `release()` does); otherwise the next `release()` applies the new reuse.

        While off, the dampener is not fed at all (a 100k-prefix burst costs it nothing), so turning
        it on takes the latest path per key from `received` (what the RIB holds, accepted or not):
        the first withdraw after counts as the flap it is, as if damping had always been on."""
        new: Dampener[A] = Dampener(params, enabled)
        new.on_news = self.on_news
        if enabled:
            new._latest = dict(self._latest) if self.enabled else dict(received)
        out = DampingChange({}, [], [], [])
        for key, st in self._state.items():
            if enabled:
                new._state[key] = attrs.evolve(st, penalty=self.params.decay(st.penalty, now - st.updated), updated=now)
            elif st.suppressed:
                out.reused.append(key)
                if key in self._latest:
                    out.announce[key] = self._latest[key]
        if new._state and new.on_news is not None:
            new.on_news()
        return new, out

    def peer_down(self, peer: str, now: float) -> list[Key]:
        """A session drop withdraws everything the peer sent: each path takes a withdrawal's penalty
        and counts a flap (RFC 2439: a route lost with its session is withdrawn), so a peer whose
        session flaps gets its routes suppressed like one that flaps them by UPDATE. Returns the
        keys that became suppressed."""
        out = DampingChange({}, [], [], [])
        for key in [k for k in self._latest if k[0] == peer]:
            del self._latest[key]
            if self.enabled:
                self._penalise(key, now, self.params.withdraw_penalty, flap=True, out=out)
        return out.suppressed

    def release(self, now: float) -> DampingChange:
        """Reuse every suppressed path whose penalty decayed below `reuse`; forget fully decayed state."""
        out = DampingChange({}, [], [], [])
        for key, st in list(self._state.items()):
            penalty = self.params.decay(st.penalty, now - st.updated)
            if st.suppressed and penalty < self.params.reuse:
                out.reused.append(key)
                if key in self._latest:
                    out.announce[key] = self._latest[key]
                self._state[key] = FlapState(penalty, now, False, st.flaps)
            elif not st.suppressed and penalty < self.params.reuse / 2:
                del self._state[key]
        return out

    def idle(self) -> bool:
        """Nothing tracked: no release due and nothing to forget until a path flaps (`on_news`)."""
        return not self._state

    def next_release(self, now: float) -> float | None:
        """Seconds until the earliest suppressed path may be reused (None when nothing is suppressed)."""
        waits = [self.params.time_to(self.params.decay(st.penalty, now - st.updated), self.params.reuse)
                 for st in self._state.values() if st.suppressed]
        return min(waits) if waits else None

    def suppressed(self, now: float) -> list[tuple[Key, FlapState]]:
        return [(k, self.state(k, now)) for k, st in self._state.items() if st.suppressed]  # type: ignore[misc]
