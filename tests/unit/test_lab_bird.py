"""The BIRD driver's readings of birdc output and the configs it writes."""
from __future__ import annotations

import pytest

from lab.bird import Bird, BirdPeer, parse_protocols, parse_routes, parse_sessions, same_since
from lab.net import LabError, TimedOut, wait_for

PROTOCOLS = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     10:00:01.123
static4    Static     master4    up     10:00:01.123
n1         BGP        ---        up     10:00:02.456  Established
tor        BGP        ---        start  2026-12-07 10:00:03  Active        Socket: Connection refused
"""

PROTOCOLS_ALL = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
static4    Static     master4    up     10:00:01.123
  Channel ipv4
    Routes:         2 imported, 0 exported, 2 preferred

n1         BGP        ---        up     10:00:02.456  Established
  BGP state:          Established
    Neighbor address: 198.18.0.1
    Neighbor AS:      64512
  Channel ipv4
    Routes:         3 imported, 2 exported, 3 preferred

tor        BGP        ---        start  10:00:03.000  Active
  BGP state:          Active
    Neighbor address: 2001:db8::5
"""

ROUTES = """BIRD 2.0.12 ready.
Table master4:
198.19.0.0/26        unicast [n1 10:00:02.456] * (100) [AS64512i]
\tvia 198.18.0.1 on eth0
                     unicast [n2 10:00:02.456] (100) [AS64512i]
\tvia 198.18.0.2 on eth0
198.19.5.0/24        blackhole [static4 10:00:01.123] * (200)
"""


def test_protocols_keeps_bgp_rows_with_their_info_whatever_the_age_format():
    p = parse_protocols(PROTOCOLS)
    assert set(p) == {"n1", "tor"}
    assert p["n1"]["info"] == "Established" and p["n1"]["since"] == "10:00:02.456"
    assert p["tor"]["since"] == "2026-12-07 10:00:03"
    assert p["tor"]["info"] == "Active Socket: Connection refused"


def test_same_since_allows_birds_millisecond_print_jitter_not_a_reset():
    assert same_since("23:54:26.956", "23:54:26.955")  # one moment read twice (CI, stop 23)
    assert same_since("23:59:59.999", "00:00:00.001")  # across midnight
    assert not same_since("10:00:02.456", "10:00:07.500")  # reset and re-established
    assert same_since("2026-12-07 10:00:03", "2026-12-07 10:00:04")
    assert not same_since("2026-12-07 10:00:03", "2026-12-07 10:00:09")
    assert not same_since("10:00:03.000", "2026-12-07 10:00:03")


def test_sessions_read_neighbour_state_and_imported_routes():
    s = parse_sessions(PROTOCOLS_ALL)
    assert [(x.name, x.peer, x.state, x.imported) for x in s] == [
        ("n1", "198.18.0.1", "Established", 3), ("tor", "2001:db8::5", "Active", 0)]


def test_routes_collect_every_next_hop_of_a_prefix():
    assert parse_routes(ROUTES) == {"198.19.0.0/26": ["198.18.0.1", "198.18.0.2"], "198.19.5.0/24": []}


def test_a_peer_renders_its_channels_and_options(tmp_path):
    peer = BirdPeer(name="n1", local_as=65001, neighbor="2001:db8::1", peer_as=64512, local_address="2001:db8::2",
                    ipv4=False, ipv6=True, password="pw", add_path=True, passive=True, channel=("next hop keep;",))
    text = peer.render()
    assert "local 2001:db8::2 as 65001;" in text and "neighbor 2001:db8::1 port 179 as 64512;" in text
    assert "ipv4 {" not in text and "  ipv6 {" in text
    assert '  password "pw";' in text and "  passive on;" in text and "    add paths on;" in text
    assert "    next hop keep;" in text
    bird = Bird("unused-ns", "198.18.0.2", tmp_path)
    bird.peers, bird.static4 = [peer], ["198.19.5.0/24"]
    conf = bird.render()
    assert conf.startswith("router id 198.18.0.2;") and "  route 198.19.5.0/24 blackhole;" in conf and text in conf


def test_wait_for_returns_the_first_truthy_value_and_keeps_polling_through_errors():
    calls = iter([ValueError("not yet"), 0, "ready"])

    def step():
        v = next(calls)
        if isinstance(v, Exception):
            raise v
        return v

    assert wait_for("ready", step, timeout=5, interval=0.001) == "ready"


def test_wait_for_names_what_and_the_last_value_when_it_times_out():
    with pytest.raises(TimedOut, match=r"waiting for the answer; last: ValueError\('no'\)") as info:
        wait_for("the answer", lambda: (_ for _ in ()).throw(ValueError("no")), timeout=0.05, interval=0.01)
    assert isinstance(info.value, LabError) and isinstance(info.value, AssertionError)
