"""ExaBGP's own entry point, minus the cost of debug logging it would discard anyway, with its
reconnect back-off bounded, and an IPv6 next hop of global + link-local read as one (`_ipv6_next_hop_pairs`).

    python -m calico_bgp.speaker.exabgp_run CONFIG      (what the speaker runs)

ExaBGP calls `log.debug(lambda: ...)` several times per received UPDATE and per NLRI; each call
walks its logger and option tables before finding debug is off: about a tenth of its CPU while a
100k-prefix table arrives (py-spy: 378 -> 336 samples for a 100k withdraw, then 12 fewer without
the per-NLRI message object). Unless `exabgp_log_level` asks for DEBUG, those calls return at once.
Everything else (warnings, errors, state changes) logs as before.
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


def _bounded_retry(most: int = RETRY_MAX) -> None:
    """ExaBGP waits 1.2x longer after each failed connection attempt, up to 60 s. When a rack starts
    together, a peer's first attempts meet a speaker that is not listening yet or has not loaded the
    session (a Cease "no session configured"), and after a dozen of those the next try was a minute
    away: sessions stayed down for a minute after everything was ready. Capped at `most` seconds, a
    session opens within that of both sides being ready (BIRD's `connect retry time` is the knob there)."""
    import time

    from exabgp.reactor.delay import Delay

    def increase(self: Delay) -> None:
        self._time = time.time() + self._next
        self._next = min(int(1 + self._next * 1.2), most)

    Delay.increase = increase  # type: ignore[method-assign]


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


def main() -> int:
    if os.environ.get("exabgp_log_level", "INFO").upper() != "DEBUG":
        _quiet_debug()
    _bounded_retry()
    _ipv6_next_hop_pairs()
    from exabgp.application.main import main as exabgp_main

    sys.argv[0] = "exabgp"
    return exabgp_main()


def is_exabgp(cmdline: bytes) -> bool:
    """Whether a /proc/<pid>/cmdline is an ExaBGP (ours through this module, or the plain one)."""
    return b"speaker.exabgp_run" in cmdline or (b"exabgp" in cmdline and b"calico_bgp" not in cmdline)


if __name__ == "__main__":
    sys.exit(main())
