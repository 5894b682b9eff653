"""The event log against a real etcd: a burst of events is written in a few transactions, each
event in its ring slot, and a ring smaller than the burst keeps the newest."""
from __future__ import annotations

import trio

from calico_bgp.datastore import EtcdClient
from calico_bgp.telemetry.eventlog import EventLog, decode, ordered


async def _write(etcd_url: str, prefix: str, n: int, capacity: int) -> list:
    async with EtcdClient([etcd_url]) as client:
        log = EventLog(client, prefix, "node1", capacity=capacity)
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)
            for i in range(n):
                log.emit("origin_invalid", peer=f"198.18.1.{i % 250}", detail=f"event {i}")
            with trio.fail_after(10):
                while log._queue:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        res = await client.range(prefix)
        return ordered([decode(kv.value, kv.key) for kv in res.kvs])


async def test_a_burst_of_events_is_stored_whole(etcd_url, key_prefix):
    events = await _write(etcd_url, f"{key_prefix}/events/node1/", 250, capacity=1000)
    assert [e.seq for e in events] == list(range(1, 251))
    assert events[-1].detail == "event 249" and events[0].peer == "198.18.1.0"


async def test_a_ring_smaller_than_the_burst_keeps_the_newest(etcd_url, key_prefix):
    events = await _write(etcd_url, f"{key_prefix}/events/node1/", 130, capacity=50)
    assert [e.seq for e in events] == list(range(81, 131))
