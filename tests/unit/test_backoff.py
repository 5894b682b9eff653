"""calico_bgp.routing.backoff: IdleHoldTime that grows for a peer reset for errors again and again
(RFC 4271 8.1.1 DampPeerOscillations), forgiven after a stable period; admin changes never count."""
from __future__ import annotations

import pytest

from calico_bgp.routing.backoff import ERRORS, MAX_PREFIXES, QUICK, STABLE, SessionBackoff, is_error_reset

P = "198.18.0.50"


@pytest.mark.parametrize("reason, up_for, error", [
    ("notification sent (3,1)", 1000.0, True),        # we found its UPDATE malformed
    ("notification received (1,1)", 1000.0, True),    # it found ours out of sync
    ("notification sent (4,0)", 1000.0, True),        # hold timer
    ("notification sent (6,3)", 1.0, False),          # our Cease: peer de-configured, an admin change
    ("notification sent (6,1)", 1.0, False),          # our maxPrefixes Cease: held by its own policy
    ("notification received (6,2)", 2.0, False),      # its operator shut it down (RFC 4486 admin)
    ("notification received (6,4)", 2.0, False),      # ... or reset it
    ("notification received (6,6)", 2.0, False),      # ... or changed its configuration
    ("notification received (6,5)", 2.0, True),       # Connection Rejected straight after coming up
    ("notification received (6,8)", 1000.0, False),   # Out of Resources after a long session
    ("closing connection", 2.0, True),                # TCP gone right after coming up
    ("closing connection", QUICK + 1, False),         # a peer that restarts after a while
    ("exabgp exited", 0.5, False),                    # our own speaker, not the peer
    ("stop, message [shutting down]", 0.5, False),
    ("graceful restarted negotiated, closing without sending any notification", 0.5, False),
])
def test_what_counts_as_a_reset_for_errors(reason, up_for, error):
    assert is_error_reset(reason, up_for) is error


def _flap(b: SessionBackoff, now: float, up_for: float = 1.0, reason: str = "notification sent (3,1)"):
    b.established(P, now)
    return b.went_down(P, now + up_for, reason)


def test_the_hold_doubles_from_5s_to_5min():
    b, now, holds = SessionBackoff(), 0.0, []
    for _ in range(9):
        h = _flap(b, now)
        holds.append(h.seconds)
        assert b.held(now + 1.0 + h.seconds - 0.01) == {P: h} and b.held(now + 1.0 + h.seconds) == {}
        assert b.next_end(now + 1.0) == h.until
        now = h.until + 0.5
    assert holds == [5, 10, 20, 40, 80, 160, 300, 300, 300]


def test_the_why_names_the_reason_the_hold_and_the_count():
    b = SessionBackoff()
    _flap(b, 0.0)
    h = _flap(b, 10.0)
    assert h.why == "reset for errors (notification sent (3,1)): held idle for 10s (reset 2 in a row)"


def test_a_session_that_slipped_in_before_the_hold_took_effect_doubles_it():
    b = SessionBackoff()
    _flap(b, 0.0)
    second = _flap(b, 1.1)
    assert second.seconds == 10 and second.until == 12.1 and b.strikes(P) == 2 and b.held(2.0) == {P: second}


def test_a_stable_session_forgives_the_past():
    b = SessionBackoff()
    for t in (0.0, 10.0, 30.0):
        _flap(b, t)
    assert b.strikes(P) == 3
    b.established(P, 100.0)
    h = b.went_down(P, 100.0 + STABLE, "notification received (3,1)")  # an error after 5 min up
    assert h is not None and h.strikes == 1 and h.seconds == ERRORS.first


def test_admin_changes_and_slow_drops_hold_nothing():
    b = SessionBackoff()
    assert _flap(b, 0.0, reason="notification sent (6,3)") is None
    assert _flap(b, 10.0, up_for=QUICK + 5, reason="closing connection") is None
    assert b.went_down(P, 50.0, "notification sent (3,1)") is None  # never came up: ExaBGP's connect back-off
    assert b.held(60.0) == {} and b.strikes(P) == 0


def test_max_prefixes_is_counted_apart_and_a_longer_hold_is_kept():
    b = SessionBackoff()
    first = b.hold(P, 0.0, MAX_PREFIXES, "max-prefixes", "max prefixes exceeded (5 > 4)")
    assert first.seconds == 30 and b.strikes(P) == 0 and b.strikes(P, "max-prefixes") == 1
    assert _flap(b, 1.0) is None and b.held(20.0) == {P: first}  # a shorter hold than the 30 s one running
    assert b.strikes(P) == 1  # ... still counted
    assert b.hold(P, 2.0, ERRORS, "errors", "x").until == first.until  # a shorter hold never cuts it
    assert b.hold(P, 40.0, MAX_PREFIXES, "max-prefixes", "again").seconds == 60


def test_forget_starts_a_removed_peer_afresh():
    b = SessionBackoff()
    _flap(b, 0.0)
    b.forget(P)
    assert b.held(1.0) == {} and _flap(b, 2.0).seconds == ERRORS.first
