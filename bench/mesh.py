#!/usr/bin/env python3
"""Full-mesh convergence: K calico-bgp agents vs K BIRD 2 daemons on the same L2 segment.

For each K: start K nodes (each owning one /26 block) and time until every session is Established
and every node's kernel holds every other node's block; report each agent's RSS. Then the same
topology with BIRD 2 (iBGP, `direct`, the lower address passive, `protocol kernel` exporting to
the main table), measured in the same run.

    sudo .venv/bin/python -m bench.mesh [--k 5 10 20] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

from bench.common import bench_run, cpu_and_rss, progress, runnable
from lab.cluster import MESH_RESOURCES as POOL
from lab.cluster import MeshCluster
from lab.etcd import EtcdServer
from lab.net import Ledger, Net, Process, sh


def kernel_prefixes(ns: str, proto: str | None = None) -> set[str]:
    args = ["ip", "-j", "-4", "route", "show"] + (["proto", proto] if proto else [])
    return {r["dst"] for r in json.loads(sh(*args, ns=ns).stdout or "[]") if "/" in r.get("dst", "")}


def run_agents(k: int, etcd: EtcdServer, work: Path) -> dict:
    c = MeshCluster(work / f"agents{k}", etcd, f"/bench{k}/calico-bgp/v1", f"bm{k}")
    try:
        c.apply(POOL)
        blocks = {}
        for i in range(1, k + 1):
            name = f"n{i}"
            c.add_node(name, i)
            c.cli("ipam", "allocate", "--node", name, "--handle", f"h{i}")
        progress(f"{k} namespaces ready, blocks allocated; starting {k} agents")
        t0 = time.monotonic()
        for i in range(1, k + 1):
            c.start_agent(f"n{i}")
        for i in range(1, k + 1):
            while True:
                bh = [p for p, h in c.routes(f"n{i}").items() if h == ["blackhole"]]
                if bh:
                    blocks[f"n{i}"] = bh[0]
                    break
                time.sleep(0.05)
        want = set(blocks.values())
        done: set[str] = set()
        while len(done) < k:
            for n in blocks:
                if n not in done and want - {blocks[n]} <= set(c.routes(n)):
                    done.add(n)
            if time.monotonic() - t0 > 300:
                raise RuntimeError(f"not converged after 300 s ({len(done)}/{k} nodes)")
            time.sleep(0.05)
        routes_s = time.monotonic() - t0
        established = all(c.sessions_up(n, k - 1) for n in blocks)
        rss = [cpu_and_rss(p.pid)[1] for p in c.agents.values()]
        progress(f"agents K={k}: all routes in all kernels after {routes_s:.2f}s")
        return {"k": k, "converged_s": round(routes_s, 2), "all_established": established,
                "rss_mb_median": round(statistics.median(rss), 1), "rss_mb_max": round(max(rss), 1)}
    finally:
        c.teardown()


def bird_conf(i: int, k: int) -> str:
    me = f"198.18.0.{i}"
    lines = [f"router id {me};", "protocol device {}",
             "protocol kernel { ipv4 { export where source = RTS_BGP; import none; }; }",
             f"protocol static {{ ipv4; route 198.19.{i}.0/26 blackhole; }}"]
    for j in range(1, k + 1):
        if j == i:
            continue
        lines += [f"protocol bgp p{j} {{", f"  local {me} as 64512;", f"  neighbor 198.18.0.{j} as 64512;",
                  "  direct;", "  connect delay time 0;", "  connect retry time 1;",
                  "  passive on;" if i < j else "",
                  "  ipv4 { import all; export where source = RTS_STATIC; };", "}"]
    return "\n".join(lines) + "\n"


def run_bird(k: int, work: Path) -> dict:
    ledger = Ledger(work / f"bird{k}" / "ledger")
    net = Net(ledger, f"bb{k}")
    try:
        hub = net.namespace("hub")
        net.bridge(hub, "br0")
        nss = []
        for i in range(1, k + 1):
            ns = net.namespace(f"n{i}")
            net.veth(ns, "eth0", hub, f"p{i}")
            net.attach(hub, f"p{i}", "br0")
            net.address(ns, "eth0", f"198.18.0.{i}/24")
            (work / f"bird{k}" / f"n{i}.conf").write_text(bird_conf(i, k))
            nss.append(ns)
        progress(f"{k} namespaces ready; starting {k} BIRDs")
        t0 = time.monotonic()
        for i, ns in enumerate(nss, start=1):
            d = work / f"bird{k}"
            Process(ledger, ns, ["bird", "-f", "-c", str(d / f"n{i}.conf"), "-s", str(d / f"n{i}.ctl")], d / f"n{i}.log")
        want = {f"198.19.{i}.0/26" for i in range(1, k + 1)}
        done: set[int] = set()
        while len(done) < k:
            for i, ns in enumerate(nss, start=1):
                if i not in done and want - {f"198.19.{i}.0/26"} <= kernel_prefixes(ns, "bird"):
                    done.add(i)
            if time.monotonic() - t0 > 120:
                raise RuntimeError("BIRD mesh did not converge in 120 s")
            time.sleep(0.05)
        secs = time.monotonic() - t0
        progress(f"BIRD K={k}: all routes in all kernels after {secs:.2f}s")
        return {"k": k, "converged_s": round(secs, 2)}
    finally:
        ledger.teardown()


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.mesh", description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not runnable("mesh", ("bird",)):
        return 2
    results = []
    with bench_run("mesh") as (work, _), EtcdServer() as etcd:
        for k in args.k:
            ours = run_agents(k, etcd, work)
            bird = run_bird(k, work)
            results.append({"k": k, "agents": ours, "bird": bird,
                            "ratio": round(ours["converged_s"] / max(bird["converged_s"], 1e-3), 2)})
    print(f"{'K':>4}  {'calico-bgp (s)':>15}  {'BIRD 2 (s)':>11}  {'ratio':>6}  {'agent RSS median/max (MB)':>26}")
    for r in results:
        a = r["agents"]
        print(f"{r['k']:>4}  {a['converged_s']:>15.2f}  {r['bird']['converged_s']:>11.2f}  {r['ratio']:>6.2f}  "
              f"{a['rss_mb_median']:>12.1f} / {a['rss_mb_max']:<11.1f}")
    if args.json:
        print(json.dumps({"mesh": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
