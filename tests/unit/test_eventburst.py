"""Bursts of one kind of event for one peer become one summary (calico_bgp/telemetry/bursts.py), so the
event ring keeps everything else: a peer's 606 session_down/up in 30 s evicted every other event."""
from __future__ import annotations

import pytest

from calico_bgp.telemetry import eventlog
from calico_bgp.telemetry.bursts import KEEP, WINDOW, BurstSummariser, Summary

P, Q = "198.18.0.50", "198.18.0.2"


def test_the_first_events_of_a_window_pass_and_the_rest_are_counted():
    b = BurstSummariser(window=30, keep=5)
    admitted = [b.admit("session_down", P, 100.0 + i * 0.1) for i in range(20)]
    assert admitted == [True] * 5 + [False] * 15
    assert b.admit("session_up", P, 101.0) and b.admit("session_down", Q, 101.0)  # other kind, other peer
    assert b.admit("repair", "", 101.0)  # no peer: passes, whatever the rate
    assert b.due(129.9) == [] and b.pending() == 15
    assert b.due(130.0) == [Summary("session_down", P, "", 15, 100.5, 101.9)]
    assert b.pending() == 0 and b.due(200.0) == []


def test_a_new_window_starts_after_the_old_one_ended():
    b = BurstSummariser(window=10, keep=1)
    assert [b.admit("session_down", P, t) for t in (0.0, 1.0, 2.0)] == [True, False, False]
    assert b.due(10.0)[0].count == 2
    assert [b.admit("session_down", P, t) for t in (10.5, 11.0)] == [True, False]


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="window=0"):
        BurstSummariser(window=0)


def test_a_reset_storm_leaves_the_other_events_in_the_ring(monkeypatch):
    clock = [1_000_000.0]
    monkeypatch.setattr(eventlog.time, "time", lambda: clock[0])
    log = eventlog.EventLog(client=None, prefix="/e/n1/", node="n1")
    log.emit("grace_end", detail="after 3.0s")
    log.emit("max_prefixes", peer=Q, detail="received 5 > limit 4: warn")
    for _ in range(303):  # 606 events in 30 s: a reset storm without back-off
        log.emit("session_up", peer=P, detail="fabric")
        log.emit("session_down", peer=P, detail="notification sent (3,1)")
        clock[0] += 30.0 / 303 - 1e-6
    log.emit("block_released", prefix="198.19.0.0/26", detail="empty for two sweeps")
    clock[0] += 1.0
    log.flush_bursts(clock[0])
    stored = list(log._queue)
    kinds = [e.kind for e in stored]
    assert len(stored) < 20, kinds
    assert {"grace_end", "max_prefixes", "block_released"} <= set(kinds)
    summaries = {e.kind: e for e in stored if e.count > 1}
    assert summaries.keys() == {"session_up", "session_down"}
    assert summaries["session_down"].count == 303 - KEEP and summaries["session_down"].peer == P
    assert summaries["session_down"].first < summaries["session_down"].time
    assert "298 more session_down (notification sent (3,1)) within 30s" in summaries["session_down"].detail
    assert sum(e.count for e in stored if e.kind == "session_down") == 303  # nothing lost from the count
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    assert WINDOW == 30.0


def test_different_things_from_one_peer_are_not_a_burst():
    b = BurstSummariser(window=30, keep=1)
    reasons = ["missing-next-hop", "missing-origin", "missing-as-path", "invalid-origin", "first-as-mismatch"]
    assert all(b.admit("malformed_update", P, 1.0 + i, f"{r}: 1 UPDATE") for i, r in enumerate(reasons))
    assert not b.admit("malformed_update", P, 9.0, "missing-origin: again")
    assert b.due(40.0) == [Summary("malformed_update", P, "missing-origin", 1, 9.0, 9.0)]


def test_the_writer_sleeps_with_no_deadline_until_a_burst_is_counted_then_writes_its_summary():
    """EventLog.run: nothing queued and no burst counted, it holds no timer; the first event counted
    into a burst wakes it, and the summary is written within a second of the window's end."""
    import trio

    class Client:
        def __init__(self) -> None:
            self.puts: list = []

        async def range(self, prefix: str):
            return type("Res", (), {"kvs": []})()

        async def txn(self, compares, puts, deletes):
            self.puts += puts

    async def main() -> None:
        client = Client()
        log = eventlog.EventLog(client, "/events/n1/", "n1")
        log.bursts = BurstSummariser(window=0.3, keep=1)
        async with trio.open_nursery() as n:
            await n.start(log.run)
            await trio.testing.wait_all_tasks_blocked()
            assert trio.lowlevel.current_statistics().seconds_to_next_deadline == float("inf")
            assert log.emit("session_down", peer=P) is not None and log.emit("session_down", peer=P) is None
            with trio.fail_after(2.0):
                while len(client.puts) < 2:
                    await trio.sleep(0.05)
            summary = eventlog.decode(client.puts[1].value, client.puts[1].key)
            assert summary.kind == "session_down" and summary.count == 1 and "summarised" in summary.detail
            await trio.testing.wait_all_tasks_blocked()
            assert trio.lowlevel.current_statistics().seconds_to_next_deadline == float("inf")
            n.cancel_scope.cancel()

    trio.run(main)
