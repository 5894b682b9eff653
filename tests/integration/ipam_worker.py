"""One allocating process for the concurrency test: `python -m tests.integration.ipam_worker URL PREFIX ID N`.

Connects, prints `{"ready": ID}`, and waits for a line on stdin (the test sends it to every process
once all are ready, so they begin at once); allocation i goes to the shared node when i is even and
to this process's own node when odd; every fifth is IPv6. Prints one JSON line per address, then one
line of stats.
"""
from __future__ import annotations

import json
import sys

import trio

from calico_bgp.datastore import EtcdClient, Keys
from ipam import Pool
from ipam.allocator import BlockAllocator

POOLS = [Pool("p4", "198.19.0.0/20", 26), Pool("p6", "2001:db8:1::/112", 122)]


async def main(url: str, prefix: str, wid: int, n: int) -> None:
    async with EtcdClient([url]) as client:
        alloc = BlockAllocator(client, Keys(prefix))
        print(json.dumps({"ready": wid}), flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        for i in range(n):
            node = "shared" if i % 2 == 0 else f"own-{wid}"
            handle = f"w{wid}-{i}"
            for a in await alloc.allocate(node, handle, 1, POOLS, {"worker": str(wid)}, ipv6=(i % 5 == 0)):
                print(json.dumps({"ip": a.ip, "block": a.block, "seq": a.seq, "handle": handle, "node": node}))
        print(json.dumps({"stats": {"txns": alloc.stats.txns, "conflicts": alloc.stats.conflicts,
                                    "claims": alloc.stats.claims, "racesLost": alloc.stats.claim_races_lost}}))


if __name__ == "__main__":
    url, prefix, wid, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    trio.run(main, url, prefix, wid, n)
