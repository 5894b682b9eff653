"""When a peer is asked to send its routes again after an import-policy change (routing/route_refresh.py)."""
from calico_bgp.routing.route_refresh import after_policy_change


def test_nothing_the_first_time_nor_when_unchanged_nor_when_every_rejected_path_was_kept():
    assert after_policy_change(None, ("a",), 5, True) is None
    assert after_policy_change(("a",), ("a",), 5, True) is None
    assert after_policy_change(("a",), ("b",), 0, True) is None


def test_a_changed_policy_asks_a_peer_that_takes_route_refresh():
    r = after_policy_change(("a",), ("b",), 2, True)
    assert r is not None and r.ask and r.detail == "import policy changed; 2 rejected paths were not kept"


def test_a_peer_without_route_refresh_is_not_asked_and_the_event_says_what_stays_out():
    r = after_policy_change(("a",), ("b",), 2, False)
    assert r is not None and not r.ask
    assert "takes no ROUTE-REFRESH" in r.detail and "2 rejected paths were not kept" in r.detail
