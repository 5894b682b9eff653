"""speaker/parse.py keeps the attributes of the last UPDATE's attribute section: a peer sends the
same section UPDATE after UPDATE, and each is parsed once. What the events say must not change."""
from __future__ import annotations

import json

import pytest

from calico_bgp.speaker.errors import MalformedMessage
from calico_bgp.speaker.events import Update
from calico_bgp.speaker.parse import parse_line


def _line(announce: dict | None = None, withdraw: dict | None = None, attribute: dict | None = None,
          peer: str = "198.18.0.10") -> str:
    update: dict = {}
    if attribute is not None:
        update["attribute"] = attribute
    if announce is not None:
        update["announce"] = announce
    if withdraw is not None:
        update["withdraw"] = withdraw
    return json.dumps({"exabgp": "5.0.0", "type": "update", "neighbor": {
        "address": {"local": "198.18.0.1", "peer": peer}, "asn": {"local": 64512, "peer": 65001},
        "direction": "receive", "message": {"update": update}}})


ATTRS = {"origin": "igp", "as-path": {"0": {"element": "as-sequence", "value": [65001]}}, "med": 5}


def _update(line: str) -> Update:
    (ev,) = parse_line(line)
    assert isinstance(ev, Update)
    return ev


def test_the_same_section_gives_the_same_value_and_a_changed_one_a_new_value():
    one = _update(_line({"ipv4 unicast": {"198.18.0.10": ["198.19.0.1/32"]}}, attribute=ATTRS))
    two = _update(_line({"ipv4 unicast": {"198.18.0.10": ["198.19.0.2/32"]}}, attribute=json.loads(json.dumps(ATTRS))))
    a1, a2 = one.announced["198.19.0.1/32"], two.announced["198.19.0.2/32"]
    assert a1 is a2 and a1.med == 5 and a1.as_path == (65001,) and a1.next_hop == "198.18.0.10"
    # a withdrawal between them keeps nothing of its own
    wd = _update(_line(withdraw={"ipv4 unicast": ["198.19.0.1/32"]}))
    assert wd.withdrawn == ("198.19.0.1/32",) and not wd.announced
    other_hop = _update(_line({"ipv4 unicast": {"198.18.0.11": ["198.19.0.3/32"]}}, attribute=ATTRS))
    assert other_hop.announced["198.19.0.3/32"].next_hop == "198.18.0.11"
    assert other_hop.announced["198.19.0.3/32"].med == 5
    changed = _update(_line({"ipv4 unicast": {"198.18.0.10": ["198.19.0.4/32"]}}, attribute={**ATTRS, "med": 7}))
    assert changed.announced["198.19.0.4/32"].med == 7
    again = _update(_line({"ipv4 unicast": {"198.18.0.10": ["198.19.0.5/32"]}}, attribute=ATTRS))
    assert again.announced["198.19.0.5/32"].med == 5 and again.announced["198.19.0.5/32"] == a1


def test_a_section_that_cannot_be_read_is_refused_every_time_and_is_not_kept():
    bad = {**ATTRS, "med": "five"}
    for _ in range(2):
        with pytest.raises(MalformedMessage):
            parse_line(_line({"ipv4 unicast": {"198.18.0.10": ["198.19.0.1/32"]}}, attribute=bad))
    good = _update(_line({"ipv4 unicast": {"198.18.0.10": ["198.19.0.1/32"]}}, attribute=ATTRS))
    assert good.announced["198.19.0.1/32"].med == 5


def test_the_peer_address_is_printed_as_ipaddress_prints_it():
    ev = _update(_line(withdraw={"ipv6 unicast": ["2001:db8::/64"]}, peer="2001:DB8:0:0::1"))
    assert ev.peer == "2001:db8::1"
    with pytest.raises(MalformedMessage):
        parse_line(_line(withdraw={"ipv4 unicast": ["198.19.0.1/32"]}, peer="not-an-address"))


def test_a_withdraw_only_update_with_a_section_that_cannot_be_read_is_refused_whole():
    """As an UPDATE with announcements: an attribute section that cannot be read makes the whole
    line malformed (nothing of it applied, counted by the caller), withdrawals and all; an empty or
    absent section, the usual withdraw-only UPDATE, is not parsed."""
    with pytest.raises(MalformedMessage):
        parse_line(_line(withdraw={"ipv4 unicast": ["198.19.0.1/32"]}, attribute={**ATTRS, "med": "five"}))
    for attribute in (None, {}):
        wd = _update(_line(withdraw={"ipv4 unicast": ["198.19.0.1/32"]}, attribute=attribute))
        assert wd.withdrawn == ("198.19.0.1/32",) and not wd.announced
    readable = _update(_line(withdraw={"ipv4 unicast": ["198.19.0.1/32"]}, attribute=ATTRS))
    assert readable.withdrawn == ("198.19.0.1/32",) and not readable.announced
