"""ExaBGP's session timers while its idle wait is long (calico_bgp.speaker.exabgp_idle waits until
the next timer when every session is Established): against a real patched ExaBGP with our raw
speaker as its peer, hold time 3 s, its KEEPALIVEs still go once a second and its hold timer still
ends a silent session on time."""
from __future__ import annotations

import shutil
import time

import pytest

from lab.net import netns, sh
from tests.bgpwire import message as m
from tests.bgpwire.exabgp import PEER_AS, lone_exabgp
from tests.bgpwire.session import RawSpeaker
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")]

EXA, US = "198.18.0.1", "198.18.0.2"


def test_keepalives_and_the_hold_timer_keep_time_while_the_loop_waits_for_them(tmp_path):
    with netns("x") as ns:
        sh("ip", "addr", "add", f"{EXA}/32", "dev", "lo", ns=ns)
        sh("ip", "addr", "add", f"{US}/32", "dev", "lo", ns=ns)
        with lone_exabgp(ns, tmp_path, EXA, US, hold_time=3), RawSpeaker.connect(EXA, ns=ns, source=US) as s:
            s.establish(PEER_AS, US, 3)  # hold time 3 s: ExaBGP sends a KEEPALIVE every second
            before = len(s.received)
            s.keep_alive(6.0)  # ours once a second, so its hold timer never fires
            theirs = [msg for msg in s.received[before:] if msg.type == m.KEEPALIVE]
            assert s.notification is None and not s.closed
            assert 5 <= len(theirs) <= 8, f"{len(theirs)} KEEPALIVEs from ExaBGP in 6 s (one a second expected)"
            s.established = False  # no more KEEPALIVEs from us
            silent = time.monotonic()
            note = s.wait_notification(10)
            took = time.monotonic() - silent
            assert note is not None and note.code == 4, note  # Hold Timer Expired (RFC 4271 6.5)
            assert 2.0 <= took <= 5.5, f"the hold timer (3 s) fired after {took:.1f} s of silence"
