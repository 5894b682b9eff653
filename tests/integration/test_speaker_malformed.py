"""Malformed UPDATEs on the wire, through our Speaker (the patched ExaBGP in a namespace and its API
bridge): each reaches the agent as an Update naming what was wrong (or, where ExaBGP applied
treat-as-withdraw itself, as withdrawals naming that), and the session stays up throughout.

The peer is a few lines of raw BGP in another namespace (RFC 4271 messages: OPEN with the
four-octet AS and IPv4 unicast capabilities, KEEPALIVE, UPDATE bodies from exabgp_decode)."""
from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from calico_bgp.speaker.events import PeerState, Update
from calico_bgp.speaker.neighbor import Neighbor
from calico_bgp.speaker.speaker import Speaker
from lab.net import netns, veth
from tests.marks import needs_root
from tests.unit.exabgp_decode import attribute, next_hop, origin, sequence, update

pytestmark = [needs_root, pytest.mark.root]

US, PEER, AS_US, AS_PEER = "198.18.3.1", "198.18.3.2", 65000, 65001

# listens on 179, answers ExaBGP's OPEN, sends the UPDATE bodies given on stdin (hex, one a line),
# then keeps the session alive until killed; a NOTIFICATION from ExaBGP is printed and ends it
_RAW_PEER = r"""
import socket, struct, sys, time
bodies = [bytes.fromhex(x) for x in sys.stdin.read().split()]
def msg(kind, body=b""):
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), kind) + body
def read(conn):
    head = b""
    while len(head) < 19:
        chunk = conn.recv(19 - len(head))
        if not chunk:
            raise SystemExit("closed")
        head += chunk
    length, kind = struct.unpack("!HB", head[16:19])
    body = b""
    while len(body) < length - 19:
        body += conn.recv(length - 19 - len(body))
    if kind == 3:
        print("NOTIFICATION", body.hex(), flush=True)
        raise SystemExit(1)
    return kind
caps = bytes([1, 4, 0, 1, 0, 1]) + bytes([65, 4]) + struct.pack("!I", %d)
params = bytes([2, len(caps)]) + caps
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("%s", 179))
srv.listen(1)
conn, _ = srv.accept()
assert read(conn) == 1
conn.sendall(msg(1, struct.pack("!BHH4sB", 4, %d, 9, socket.inet_aton("%s"), len(params)) + params) + msg(4))
while read(conn) != 4:
    pass
for body in bodies:
    conn.sendall(msg(2, body))
print("SENT", flush=True)
conn.settimeout(2.0)
while True:
    conn.sendall(msg(4))
    try:
        read(conn)
    except socket.timeout:
        pass
"""


def raw_peer(ns: str, address: str, asn: int, bodies: list[bytes]) -> subprocess.Popen[str]:
    """The raw BGP peer in namespace `ns` listening on `address`, AS `asn`, sending `bodies` once the
    session is up. The caller kills it."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", _RAW_PEER % (asn, address, asn, address)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc.stdin.write("\n".join(b.hex() for b in bodies))  # type: ignore[union-attr]
    proc.stdin.close()  # type: ignore[union-attr]
    return proc

GOOD, OTHER = "198.19.5.0/24", "198.19.6.0/24"
NH = next_hop(PEER)
SEQ = sequence(AS_PEER)
CASES = [  # (reasons parse gives, the UPDATE): all for OTHER except the first and the last
    ((), update([origin(), SEQ, NH], (GOOD,))),
    (("missing-next-hop",), update([origin(), SEQ], (OTHER,))),
    (("missing-origin",), update([SEQ, NH], (OTHER,))),
    (("missing-as-path",), update([origin(), NH], (OTHER,))),
    (("duplicate-attribute",), update([origin(0), origin(2), SEQ, NH], (OTHER,))),
    (("invalid-origin",), update([origin(5), SEQ, NH], (OTHER,))),
    (("unrecognized-well-known",), update([origin(), SEQ, NH, attribute(0x40, 99, b"ab")], (OTHER,))),
    (("malformed-attribute",), update([origin(), SEQ, NH, attribute(0x80, 4, b"\0\0\1")], (OTHER,))),
    ((), update([origin(), sequence(AS_PEER, 7), NH], ("198.19.7.0/24",))),
]


async def test_each_malformed_update_reaches_the_agent_named_and_the_session_stays_up(tmp_path: Path, nursery):
    with contextlib.ExitStack() as stack:
        spk, peer_ns = stack.enter_context(netns("s")), stack.enter_context(netns("p"))
        veth(spk, "to-peer", peer_ns, "eth0", (f"{US}/24",), (f"{PEER}/24",))
        raw = raw_peer(peer_ns, PEER, AS_PEER, [body for _, body in CASES])
        stack.callback(raw.kill)

        speaker = Speaker(tmp_path / "spk", netns=spk)
        await nursery.start(speaker.run)
        await speaker.set_neighbors([Neighbor(peer_address=PEER, peer_as=AS_PEER, local_as=AS_US, local_address=US,
                                              router_id=US, hold_time=9)])
        got: list[Update] = []
        with trio.fail_after(60):
            async for ev in speaker.events:
                assert not (isinstance(ev, PeerState) and ev.state == "down"), ev
                if isinstance(ev, Update):
                    got.append(ev)
                    if "198.19.7.0/24" in ev.announced:
                        break
        assert [tuple(m.reason for m in ev.malformed) for ev in got] == [reasons for reasons, _ in CASES]
        by_exabgp = got[7]  # ExaBGP's own treat-as-withdraw: the announcement arrives as a withdrawal
        assert by_exabgp.withdrawn == (OTHER,) and not by_exabgp.announced
        assert got[4].announced[OTHER].origin == "igp"  # the first ORIGIN of two
        assert raw.poll() is None, raw.stdout.read()  # type: ignore[union-attr]  # no NOTIFICATION: the session is up
