"""When the status publisher writes the next document (publisher.publish_at): at a pause in the
UPDATEs, every CHURN_EVERY seconds while they stream on, never closer than the gap."""
from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

from calico_bgp.agent import publisher as pub
from calico_bgp.agent.publisher import CHURN_EVERY, MIN_GAP, QUIET, StatusPublisher, publish_at


def test_quiet_updates_publish_once_the_gap_since_the_last_document_is_over():
    assert publish_at(now=100.0, last=99.9, last_update=50.0, gap=MIN_GAP) == 99.9 + MIN_GAP
    assert publish_at(now=100.0, last=10.0, last_update=50.0, gap=MIN_GAP) == 10.0 + MIN_GAP  # overdue: now


def test_a_burst_publishes_at_its_pause():
    # the last UPDATE came just now: the document waits for QUIET seconds of silence
    assert publish_at(now=100.0, last=99.0, last_update=100.0, gap=MIN_GAP) == 100.0 + QUIET
    # unless the last document is CHURN_EVERY old already
    assert publish_at(now=100.0, last=90.0, last_update=100.0, gap=MIN_GAP) == 90.0 + CHURN_EVERY


def test_steady_churn_publishes_every_churn_every_seconds_not_at_every_short_gap():
    last = 100.0
    end = last + CHURN_EVERY
    for t in (100.3, 101.0, end - 2.0, end - 0.1):  # UPDATEs every few tenths: never a pause
        assert publish_at(now=t, last=last, last_update=t - 0.05, gap=MIN_GAP) == min(t - 0.05 + QUIET, end)
    assert publish_at(now=end - 0.04, last=last, last_update=end - 0.05, gap=MIN_GAP) == end


def test_a_costly_document_widens_the_gap_even_after_a_pause():
    assert publish_at(now=100.0, last=99.0, last_update=10.0, gap=3.0) == 102.0
    assert publish_at(now=100.0, last=99.0, last_update=99.95, gap=3.0) == 102.0


class FakeEtcd:
    def __init__(self) -> None:
        self.puts: list[float] = []

    async def lease_grant(self, ttl: int) -> int:
        return 7

    async def lease_keepalive(self, lease: int) -> int:
        return 15

    async def put(self, key: str, value: bytes, lease: int = 0) -> None:
        assert key == "status/n1" and lease == 7 and value.startswith(b"{")
        self.puts.append(trio.current_time())


def test_the_publisher_writes_every_churn_every_seconds_under_steady_churn_and_once_after_it():
    seconds = 12.0
    from calico_bgp.agent import status as st

    etcd = FakeEtcd()
    last_update = [0.0]
    doc = st.NodeStatus(node="n1", version="0", address="", asn=1, router_id="198.18.0.1", role="node",
                        updated=0.0, started=0.0)
    p = StatusPublisher(etcd, "status/n1", 15, lambda: doc, lambda: last_update[0])

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(p.run)
            await trio.sleep(1.0)
            start, n0 = trio.current_time(), len(etcd.puts)
            while trio.current_time() - start < seconds:  # an UPDATE every 0.1 s, each marking the status
                last_update[0] = trio.current_time()
                p.mark_dirty()
                await trio.sleep(0.1)
            during = etcd.puts[n0:]
            await trio.sleep(QUIET + MIN_GAP + 0.1)
            after = etcd.puts[n0 + len(during):]
            nursery.cancel_scope.cancel()
        assert len(during) == pytest.approx(seconds / CHURN_EVERY, abs=1), during
        assert all(b - a >= CHURN_EVERY - 0.01 for a, b in zip(during, during[1:])), during
        assert len(after) == 1 and after[0] - (start + seconds) <= QUIET + 0.15  # the state after the burst, soon

    trio.run(main, clock=MockClock(autojump_threshold=0))


def test_with_nothing_changed_a_document_is_still_written_every_idle_every_seconds():
    from calico_bgp.agent import status as st

    etcd = FakeEtcd()
    doc = st.NodeStatus(node="n1", version="0", address="", asn=1, router_id="198.18.0.1", role="node",
                        updated=0.0, started=0.0)
    p = StatusPublisher(etcd, "status/n1", 15, lambda: doc, lambda: 0.0)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(p.run)
            await trio.sleep(3 * pub.IDLE_EVERY + 0.5)
            nursery.cancel_scope.cancel()
        assert len(etcd.puts) == 4, etcd.puts  # the first, then one every IDLE_EVERY

    trio.run(main, clock=MockClock(autojump_threshold=0))


def test_without_a_lease_the_publisher_waits_for_one_instead_of_spinning():
    from calico_bgp.agent import status as st
    from calico_bgp.datastore.errors import DatastoreError

    class NoLease(FakeEtcd):
        granted = False
        grants = 0

        async def lease_grant(self, ttl: int) -> int:
            self.grants += 1
            if not self.granted:
                raise DatastoreError("etcd is down")
            return 7

    etcd = NoLease()
    doc = st.NodeStatus(node="n1", version="0", address="", asn=1, router_id="198.18.0.1", role="node",
                        updated=0.0, started=0.0)
    builds = []
    p = StatusPublisher(etcd, "status/n1", 15, lambda: builds.append(1) or doc, lambda: 0.0)
    turns = [0]
    real_publish_at = pub.publish_at

    def counting(*args: float) -> float:
        turns[0] += 1
        return real_publish_at(*args)

    async def main() -> None:
        pub.publish_at = counting
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(p.run)
                await trio.sleep(3 * pub.IDLE_EVERY)
                assert etcd.puts == [] and builds == []
                assert turns[0] <= 5, turns[0]  # a few turns in 30 s, not thousands
                etcd.granted = True
                await trio.sleep(2.0)  # the keeper's next retry gets one; the document follows
                nursery.cancel_scope.cancel()
        finally:
            pub.publish_at = real_publish_at
        assert len(etcd.puts) == 1

    trio.run(main, clock=MockClock(autojump_threshold=0))
