"""The BFD engine's pure parts: BIRD's configuration text, its control-socket replies, the session
table and the state-change lines of its log (samples captured from BIRD 2.0.12, tests/unit/bird_samples)."""
from __future__ import annotations

import subprocess
import shutil
from pathlib import Path

import pytest

from calico_bgp.bfd import config
from calico_bgp.bfd.control import BirdError, Reply, ReplyReader
from calico_bgp.bfd.report import BfdSessionStatus, BfdStatus, cell
from calico_bgp.bfd.state import BfdChange, BfdParseError, BfdPeerState, parse_change, parse_removed, parse_sessions
from calico_bgp.routing.bfd import BfdSession

SAMPLES = Path(__file__).parent / "bird_samples"
A = BfdSession("198.18.1.1", "eth1", 300, 300, 1000, 3)
B = BfdSession("198.18.2.1", "eth2", 100, 100, 1000, 3)
C = BfdSession("198.18.1.2", "eth1", 300, 300, 1000, 3)


def test_config_is_deterministic_and_groups_timers_per_interface():
    text = config.render([B, A, C])
    assert text == config.render([C, A, B, A])
    assert 'interface "eth1" {\n    min rx interval 300 ms;\n    min tx interval 300 ms;\n' \
           '    idle tx interval 1000 ms;\n    multiplier 3;\n  };' in text
    assert text.count('interface "eth1"') == 1 and text.count('interface "eth2"') == 1
    assert [line.strip() for line in text.splitlines() if line.strip().startswith("neighbor")] == [
        'neighbor 198.18.1.1 dev "eth1";', 'neighbor 198.18.1.2 dev "eth1";', 'neighbor 198.18.2.1 dev "eth2";']
    assert "protocol bgp" not in text and "protocol kernel" not in text and "debug { events };" in text


@pytest.mark.skipif(shutil.which("bird") is None, reason="needs bird (./bootstrap.sh setup)")
def test_bird_parses_the_config(tmp_path):
    ll = BfdSession("fe80::1", "eth0", 50, 50, 2000, 255)
    path = tmp_path / "bird.conf"
    path.write_text(config.render([A, B, ll]))
    res = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("bad, names", [
    (BfdSession("not-an-ip", "eth0", 100, 100, 1000, 3), "peer 'not-an-ip'"),
    (BfdSession("198.18.1.1", 'eth0"; protocol', 100, 100, 1000, 3), "interface"),
    (BfdSession("198.18.1.1", "eth0", 0, 100, 1000, 3), "min_rx_ms 0"),
    (BfdSession("198.18.1.1", "eth0", 100, 100, 1000, 256), "multiplier 256"),
])
def test_config_refuses_what_bird_cannot_take(bad, names):
    with pytest.raises(config.BfdConfigError, match=names):
        config.render([bad])


def test_config_refuses_two_timers_on_one_interface():
    with pytest.raises(config.BfdConfigError, match="eth1 disagree on timers"):
        config.render([A, BfdSession("198.18.1.9", "eth1", 100, 100, 1000, 3)])


def test_replies_are_split_by_their_codes_whatever_the_chunks():
    raw = (SAMPLES / "show_bfd_sessions.raw").read_bytes()
    for size in (1, 7, len(raw)):
        reader, got = ReplyReader(), []
        for i in range(0, len(raw), size):
            got += reader.feed(raw[i:i + size])
        assert [r.code for r in got] == [1, 0]
        assert got[0].text == "BIRD 2.0.12 ready."
        assert got[1].text.startswith("calico_bfd:\nIP address") and got[1].ok


def test_an_error_reply_and_an_unreadable_line():
    assert ReplyReader().feed(b"9001 syntax error, unexpected CF_SYM_UNDEFINED\n") == [
        Reply(9001, "syntax error, unexpected CF_SYM_UNDEFINED")]
    assert not Reply(8002, "x").ok
    with pytest.raises(BirdError, match="unreadable reply line 'garbage'"):
        ReplyReader().feed(b"garbage\n")


def test_session_table_from_bird():
    reply = ReplyReader().feed((SAMPLES / "show_bfd_sessions.raw").read_bytes())[1]
    rows = parse_sessions(reply.text)
    assert rows == [
        BfdPeerState("2001:db8:9::2", "bfda0", "Up", "11:55:05.559", 100, 300),
        BfdPeerState("198.18.9.3", "bfda0", "Down", "11:55:04.779", 1000, 0),
        BfdPeerState("fe80::6cb2:78ff:fe9f:4bb2", "bfda0", "Up", "11:55:05.559", 100, 300),
        BfdPeerState("198.18.9.2", "bfda0", "Up", "11:55:12.372", 200, 750)]
    assert parse_sessions("calico_bfd:\n 198.18.1.1 eth0 Up 2026-12-01 0.300 0.900\n")[0].since == "2026-12-01"


def test_session_table_refuses_what_it_does_not_know():
    with pytest.raises(BfdParseError, match="unexpected line ' 198.18.9.2 bfda0 Sideways"):
        parse_sessions(" 198.18.9.2 bfda0 Sideways 11:55:12.372 0.200 0.750\n")


def test_state_changes_from_birds_log():
    lines = (SAMPLES / "bfd_log.txt").read_text().splitlines()
    changes = [c for c in map(parse_change, lines) if c]
    assert BfdChange("198.18.9.2", "Up", "Down") in changes
    assert [c for c in changes if c.failed] == [BfdChange("198.18.9.2", "Up", "Down")]
    assert parse_change("2026-12-07 11:52:21.349 <TRACE> calico_bfd: Session to 198.18.9.2 expired") is None
    assert parse_change("Session to 198.18.9.2 changed state from Up to Sideways") is None
    assert not BfdChange("p", "Init", "Down").failed and not BfdChange("p", "Down", "Up").failed
    assert parse_removed("2026-12-07 11:55:04.808 <TRACE> calico_bfd: Session to 2001:db8:9::2 removed") == "2001:db8:9::2"
    assert parse_removed("2026-12-07 11:55:04.808 <TRACE> calico_bfd: Session to 198.18.9.3 added") is None


def test_the_status_cell():
    st = BfdStatus("running", 0.0, 0, (BfdSessionStatus("198.18.1.1", "eth1", "Up", 100, 300, 5.0),
                                       BfdSessionStatus("198.18.2.1", "eth2", "Unavailable")))
    assert cell(st, "198.18.1.1", "4m") == "Up 100ms/300ms 4m"
    assert cell(st, "198.18.2.1", "-") == "Unavailable"
    assert cell(st, "198.18.3.1", "-") == "-" and cell(BfdStatus(), "198.18.1.1", "-") == "-"


def test_a_bfd_failure_never_keeps_routes_for_graceful_restart():
    from calico_bgp.routing import session_down

    assert session_down.on_down(session_down.BFD_DOWN, False, 120, 30.0) is None
    assert session_down.on_down("connection lost", False, 120, 30.0) is not None  # a drop alone: kept stale


def _engine(tmp_path):
    from calico_bgp.bfd.engine import BfdEngine

    heard: list[BfdChange] = []
    return BfdEngine(tmp_path, on_change=lambda change, at: heard.append(change)), heard


def test_the_engine_leaves_out_a_session_bird_cannot_take_and_runs_the_others(tmp_path):
    engine, _ = _engine(tmp_path)
    odd = BfdSession("198.18.3.1", "eth+3", 300, 300, 1000, 3)  # Linux takes '+', BIRD's quotes here do not
    assert engine.set_sessions([A, odd, B])
    assert engine.sessions == (A, B) and engine.refused == {odd}
    assert not engine.set_sessions([B, odd, A])  # same sessions: nothing to apply


def test_the_first_plan_wakes_the_engine_even_when_empty(tmp_path):
    engine, _ = _engine(tmp_path)
    assert not engine.planned
    assert not engine.set_sessions([])
    assert engine.planned and engine._changed.is_set()  # a BIRD left running for no session may go


def test_a_session_moved_to_another_interface_is_no_failure_when_bird_removes_it(tmp_path):
    engine, heard = _engine(tmp_path)
    engine.set_sessions([A])
    engine._line("2026-12-07 11:55:04.001 <TRACE> calico_bfd: Session to 198.18.1.1 changed state from Down to Up")
    moved = BfdSession(A.peer, "eth9", 300, 300, 1000, 3)
    engine.set_sessions([moved])
    engine._line("2026-12-07 11:55:05.001 <TRACE> calico_bfd: Session to 198.18.1.1 removed")
    assert heard == [BfdChange(A.peer, "Down", "Up")]
    # once re-made, a removal while Up (its interface went down) is a failure again
    engine._line("2026-12-07 11:55:06.001 <TRACE> calico_bfd: Session to 198.18.1.1 changed state from Down to Up")
    engine._line("2026-12-07 11:55:07.001 <TRACE> calico_bfd: Session to 198.18.1.1 removed")
    assert heard[-1] == BfdChange(A.peer, "Up", "Down") and heard[-1].failed


def test_a_change_the_log_lost_is_heard_from_the_session_table_once(tmp_path):
    engine, heard = _engine(tmp_path)
    engine.set_sessions([A])
    engine._line("2026-12-07 11:55:04.001 <TRACE> calico_bfd: Session to 198.18.1.1 changed state from Down to Up")
    import trio

    class Table:  # the control socket's answer to `show bfd sessions`, read after the line was lost
        async def command(self, text: str) -> Reply:
            return Reply(0, "calico_bfd:\n 198.18.1.1 eth1 Down 11:55:09.000 0.300 0.900\n")

    engine._control = Table()  # type: ignore[assignment]
    trio.run(engine._poll)
    assert engine.available and engine.state_of(A.peer) == "Down"
    assert heard[-1] == BfdChange(A.peer, "Up", "Down") and heard[-1].failed  # heard from the table
    engine._line("2026-12-07 11:55:09.001 <TRACE> calico_bfd: Session to 198.18.1.1 changed state from Up to Down")
    assert heard == [BfdChange(A.peer, "Down", "Up"), BfdChange(A.peer, "Up", "Down")]  # the late line: no second
