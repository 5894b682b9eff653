"""ExaBGP JSON -> typed events, on lines captured from ExaBGP 5.0.15 peering with BIRD 2."""
from __future__ import annotations

from pathlib import Path

import pytest

from calico_bgp.routing.damping import Dampener, DampingParams
from calico_bgp.routing.intake import UpdateIntake
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.rib import Rib
from calico_bgp.speaker.errors import MalformedMessage
from calico_bgp.speaker.events import (
    Ack,
    EndOfRib,
    ExaBGPShutdown,
    Ignored,
    Notification,
    PathAttributes,
    PeerOpen,
    PeerState,
    Text,
    Update,
)
from calico_bgp.speaker.parse import parse_line

SAMPLES = Path(__file__).parent / "exabgp_samples"


def parsed(name: str) -> list:
    out = []
    for line in (SAMPLES / name).read_text().splitlines():
        out += parse_line(line)
    return out


def test_session_sample_gives_states_updates_eor_notification_and_shutdown():
    events = parsed("bird_session.jsonl")
    kinds = [type(e).__name__ for e in events]
    assert kinds[:4] == ["PeerState", "PeerState", "PeerState", "Update"]
    ups = [e for e in events if isinstance(e, PeerState) and e.state == "up"]
    assert {e.peer for e in ups} == {"198.18.0.2", "2001:db8::2"}
    assert ups[0].local_as == 65000 and ups[0].peer_as == 65001
    assert ups[0].at == 1795652483.9065263

    v4 = next(e for e in events if isinstance(e, Update) and e.family == "ipv4 unicast" and e.announced)
    assert v4.peer == "198.18.0.2"
    assert set(v4.announced) == {"198.19.5.0/24", "198.19.6.0/24"}
    a = v4.announced["198.19.5.0/24"]
    assert a.next_hop == "198.18.0.2" and a.as_path == (65001,) and a.origin == "igp"
    assert v4.path_ids["198.19.5.0/24"] == "0.0.0.2"  # add-path was negotiated on that session

    v6 = next(e for e in events if isinstance(e, Update) and e.family == "ipv6 unicast")
    assert v6.announced["2001:db8:5::/48"].next_hop == "2001:db8::2"

    assert EndOfRib("198.18.0.2", "ipv4 unicast") in events
    assert EndOfRib("2001:db8::2", "ipv6 unicast") in events

    wd = next(e for e in events if isinstance(e, Update) and e.withdrawn)
    assert wd.withdrawn == ("198.19.6.0/24",) and not wd.announced

    assert Notification("198.18.0.2", "receive", 6, 2, "0x") in events
    down = next(e for e in events if isinstance(e, PeerState) and e.state == "down")
    assert down.reason == "notification received (6,2)"
    assert isinstance(events[-1], ExaBGPShutdown)


def test_ibgp_sample_carries_every_attribute():
    events = parsed("bird_ibgp_attributes.jsonl")
    up = next(e for e in events if isinstance(e, Update) and e.family == "ipv4 unicast" and e.announced)
    assert up.announced["198.19.5.0/24"] == PathAttributes(
        next_hop="198.18.0.2", origin="incomplete", as_path=(65123,), local_pref=200, med=50,
        communities=((65001, 100), (65001, 200)), large_communities=((65001, 1, 2),),
        originator_id="198.18.0.9", cluster_list=("198.18.0.7",))
    v6 = next(e for e in events if isinstance(e, Update) and e.family == "ipv6 unicast" and e.announced)
    assert v6.announced["2001:db8:5::/48"].local_pref == 200
    withdrawn = [p for e in events if isinstance(e, Update) for p in e.withdrawn]
    assert withdrawn == ["198.19.5.0/24", "2001:db8:5::/48"]


def test_acks_and_text():
    assert parse_line("done\n") == [Ack(True)]
    assert parse_line("error") == [Ack(False)]
    assert parse_line("reload in progress") == [Text("reload in progress")]
    assert parse_line('{ "answer": "done", "message": "command completed" }') == [Ack(True)]
    assert parse_line("   ") == []


def test_update_with_two_families_and_both_directions():
    line = ('{ "exabgp": "5.0.0", "time": 1.0, "type": "update", "neighbor": { "address": { "local": "198.18.0.1", '
            '"peer": "198.18.0.2" }, "asn": { "local": 1, "peer": 2 }, "direction": "receive", "message": { "update": '
            '{ "attribute": { "origin": "igp", "as-path": {"0": {"element": "as-sequence", "value": [2, 3]}, '
            '"1": {"element": "as-set", "value": [7, 8]}} }, '
            '"announce": { "ipv4 unicast": { "198.18.0.2": [ { "nlri": "198.19.1.0/24" } ] }, '
            '"ipv6 unicast": { "2001:db8::2": [ "2001:db8:1::/48" ] } }, '
            '"withdraw": { "ipv4 unicast": [ { "nlri": "198.19.2.0/24" } ] } } } } }')
    v4, v6 = parse_line(line)
    assert v4.family == "ipv4 unicast" and v4.withdrawn == ("198.19.2.0/24",)
    assert v4.announced["198.19.1.0/24"].as_path == (2, 3) and v4.announced["198.19.1.0/24"].as_set == (7, 8)
    assert v6.announced["2001:db8:1::/48"].next_hop == "2001:db8::2"  # compact encoding


def test_other_families_and_message_kinds_are_ignored_not_errors():
    flow = ('{ "type": "update", "neighbor": { "address": { "local": "198.18.0.1", "peer": "198.18.0.2" }, '
            '"direction": "receive", "message": { "update": { "withdraw": { "ipv4 flow": [ { "nlri": "198.19.0.0/24" } ] } } } } }')
    assert parse_line(flow) == [Ignored("family ipv4 flow")]
    assert parse_line('{ "type": "keepalive", "neighbor": {} }') == [Ignored("keepalive")]


@pytest.mark.parametrize("line", [
    "{not json",
    "[1, 2]",
    '{ "type": "state" }',
    '{ "type": "martian", "neighbor": {} }',
    '{ "type": "update", "neighbor": { "address": { "peer": "nope" }, "message": { "update": {} } } }',
    '{ "type": "state", "neighbor": { "address": { "peer": "198.18.0.2" }, "state": 5 } }',
])
def test_malformed_lines_raise_a_typed_error(line):
    with pytest.raises(MalformedMessage):
        parse_line(line)


def test_an_unusable_nlri_reaches_the_intake_as_text_and_only_it_is_refused_there():
    """NLRI text is passed on as ExaBGP wrote it (parsed once, by the intake's cache): a bad one is
    refused by name there while the rest of its UPDATE is used."""
    (up,) = parse_line(
        '{ "type": "update", "neighbor": { "address": { "peer": "198.18.0.2" }, "message": { "update": '
        '{ "attribute": { "origin": "igp", "as-path": {"0": {"element": "as-sequence", "value": [65001]}} }, '
        '"announce": { "ipv4 unicast": { "198.18.0.2": [ { "nlri": "198.19.0.0/33" }, "198.19.1.0/24" ] } } } } } }')
    assert set(up.announced) == {"198.19.0.0/33", "198.19.1.0/24"}
    rib = Rib(LocalSpeaker(64512, "198.18.0.1"))
    peer = Peer("198.18.0.2", 65001, "198.18.0.2", ibgp=False)
    got = UpdateIntake().apply(up, peer, rib, Dampener(DampingParams(), enabled=False), 0.0)
    assert got.bad == [("198.19.0.0/33", "198.18.0.2")]
    assert [str(p) for p in got.announced] == ["198.19.1.0/24"]


def _open_line(direction: str, capabilities: str) -> str:
    return ('{ "exabgp": "5.0.0", "time": 1.0, "host" : "vm", "pid" : 1, "ppid" : 1, "counter": 2, "type": "open", '
            '"neighbor": { "address": { "local": "198.18.0.1", "peer": "198.18.0.2" }, "asn": { "local": 64512, '
            f'"peer": 65001 }}, "router-id": "198.18.0.2" , "direction": "{direction}", "open": {{ "version": 4, '
            f'"asn": 65001, "hold_time": 90, "router_id": "198.18.0.2", "capabilities": {{ {capabilities} }} }} }} }}')


GR_CAP = ('"graceful-restart": { "name": "graceful restart", "time": 120, "address-family-flags": '
          '{ "ipv4/unicast": [ "restart" ] }, "restart-flags": [ ] }')


def test_a_received_open_gives_the_peers_graceful_restart_time():
    assert parse_line(_open_line("receive", '"multiprotocol": { "name": "multiprotocol" }, ' + GR_CAP)) == [
        PeerOpen(peer="198.18.0.2", graceful_restart=120, graceful_families=("ipv4 unicast",),
                 forwarding_kept=("ipv4 unicast",))]
    # BIRD's and FRR's default ("aware", helper only): the capability with no family, or without the F bit
    aware = GR_CAP.replace('{ "ipv4/unicast": [ "restart" ] }', '{ }')
    assert parse_line(_open_line("receive", aware)) == [PeerOpen(peer="198.18.0.2", graceful_restart=120)]
    no_f = GR_CAP.replace('[ "restart" ]', '[ ]')
    assert parse_line(_open_line("receive", no_f)) == [
        PeerOpen(peer="198.18.0.2", graceful_restart=120, graceful_families=("ipv4 unicast",))]
    assert parse_line(_open_line("receive", '"multiprotocol": { "name": "multiprotocol" }')) == [
        PeerOpen(peer="198.18.0.2", graceful_restart=None)]
    assert parse_line(_open_line("send", GR_CAP)) == [Ignored("open-send")]


def test_a_received_open_says_whether_the_peer_takes_route_refresh():
    """RFC 2918: ROUTE-REFRESH only to a peer that advertised it (ExaBGP's JSON names both codes
    "route-refresh"); the agent asks for one when policy changes for a peer whose rejected paths
    were beyond the RIB's cap."""
    rr = '"route-refresh": { "name": "route-refresh", "variant": "normal" }'
    assert parse_line(_open_line("receive", rr)) == [PeerOpen(peer="198.18.0.2", route_refresh=True)]
    assert parse_line(_open_line("receive", rr + ", " + GR_CAP))[0].route_refresh
    assert not parse_line(_open_line("receive", '"multiprotocol": { "name": "multiprotocol" }'))[0].route_refresh
