"""Watches and leases against the session etcd."""
from __future__ import annotations

import httpx
import pytest
import trio

from calico_bgp.datastore import EtcdClient, KeyValue, LeaseExpired, Resync, WatchBatch


@pytest.fixture
async def client(etcd_url):
    async with EtcdClient([etcd_url]) as c:
        yield c


async def next_item(watch, seconds: float = 5.0):
    with trio.fail_after(seconds):
        return await watch.__anext__()


async def collect_events(watch, count: int, seconds: float = 10.0):
    events = []
    with trio.fail_after(seconds):
        while len(events) < count:
            item = await watch.__anext__()
            assert isinstance(item, WatchBatch), item
            events.extend(item.events)
    assert len(events) == count
    return events


async def test_watch_sees_puts_and_deletes_in_order_with_prev(client, key_prefix):
    a, b = f"{key_prefix}/w/a", f"{key_prefix}/w/b"
    start = await client.put(f"{key_prefix}/before", "not watched")
    await client.put(f"{key_prefix}/wx", "sibling, not under the prefix")
    async with client.watch(f"{key_prefix}/w/", start + 1) as watch:
        r1 = await client.put(a, "1")
        r2 = await client.put(b, "2")
        r3 = await client.put(a, "3")
        r4 = await client.put(f"{key_prefix}/wx", "not seen")
        r5 = await client.delete(a)
        events = await collect_events(watch, 4)
    assert [(e.type, e.kv.key, e.kv.value, e.kv.mod_revision) for e in events] == [
        ("put", a, b"1", r1), ("put", b, b"2", r2), ("put", a, b"3", r3), ("delete", a, b"", r4 + 1)]
    assert events[0].prev is None
    assert events[2].prev == KeyValue(a, b"1", r1, r1, 1)
    assert events[3].prev == KeyValue(a, b"3", r1, r3, 2)
    assert r5 == 1


async def test_a_range_and_a_watch_with_an_end_stop_before_it(client, key_prefix):
    """[prefix, end): what the agent's cluster view uses to leave the status documents out."""
    start = await client.put(f"{key_prefix}/r/nodes/n1", "in")
    await client.put(f"{key_prefix}/r/status/n1", "out")
    got = await client.range(f"{key_prefix}/r/", end=f"{key_prefix}/r/status/")
    assert [kv.key for kv in got.kvs] == [f"{key_prefix}/r/nodes/n1"]
    async with client.watch(f"{key_prefix}/r/", start + 2, end=f"{key_prefix}/r/status/") as watch:
        await client.put(f"{key_prefix}/r/status/n1", "out again")
        await client.put(f"{key_prefix}/r/zzz", "out: sorts after the end")
        r = await client.put(f"{key_prefix}/r/nodes/n2", "in")
        events = await collect_events(watch, 1)
    assert [(e.kv.key, e.kv.mod_revision) for e in events] == [(f"{key_prefix}/r/nodes/n2", r)]


async def test_watch_from_now_and_batch_revision(client, key_prefix):
    async with client.watch(f"{key_prefix}/", 0) as watch:
        async with trio.open_nursery() as nursery:
            async def writer():
                await trio.sleep(0.2)
                await client.put(f"{key_prefix}/k", "v")
            nursery.start_soon(writer)
            item = await next_item(watch)
    assert isinstance(item, WatchBatch)
    assert item.revision == item.events[-1].kv.mod_revision


async def test_cancelled_wait_drops_the_stream_and_the_next_call_resumes(client, key_prefix):
    start = await client.put(f"{key_prefix}/x/0", "0")
    seen = []
    async with client.watch(f"{key_prefix}/x/", start) as watch:
        seen += await collect_events(watch, 1)
        for i in range(1, 6):
            with trio.move_on_after(0.05):  # usually times out: the stream is cut, at any point of its life
                seen += (await watch.__anext__()).events
            await client.put(f"{key_prefix}/x/{i}", str(i))
        seen += await collect_events(watch, 6 - len(seen))
        with trio.move_on_after(0.3):  # nothing further: no duplicates pending
            extra = await watch.__anext__()
            pytest.fail(f"duplicate or unexpected event {extra}")
    assert [e.kv.value for e in seen] == [str(i).encode() for i in range(6)]


async def test_compacted_start_revision_becomes_resync_then_events(client, etcd_url, key_prefix):
    p = f"{key_prefix}/c/"
    first = await client.put(p + "a", "1")
    await client.put(p + "b", "2")
    await client.put(p + "a", "3")
    await client.delete(p + "b")
    latest = await client.put(p + "c", "4")
    async with httpx.AsyncClient(trust_env=False) as http:
        r = await http.post(etcd_url + "/v3/kv/compaction", json={"revision": latest, "physical": True})
        r.raise_for_status()
    async with client.watch(p, first) as watch:
        item = await next_item(watch)
        assert isinstance(item, Resync)
        assert item.revision >= latest
        assert [(kv.key, kv.value) for kv in item.kvs] == [(p + "a", b"3"), (p + "c", b"4")]
        rev = await client.put(p + "d", "5")
        (event,) = await collect_events(watch, 1)
        assert (event.kv.key, event.kv.mod_revision) == (p + "d", rev)


async def test_lease_bound_key_disappears_on_revoke(client, key_prefix):
    lease = await client.lease_grant(30)
    key = f"{key_prefix}/status/n1"
    await client.put(key, "alive", lease=lease)
    assert (await client.get(key)).lease == lease
    assert await client.lease_keepalive(lease) > 0
    await client.lease_revoke(lease)
    assert await client.get(key) is None
    assert await client.lease_keepalive(lease) == 0
    await client.lease_revoke(lease)  # revoking twice is fine


async def test_lease_expires_without_keepalive_and_is_kept_by_keep_lease_alive(client, key_prefix):
    kept, lapsing = await client.lease_grant(2), await client.lease_grant(2)
    await client.put(f"{key_prefix}/kept", "x", lease=kept)
    await client.put(f"{key_prefix}/lapsing", "x", lease=lapsing)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.keep_lease_alive, kept, 2)
        await trio.sleep(4.5)
        assert await client.get(f"{key_prefix}/kept") is not None
        assert await client.get(f"{key_prefix}/lapsing") is None
        assert await client.lease_keepalive(lapsing) == 0
        nursery.cancel_scope.cancel()
    with trio.fail_after(5):
        while await client.get(f"{key_prefix}/kept") is not None:
            await trio.sleep(0.2)


async def test_keep_lease_alive_raises_when_the_lease_is_revoked(client):
    lease = await client.lease_grant(3)
    with pytest.RaisesGroup(LeaseExpired):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                await nursery.start(client.keep_lease_alive, lease, 3)
                await client.lease_revoke(lease)
    with pytest.raises(LeaseExpired):  # an expired lease fails before `started`, straight out of start()
        await client.keep_lease_alive(lease, 3)
