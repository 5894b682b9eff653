"""IPAM allocation throughput against a real etcd, side by side with the datastore's raw CAS ceiling.

    .venv/bin/python -m bench.ipam [--count 800] [--rounds 3] [--etcd-endpoints http://127.0.0.1:2379] [--json]

Scenarios (each round runs all of them, interleaved, so machine noise hits them alike; the
median over rounds is reported):
  raw CAS       a bare txn loop on one key (compare mod_revision -> put, the failure branch gets it)
  1 allocator   one BlockAllocator, one node, one address per allocation, a fresh handle each
  8 / one node  8 allocators (each its own client and cache, like 8 processes) on the same node
  8 / 8 nodes   8 allocators, each on its own node
Target: a steady-state allocation costs one transaction, so 1 allocator >= 70% of raw CAS.
Progress goes to stderr; with --json the last stdout line is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Sequence

import trio

from bench.common import progress
from calico_bgp.datastore import Compare, EtcdClient, Get, Keys, Put
from ipam import Pool
from ipam.allocator import BlockAllocator
from lab.etcd import EtcdServer

POOL = Pool("bench", "198.19.0.0/16", 26)


async def raw_cas(url: str, prefix: str, n: int, tasks: int = 1) -> dict:
    """n successful CAS in total, spread over `tasks` tasks each on its own key."""
    async with EtcdClient([url]) as client:
        value = b"x" * 600  # about a half-full /26 block

        async def loop(k: int, share: int) -> None:
            key = f"{prefix}/raw/{k}"
            rev = await client.put(key, value)
            for _ in range(share):
                res = await client.txn([Compare.mod(key, rev)], [Put(key, value)], [Get(key)])
                rev = res.revision if res.succeeded else res.responses[0][0].mod_revision

        t = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for k in range(tasks):
                nursery.start_soon(loop, k, n // tasks)
        dt = time.perf_counter() - t
    return {"ops": n // tasks * tasks, "seconds": dt, "rate": n // tasks * tasks / dt}


async def allocators(url: str, prefix: str, n: int, workers: int, same_node: bool) -> dict:
    keys = Keys(prefix)
    stats = []

    async def worker(w: int, share: int) -> None:
        async with EtcdClient([url]) as client:
            alloc = BlockAllocator(client, keys)
            node = "node-0" if same_node else f"node-{w}"
            await alloc.allocate(node, f"warm-{w}", 1, [POOL])  # claim (or find) the first block
            done.append(0)
            await ready.wait()
            for i in range(share):
                await alloc.allocate(node, f"h-{w}-{i}", 1, [POOL])
            stats.append(alloc.stats)

    done: list[int] = []
    ready = trio.Event()
    share = n // workers
    async with trio.open_nursery() as nursery:
        for w in range(workers):
            nursery.start_soon(worker, w, share)
        while len(done) < workers:
            await trio.sleep(0.01)
        t = time.perf_counter()
        ready.set()
    dt = time.perf_counter() - t
    total = share * workers
    txns = sum(s.txns for s in stats)
    return {"ops": total, "seconds": dt, "rate": total / dt, "txns_per_alloc": txns / total,
            "conflicts": sum(s.conflicts for s in stats), "claims": sum(s.claims for s in stats)}


SCENARIOS = [
    ("raw CAS, 1 task, one key", "raw", lambda url, p, n: raw_cas(url, p, n)),
    ("1 allocator", "single", lambda url, p, n: allocators(url, p, n, 1, True)),
    ("8 allocators, one node", "eight_one_node", lambda url, p, n: allocators(url, p, n, 8, True)),
    ("8 allocators, 8 nodes", "eight_nodes", lambda url, p, n: allocators(url, p, n, 8, False)),
    ("raw CAS, 8 tasks, 8 keys", "raw8", lambda url, p, n: raw_cas(url, p, n, 8)),
]


async def bench(url: str, count: int, rounds: int, only: set[str] | None = None) -> dict:
    scenarios = [s for s in SCENARIOS if only is None or s[1] in only or s[1] == "raw"]
    results: dict[str, list[dict]] = {key: [] for _, key, _ in scenarios}
    for r in range(rounds):
        for label, key, fn in scenarios:
            prefix = f"/bench-{os.getpid()}-{r}-{key}/calico-bgp/v1"
            progress(f"[round {r + 1}/{rounds}] {label}: {count} ops ...")
            res = await fn(url, prefix, count)
            results[key].append(res)
            extra = (f", {res['txns_per_alloc']:.2f} txn/alloc, {res['conflicts']} conflicts, {res['claims']} claims"
                     if "txns_per_alloc" in res else "")
            progress(f"[round {r + 1}/{rounds}] {label}: {res['rate']:.0f}/s{extra}")
            async with EtcdClient([url]) as client:
                await client.delete(prefix.split("/calico-bgp")[0] + "/", prefix=True)
    out: dict = {}
    for label, key, _ in scenarios:
        runs = results[key]
        med = statistics.median(x["rate"] for x in runs)
        out[key] = {"label": label, "rate": round(med, 1), "runs": [round(x["rate"], 1) for x in runs]}
        for extra in ("txns_per_alloc", "conflicts", "claims"):
            if extra in runs[0]:
                out[key][extra] = round(statistics.median(x[extra] for x in runs), 3)
    raw = out["raw"]["rate"]
    for key in out:
        out[key]["ratio_to_raw"] = round(out[key]["rate"] / raw, 3)
    out["target_single_over_raw"] = 0.70
    out["target_met"] = out["single"]["ratio_to_raw"] >= 0.70 if "single" in out else None
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.ipam", description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=800, help="operations per scenario per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--etcd-endpoints", help="use this etcd instead of starting one")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    ap.add_argument("--only", help="comma-separated scenario keys (raw,single,eight_one_node,eight_nodes,raw8); raw always runs")
    return ap


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)

    def run(url: str) -> dict:
        return trio.run(bench, url, args.count, args.rounds, set(args.only.split(",")) if args.only else None)

    if args.etcd_endpoints:
        figures = run(args.etcd_endpoints)
    else:
        progress("starting etcd on loopback ...")
        with EtcdServer() as server:
            progress(f"etcd up at {server.url}")
            figures = run(server.url)
    rows = [(v["label"], f"{v['rate']:.0f}", f"{v['ratio_to_raw']:.2f}",
             f"{v['txns_per_alloc']:.2f}" if "txns_per_alloc" in v else "-",
             str(int(v["conflicts"])) if "conflicts" in v else "-")
            for k, v in figures.items() if isinstance(v, dict)]
    head = ("scenario", "ops/s (median)", "x raw CAS", "txn/alloc", "conflicts")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if "single" in figures:
        print(f"target: 1 allocator >= 70% of raw CAS -> {'met' if figures['target_met'] else 'NOT met'} "
              f"({100 * figures['single']['ratio_to_raw']:.0f}%)")
    if args.json:
        print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
