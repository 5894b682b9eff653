"""Which peers are held idle after their sessions kept failing, and until when. Pure: the caller
passes `now` (monotonic seconds) and does the holding (the agent leaves a held peer out of the
speaker's neighbours, so ExaBGP neither dials it nor accepts it).

RFC 4271 8.1.1 (IdleHoldTime, DampPeerOscillations): a peer whose session is reset for errors again
and again stays Idle for a time that grows with each reset, and the count starts again after a
stable period. Here the first reset for errors holds the peer 5 s, each further one twice as long,
up to 5 min, a session that slipped in while the hold was taking effect included; 5 min Established
forgives the past. The agent's own maxPrefixes teardown is a reset of
its own kind (30 s doubling to 10 min), counted apart.

"Reset for errors" (`is_error_reset`): an Established session that went down with a NOTIFICATION
sent or received other than Cease, or that went down within `QUICK` seconds of coming up. Normal
administrative changes never count, on either side: a Cease we send (a BGPPeer edited or removed, a
speaker reload), our ExaBGP closing a graceful-restart session or exiting, and a peer's Cease saying
so (RFC 4486: Administrative Shutdown 2, Peer De-configured 3, Administrative Reset 4, Other
Configuration Change 6).
"""
from __future__ import annotations

import re

import attrs

EXABGP_EXITED = "exabgp exited"  # the reason of a session that ended because our ExaBGP itself went away
QUICK = 15.0        # seconds: a session that goes down sooner after coming up counts as failing
STABLE = 300.0      # seconds Established after which the count of resets starts again
_NOTIFICATION = re.compile(r"notification (sent|received) \((\d+),(\d+)\)")
ADMIN_CEASE = frozenset({2, 3, 4, 6})  # RFC 4486 subcodes an operator's change sends
OURS = ("stop", "graceful restarted negotiated")  # ExaBGP's reasons when it closes a session itself


@attrs.frozen
class Policy:
    first: float   # seconds held after the first reset of this kind
    most: float    # the hold never grows beyond this

    def hold_for(self, strikes: int) -> float:
        return min(self.first * 2 ** (strikes - 1), self.most)


ERRORS = Policy(5.0, 300.0)
MAX_PREFIXES = Policy(30.0, 600.0)


@attrs.frozen
class Hold:
    until: float
    seconds: float
    strikes: int    # resets of this kind in a row, this one included
    why: str


@attrs.define
class _PeerRecord:
    up_at: float | None = None
    strikes: dict[str, int] = attrs.field(factory=dict)   # policy name -> resets in a row
    hold: Hold | None = None


def is_error_reset(reason: str, up_for: float) -> bool:
    """Whether a session that was Established for `up_for` seconds and went down for `reason`
    (ExaBGP's words: "notification sent (3,1)", "closing connection", ...) was reset for errors."""
    if reason == EXABGP_EXITED or reason.startswith(OURS):
        return False  # our speaker went away or closed the session: nothing the peer did
    found = _NOTIFICATION.search(reason)
    if found:
        direction, code, subcode = found.group(1), int(found.group(2)), int(found.group(3))
        if code != 6:
            return True  # header, OPEN, UPDATE, hold timer or FSM error, either way
        if direction == "sent" or subcode in ADMIN_CEASE:
            return False  # an administrative change, ours or the peer's
    return up_for < QUICK


class SessionBackoff:
    def __init__(self, stable: float = STABLE) -> None:
        self.stable = stable
        self._peers: dict[str, _PeerRecord] = {}

    def established(self, peer: str, now: float) -> None:
        self._peers.setdefault(peer, _PeerRecord()).up_at = now

    def went_down(self, peer: str, now: float, reason: str) -> Hold | None:
        """Record that `peer`'s session went down; the hold it earned, if it was reset for errors and that
        lengthens the hold running now."""
        rec = self._peers.setdefault(peer, _PeerRecord())
        up_at, rec.up_at = rec.up_at, None
        if up_at is None:
            return None  # was not Established: ExaBGP's own connect back-off covers failed attempts
        if now - up_at >= self.stable:
            rec.strikes.clear()
        if not is_error_reset(reason, now - up_at):
            return None
        # a session that got in while a hold was starting (ExaBGP takes about a second to reload its
        # neighbours) and failed again is one more reset: it doubles the hold like any other
        before = rec.hold
        hold = self._strike(rec, "errors", ERRORS, now, f"reset for errors ({reason or 'connection lost'})")
        return None if hold is before else hold  # None: a longer hold (e.g. maxPrefixes) already runs

    def hold(self, peer: str, now: float, policy: Policy, kind: str, why: str) -> Hold:
        """Hold `peer` for one more reset of `kind` (e.g. the agent's maxPrefixes teardown)."""
        return self._strike(self._peers.setdefault(peer, _PeerRecord()), kind, policy, now, why)

    def _strike(self, rec: _PeerRecord, kind: str, policy: Policy, now: float, why: str) -> Hold:
        n = rec.strikes.get(kind, 0) + 1
        rec.strikes[kind] = n
        seconds = policy.hold_for(n)
        until = now + seconds
        if rec.hold is not None and rec.hold.until > until:
            return rec.hold  # a longer hold already runs
        rec.hold = Hold(until, seconds, n, f"{why}: held idle for {seconds:.0f}s (reset {n} in a row)")
        return rec.hold

    def held(self, now: float) -> dict[str, Hold]:
        """The peers held now."""
        return {p: r.hold for p, r in self._peers.items() if r.hold is not None and r.hold.until > now}

    def next_end(self, now: float) -> float | None:
        """When the next hold running now ends."""
        return min((h.until for h in self.held(now).values()), default=None)

    def strikes(self, peer: str, kind: str = "errors") -> int:
        rec = self._peers.get(peer)
        return rec.strikes.get(kind, 0) if rec else 0

    def forget(self, peer: str) -> None:
        """A session removed from the configuration starts with a clean record if it comes back."""
        self._peers.pop(peer, None)
