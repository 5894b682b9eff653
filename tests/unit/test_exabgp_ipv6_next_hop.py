"""What ExaBGP 5.0.15 makes of an IPv6 next hop, fed raw UPDATE bytes, with and without
exabgp_run._ipv6_next_hop_pairs, and what the agent's parser reads from its JSON.

RFC 2545 section 3: a 32-byte next hop is the global address then the link-local one (BIRD and FRR
send that on a direct session); link-local-only next hops come as (ll), (:: ll) or (ll ll).
ExaBGP runs in a subprocess: the patch changes its classes for the whole interpreter.
"""
from __future__ import annotations

import json
import subprocess
import sys

from calico_bgp.speaker.events import Update
from calico_bgp.speaker.parse import parse_line

# Builds an UPDATE (ORIGIN, AS_PATH, MP_REACH_NLRI ipv6 unicast) per case, decodes it with ExaBGP's
# own parser and prints the JSON line its API encoder writes for it.
_DECODE = r"""
import ipaddress, json, struct, sys
from calico_bgp.speaker import exabgp_run
exabgp_run._quiet_debug()
if sys.argv[1] == "patched":
    exabgp_run._ipv6_next_hop_pairs()
from exabgp.bgp.message.direction import Direction
from exabgp.bgp.message.open.capability.negotiated import Negotiated
from exabgp.bgp.message.update import Update
from exabgp.protocol.family import AFI, SAFI
from exabgp.reactor.api.response import Response

def attr(flags, code, body):
    return bytes([flags, code, len(body)]) + body

def update(nexthops, prefixes):
    nh = b"".join(ipaddress.ip_address(x).packed for x in nexthops)
    nlri = b"".join(bytes([n.prefixlen]) + n.network_address.packed[:(n.prefixlen + 7) // 8]
                    for n in map(ipaddress.ip_network, prefixes))
    mp = struct.pack("!HBB", 2, 1, len(nh)) + nh + b"\x00" + nlri
    pa = attr(0x40, 1, b"\x00") + attr(0x40, 2, b"\x02\x01" + struct.pack("!I", 65001)) + attr(0x80, 14, mp)
    return struct.pack("!HH", 0, len(pa)) + pa

neg = Negotiated({"capability": {"aigp": False}})
neg.families, neg.asn4 = [(AFI.ipv6, SAFI.unicast)], True
for case in json.loads(sys.argv[2]):
    u = Update.unpack_message(update(case, ["2001:db8:100::/48", "2001:db8:200::/48"]), Direction.IN, neg)
    message = json.loads(Response.JSON("5.0.0")._update(u)["message"])
    print(json.dumps({"type": "update", "neighbor": {"address": {"local": "2001:db8::1", "peer": "2001:db8::2"},
                      "direction": "receive", "message": message}}))
"""

CASES = [["2001:db8::2", "fe80::2"], ["fe80::2"], ["::", "fe80::2"], ["fe80::2", "fe80::2"], ["2001:db8::2"]]


def _exabgp_json(mode: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", _DECODE, mode, json.dumps(CASES)], capture_output=True, text=True,
                         check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def _announced(line: dict) -> dict[str, list[str]]:
    return {nh: [x["nlri"] for x in nlris] for nh, nlris in line["neighbor"]["message"]["update"]["announce"]["ipv6 unicast"].items()}


def test_plain_exabgp_lists_every_prefix_under_each_address_of_a_32_byte_next_hop():
    """The defect: two next hops, each with every prefix, as if they were two announcements."""
    lines = _exabgp_json("plain")
    both = ["2001:db8:100::/48", "2001:db8:200::/48"]
    assert _announced(lines[0]) == {"2001:db8::2": both, "fe80::2": both}
    # (ll ll): each prefix twice under one key
    assert _announced(lines[3]) == {"fe80::2": [both[0], both[0], both[1], both[1]]}
    # what the agent made of it: the last one listed, the link-local address, with no trace of the global
    update = parse_line(json.dumps(lines[0]))[0]
    assert isinstance(update, Update) and update.announced["2001:db8:100::/48"].next_hop == "fe80::2"


def test_patched_exabgp_gives_one_next_hop_holding_both_addresses():
    lines = _exabgp_json("patched")
    both = ["2001:db8:100::/48", "2001:db8:200::/48"]
    assert [_announced(line) for line in lines] == [
        {"2001:db8::2 fe80::2": both}, {"fe80::2": both}, {":: fe80::2": both}, {"fe80::2 fe80::2": both},
        {"2001:db8::2": both}]


def test_the_parser_carries_both_addresses_and_one_attributes_object_per_update():
    parsed = [parse_line(json.dumps(line))[0] for line in _exabgp_json("patched")]
    got = []
    for u in parsed:
        assert isinstance(u, Update) and u.family == "ipv6 unicast"
        a, b = u.announced["2001:db8:100::/48"], u.announced["2001:db8:200::/48"]
        assert a is b  # the intake's fast path: one attributes object for the UPDATE's prefixes
        got.append((a.next_hop, a.link_local))
    assert got == [("2001:db8::2", "fe80::2"), ("fe80::2", None), ("::", "fe80::2"), ("fe80::2", "fe80::2"),
                   ("2001:db8::2", None)]


def test_other_next_hop_lengths_and_a_truncated_attribute_are_left_to_exabgp():
    code = (_DECODE.split("neg = Negotiated")[0] +
            "neg = Negotiated({'capability': {'aigp': False}})\n"
            "neg.families, neg.asn4 = [(AFI.ipv6, SAFI.unicast)], True\n"
            "from exabgp.bgp.message.update.attribute.mprnlri import MPRNLRI\n"
            "from exabgp.bgp.message.notification import Notify\n"
            "bad = struct.pack('!HBB', 2, 1, 32) + bytes(20)\n"  # says 32 bytes of next hop, holds 20
            "try:\n"
            "    MPRNLRI.unpack(bad, Direction.IN, neg)\n"
            "except Notify as e:\n"
            "    print(e.code, e.subcode)\n")
    out = subprocess.run([sys.executable, "-c", code, "patched", "[]"], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3", "9"], out.stderr  # ExaBGP's own refusal, as without the patch
