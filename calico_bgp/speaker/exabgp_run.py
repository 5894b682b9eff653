"""ExaBGP's own entry point, minus the cost of debug logging it would discard anyway, with its
reconnect back-off bounded, and two of its defects mended (each to be offered upstream, see the
README's "ExaBGP patches"), and the attribute errors it handles silently shown to the agent:

- after an OPEN with no KEEPALIVE it spun at 100% CPU until the hold timer (`_keepalive_wait`);
- a bad marker or header length reset TCP without the NOTIFICATION RFC 4271 6.1 asks for
  (`_header_error_notification`).

and an IPv6 next hop of global + link-local read as one (`_ipv6_next_hop_pairs`).

    python -m calico_bgp.speaker.exabgp_run CONFIG      (what the speaker runs)

ExaBGP calls `log.debug(lambda: ...)` several times per received UPDATE and per NLRI; each call
walks its logger and option tables before finding debug is off: about a tenth of its CPU while a
100k-prefix table arrives (py-spy: 378 -> 336 samples for a 100k withdraw, then 12 fewer without
the per-NLRI message object). Unless `exabgp_log_level` asks for DEBUG, those calls return at once.
Everything else (warnings, errors, state changes) logs as before.

It runs under the agent's CPython or under PyPy 3.9 (speaker/process.py picks): this module, and
whatever of calico_bgp it imports, must import under Python 3.9 (tests/unit/test_exabgp_run.py runs
it under both). CALICO_BGP_EXABGP_WARMUP=N decodes N synthetic UPDATEs before the reactor starts
(`warm_up`: PyPy's JIT warm-up; off by default, see the README's "ExaBGP under PyPy").
"""
from __future__ import annotations

import os
import sys


def _quiet_debug() -> None:
    from exabgp.bgp.message.update.nlri import nlri as nlri_module
    from exabgp.logger import log

    def discard(message: object, source: str = "", level: str = "DEBUG") -> None:
        return None

    def no_message(*args: object) -> None:
        return None

    log.debug = staticmethod(discard)  # type: ignore[method-assign,assignment]
    # the one debug message built per NLRI (a closure over its bytes), before log.debug is even called
    nlri_module.lazynlri = no_message  # type: ignore[attr-defined]


RETRY_MAX = 5  # seconds between connection attempts at most, after repeated failures
RETRY_FIRST = 0.25  # seconds before the second retry (the first is at once), doubling up to RETRY_MAX


def _bounded_retry(most: float = RETRY_MAX, first: float = RETRY_FIRST) -> None:
    """ExaBGP waits 1.2x longer after each failed connection attempt, up to 60 s. When a rack starts
    together, a peer's first attempts meet a speaker that is not listening yet or has not loaded the
    session (a Cease "no session configured"), and after a dozen of those the next try was a minute
    away: sessions stayed down for a minute after everything was ready. Capped at `most` seconds, a
    session opens within that of both sides being ready (BIRD's `connect retry time` is the knob there).
    The first waits are short too: the first retry at once (as ExaBGP does), then `first` seconds,
    doubling (0.25, 0.5, 1, 2, 4, 5, 5 ...; ExaBGP's were 1, 2, 3, 4, 5): a node that joins dials
    peers that are still loading its session, and each of them is usually ready well within a
    second of its first refusal, not three."""
    import time

    from exabgp.reactor.delay import Delay

    def increase(self: Delay) -> None:
        self._time = time.time() + self._next
        self._next = min(self._next * 2 if self._next else first, most)

    Delay.increase = increase  # type: ignore[method-assign]


def _keepalive_wait() -> None:
    """In OpenConfirm, ExaBGP's keepalive read told the reactor "run me again now" while no bytes
    had come (`Peer._read_ka` yields ACTION.NOW for every NOP), so a peer that sends its OPEN and
    then nothing kept a core busy until the hold timer fired. Upstream made the same change for the
    OPEN read (Exa-Networks/exabgp#723, PR #730): wait for the socket (ACTION.LATER) while nothing
    arrived. The reactor still runs the peer every loop, so the hold timer is checked as before."""
    from exabgp.bgp.message import Message
    from exabgp.reactor.peer import ACTION, Peer

    def _read_ka(self: Peer):  # type: ignore[no-untyped-def]
        for message in self.proto.read_keepalive():
            self.recv_timer.check_ka_timer(message)
            yield ACTION.LATER if message.ID == Message.CODE.NOP else ACTION.NOW

    Peer._read_ka = _read_ka  # type: ignore[method-assign]


def _header_error_notification() -> None:
    """A bad marker or header length (RFC 4271 6.1: Message Header Error, Connection Not
    Synchronized / Bad Message Length) is found by ExaBGP's reader, and `Protocol.read_message`
    first reports it to the API as a *received* NOTIFICATION through `Processes.notification(...)`,
    with one argument more than that method takes: the TypeError ended the session as an unhandled
    error, TCP closed without the NOTIFICATION. The error is ours to notify, not something the peer
    sent: the method now accepts the call and reports nothing, the `Notify` raised right after sends
    the NOTIFICATION, and the session goes down as "notification sent (1,x)" like any other error.
    (`Processes.notification` has no other caller; received NOTIFICATIONs go through `_notification`.)"""
    from exabgp.reactor.api.processes import Processes

    def notification(self: Processes, neighbor, direction, code, subcode, data, *rest) -> None:  # type: ignore[no-untyped-def]
        return None

    Processes.notification = notification  # type: ignore[method-assign]


def patch() -> None:
    """Everything this module changes in ExaBGP but the debug logging."""
    from calico_bgp.speaker import exabgp_idle  # first: exabgp_receive's flush wraps its wait

    exabgp_idle.patch()
    _bounded_retry()
    _keepalive_wait()
    _header_error_notification()
    _report_malformed_attributes()
    _ipv6_next_hop_pairs()
    from calico_bgp.speaker import exabgp_fastpath, exabgp_generation, exabgp_gtsm, exabgp_reactor, exabgp_receive  # the agent imports this module for its names alone
    from calico_bgp.speaker import exabgp_tokens

    exabgp_tokens.patch()
    exabgp_fastpath.patch()
    exabgp_gtsm.patch()
    exabgp_receive.patch()
    exabgp_generation.patch()
    exabgp_reactor.patch()


MALFORMED_KEY = "rfc7606"  # the JSON attribute naming what the wire had wrong (speaker/parse.py reads it)
_MARKER_CODE = 0xFFF0  # an internal attribute code ExaBGP does not use (its own are 0xFFFA..0xFFFF)
_AS_PATH, _MP_REACH, _MP_UNREACH = 2, 14, 15
_OPTIONAL, _EXTENDED_LENGTH = 0x80, 0x10


def attribute_errors(data: bytes, known: "frozenset[int] | set[int]") -> dict[str, list[int]]:
    """What ExaBGP's JSON cannot show about an UPDATE's path attribute section (`data`), from its
    headers alone: attributes sent more than once (ExaBGP keeps the first, as RFC 7606 3(g) says,
    and tells nobody), unrecognized attributes without the Optional bit (well-known ones we do
    not know: ExaBGP drops a non-transitive one without a word and passes a transitive one on),
    and whether AS_PATH was there at all (ExaBGP shows an empty AS_PATH and a missing one alike:
    not at all). `known`: the attribute codes ExaBGP decodes. Framing errors are ExaBGP's own
    treat-as-withdraw; the walk stops at one."""
    seen: set[int] = set()
    duplicate: list[int] = []
    well_known: list[int] = []
    at, end = 0, len(data)
    while at + 3 <= end:
        flags, code = data[at], data[at + 1]
        if flags & _EXTENDED_LENGTH:
            if at + 4 > end:
                break
            length, at = int.from_bytes(data[at + 2:at + 4], "big"), at + 4
        else:
            length, at = data[at + 2], at + 3
        at += length
        if code in seen:
            if code not in (_MP_REACH, _MP_UNREACH) and code not in duplicate:  # those two ExaBGP refuses itself
                duplicate.append(code)
            continue
        seen.add(code)
        if code not in known and not flags & _OPTIONAL:
            well_known.append(code)
    out: dict[str, list[int]] = {}
    if duplicate:
        out["duplicate"] = duplicate
    if well_known:
        out["unrecognized-well-known"] = well_known
    if seen - {_MP_UNREACH} and _AS_PATH not in seen:  # withdrawals alone need no AS_PATH (nor an End-of-RIB)
        out["missing"] = [_AS_PATH]
    return out


def _report_malformed_attributes() -> None:
    """ExaBGP answers most malformed attributes itself (RFC 7606 treat-as-withdraw: the routes come
    as withdrawals with an "error" attribute), but some reach the API looking well formed: a
    duplicate attribute, an unrecognized well-known attribute, a missing AS_PATH, an ORIGIN whose
    length is not 1 (ExaBGP reads its first octet). Each UPDATE with one of those gets an
    `"rfc7606": {"duplicate": [1], "unrecognized-well-known": [99], "missing": [2]}` attribute (one
    that only withdraws gets none, so an End-of-RIB stays one), and an ORIGIN of the wrong length
    reads "invalid" like an undefined value, so the agent can apply RFC 7606 (calico_bgp/routing/malformed.py).
    Costs one walk over the attribute headers per distinct attribute section (ExaBGP reuses its
    parse of the section it saw last)."""
    import json

    from exabgp.bgp.message.update.attribute.attribute import Attribute
    from exabgp.bgp.message.update.attribute.attributes import Attributes
    from exabgp.bgp.message.update.attribute.origin import Origin

    class Malformed:
        ID = _MARKER_CODE
        FLAG = 0
        GENERIC = False

        def __init__(self, errors: dict[str, list[int]]) -> None:
            self.errors = errors

        def json(self) -> str:
            return json.dumps(self.errors)

        def pack(self, negotiated: object = None) -> bytes:
            return b""  # never sent on: it describes what we received

        def __str__(self) -> str:
            return self.json()

    Attributes.representation[_MARKER_CODE] = ("list", "", MALFORMED_KEY, "%s", "%s")
    Attributes.INTERNAL = (*Attributes.INTERNAL, _MARKER_CODE)  # not packed, not in the text encoder
    parse = Attributes.parse

    def parse_and_report(self: Attributes, data: bytes, direction: object, negotiated: object) -> Attributes:
        parse(self, data, direction, negotiated)
        errors = attribute_errors(data, set(Attribute.attributes_known))
        if errors:
            self[_MARKER_CODE] = Malformed(errors)
            self._json = ""
        return self

    Attributes.parse = parse_and_report  # type: ignore[method-assign]
    unpack_origin = Origin.unpack.__func__  # type: ignore[attr-defined]

    def origin_of_one_octet(cls: type, data: bytes, direction: object, negotiated: object) -> Origin:
        if len(data) != 1:  # RFC 7606 7.1: a length other than 1 is malformed, as an undefined value is
            return cls(0xFF, data)  # type: ignore[no-any-return]
        return unpack_origin(cls, data, direction, negotiated)  # type: ignore[no-any-return]

    Origin.unpack = classmethod(origin_of_one_octet)  # type: ignore[method-assign,assignment]


_IPV6_UNICAST = b"\x00\x02\x01"  # MP_REACH_NLRI's AFI 2, SAFI 1


def _ipv6_next_hop_pairs() -> None:
    """An IPv6 next hop of 32 bytes (RFC 2545 section 3: global, then link-local; what BIRD and FRR send
    on a direct session) as one next hop, printed "GLOBAL LINK-LOCAL" in the JSON. ExaBGP 5.0.15 reads
    each NLRI once per address and lists every prefix twice, under each address as a separate next
    hop: a reader cannot tell that from two announcements and kept the link-local one. Here the
    attribute is read as if its next hop were the global address alone (so every NLRI is decoded
    once), then each NLRI gets one next hop that packs and compares as the global address and
    carries the link-local one. Other families and lengths are read as before. It also halves
    ExaBGP's work for such UPDATEs: 100k prefixes decoded and written as JSON in 2.0-2.3 s, not
    5.1-5.5 s, 3.9 MB of JSON, not 7.8 MB."""
    from exabgp.bgp.message.update.attribute.mprnlri import MPRNLRI
    from exabgp.bgp.message.update.attribute.nexthop import NextHop
    from exabgp.protocol.ip import IP

    class NextHopPair(NextHop):
        def __init__(self, packed: bytes) -> None:
            self.init(IP.ntop(packed[:16]), packed[:16])
            self.link_local = IP.ntop(packed[16:32])

        def __repr__(self) -> str:
            return f"{self._string} {self.link_local}"

    read = MPRNLRI.unpack.__func__  # type: ignore[attr-defined]

    def unpack(cls, data, direction, negotiated):  # type: ignore[no-untyped-def]
        # AFI(2) SAFI(1) length(1)=32 next hop(32) reserved(1) NLRI...; anything shorter is the original's to refuse
        if data[:3] != _IPV6_UNICAST or len(data) < 38 or data[3] != 32:
            return read(cls, data, direction, negotiated)
        raw = bytes(data)
        reach = read(cls, raw[:3] + b"\x10" + raw[4:20] + raw[36:], direction, negotiated)
        pair = NextHopPair(raw[4:36])
        for nlri in reach.nlris:
            nlri.nexthop = pair
        return reach

    MPRNLRI.unpack = classmethod(unpack)  # type: ignore[method-assign,assignment]


WARM_UP_ENV = "CALICO_BGP_EXABGP_WARMUP"  # UPDATEs decoded and encoded before the reactor starts (default none)
_WARM_UP_NLRIS = 400  # /32s per synthetic UPDATE: what BIRD packs into one is about 800


def _synthetic_update(first: int, count: int, withdraw: bool) -> bytes:
    """An UPDATE body (no header) of `count` IPv4 /32s from 198.18.0.0/15 (`first` the offset), announced
    with ORIGIN, AS_PATH, NEXT_HOP and MED, or withdrawn."""
    nlris = b"".join(b"\x20" + (0xC6120000 + (first + i) % 0x20000).to_bytes(4, "big") for i in range(count))
    if withdraw:
        return len(nlris).to_bytes(2, "big") + nlris + b"\x00\x00"
    attributes = (b"\x40\x01\x01\x00"                                      # ORIGIN igp
                  b"\x40\x02\x06\x02\x01\x00\x00\xfd\xe9"                  # AS_PATH 65001
                  b"\x40\x03\x04\xc6\x12\x00\x01"                          # NEXT_HOP 198.18.0.1
                  b"\x80\x04\x04\x00\x00\x00\x00")                         # MED 0
    return b"\x00\x00" + len(attributes).to_bytes(2, "big") + attributes + nlris


def warm_up(updates: int) -> float:
    """Run `updates` synthetic UPDATEs (announcements and withdrawals, half each) through ExaBGP's own
    decoder (Update.unpack_message, with our patches) and its JSON encoder (what a received UPDATE
    costs before it is written to the API process), and throw the results away; returns the seconds
    it took. Under PyPy this is the JIT's warm-up: the first table after a start is decoded by
    compiled code instead of the interpreter (measured: README "ExaBGP under PyPy"). Nothing
    persists but ExaBGP's caches of what it parsed last."""
    import time

    from exabgp.bgp.message.direction import Direction
    from exabgp.bgp.message.open.capability.negotiated import Negotiated
    from exabgp.bgp.message.update import Update
    from exabgp.bgp.neighbor import Neighbor
    from exabgp.environment import getenv
    from exabgp.protocol.family import AFI, SAFI
    from exabgp.reactor.api.response import Response
    from exabgp.version import json as json_version

    started = time.monotonic()
    getenv()
    neighbor = Neighbor()
    neighbor["local-address"], neighbor["peer-address"] = "198.18.0.2", "198.18.0.1"
    neighbor["local-as"], neighbor["peer-as"], neighbor["router-id"] = 64512, 65001, "198.18.0.2"
    negotiated = Negotiated(neighbor)
    negotiated.asn4 = True
    negotiated.families = [(AFI.ipv4, SAFI.unicast)]
    encoder = Response.JSON(json_version)
    bodies = [_synthetic_update(i * _WARM_UP_NLRIS, _WARM_UP_NLRIS, withdraw) for i in range(4) for withdraw in (False, True)]
    for i in range(updates):
        update = Update.unpack_message(bodies[i % len(bodies)], Direction.IN, negotiated)
        encoder.update(neighbor, "receive", update, None, "", "")
    return time.monotonic() - started


def warm_up_updates(env: "dict[str, str] | os._Environ[str]") -> int:
    """How many UPDATEs `warm_up` runs at start: CALICO_BGP_EXABGP_WARMUP, else none. Off by default:
    measured under PyPy it delayed the first session by more than it saved on the first table."""
    value = env.get(WARM_UP_ENV, "").strip()
    return max(0, int(value)) if value else 0


def without_tls(modules: "dict[str, object]") -> bool:
    """Keep OpenSSL out of ExaBGP's process: BGP here is plain TCP (TCP-MD5 is a socket option), and
    the only importer of `ssl` is asyncio, whose TLS support is optional (`try: import ssl`). Loading
    it cost ExaBGP about 4 MB of RSS (of ~29 MB) and 10 ms at each start. A `None` entry in
    sys.modules makes any later `import ssl` fail with ImportError; returns whether it was blocked
    (not when something imported ssl already)."""
    if "ssl" in modules:
        return False
    modules["ssl"] = None
    return True


def main() -> int:
    without_tls(sys.modules)  # type: ignore[arg-type]
    if os.environ.get("exabgp_log_level", "INFO").upper() != "DEBUG":
        _quiet_debug()
    patch()
    import platform

    updates = warm_up_updates(os.environ)
    if updates:
        took = warm_up(updates)
        print(f"calico-bgp: {platform.python_implementation()} warmed up on {updates} UPDATEs in {took:.2f}s", flush=True)
    from exabgp.application.main import main as exabgp_main

    sys.argv[0] = "exabgp"
    return exabgp_main()


def is_exabgp(cmdline: bytes) -> bool:
    """Whether a /proc/<pid>/cmdline is an ExaBGP (ours through this module, or the plain one)."""
    return b"speaker.exabgp_run" in cmdline or (b"exabgp" in cmdline and b"calico_bgp" not in cmdline)


if __name__ == "__main__":
    sys.exit(main())
