"""What a peer's routes become when its session goes down (routing/session_down.py)."""
from calico_bgp.routing.graceful_restart import GRACEFUL_RESTART, SPEAKER_RESTART
from calico_bgp.routing.session_down import KeepStale, on_down, restart_time, stale_ends_on_open


def test_our_own_speaker_exiting_keeps_every_peers_routes_for_the_agents_grace_time():
    assert on_down("exabgp exited", True, None, 30.0) == KeepStale(SPEAKER_RESTART, 30.0)
    assert on_down("notification sent (6,2)", True, 120, 30.0) == KeepStale(SPEAKER_RESTART, 30.0)


def test_a_graceful_peer_that_dropped_without_a_notification_keeps_its_routes_for_its_restart_time():
    assert on_down("connection lost", False, 120, 30.0) == KeepStale(GRACEFUL_RESTART, 120.0)


def test_a_notification_or_no_graceful_restart_withdraws_the_routes_with_the_session():
    assert on_down("notification received (6,2)", False, 120, 30.0) is None
    assert on_down("connection lost", False, None, 30.0) is None
    assert on_down("connection lost", False, 0, 30.0) is None


def test_the_restart_time_counts_only_for_a_family_the_open_listed():
    assert restart_time("ipv4 unicast", 120, ("ipv4 unicast",)) == 120
    assert restart_time("ipv6 unicast", 120, ("ipv4 unicast",)) is None
    assert restart_time("ipv4 unicast", None, ("ipv4 unicast",)) is None
    assert restart_time("ipv4 unicast", 120, ()) is None  # BIRD's and FRR's helper-only default


def test_a_restarted_peer_without_its_forwarding_state_loses_its_stale_routes_at_once():
    assert stale_ends_on_open(GRACEFUL_RESTART, "ipv4 unicast", ())
    assert stale_ends_on_open(GRACEFUL_RESTART, None, ("ipv4 unicast",))  # no session any more
    assert not stale_ends_on_open(GRACEFUL_RESTART, "ipv4 unicast", ("ipv4 unicast",))
    assert not stale_ends_on_open(SPEAKER_RESTART, "ipv4 unicast", ())  # our restart: kept until re-sent
    assert not stale_ends_on_open(None, "ipv4 unicast", ())
