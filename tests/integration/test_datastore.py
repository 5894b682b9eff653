"""EtcdClient against a real etcd: key-value, transactions, compare-and-swap."""
from __future__ import annotations

import pytest
import trio

from calico_bgp.datastore import Compare, Delete, EtcdClient, Get, KeyValue, Put


@pytest.fixture
async def client(etcd_url):
    async with EtcdClient([etcd_url]) as c:
        yield c


async def test_put_get_delete(client, key_prefix):
    key = f"{key_prefix}/a"
    assert await client.get(key) is None
    rev = await client.put(key, "one")
    kv = await client.get(key)
    assert kv == KeyValue(key, b"one", rev, rev, 1)
    rev2 = await client.put(key, b"two")
    assert rev2 > rev
    assert await client.get(key) == KeyValue(key, b"two", rev, rev2, 2)
    assert await client.delete(key) == 1
    assert await client.delete(key) == 0
    assert await client.get(key) is None


async def test_range_is_exactly_the_prefix_and_pages(client, key_prefix, monkeypatch):
    monkeypatch.setattr("calico_bgp.datastore.client.RANGE_PAGE", 7)
    keys = [f"{key_prefix}/pools/p{i:03d}" for i in range(30)]
    for k in keys:
        await client.put(k, k)
    await client.put(f"{key_prefix}/poolsX", "sibling")  # shares the text prefix without the slash
    await client.put(f"{key_prefix}/pools\xff/odd", "x")
    res = await client.range(f"{key_prefix}/pools/")
    assert [kv.key for kv in res.kvs] == keys
    assert all(kv.value == kv.key.encode() for kv in res.kvs)
    assert res.revision >= max(kv.mod_revision for kv in res.kvs)
    # a consistent snapshot at an older revision, and keys only
    await client.put(keys[0], "changed")
    old = await client.range(f"{key_prefix}/pools/", revision=res.revision, keys_only=True)
    assert old.revision == res.revision
    assert [kv.key for kv in old.kvs] == keys and all(kv.value == b"" for kv in old.kvs)
    assert len((await client.range(key_prefix)).kvs) == 32
    assert await client.delete(f"{key_prefix}/pools/", prefix=True) == 30
    assert (await client.range(f"{key_prefix}/pools/")).kvs == []


async def test_txn_success_and_failure_branches(client, key_prefix):
    a, b = f"{key_prefix}/a", f"{key_prefix}/b"
    rev = await client.put(a, "1")
    res = await client.txn([Compare.mod(a, rev), Compare.value(a, b"1")],
                           [Put(b, "x"), Get(a), Delete(a)], [Get(b)])
    assert res.succeeded and res.revision > rev
    assert res.responses[0] == res.revision
    assert [kv.value for kv in res.responses[1]] == [b"1"]
    assert res.responses[2] == 1
    res = await client.txn([Compare.created(a, 0), Compare(b, "version", ">", 1)], [Put(a, "no")], [Get(b)])
    assert not res.succeeded
    assert [kv.value for kv in res.responses[0]] == [b"x"]
    assert await client.get(a) is None


async def test_a_compare_over_a_prefix_sees_any_key_written_under_it(client, key_prefix):
    peers, other = f"{key_prefix}/peers/", f"{key_prefix}/other"
    await client.put(peers + "a", "1")
    rev = await client.put(other, "1")
    assert (await client.txn([Compare.unchanged_since(peers, rev)], [], [])).succeeded
    await client.put(other, "2")  # outside the prefix
    assert (await client.txn([Compare.unchanged_since(peers, rev)], [], [])).succeeded
    await client.put(peers + "b", "new")  # a key created under it
    assert not (await client.txn([Compare.unchanged_since(peers, rev)], [], [])).succeeded


async def test_cas_success_and_failure_returns_current_value(client, key_prefix):
    key = f"{key_prefix}/block"
    ok, kv = await client.create(key, b"v1")
    assert ok and kv == await client.get(key)
    ok, kv2 = await client.cas(key, b"v2", kv.mod_revision)
    assert ok and kv2 == await client.get(key) and kv2.version == 2
    ok, current = await client.cas(key, b"v3", kv.mod_revision)  # stale revision loses...
    assert not ok and current == kv2  # ...and learns the current value from the same txn
    ok, current = await client.create(key, b"again")
    assert not ok and current == kv2
    ok, current = await client.cas_delete(key, kv.mod_revision)
    assert not ok and current == kv2
    ok, current = await client.cas_delete(key, kv2.mod_revision)
    assert ok and current is None and await client.get(key) is None
    ok, current = await client.cas(key, b"v4", kv2.mod_revision)
    assert not ok and current is None  # the key is gone
    ok, current = await client.cas(key, b"v4", 0)  # 0: iff absent
    assert ok and current.value == b"v4" and current.version == 1


async def test_create_race_has_exactly_one_winner(etcd_url, key_prefix):
    key = f"{key_prefix}/claim"
    results: list[tuple[int, bool, KeyValue | None]] = []
    async with EtcdClient([etcd_url]) as client:
        async def claim(i: int) -> None:
            ok, kv = await client.create(key, f"task-{i}")
            results.append((i, ok, kv))

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(claim, i)
        winners = [(i, kv) for i, ok, kv in results if ok]
        assert len(winners) == 1
        (wi, wkv), = winners
        stored = await client.get(key)
        assert stored == wkv and stored.value == f"task-{wi}".encode()
        assert all(kv == stored for _, ok, kv in results if not ok)


async def test_cas_increment_under_contention_loses_no_update(etcd_url, key_prefix):
    key = f"{key_prefix}/counter"
    async with EtcdClient([etcd_url]) as client:
        await client.create(key, b"0")

        async def bump(times: int) -> None:
            kv = await client.get(key)
            for _ in range(times):
                while True:
                    ok, cur = await client.cas(key, str(int(kv.value) + 1), kv.mod_revision)
                    kv = cur
                    if ok:
                        break

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(bump, 10)
        assert (await client.get(key)).value == b"80"


async def test_unix_socket_endpoint_reaches_etcd_through_the_filesystem(etcd_server, key_prefix):
    from calico_bgp.datastore import EtcdClient

    async with EtcdClient([etcd_server.unix_url]) as client:
        await client.put(key_prefix + "/unix", b"ok")
        assert (await client.get(key_prefix + "/unix")).value == b"ok"
