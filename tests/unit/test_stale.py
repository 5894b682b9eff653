"""calico_bgp.routing.graceful_restart: when a peer's kept (stale) routes go, for each reason they are kept."""
from __future__ import annotations

import pytest

from calico_bgp.routing.graceful_restart import (
    GRACEFUL_RESTART,
    SPEAKER_RESTART,
    STALE_PATH_TIME,
    StaleRoutes,
    graceful,
)


def due(s: StaleRoutes, now: float, up: set[str] = frozenset(), quiet: bool = False, eor: set[str] = frozenset()):
    return s.due(now, up.__contains__, quiet, eor.__contains__)


def test_after_our_speaker_restarts_a_peer_up_and_quiet_is_swept_and_one_still_down_goes_at_the_deadline():
    s = StaleRoutes()
    assert s.keep("a", 0.0, 30.0, SPEAKER_RESTART) and s.keep("b", 0.0, 30.0, SPEAKER_RESTART)
    assert due(s, 1.0, up={"a"}) == []                       # up, UPDATEs still arriving
    assert due(s, 2.0, up={"a"}, quiet=True) == [("a", True)]  # up and quiet: what it did not re-send goes
    assert due(s, 29.0) == [] and due(s, 31.0) == [("b", False)]  # down past the deadline: everything goes
    assert "a" not in s and "b" not in s
    # a peer's End-of-RIB ends it without a quiet moment; the deadline ends it for one that never sends one
    assert s.keep("c", 40.0, 30.0, SPEAKER_RESTART) and s.keep("d", 40.0, 30.0, SPEAKER_RESTART)
    assert due(s, 41.0, up={"c", "d"}, eor={"c"}) == [("c", True)]
    assert due(s, 69.0, up={"d"}) == [] and due(s, 71.0, up={"d"}) == [("d", True)]


def test_a_restarting_peer_keeps_its_routes_until_its_end_of_rib_or_its_restart_time():
    s = StaleRoutes()
    s.keep("tor", 0.0, 120.0, GRACEFUL_RESTART)
    assert due(s, 5.0, up={"tor"}, quiet=True) == []          # back and quiet is not enough: wait for End-of-RIB
    assert due(s, 6.0, up={"tor"}, quiet=True, eor={"tor"}) == [("tor", True)]
    s.keep("tor", 10.0, 120.0, GRACEFUL_RESTART)
    assert due(s, 100.0) == [] and due(s, 131.0) == [("tor", False)]  # never back: its restart time ends it
    s.keep("tor", 200.0, 120.0, GRACEFUL_RESTART)
    assert due(s, 310.0, up={"tor"}) == []                    # back at 110 s of 120: the stale timer runs now
    assert due(s, 330.0, up={"tor"}) == []                    # past its restart time, still re-sending
    assert due(s, 310.0 + STALE_PATH_TIME + 1, up={"tor"}) == [("tor", True)]  # no End-of-RIB in time
    s.keep("tor", 1000.0, 120.0, GRACEFUL_RESTART)
    assert due(s, 1121.0, up={"tor"}) == [("tor", True)]      # back only after its restart time: too late


def test_the_first_reason_and_deadline_stand_and_a_peer_back_without_the_capability_ends_it_now():
    s = StaleRoutes()
    assert s.keep("p", 0.0, 120.0, GRACEFUL_RESTART)
    assert not s.keep("p", 50.0, 120.0, SPEAKER_RESTART)  # a flapping peer does not extend its own time
    assert s.why("p") == GRACEFUL_RESTART and due(s, 121.0) == [("p", False)]
    s.keep("p", 0.0, 120.0, GRACEFUL_RESTART)
    s.end_now("p")
    assert due(s, 1.0, up={"p"}) == [("p", True)]
    s.keep("q", 0.0, 120.0, GRACEFUL_RESTART)
    s.forget("q")
    assert "q" not in s and due(s, 500.0) == [] and s.why("q") is None


@pytest.mark.parametrize("reason, restarting", [
    ("peer reset, message (closing connection) error (the TCP connection was closed by the remote end)", True),
    ("", True),
    ("notification received (6,2)", False),
    ("notification sent (4,0)", False),
])
def test_only_a_session_dropped_without_notification_is_a_graceful_restart(reason, restarting):
    assert graceful(reason) is restarting


def test_news_tells_the_sweeper_when_routes_start_to_be_kept_or_are_to_go_now():
    """The sweeper sleeps while nothing is kept (len 0) and wakes on `on_news`."""
    s, news = StaleRoutes(), []
    s.on_news = lambda: news.append(1)
    assert len(s) == 0 and not s
    assert s.keep("a", 0.0, 30.0, SPEAKER_RESTART) and news == [1] and len(s) == 1
    assert not s.keep("a", 1.0, 30.0, SPEAKER_RESTART) and news == [1]  # kept already: nothing new
    s.end_now("a")
    assert news == [1, 1]
    assert due(s, 2.0) == [("a", False)] and len(s) == 0
