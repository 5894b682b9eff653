"""Per-route warnings and events, bounded: the first of a burst in full, the rest counted and said once."""
import logging

import pytest

from dataplane.ratelimit import Burst, BurstLimiter, RateLimitedLog
from dataplane.routes.failures import RETRY_MAX, retry_delay


def test_a_burst_is_allowed_up_to_its_limit_and_the_rest_is_counted_per_key():
    lim = BurstLimiter(burst=3, window=10.0)
    assert [lim.allow("a", 0.0)[0] for _ in range(5)] == [True, True, True, False, False]
    assert lim.allow("b", 1.0) == (True, 0)  # another key, its own window
    assert lim.due(9.9) == []
    assert lim.due(10.0) == [Burst("a", 2, 0.0, 0.0)]  # b held nothing back: no summary
    # a key whose window ended while it was busy: the next call says how many the old one held back
    for _ in range(4):
        lim.allow("c", 20.0)
    assert lim.allow("c", 30.5) == (True, 1)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="burst=0"):
        BurstLimiter(burst=0)


def test_twenty_thousand_warnings_are_ten_lines_and_one_count(caplog):
    """It used to be: 20k prefixes with host bits gave 20,001 log lines (event=bad_nlri per NLRI)."""
    now = [0.0]
    warn = RateLimitedLog(logging.getLogger("t"), burst=10, window=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="t"):
        for i in range(20_000):
            warn.warning("bad_nlri", "prefix=%s", f"198.19.0.{i % 256}/16")
        now[0] = 10.0
        warn.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 11 and all(x.startswith("event=bad_nlri prefix=") for x in lines[:10])
    assert lines[10] == "event=log_suppressed of=bad_nlri count=19990 window=10s"
    assert warn.suppressed == 19_990


def test_a_refused_route_is_retried_after_a_doubling_delay_capped_at_five_minutes():
    assert [retry_delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert retry_delay(10) == RETRY_MAX == 300.0 and retry_delay(10_000) == RETRY_MAX


def test_fields_are_written_as_logfmt_and_limited_alike(caplog):
    warn = RateLimitedLog(logging.getLogger("t"), burst=1, window=10.0, clock=lambda: 0.0)
    with caplog.at_level(logging.INFO, logger="t"):
        assert warn.warning("route_failed", op="add", prefix="198.18.1.0/24", reason="No route to host")
        assert not warn.warning("route_failed", op="add", prefix="198.18.2.0/24", reason="x")
    assert [r.getMessage() for r in caplog.records] == [
        'event=route_failed op=add prefix=198.18.1.0/24 reason="No route to host"']


def test_a_held_line_tells_its_owner_and_is_pending_until_its_summary_is_said(caplog):
    """An owner that flushes on a clock tick sleeps while nothing is `pending` and wakes on `on_held`."""
    now, held = [0.0], []
    warn = RateLimitedLog(logging.getLogger("t"), burst=1, window=10.0, clock=lambda: now[0])
    warn.on_held = lambda: held.append(now[0])
    assert warn.warning("x") and held == [] and warn.pending() == 0
    assert not warn.warning("x") and not warn.warning("x")
    assert held == [0.0, 0.0] and warn.pending() == 2
    now[0] = 10.0
    with caplog.at_level(logging.INFO, logger="t"):
        warn.flush()
    assert warn.pending() == 0 and caplog.records[-1].getMessage() == "event=log_suppressed of=x count=2 window=10s"
