#!/usr/bin/env python3
"""Route reflection: one calico-bgp route-reflector node vs BIRD 2 as the reflector, K clients.

Each client is a BIRD 2 in its own namespace on one bridge, owning 4 /26 blocks, with an iBGP
session to the reflector and a kernel protocol. For each K and each reflector: start the clients,
start the reflector, and time (a) until every client session is Established and (b) until every
client's kernel holds every other client's blocks; report the reflector's CPU seconds and RSS
(for our node: the agent, its ExaBGP and the bridge together, and the CPU of each) and its CPU per
route-to-client send (K clients x 4 blocks, each to the K-1 others).

    sudo .venv/bin/python -m bench.rr [--k 10 50] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from bench.common import bench_run, cpu_and_rss, cpu_by_process, progress, runnable
from bench.rr_watch import RouteCounts, bird_established
from lab.bird import Bird
from lab.etcd import EtcdServer
from lab.net import Ledger, Net, Process

RR_ADDR = "198.18.0.1"
CLUSTER_ID = "198.18.0.100"
BLOCKS = 4


def client_addr(i: int) -> str:
    return f"198.18.{1 + i // 250}.{i % 250 + 2}"


def client_blocks(i: int) -> list[str]:
    return [f"198.19.{i}.{64 * b}/26" for b in range(BLOCKS)]


def client_conf(i: int) -> str:
    me = client_addr(i)
    return "\n".join([
        f"router id {me};", "protocol device {}",
        "protocol kernel { ipv4 { export where source = RTS_BGP; import none; }; }",
        "protocol static { ipv4;", *[f"  route {b} blackhole;" for b in client_blocks(i)], "}",
        "protocol bgp reflector {", f"  local {me} as 64512;", f"  neighbor {RR_ADDR} as 64512;", "  direct;",
        "  connect delay time 0;", "  connect retry time 1;",
        "  ipv4 { import all; export where source = RTS_STATIC; };", "}"]) + "\n"


def bird_rr_conf(k: int) -> str:
    lines = [f"router id {RR_ADDR};", "protocol device {}"]
    for i in range(1, k + 1):
        lines += [f"protocol bgp c{i} {{", f"  local {RR_ADDR} as 64512;", f"  neighbor {client_addr(i)} as 64512;",
                  "  direct;", "  passive on;", "  rr client;", f"  rr cluster id {CLUSTER_ID};",
                  "  ipv4 { import all; export all; };", "}"]
    return "\n".join(lines) + "\n"


def our_resources(k: int) -> str:
    """The reflector node and its K clients. The clients' blocks are in the pool but in no IPAM block
    (origin-invalid): Deprefer checks every path and still reflects it, as BIRD does."""
    docs = ["kind: BGPConfiguration\napiVersion: projectcalico.org/v3\nmetadata: {name: default}\n"
            "spec: {asNumber: 64512, nodeToNodeMeshEnabled: false}",
            "kind: IPPool\napiVersion: projectcalico.org/v3\nmetadata: {name: pods}\nspec: {cidr: 198.19.0.0/16}",
            f"kind: Node\napiVersion: projectcalico.org/v3\nmetadata: {{name: rr}}\n"
            f"spec: {{bgp: {{ipv4Address: {RR_ADDR}/16, routeReflectorClusterID: {CLUSTER_ID}}}}}"]
    for i in range(1, k + 1):
        docs.append(f"kind: BGPPeer\napiVersion: projectcalico.org/v3\nmetadata: {{name: c{i}}}\n"
                    f"spec: {{node: rr, peerIP: {client_addr(i)}, asNumber: 64512, originValidation: Deprefer}}")
    return "\n---\n".join(docs)


def sends(k: int) -> int:
    """Route-to-client sends a reflector makes: every client's blocks to each of the others."""
    return k * BLOCKS * (k - 1)


args_timeout = float(os.environ.get("BENCH_TIMEOUT", "300"))


def run(k: int, reflector: str, work: Path, etcd: EtcdServer | None) -> dict:
    d = work / f"{reflector}{k}"
    ledger = Ledger(d / "ledger")
    net = Net(ledger, f"r{reflector[0]}{k}")
    try:
        hub = net.namespace("hub")
        net.bridge(hub, "br0")
        rr_ns = net.namespace("rr")
        net.veth(rr_ns, "eth0", hub, "prr")
        net.attach(hub, "prr", "br0")
        net.address(rr_ns, "eth0", f"{RR_ADDR}/16")
        clients = []
        for i in range(1, k + 1):
            ns = net.namespace(f"c{i}")
            net.veth(ns, "eth0", hub, f"pc{i}")
            net.attach(hub, f"pc{i}", "br0")
            net.address(ns, "eth0", f"{client_addr(i)}/16")
            client = Bird(ns, None, d / f"c{i}")
            client.start(ledger, config=client_conf(i))
            clients.append((ns, client))
        progress(f"{reflector} K={k}: {k} BIRD clients started; starting the reflector")
        if reflector == "bird":
            (d / "rr.conf").write_text(bird_rr_conf(k))
            argv = ["bird", "-f", "-c", str(d / "rr.conf"), "-s", str(d / "rr.ctl")]
        else:
            prefix = f"/rrbench{k}/calico-bgp/v1"
            cli = [sys.executable, "-m", "calico_bgp", "--etcd-endpoints", etcd.url, "--prefix", prefix]
            subprocess.run([*cli, "apply", "-f", "-"], input=our_resources(k), text=True, check=True,
                           capture_output=True)
            argv = [sys.executable, "-m", "calico_bgp", "--etcd-endpoints", etcd.unix_url, "--prefix", prefix,
                    "node", "run", "--name", "rr", "--state-dir", str(d / "state"), "--grace", "0"]
        counts = RouteCounts([ns for ns, _ in clients], 26, "198.19.0.0", "198.19.255.255", BLOCKS * (k - 1))
        try:
            t0 = time.monotonic()
            rr = Process(ledger, rr_ns, argv, d / "rr.log")
            t_est = None
            waiting = list(clients)
            while counts.done() < k:
                if t_est is None:
                    while waiting and bird_established(waiting[0][1].ctl, "reflector"):
                        waiting.pop(0)
                    if not waiting:
                        t_est = time.monotonic()
                        progress(f"{reflector} K={k}: all {k} sessions Established after {t_est - t0:.2f}s")
                if time.monotonic() - t0 > args_timeout:
                    raise RuntimeError(f"{reflector} K={k}: {counts.done()}/{k} clients complete after "
                                       f"{args_timeout:.0f} s; reflector log:\n{rr.tail(40)}")
                time.sleep(0.05)
            t_done = max(t for t in counts.done_at if t is not None)
            if counts.lost:
                raise RuntimeError(f"{reflector} K={k}: route events lost {counts.lost} times: figures void")
        finally:
            counts.close()
        t_est = min(t_est or t_done, t_done)
        cpu, rss = cpu_and_rss(rr.pid)
        parts = {name: round(c, 2) for name, c in cpu_by_process([rr.pid]).items()}
        progress(f"{reflector} K={k}: every client has every block after {t_done - t0:.2f}s")
        return {"k": k, "reflector": reflector, "established_s": round(t_est - t0, 2),
                "routes_after_established_s": round(t_done - t_est, 2), "total_s": round(t_done - t0, 2),
                "cpu_s": round(cpu, 2), "rss_mb": round(rss, 1), "cpu_s_by_process": parts,
                "cpu_ms_per_send": round(1000 * cpu / sends(k), 4)}
    finally:
        ledger.teardown()


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.rr", description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not runnable("rr", ("bird", "birdc")):
        return 2
    rows = []
    with bench_run("rr") as (work, _), EtcdServer() as etcd:
        for k in args.k:
            ours = run(k, "calico-bgp", work, etcd)
            bird = run(k, "bird", work, None)
            rows.append({"k": k, "sends": sends(k), "ratio_total": round(ours["total_s"] / max(bird["total_s"], 1e-3), 2),
                         "cpu_s": ours["cpu_s"], "rss_mb": ours["rss_mb"], "cpu_ms_per_send": ours["cpu_ms_per_send"],
                         "calico_bgp": ours, "bird": bird})
    print(f"{'K':>4}  {'reflector':<11} {'established s':>14} {'routes after s':>15} {'total s':>8} {'CPU s':>7} "
          f"{'RSS MB':>7} {'CPU ms/send':>12}")
    for r in rows:
        for key in ("calico_bgp", "bird"):
            x = r[key]
            print(f"{r['k']:>4}  {x['reflector']:<11} {x['established_s']:>14.2f} {x['routes_after_established_s']:>15.2f} "
                  f"{x['total_s']:>8.2f} {x['cpu_s']:>7.2f} {x['rss_mb']:>7.1f} {x['cpu_ms_per_send']:>12.4f}")
        by = ", ".join(f"{name} {cpu:.2f}" for name, cpu in sorted(r["calico_bgp"]["cpu_s_by_process"].items()))
        print(f"      {r['sends']} sends; ratio (total, calico-bgp / BIRD): {r['ratio_total']:.2f}; our CPU s: {by}")
    for a, b in zip(rows, rows[1:]):  # what one more send costs, start-up left out
        extra = b["sends"] - a["sends"]
        if extra > 0:
            b["marginal_cpu_ms_per_send"] = round(1000 * (b["cpu_s"] - a["cpu_s"]) / extra, 4)
            print(f"      K {a['k']} -> {b['k']}: {b['marginal_cpu_ms_per_send']:.4f} ms of our CPU per additional send")
    if args.json:
        print(json.dumps({"rr": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
