"""ExaBGP's two defects that a hostile peer could use, against a real ExaBGP process with our raw
speaker as its peer: each case runs our patched entry point (calico_bgp.speaker.exabgp_run) and
ExaBGP's own, so the test shows the defect is there and that the patch mends it.

- an OPEN and then nothing: ExaBGP waits in OpenConfirm without spinning (was 100% of a core until
  the hold timer);
- a bad marker / a bad header length: ExaBGP answers with NOTIFICATION Message Header Error 1/1 /
  1/2 (RFC 4271 6.1; the Bad Message Length data is the erroneous length), and was a TypeError and a
  TCP reset without one.
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

from lab.net import netns, sh
from tests.bgpwire import message as m
from tests.bgpwire.exabgp import PEER_AS, lone_exabgp
from tests.bgpwire.session import RawSpeaker
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")]

EXA, US = "198.18.0.1", "198.18.0.2"


@contextlib.contextmanager
def exabgp(tmp: Path, patched: bool):
    with netns("x") as ns:
        sh("ip", "addr", "add", f"{EXA}/32", "dev", "lo", ns=ns)
        sh("ip", "addr", "add", f"{US}/32", "dev", "lo", ns=ns)
        with lone_exabgp(ns, tmp, EXA, US, hold_time=30, patched=patched) as exa:
            yield ns, exa


def _stuck_in_openconfirm_cpu(tmp: Path, patched: bool) -> float:
    with exabgp(tmp, patched) as (ns, exa), RawSpeaker.connect(EXA, ns=ns, source=US) as s:
        s.send(m.open_message(PEER_AS, US, 30))
        s.read_open()
        s.expect(m.KEEPALIVE)  # ExaBGP is in OpenConfirm now, waiting for our KEEPALIVE
        share = exa.cpu_share(3.0)
        assert not s.closed and s.notification is None, "the session must still be waiting (hold time 30 s)"
        return share


def test_an_open_without_keepalive_does_not_spin(tmp_path):
    patched = _stuck_in_openconfirm_cpu(tmp_path / "patched", True)
    unpatched = _stuck_in_openconfirm_cpu(tmp_path / "plain", False)
    print(f"ExaBGP CPU in OpenConfirm over 3 s: patched {patched:.1%} of a core, unpatched {unpatched:.1%}")
    assert patched < 0.10, f"patched ExaBGP used {patched:.0%} of a core waiting for a KEEPALIVE"
    # the control: unpatched, it spins (a full core when the machine is idle; under load it gets less,
    # so the bar is relative, and still far above a process that waits)
    assert unpatched > max(0.12, 5 * patched), f"the defect did not show ({unpatched:.0%}): the test no longer measures it"


def test_the_hold_timer_still_ends_a_session_stuck_in_openconfirm(tmp_path):
    with exabgp(tmp_path, True) as (ns, _exa), RawSpeaker.connect(EXA, ns=ns, source=US) as s:
        s.send(m.open_message(PEER_AS, US, 3))  # hold time 3 s negotiated
        s.read_open()
        s.expect(m.KEEPALIVE)
        note = s.wait_notification(10)
        assert note is not None and note.code == 4, note  # Hold Timer Expired (RFC 4271 6.5)


def _after_bad_header(tmp: Path, patched: bool, bad: bytes) -> tuple[m.Notification | None, bool, str]:
    with exabgp(tmp, patched) as (ns, exa), RawSpeaker.connect(EXA, ns=ns, source=US) as s:
        s.establish(PEER_AS, US, 30)
        s.send(bad)
        note = s.wait_notification(10)
        closed = s.wait_closed(10)
        return note, closed, exa.output()


@pytest.mark.parametrize("case, bad, code", [
    ("marker", b"\x00" * 16 + b"\x00\x13\x04", (1, 1, None)),
    ("length", m.raw_header(5, m.KEEPALIVE), (1, 2, b"\x00\x05")),
    ("too long", m.raw_header(4097, m.UPDATE) + b"\x00" * 64, (1, 2, b"\x10\x01")),
])
def test_a_bad_header_gets_a_notification(tmp_path, case, bad, code):
    note, closed, out = _after_bad_header(tmp_path / "patched", True, bad)
    assert note is not None, f"{case}: no NOTIFICATION; ExaBGP said:\n{out[-3000:]}"
    assert (note.code, note.subcode) == code[:2]
    if code[2] is not None:  # RFC 4271 6.1: Bad Message Length carries the erroneous length
        assert note.data == code[2]
    assert closed and "TypeError" not in out


def test_unpatched_exabgp_resets_without_a_notification(tmp_path):
    note, closed, out = _after_bad_header(tmp_path, False, b"\x00" * 16 + b"\x00\x13\x04")
    assert note is None and closed
    assert "takes 8 positional arguments but 9 were given" in out
