"""ExaBGP's own entry point, minus the cost of debug logging it would discard anyway, and with its
reconnect back-off bounded.

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


def main() -> int:
    if os.environ.get("exabgp_log_level", "INFO").upper() != "DEBUG":
        _quiet_debug()
    _bounded_retry()
    from exabgp.application.main import main as exabgp_main

    sys.argv[0] = "exabgp"
    return exabgp_main()


def is_exabgp(cmdline: bytes) -> bool:
    """Whether a /proc/<pid>/cmdline is an ExaBGP (ours through this module, or the plain one)."""
    return b"speaker.exabgp_run" in cmdline or (b"exabgp" in cmdline and b"calico_bgp" not in cmdline)


if __name__ == "__main__":
    sys.exit(main())
