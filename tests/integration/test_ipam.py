"""IPAM against a real etcd: concurrency across processes, exhaustion, corruption, borrowing,
empty-block reclaim, stale releases, and the CLI."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import trio
from click.testing import CliRunner

from calico_bgp.cli import main as cli
from calico_bgp.datastore import EtcdClient, Keys
from calico_bgp.resources import model
from calico_bgp.resources.ippool import IPPool, IPPoolSpec
from calico_bgp.resources.node import Node, NodeBGPSpec, NodeSpec
from calico_bgp.resources.store import ResourceStore
from ipam import Pool, PoolExhausted, StaleRelease
from ipam.allocator import BlockAllocator
from ipam.check import check
from ipam.store import IPAMStore
from tests.integration.ipam_worker import POOLS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PER_PROCESS = 100


def ippool(name: str, cidr: str, block_size: int, **kw) -> IPPool:
    return IPPool(model.Metadata(name), IPPoolSpec(cidr=cidr, block_size=block_size, **kw))


def node(name: str, **labels: str) -> Node:
    return Node(model.Metadata(name, labels=labels),
                NodeSpec(bgp=NodeBGPSpec(ipv4_address="198.18.0.1/24")))


def ipam_cli(url: str, prefix: str, *args: str):
    return CliRunner().invoke(cli, ["--etcd-endpoints", url, "--prefix", prefix, "ipam", *args])


async def test_four_processes_allocate_at_once(etcd_url, key_prefix):
    """100 allocations a process: the shared node's 200 take three IPv4 /26 blocks (160 addresses)
    and one IPv6 /122 (40), so the four processes race on claiming fresh blocks as each fills, as well
    as on the addresses of each block; a larger count repeats those races and adds nothing else."""
    procs = [subprocess.Popen([sys.executable, "-m", "tests.integration.ipam_worker", etcd_url, key_prefix,
                               str(w), str(PER_PROCESS)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
             for w in range(4)]
    for w, p in enumerate(procs):  # every process connected before any begins
        line = await trio.to_thread.run_sync(p.stdout.readline)
        assert json.loads(line or "null") == {"ready": w}, p.stderr.read().decode()[-3000:]
    for p in procs:
        p.stdin.write(b"go\n")
        p.stdin.flush()
    outs = []
    for p in procs:
        out, err = await trio.to_thread.run_sync(p.communicate)
        assert p.returncode == 0, err.decode()[-3000:]
        outs.append([json.loads(line) for line in out.decode().splitlines()])
    rows = [r for out in outs for r in out if "ip" in r]
    stats = [r["stats"] for out in outs for r in out if "stats" in r]
    assert len(rows) == 4 * PER_PROCESS
    ips = Counter(r["ip"] for r in rows)
    assert not [ip for ip, n in ips.items() if n > 1], "duplicate addresses"
    for r in rows:
        pool = next(p for p in POOLS if p.contains(r["block"]))
        assert ipaddress.ip_address(r["ip"]) in pool.network
        assert ipaddress.ip_address(r["ip"]) in ipaddress.ip_network(r["block"])
    assert len(stats) == 4
    assert len({r["block"] for r in rows if r["node"] == "shared"}) >= 4  # the blocks raced for, as said above

    keys = Keys(key_prefix)
    nodes = {"shared", *(f"own-{w}" for w in range(4))}
    async with EtcdClient([etcd_url]) as client:
        snap = await IPAMStore(client, keys).snapshot()
        assert len(snap.handles) == 4 * PER_PROCESS
        assert all(s.value.count == 1 for s in snap.handles.values())
        by_block = Counter(r["block"] for r in rows)
        assert {c: s.value.used_count for c, s in snap.blocks.items() if s.value.used_count} == dict(by_block)
        for c, s in snap.blocks.items():  # the affine node holds every address of its blocks (no borrowing)
            assert {u.node for u in s.value.in_use()} <= {s.value.host}
        report = check(snap, POOLS, nodes)
        assert report.clean, report
        assert not report.borrowed

        alloc = BlockAllocator(client, keys)

        async def release(handles):
            for h in handles:
                assert await alloc.release_handle(h) == 1

        handles = sorted(snap.handles)
        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(release, handles[i::8])
        snap = await IPAMStore(client, keys).snapshot()
        assert not snap.handles
        assert all(s.value.is_empty() for s in snap.blocks.values())
        assert check(snap, POOLS, nodes).clean
        assert all(u.allocated == 0 for u in check(snap, POOLS, nodes).pools)

        assert await alloc.reclaim_empty() == []       # first sighting
        assert len(await alloc.reclaim_empty()) == len(snap.blocks)  # second: released
        snap = await IPAMStore(client, keys).snapshot()
        assert not snap.blocks and not snap.affinities


async def test_affinity_released_after_seen_empty_twice_and_reset_by_use(etcd_url, key_prefix):
    keys = Keys(key_prefix)
    pools = [Pool("p", "198.19.64.0/24", 28)]
    async with EtcdClient([etcd_url]) as client:
        alloc = BlockAllocator(client, keys)
        (a,) = await alloc.allocate("n1", "h1", 1, pools)
        await alloc.release_handle("h1")
        assert await alloc.reclaim_empty() == []
        await alloc.allocate("n1", "h2", 1, pools)   # use resets the count
        await alloc.release_handle("h2")
        assert await alloc.reclaim_empty() == []
        blk = (await IPAMStore(client, keys).snapshot()).blocks[a.block].value
        assert blk.seen_empty == 1 and blk.host == "n1"
        assert await alloc.reclaim_empty() == [a.block]
        assert await client.get(keys.affinity("n1", a.block)) is None
        # the allocator that cached the block notices it is gone and claims afresh
        (b,) = await alloc.allocate("n1", "h3", 1, pools)
        assert b.block


async def test_stale_release_cannot_free_a_reused_address(etcd_url, key_prefix):
    keys = Keys(key_prefix)
    pools = [Pool("tiny", "198.19.65.0/30", 30)]
    async with EtcdClient([etcd_url]) as client:
        alloc = BlockAllocator(client, keys)
        first = await alloc.allocate("n1", "old", 4, pools)
        victim = first[1]
        await alloc.release([(victim.ip, victim.seq)])
        (again,) = await alloc.allocate("n1", "new", 1, pools)
        assert again.ip == victim.ip and again.seq != victim.seq
        with pytest.raises(StaleRelease):
            await alloc.release([(victim.ip, victim.seq)])
        snap = await IPAMStore(client, keys).snapshot()
        assert snap.handles["new"].value.count == 1
    res = await trio.to_thread.run_sync(ipam_cli, etcd_url, key_prefix, "release", "--ip", victim.ip,
                                        "--seq", str(victim.seq))
    assert res.exit_code == 5, res.output
    assert "stale" in res.output
    res = await trio.to_thread.run_sync(ipam_cli, etcd_url, key_prefix, "release", "--ip", again.ip,
                                        "--seq", str(again.seq))
    assert res.exit_code == 0, res.output


async def test_a_handle_spread_over_more_blocks_than_retries_is_released_whole(etcd_url, key_prefix):
    """Each block a release frees is progress, not a lost compare-and-swap: a handle over many small
    blocks used to end in CASRetriesExhausted (too much contention) half way."""
    keys = Keys(key_prefix)
    pools = [Pool("small", "198.19.66.0/26", 30)]
    async with EtcdClient([etcd_url]) as client:
        alloc = BlockAllocator(client, keys, max_attempts=3)
        got = await alloc.allocate("n1", "spread", 24, pools)
        assert len({a.block for a in got}) == 6
        assert await alloc.release_handle("spread") == 24
        snap = await IPAMStore(client, keys).snapshot()
        assert "spread" not in snap.handles
        assert all(b.value.is_empty() for b in snap.blocks.values())


async def test_a_claim_left_half_done_is_finished_not_abandoned(etcd_url, key_prefix):
    """A crash between creating a block and confirming its affinity: the node uses that block next
    time (it was neither used nor reclaimable before, and other nodes borrowed from it)."""
    from calico_bgp.resources import codec
    from ipam import Block
    from ipam.records import PENDING, Affinity

    keys = Keys(key_prefix)
    pools = [Pool("p", "198.19.72.0/24", 28)]
    async with EtcdClient([etcd_url]) as client:
        cidr = next(iter(pools[0].block_cidrs("n1")))
        await client.put(keys.affinity("n1", cidr), codec.encode(Affinity(PENDING)))
        await client.put(keys.block(cidr), codec.encode(Block.new(cidr, "n1")))
        (got,) = await BlockAllocator(client, keys).allocate("n1", "h", 1, pools)
        assert got.block == cidr and not got.borrowed
        snap = await IPAMStore(client, keys).snapshot()
        assert [(a.cidr, a.state) for a in snap.affinities] == [(cidr, "confirmed")]
        assert list(snap.blocks) == [cidr]


async def test_borrowing_when_the_node_cannot_claim_more(etcd_url, key_prefix):
    keys = Keys(key_prefix)
    pools = [Pool("small", "198.19.66.0/28", 30)]   # 4 blocks of 4
    async with EtcdClient([etcd_url]) as client:
        alloc = BlockAllocator(client, keys)
        await alloc.allocate("n2", "other", 1, pools)
        mine = await alloc.allocate("n1", "mine", 4, pools, max_blocks_per_host=1)
        assert not any(a.borrowed for a in mine)
        with pytest.raises(PoolExhausted):
            await alloc.allocate("n1", "strict", 1, pools, max_blocks_per_host=1, strict_affinity=True)
        (b,) = await alloc.allocate("n1", "borrow", 1, pools, max_blocks_per_host=1)
        assert b.borrowed
        snap = await IPAMStore(client, keys).snapshot()
        report = check(snap, pools, {"n1", "n2"})
        assert report.clean
        assert [(x.ip, x.owner, x.node, x.handle) for x in report.borrowed] == [(b.ip, "n2", "n1", "borrow")]
        # a pool whose every block is claimed: borrowing is what remains
        for i in range(3):
            await alloc.allocate(f"x{i}", f"fill{i}", 1, pools)
        got = await alloc.allocate("n1", "more", 2, pools)
        assert all(a.borrowed for a in got)


def test_exhausted_pool_exit_4_and_nothing_stored(etcd_url, key_prefix):
    keys = Keys(key_prefix)

    async def setup():
        async with EtcdClient([etcd_url]) as client:
            await ResourceStore(client, keys).apply_all([ippool("tiny", "198.19.67.0/29", 30), node("n1")])

    trio.run(setup)
    res = ipam_cli(etcd_url, key_prefix, "allocate", "--node", "n1", "--handle", "h", "--count", "9")
    assert res.exit_code == 4, res.output
    assert "exhausted" in res.output and res.output.count("\n") == 1

    async def stored():
        async with EtcdClient([etcd_url]) as client:
            return [kv.key for kv in (await client.range(key_prefix + "/ipam/")).kvs]

    assert trio.run(stored) == []
    res = ipam_cli(etcd_url, key_prefix, "allocate", "--node", "n1", "--handle", "h", "--count", "8", "-o", "json")
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)["addresses"]) == 8


@pytest.mark.parametrize("flags, fragment", [
    (["--node", "", "--handle", "h"], "--node"), (["--node", "N_1", "--handle", "h"], "lower-case"),
    (["--node", "n1", "--handle", ""], "--handle"), (["--node", "n1", "--handle", "a/b"], "without '/'"),
])
def test_bad_node_or_handle_is_refused_before_anything_is_stored(etcd_url, key_prefix, flags, fragment):
    keys = Keys(key_prefix)

    async def setup():
        async with EtcdClient([etcd_url]) as client:
            await ResourceStore(client, keys).apply_all([ippool("p", "198.19.69.0/24", 28), node("n1")])

    async def stored():
        async with EtcdClient([etcd_url]) as client:
            return [kv.key for kv in (await client.range(key_prefix + "/ipam/")).kvs]

    trio.run(setup)
    res = ipam_cli(etcd_url, key_prefix, "allocate", *flags)
    assert res.exit_code == 2 and fragment in res.output, res.output
    assert trio.run(stored) == []


def test_a_stray_key_under_blocks_is_skipped_by_release(etcd_url, key_prefix):
    keys = Keys(key_prefix)

    async def setup():
        async with EtcdClient([etcd_url]) as client:
            await ResourceStore(client, keys).apply_all([ippool("p", "198.19.70.0/24", 28), node("n1")])
            await client.put(keys.blocks() + "junk", b"{}")
            await client.put(keys.blocks() + "198.19.70.1-28", b"{}")  # host bits set: names no block

    trio.run(setup)
    res = ipam_cli(etcd_url, key_prefix, "allocate", "--node", "n1", "--handle", "h", "-o", "json")
    assert res.exit_code == 0, res.output
    ip = json.loads(res.stdout)["addresses"][0]["ip"]
    res = ipam_cli(etcd_url, key_prefix, "release", "--ip", ip)
    assert res.exit_code == 0 and f"released {ip}" in res.output, res.output


def test_repair_never_takes_a_node_whose_value_is_corrupt_for_a_gone_one(etcd_url, key_prefix):
    keys = Keys(key_prefix)

    async def setup():
        async with EtcdClient([etcd_url]) as client:
            store = ResourceStore(client, keys)
            await store.apply_all([ippool("p", "198.19.71.0/24", 28), node("n1"), node("n2")])
            await BlockAllocator(client, keys).allocate("n2", "h2", 3, [Pool("p", "198.19.71.0/24", 28)])
            await client.put(store.key(Node, "n2"), b'{"metadata": {"name": "n2"}, "spec": {"bgp": 7}}')

    async def handles():
        async with EtcdClient([etcd_url]) as client:
            return {h: s.value.count for h, s in (await IPAMStore(client, keys).snapshot()).handles.items()}

    trio.run(setup)
    res = ipam_cli(etcd_url, key_prefix, "check", "--repair", "--yes", "-o", "json")
    assert "n2" in res.stderr, res.output  # the corrupt value is named
    assert json.loads(res.stdout)["leakedHandles"] == []
    assert trio.run(handles) == {"h2": 3}


def test_corrupt_block_is_named_and_other_blocks_keep_working(etcd_url, key_prefix):
    keys = Keys(key_prefix)
    pools = [Pool("p", "198.19.68.0/24", 28)]

    async def go():
        async with EtcdClient([etcd_url]) as client:
            await ResourceStore(client, keys).apply_all([ippool("p", "198.19.68.0/24", 28), node("n1"), node("n2")])
            alloc = BlockAllocator(client, keys)
            (a,) = await alloc.allocate("n1", "h1", 1, pools)
            (b,) = await alloc.allocate("n2", "h2", 1, pools)
            await client.put(keys.block(a.block), b'{"cidr": "198.19.68.0/28", "allocations": [tru')
            fresh = BlockAllocator(client, keys)
            (c,) = await fresh.allocate("n1", "h3", 1, pools)
            (d,) = await fresh.allocate("n2", "h4", 1, pools)
            assert c.block != a.block and d.block == b.block
            assert keys.block(a.block) in fresh.corrupt
            return keys.block(a.block)

    bad_key = trio.run(go)
    res = CliRunner().invoke(cli, ["--etcd-endpoints", etcd_url, "--prefix", key_prefix,
                                                   "ipam", "show", "--show-blocks"])
    assert res.exit_code == 0, res.output
    assert bad_key in res.stderr
    res = ipam_cli(etcd_url, key_prefix, "check", "-o", "json")
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    assert [x["key"] for x in report["corrupt"]] == [bad_key]


def test_cli_allocate_show_check_release_round_trip(etcd_url, key_prefix):
    keys = Keys(key_prefix)

    async def setup():
        async with EtcdClient([etcd_url]) as client:
            await ResourceStore(client, keys).apply_all([
                ippool("v4", "198.19.80.0/24", 26), ippool("v6", "2001:db8:2::/120", 122),
                ippool("gpu", "198.19.81.0/24", 26, node_selector="gpu == 'yes'"),
                node("n1"), node("n2", gpu="yes")])

    trio.run(setup)
    res = ipam_cli(etcd_url, key_prefix, "allocate", "--node", "n1", "--handle", "a", "--count", "3")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0].split() == ["IP", "BLOCK", "SEQ", "BORROWED"]
    res = ipam_cli(etcd_url, key_prefix, "allocate", "--node", "n1", "--handle", "b", "--ipv6", "-o", "json")
    assert json.loads(res.stdout)["addresses"][0]["ip"].startswith("2001:db8:2::")
    res = ipam_cli(etcd_url, key_prefix, "allocate", "--node", "n1", "--handle", "c", "--pool", "gpu")
    assert res.exit_code == 4, res.output  # nodeSelector excludes n1
    res = ipam_cli(etcd_url, key_prefix, "allocate", "--node", "n2", "--handle", "d", "--pool", "gpu", "-o", "json")
    assert json.loads(res.stdout)["addresses"][0]["ip"].startswith("198.19.81.")
    res = ipam_cli(etcd_url, key_prefix, "show", "--show-blocks", "--show-borrowed", "-o", "json")
    shown = json.loads(res.stdout)
    assert {p["name"]: p["inUse"] for p in shown["pools"]} == {"gpu": 1, "v4": 3, "v6": 1}
    res = ipam_cli(etcd_url, key_prefix, "check")
    assert res.exit_code == 0 and "(clean)" in res.output, res.output

    async def drop_node():
        async with EtcdClient([etcd_url]) as client:
            await client.delete(keys.node("n2"))

    trio.run(drop_node)
    res = ipam_cli(etcd_url, key_prefix, "check", "--repair")
    assert res.exit_code == 1 and "would release-handle d" in res.output, res.output
    res = ipam_cli(etcd_url, key_prefix, "check", "--repair", "--yes")
    assert "release-handle d" in res.output
    res = ipam_cli(etcd_url, key_prefix, "check")
    assert res.exit_code == 0, res.output
    assert ipam_cli(etcd_url, key_prefix, "release", "--handle", "a").output.startswith("released 3")
    assert ipam_cli(etcd_url, key_prefix, "release", "--handle", "a").output.startswith("released 0")
    res = ipam_cli(etcd_url, key_prefix, "release", "--ip", "not-an-ip")
    assert res.exit_code == 2


def test_etcd_unreachable_names_the_endpoint():
    res = CliRunner().invoke(cli, ["--etcd-endpoints", "http://127.0.0.1:9", "ipam", "show"])
    assert res.exit_code == 3, res.output
    assert "127.0.0.1:9" in res.output and res.output.count("\n") == 1


async def test_space_freed_by_another_process_on_the_node_is_reused(etcd_url, key_prefix):
    keys = Keys(key_prefix)
    pools = [Pool("p", "198.19.69.0/24", 30)]
    async with EtcdClient([etcd_url]) as client:
        a, b = BlockAllocator(client, keys), BlockAllocator(client, keys)  # two processes, one node
        got = await a.allocate("n1", "h1", 4, pools)
        assert len({x.block for x in got}) == 1
        await b.release_handle("h1")
        (again,) = await a.allocate("n1", "h2", 1, pools)  # a's cache says full; the block is not
        assert again.block == got[0].block
