"""Raw BGP UPDATE bodies, and the JSON line ExaBGP's own decoder and API encoder make of each, with
the patches calico_bgp.speaker.exabgp_run applies. No sockets: Update.unpack_message and
Response.JSON, in a child process (the patches change ExaBGP's classes; the test process stays
clean). What ExaBGP's reactor does between the two (treat-as-withdraw turns announcements into
withdrawals, reactor/protocol.py) is done here too."""
from __future__ import annotations

import json
import struct
import subprocess
import sys

PEER, LOCAL, PEER_AS, LOCAL_AS = "198.18.0.1", "198.18.0.2", 65001, 64512

_DECODE = r"""
import json, sys
from exabgp.environment import getenv
getenv()
from calico_bgp.speaker import exabgp_run
exabgp_run._quiet_debug()
exabgp_run._report_malformed_attributes()
exabgp_run.warm_up(int(sys.argv[1]))  # 0: none (what the speaker's ExaBGP does by default)
from exabgp.bgp.message.action import Action
from exabgp.bgp.message.direction import Direction
from exabgp.bgp.message.open.capability.negotiated import Negotiated
from exabgp.bgp.message.update import Update
from exabgp.bgp.message.update.attribute.attribute import Attribute
from exabgp.bgp.neighbor import Neighbor
from exabgp.protocol.family import AFI, SAFI
from exabgp.reactor.api.response import Response
from exabgp.version import json as json_version

n = Neighbor()
n['local-address'], n['peer-address'], n['local-as'], n['peer-as'], n['router-id'] = %r
for body in json.loads(sys.stdin.read()):
    negotiated = Negotiated(n)
    negotiated.asn4 = True
    negotiated.families = [(AFI.ipv4, SAFI.unicast), (AFI.ipv6, SAFI.unicast)]
    try:
        update = Update.unpack_message(bytes.fromhex(body), Direction.IN, negotiated)
    except Exception as e:  # a NOTIFICATION ExaBGP would send (session reset)
        print(json.dumps({"raises": f"{type(e).__name__}: {e}"}))
        continue
    if Attribute.CODE.INTERNAL_TREAT_AS_WITHDRAW in update.attributes:
        for nlri in update.nlris:
            nlri.action = Action.WITHDRAW
    print(Response.JSON(json_version).update(n, 'receive', update, None, '', '').replace('\n', ' '))
""" % ((LOCAL, PEER, LOCAL_AS, PEER_AS, LOCAL),)


def attribute(flags: int, code: int, value: bytes) -> bytes:
    if len(value) > 255:
        return bytes([flags | 0x10, code]) + struct.pack("!H", len(value)) + value
    return bytes([flags, code, len(value)]) + value


def origin(value: int = 0) -> bytes:
    return attribute(0x40, 1, bytes([value]))


def as_path(*segments: tuple[int, tuple[int, ...]]) -> bytes:
    """Segments as (type, ASes): 2 AS_SEQUENCE, 1 AS_SET; four-octet ASes."""
    return attribute(0x40, 2, b"".join(bytes([t, len(ases)]) + b"".join(struct.pack("!I", a) for a in ases)
                                       for t, ases in segments))


def sequence(*ases: int) -> bytes:
    return as_path((2, ases))


def next_hop(address: str) -> bytes:
    return attribute(0x40, 3, bytes(int(x) for x in address.split(".")))


def nlri(*prefixes: str) -> bytes:
    out = b""
    for p in prefixes:
        addr, plen = p.split("/")
        n = int(plen)
        out += bytes([n]) + bytes(int(x) for x in addr.split("."))[:(n + 7) // 8]
    return out


def update(attributes: list[bytes], announce: tuple[str, ...] = (), withdraw: tuple[str, ...] = ()) -> bytes:
    a, w = b"".join(attributes), nlri(*withdraw)
    return struct.pack("!H", len(w)) + w + struct.pack("!H", len(a)) + a + nlri(*announce)


def decode(*bodies: bytes, python: str = sys.executable, warm_up: int = 0) -> list[str]:
    """The JSON line ExaBGP writes to its API process for each UPDATE body (or {"raises": ...}), under
    `python`, after `warm_up` synthetic UPDATEs (exabgp_run.warm_up)."""
    out = subprocess.run([python, "-c", _DECODE, str(warm_up)], input=json.dumps([b.hex() for b in bodies]),
                         capture_output=True, text=True, check=True, timeout=120)
    lines = out.stdout.splitlines()
    assert len(lines) == len(bodies), out.stderr
    return lines
