"""tests/bgpwire/message.py against byte strings written out from RFC 4271's layouts (and RFC 4760,
5492, 6793, 4724 for the parts they add), and its reading side on what it wrote."""
from __future__ import annotations

import pytest

from tests.bgpwire import message as m

MARKER = "ff" * 16


def test_keepalive_and_notification_layouts():
    assert m.keepalive().hex() == MARKER + "0013" + "04"                     # RFC 4271 4.4: header only
    assert m.notification(6, 2).hex() == MARKER + "0015" + "03" + "0602"     # 4.5: code, subcode
    assert m.notification(1, 2, b"\x00\x05").hex() == MARKER + "0017" + "03" + "0102" + "0005"


def test_open_with_multiprotocol_and_four_octet_as():
    got = m.open_message(65001, "198.18.0.1", 90).hex()
    body = ("04" + "fde9" + "005a" + "c6120001" + "10"        # version, My AS, hold, BGP id, opt len 16
            + "0206" + "01040001" + "0001"                     # capability MP: AFI 1, reserved, SAFI 1
            + "0206" + "4104" + "0000fde9")                    # capability 65: 4-octet AS
    assert got == MARKER + "002d" + "01" + body


def test_open_with_a_four_octet_as_says_as_trans_and_graceful_restart():
    caps = [m.cap_four_octet_as(4200000001), m.cap_graceful_restart(120, [(m.AFI_IPV4, 1)], forwarding=True)]
    body = bytes.fromhex(m.open_message(4200000001, "198.18.0.1", 9, caps).hex()[38:])
    assert body[1:3] == (23456).to_bytes(2, "big")             # RFC 6793 AS_TRANS
    assert "4006" + "0078" + "00010180" in body.hex()          # RFC 4724: restart time 120, ipv4/unicast, F bit
    info = m.parse_open(body)
    assert (info.asn, info.hold_time, info.router_id) == (4200000001, 9, "198.18.0.1")


def test_update_attribute_layouts():
    got = m.well_formed("198.18.0.9", [65001], ["198.19.5.0/24"]).hex()
    attrs = ("400101" + "00"                                     # ORIGIN IGP, well-known transitive
             + "400206" + "0201" + "0000fde9"                    # AS_PATH: AS_SEQUENCE of one 4-octet AS
             + "400304" + "c6120009")                            # NEXT_HOP
    assert got == MARKER + "002f" + "02" + "0000" + "0014" + attrs + "18c61305"


def test_withdrawal_and_prefix_lengths():
    got = m.update(withdrawn=["198.19.0.0/26", "198.18.0.0/15", "0.0.0.0/0"]).hex()
    assert got == MARKER + "0020" + "02" + "0009" + "1ac6130000" + "0fc612" + "00" + "0000"


def test_malformed_attributes_are_written_as_given():
    dup = m.update(attributes=[m.origin(0), m.origin(5), m.attr(m.TRANSITIVE, 9, b"\x01\x02\x03\x04")], nlri=[])
    assert dup.hex().endswith("400101" + "00" + "400101" + "05" + "400904" + "01020304")
    as_set = m.as_path([(m.AS_SEQUENCE, [65001]), (m.AS_SET, [64512, 65002])]).value.hex()
    assert as_set == "0201" + "0000fde9" + "0102" + "0000fc00" + "0000fdea"


def test_extended_length_is_set_when_the_value_needs_it():
    long_path = m.as_path([(m.AS_SEQUENCE, list(range(65001, 65001 + 70)))])
    enc = m.encode_attr(long_path)
    assert enc[0] == m.TRANSITIVE | m.EXTENDED and int.from_bytes(enc[2:4], "big") == 2 + 70 * 4


def test_mp_reach_ipv6_with_one_or_two_next_hops():
    one = m.mp_reach_ipv6(["2001:db8::9"], ["2001:db8:1::/48"])
    assert one.flags == m.OPTIONAL and one.type == 14
    assert one.value.hex() == "0002" + "01" + "10" + "20010db8000000000000000000000009" + "00" + "30" + "20010db80001"
    two = m.mp_reach_ipv6(["2001:db8::9", "fe80::9"], ["2001:db8:1::/48"])
    assert two.value[3] == 32 and two.value[4 + 16:4 + 32].hex() == "fe800000000000000000000000000009"
    assert m.mp_unreach_ipv6(["2001:db8:1::/48"]).value.hex() == "0002" + "01" + "30" + "20010db80001"
    with pytest.raises(m.WireError, match="one or two"):
        m.mp_reach_ipv6([], ["2001:db8:1::/48"])


def test_split_reads_whole_messages_and_keeps_the_rest():
    stream = m.keepalive() + m.notification(3, 1, b"x") + m.keepalive()[:10]
    msgs, rest = m.split(stream)
    assert [x.type for x in msgs] == [m.KEEPALIVE, m.NOTIFICATION] and rest == m.keepalive()[:10]
    assert m.parse_notification(msgs[1].body) == m.Notification(3, 1, b"x")
    with pytest.raises(m.WireError, match="marker"):
        m.split(b"\x00" * 19)
    assert m.raw_header(5, 4).hex() == MARKER + "0005" + "04"


def test_many_prefixes_are_split_into_updates_that_fit():
    attrs = [m.origin(0), m.as_path([(m.AS_SEQUENCE, [65001])]), m.next_hop("198.18.0.9")]
    prefixes = [f"198.19.{i // 256}.{i % 256}/32" for i in range(2000)]
    out = m.updates(attrs, prefixes)
    assert all(len(u) <= 4096 for u in out) and len(out) == 3
    msgs, rest = m.split(b"".join(out))
    assert rest == b"" and sum((len(x.body) - 4 - 20) // 5 for x in msgs) == 2000
