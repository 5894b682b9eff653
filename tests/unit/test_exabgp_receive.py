"""ExaBGP's receive path with calico_bgp.speaker.exabgp_receive and without: the same NLRI objects
and the same JSON line for every UPDATE (IPv4 and IPv6, announced and withdrawn, in the classic
fields and in MP_REACH/MP_UNREACH, with communities, every prefix length, end-of-RIB markers), and
the same NOTIFICATION for one that does not decode. ExaBGP runs in a child process per mode: the
patch changes its classes for the whole interpreter."""
from __future__ import annotations

import ipaddress
import json
import os
import struct
import subprocess
import sys

from calico_bgp.speaker.events import Update
from calico_bgp.speaker.parse import parse_line
from tests.unit.exabgp_decode import as_path, attribute, next_hop, origin, sequence

# Decodes each body with ExaBGP's own parser (with exabgp_run's other receive-side patches in both
# modes) and prints, per UPDATE, its NLRI objects' state and the JSON line its API encoder writes.
_DECODE = r"""
import json, sys
from exabgp.environment import getenv
getenv()
from calico_bgp.speaker import exabgp_run, exabgp_receive
exabgp_run._quiet_debug()
exabgp_run._report_malformed_attributes()
exabgp_run._ipv6_next_hop_pairs()
if sys.argv[1] == "patched":
    exabgp_receive.patch()
from exabgp.bgp.message.direction import Direction
from exabgp.bgp.message.open.capability.negotiated import Negotiated
from exabgp.bgp.message.update import Update
from exabgp.bgp.neighbor import Neighbor
from exabgp.protocol.family import AFI, SAFI
from exabgp.reactor.api.response import Response

n = Neighbor()
n['local-address'], n['peer-address'], n['local-as'], n['peer-as'], n['router-id'] = (
    "198.18.0.2", "198.18.0.1", 64512, 65001, "198.18.0.2")
def shown(v):  # an object without a repr of its own (NoNextHop) by its identity among the singletons
    text = repr(v)
    return type(v).__name__ if " object at 0x" in text else text

encoders = [Response.JSON("5.0.0"), Response.JSON("5.0.0")]
encoders[1].compact = not encoders[0].compact  # both encodings of a prefix
for body in json.loads(sys.stdin.read()):
    negotiated = Negotiated(n)
    negotiated.asn4 = True
    negotiated.families = [(AFI.ipv4, SAFI.unicast), (AFI.ipv6, SAFI.unicast)]
    try:
        update = Update.unpack_message(bytes.fromhex(body), Direction.IN, negotiated)
    except Exception as e:
        print(json.dumps({"raises": f"{type(e).__name__}: {e}"}))
        continue
    nlris = [[type(x).__name__, sorted((k, shown(v), type(v).__name__) for k, v in vars(x).items())]
             for x in getattr(update, "nlris", ())]
    lines = [e.update(n, "receive", update, None, "", "").split('"neighbor"', 1)[1] for e in encoders]
    print(json.dumps({"nlris": nlris, "json": lines}))
"""

V4_LENGTHS = ["0.0.0.0/0", "128.0.0.0/1", "198.0.0.0/7", "198.0.0.0/8", "198.0.0.0/9", "198.18.0.0/15",
              "198.18.64.0/24", "198.18.64.128/25", "198.18.64.7/32", "198.19.255.255/32"]
V6_LENGTHS = ["::/0", "2000::/3", "2001:db8::/32", "2001:db8:1::/48", "2001:db8:1:2::/64",
              "2001:db8:1:2::80/121", "2001:db8::1/128", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128"]


def _nlri(prefixes: list[str]) -> bytes:
    nets = [ipaddress.ip_network(p) for p in prefixes]
    return b"".join(bytes([n.prefixlen]) + n.network_address.packed[:(n.prefixlen + 7) // 8] for n in nets)


def _body(attributes: list[bytes], announce: bytes = b"", withdraw: bytes = b"") -> bytes:
    a = b"".join(attributes)
    return struct.pack("!H", len(withdraw)) + withdraw + struct.pack("!H", len(a)) + a + announce


def _mp_reach(next_hops: list[str], prefixes: list[str]) -> bytes:
    nh = b"".join(ipaddress.ip_address(x).packed for x in next_hops)
    return attribute(0x80, 14, struct.pack("!HBB", 2, 1, len(nh)) + nh + b"\x00" + _nlri(prefixes))


def _mp_unreach(prefixes: list[str]) -> bytes:
    return attribute(0x80, 15, struct.pack("!HB", 2, 1) + _nlri(prefixes))


def _communities(*pairs: tuple[int, int]) -> bytes:
    return attribute(0xC0, 8, b"".join(struct.pack("!HH", a, b) for a, b in pairs))


def _large(*triples: tuple[int, int, int]) -> bytes:
    return attribute(0xC0, 32, b"".join(struct.pack("!III", *t) for t in triples))


BASE = [origin(0), sequence(65001, 65002), next_hop("198.18.0.1")]
MANY = [f"198.18.{i // 256}.{i % 256}/32" for i in range(0, 800)]

BODIES = [
    _body(BASE, announce=_nlri(V4_LENGTHS)),
    _body(BASE, announce=_nlri(MANY)),
    _body([], withdraw=_nlri(MANY[:300])),
    _body(BASE, announce=_nlri(MANY[:5]), withdraw=_nlri(V4_LENGTHS)),
    _body([origin(2), as_path((2, (65001,)), (1, (65010, 65011))), next_hop("198.18.0.9"),
           attribute(0x80, 4, struct.pack("!I", 50)), attribute(0x40, 5, struct.pack("!I", 200)),
           _communities((65001, 100), (65535, 65281)), _large((65001, 1, 2))], announce=_nlri(V4_LENGTHS[3:])),
    _body([origin(0), sequence(65001), _mp_reach(["2001:db8::1"], V6_LENGTHS)]),
    _body([origin(0), sequence(65001), _mp_reach(["2001:db8::1", "fe80::1"], V6_LENGTHS[2:5])]),
    _body([origin(0), sequence(65001), _mp_reach(["fe80::1"], V6_LENGTHS[5:])]),
    _body([_mp_unreach(V6_LENGTHS)]),
    _body(BASE + [_mp_reach(["2001:db8::1"], V6_LENGTHS[:3])], announce=_nlri(MANY[:3]), withdraw=_nlri(MANY[3:6])),
    _body([]),  # IPv4 end-of-RIB
    _body([_mp_unreach([])]),  # IPv6 end-of-RIB
    # what does not decode: ExaBGP's own NOTIFICATION, with the patch as without
    _body(BASE, announce=bytes([33, 198, 18, 0, 1, 0])),       # an IPv4 length beyond 32
    _body(BASE, announce=bytes([24, 198, 18])),                # fewer bytes than the length says
    _body([], withdraw=bytes([32, 198, 18, 0, 1, 25])),        # the last prefix cut short
    _body([origin(0), sequence(65001), attribute(0x80, 14, struct.pack("!HBB", 2, 1, 16)
                                                 + ipaddress.ip_address("2001:db8::1").packed + b"\x00"
                                                 + bytes([129]) + bytes(16))]),  # IPv6 length beyond 128
]


def _exabgp(mode: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", _DECODE, mode], input=json.dumps([b.hex() for b in BODIES]),
                         capture_output=True, text=True, check=True, timeout=120)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == len(BODIES), out.stderr
    return lines


def test_the_same_nlris_and_json_with_the_patch_as_without():
    plain, patched = _exabgp("plain"), _exabgp("patched")
    for i, (a, b) in enumerate(zip(plain, patched)):
        assert a == b, f"UPDATE {i}"
    # the malformed ones did reach the decoder's checks
    assert [x["raises"].split(" / ")[-1] for x in plain if "raises" in x] == [
        "invalid mask 33 in NLRI prefix for ipv4", "could not decode nlri with family ipv4 (AFI 1) unicast (SAFI 1)",
        "not enough data for the mask provided to decode the NLRI", "invalid mask 129 in NLRI prefix for ipv6"]


def test_the_agent_reads_every_prefix_of_the_patched_json():
    patched = _exabgp("patched")
    line = '{"exabgp": "5.0.0", "type": "update", "neighbor"' + patched[1]["json"][1]
    (update,) = parse_line(line)
    assert isinstance(update, Update)
    assert list(update.announced) == MANY
    assert {a.next_hop for a in update.announced.values()} == {"198.18.0.1"}
    v6 = parse_line('{"exabgp": "5.0.0", "type": "update", "neighbor"' + patched[5]["json"][1])
    assert [list(u.announced) for u in v6] == [[str(ipaddress.ip_network(p)) for p in V6_LENGTHS]]
    pair = parse_line('{"exabgp": "5.0.0", "type": "update", "neighbor"' + patched[6]["json"][0])
    assert [{(a.next_hop, a.link_local) for a in u.announced.values()} for u in pair] == [{("2001:db8::1", "fe80::1")}]
    withdrawn = parse_line('{"exabgp": "5.0.0", "type": "update", "neighbor"' + patched[2]["json"][0])
    assert [u.withdrawn for u in withdrawn] == [tuple(MANY[:300])]


# The API pipe with a recording stdin and a reactor whose poll finds nothing; prints what reached
# the pipe (each flush as FLUSH) after each step.
_PIPE = r"""
import time
from calico_bgp.speaker import exabgp_receive
from exabgp.reactor.asynchronous import ASYNC
from exabgp.reactor.api.processes import Processes
from exabgp.reactor.loop import Reactor
MOST = 0.3  # long enough for a loaded machine to run the steps that expect a line held
exabgp_receive._api_lines_per_read(MOST)
log = []
class Stdin:
    def write(self, data): log.append(data.decode().strip())
    def flush(self): log.append('FLUSH')
class Proc:
    stdin = Stdin()
class Poller:
    def poll(self, timeout): return []
procs = Processes.__new__(Processes)
procs._process, procs._broken, procs.silence = {'api': Proc()}, [], False
procs._dispatch = {2: lambda self, neighbor, *rest: self.write('api', neighbor)}  # an UPDATE's JSON line
reactor = Reactor.__new__(Reactor)
reactor._poller, reactor.asynchronous, reactor.processes = Poller(), ASYNC(), procs
def poll(timeout):
    list(reactor._wait_for_io(timeout))
    print(log); log.clear()
procs.message(2, 'update-1', 'receive', None, None, b''); poll(0)            # another UPDATE may be in the socket: held
procs.message(2, 'update-2', 'receive', None, None, b''); poll(0)
poll(10)                                         # the reactor would block: both go, one flush
procs.message(2, 'update-3', 'receive', None, None, b''); time.sleep(MOST); poll(0)   # held long enough
procs.message(2, 'update-4', 'receive', None, None, b''); procs.write('api', 'done'); poll(0)   # an answer goes at the pass end
poll(10)                                         # nothing held: no flush
procs.message(2, 'update-5', 'receive', None, None, b''); procs._process = {}; procs.terminate()  # a shutdown flushes first
print(log)
"""


def test_lines_of_received_updates_reach_the_api_pipe_together_once_the_reactor_has_read_them():
    """BIRD sends a tick's withdrawals and announcements as two UPDATEs: they reach the bridge in one
    write now, as do the UPDATEs of a burst for up to HOLD_MOST, and answers to the agent's commands
    still go at the end of the reactor's pass."""
    out = subprocess.run([sys.executable, "-c", _PIPE], capture_output=True, text=True, check=True,
                         timeout=60).stdout.splitlines()
    assert out == ["['update-1']",  # written into the pipe's buffer, not flushed
                   "['update-2']",
                   "['FLUSH']",
                   "['update-3', 'FLUSH']",
                   "['update-4', 'done', 'FLUSH']",
                   "[]",
                   "['update-5', 'FLUSH']"]


_WALK = r"""
import os, sys
from types import SimpleNamespace
from calico_bgp.speaker import exabgp_receive
from exabgp.bgp.message import KeepAlive
from exabgp.bgp.message.update import Update
from exabgp.reactor.protocol import Protocol
attributes = object()
def read(self):  # what ExaBGP's read_message yields once the API process was told
    yield Update(['198.19.0.1/32', '198.19.0.2/32'], attributes)
    yield KeepAlive()
Protocol.read_message = read
exabgp_receive._no_second_walk()
for cache in (False, True):
    proto = Protocol.__new__(Protocol)
    proto.neighbor = SimpleNamespace(rib=SimpleNamespace(incoming=SimpleNamespace(cache=cache)))
    got = list(proto.read_message())
    print([(type(m).__name__, getattr(m, 'nlris', None), getattr(m, 'attributes', None) is attributes) for m in got])
"""


def test_exabgp_does_not_walk_an_updates_prefixes_again_for_a_cache_it_does_not_keep():
    out = subprocess.run([sys.executable, "-c", _WALK], capture_output=True, text=True, check=True,
                         timeout=60).stdout.splitlines()
    assert out == ["[('Update', [], True), ('KeepAlive', None, False)]",  # adj-rib-in off: nothing to walk
                   "[('Update', ['198.19.0.1/32', '198.19.0.2/32'], True), ('KeepAlive', None, False)]"]
    debug = subprocess.run([sys.executable, "-c", _WALK], capture_output=True, text=True, check=True, timeout=60,
                           env={**os.environ, "exabgp_log_level": "DEBUG"}).stdout.splitlines()
    assert debug[0] == "[('Update', ['198.19.0.1/32', '198.19.0.2/32'], True), ('KeepAlive', None, False)]"  # logged per prefix


# A peer whose socket holds the messages of `held` (then nothing), run by a loop turn the way the
# reactor runs it: one Peer.run per turn; prints what each turn read and the action it returned.
_TURNS = r"""
import sys
from calico_bgp.speaker import exabgp_receive
from exabgp.bgp.message import KeepAlive, NOP
from exabgp.bgp.message.nop import _NOP
from exabgp.reactor.peer import ACTION, FSM, Peer
from exabgp.reactor.protocol import Protocol
held, pending_routes, rate, seconds = int(sys.argv[1]), sys.argv[2] == 'sending', int(sys.argv[3]), float(sys.argv[4])
socket, reads = [KeepAlive() for _ in range(held)], []
def read(self):  # ExaBGP's: one message a step, NOP while the socket is empty
    while True:
        yield socket.pop(0) if socket else _NOP
def main(peer):  # Peer._main's answer to what each read gave
    for message in peer.proto.read_message():
        reads.append(message.TYPE != NOP.TYPE)
        yield ACTION.NOW if message.TYPE != NOP.TYPE or pending_routes else ACTION.LATER
Protocol.read_message = read
Peer.run = lambda self: next(self.generator)
exabgp_receive._messages_per_turn(4, seconds)
peer = Peer.__new__(Peer)
peer.proto, peer.neighbor = Protocol.__new__(Protocol), {'rate-limit': rate}
peer.proto.peer, peer.fsm = peer, FSM(peer, FSM.ESTABLISHED)
peer.generator = main(peer)
for turn in range(4):
    action = peer.run()
    print(sum(reads), len(reads), action == ACTION.NOW); reads.clear()
"""


def _turns(held: int, sending: bool = False, rate: int = 0, seconds: float = 60.0) -> list[str]:
    return subprocess.run([sys.executable, "-c", _TURNS, str(held), "sending" if sending else "idle", str(rate), str(seconds)],
                          capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()


def test_a_peer_reads_what_its_socket_holds_in_one_turn_of_the_loop():
    # messages read, runs, whether the loop is asked for another turn at once
    assert _turns(2) == ["2 3 False", "0 1 False", "0 1 False", "0 1 False"]  # two UPDATEs, then the empty read: one turn
    assert _turns(6) == ["4 4 True", "2 3 False", "0 1 False", "0 1 False"]  # at most 4 runs a turn
    assert _turns(0) == ["0 1 False"] * 4


def test_a_peer_with_routes_to_send_or_a_rate_limit_keeps_one_run_a_turn():
    assert _turns(1, sending=True) == ["1 2 True", "0 1 True", "0 1 True", "0 1 True"]  # no repeat once nothing is read
    assert _turns(2, rate=100) == ["1 1 True", "1 1 True", "0 1 False", "0 1 False"]


def test_a_peer_stops_reading_within_a_turn_once_its_runs_took_their_time():
    # with many peers flooding, the turn stays short: no second run once the time is spent
    assert _turns(3, seconds=0.0) == ["1 1 True", "1 1 True", "1 1 True", "0 1 False"]


# Random classic IPv4 fields (well formed or not: lengths beyond 32, prefixes cut short, bodies cut
# anywhere) through ExaBGP's Update.unpack_message with and without the one-walk decoding, the
# other receive patches in both: what each returns or raises, printed side by side.
_WALK_VS_EXABGP = r"""
import json, random, struct, sys
from exabgp.environment import getenv
getenv()
from calico_bgp.speaker import exabgp_run, exabgp_receive, exabgp_decode
exabgp_run._quiet_debug(); exabgp_run._report_malformed_attributes()
exabgp_decode._family_create(); exabgp_decode._nlri_decode(); exabgp_receive._withdrawals_keep_attribute_cache()
from exabgp.bgp.message.update import Update
exabgp_own = Update.unpack_message.__func__
exabgp_decode._update_prefixes_in_one_walk()
one_walk = Update.unpack_message.__func__
from exabgp.bgp.message.direction import Direction
from exabgp.bgp.message.open.capability.negotiated import Negotiated
from exabgp.bgp.neighbor import Neighbor
from exabgp.protocol.family import AFI, SAFI
n = Neighbor()
n['local-address'], n['peer-address'], n['local-as'], n['peer-as'], n['router-id'] = (
    "198.18.0.2", "198.18.0.1", 64512, 65001, "198.18.0.2")
def negotiated():
    x = Negotiated(n); x.asn4 = True; x.families = [(AFI.ipv4, SAFI.unicast)]; return x
BASE = bytes.fromhex("40010100" "4002060201" "0000fde9")
ATTRIBUTES = [b"", BASE + bytes.fromhex("400304c6120001"), BASE, bytes.fromhex("4001020000")]
r = random.Random(int(sys.argv[1]))
def field():
    out = b""
    for _ in range(r.randint(0, 6)):
        mask = r.choice([0, 1, 7, 8, 9, 16, 24, 25, 31, 32, 33, 255])
        size = (mask + 7) // 8 if r.random() < 0.9 else r.randint(0, 5)
        out += bytes([mask]) + bytes(r.randrange(256) for _ in range(min(size, 4)))
    return out[:-1] if out and r.random() < 0.1 else out
def state(got):
    if isinstance(got, Exception):
        return ["raises", type(got).__name__, str(got)]
    return [type(got).__name__, [sorted((k, repr(v)) for k, v in vars(x).items()) for x in getattr(got, "nlris", [])],
            sorted(getattr(got, "attributes", {}))]
for _ in range(int(sys.argv[2])):
    withdrawn, attributes, announced = field(), r.choice(ATTRIBUTES), field()
    body = struct.pack("!H", len(withdrawn)) + withdrawn + struct.pack("!H", len(attributes)) + attributes + announced
    if r.random() < 0.05:
        body = body[:r.randint(0, len(body))]
    both = []
    for unpack in (exabgp_own, one_walk):
        try:
            both.append(state(unpack(Update, body, Direction.IN, negotiated())))
        except Exception as e:
            both.append(state(e))
    print(json.dumps(both))
"""


def test_the_one_walk_decoding_returns_and_raises_what_exabgps_own_does():
    out = subprocess.run([sys.executable, "-c", _WALK_VS_EXABGP, "7", "3000"], capture_output=True, text=True,
                         check=True, timeout=120).stdout.splitlines()
    pairs = [json.loads(line) for line in out]
    assert len(pairs) == 3000
    assert [i for i, (own, walked) in enumerate(pairs) if own != walked] == []
    assert sum(own[0] == "raises" for own, _ in pairs) > 100  # the refusals were exercised
    assert sum(own[0] == "Update" and len(own[1]) > 3 for own, _ in pairs) > 100  # and the decoding
