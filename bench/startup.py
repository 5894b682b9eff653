#!/usr/bin/env python3
"""A node's start-up: `node run` to its first Established session, with one BIRD 2 peer waiting,
and what the node costs once it settled (agent, ExaBGP and the API bridge, each apart); BIRD 2 in
the node's place beside it, in the same runs.

Per run: a namespace for the node and one for BIRD (eBGP, BIRD dialing every second), the
resources in etcd, then `calico-bgp node run`; `start_s` is the time from the spawn to the
agent's first `peer_state ... state=up`; `exabgp_s` when ExaBGP was started and `loop_s` when the
agent's event loop ran (`agent_start`), both from the agent's log; 3 s after the session came up,
CPU seconds, RSS and PSS of each process. Then BIRD 2 as the node (same peer, same namespaces):
`start_s` until the peer shows the session Established, and its RSS. Medians over the runs.

    sudo .venv/bin/python -m bench.startup [--runs 3] [--json]

The JSON last line: {"startup": {"start_s", "cpu_s", "rss_mb", "pss_mb", "parts": {agent, exabgp,
bridge: {cpu_s, rss_mb, pss_mb}}, "runs": [...]}, "bird": {"start_s", "rss_mb"}}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Sequence

from bench.common import (
    bench_run,
    cpu_and_rss,
    one_peer_resources,
    part_of,
    proc_tree,
    progress,
    runnable,
    usage_by_part,
)
from bench.rr_watch import bird_established
from lab.bird import Bird
from lab.etcd import EtcdServer
from lab.net import Ledger, Net, Process

NODE, PEER = "198.18.7.1", "198.18.7.2"
NODE_AS, PEER_AS = 64512, 65001
PARTS = ("agent", "exabgp", "bridge")
SETTLE_S = 3.0
LIMIT_S = 60.0


def bird_conf() -> str:
    return "\n".join([
        f"router id {PEER};", "protocol device {}",
        "protocol bgp node {", f"  local {PEER} as {PEER_AS};", f"  neighbor {NODE} as {NODE_AS};",
        "  connect delay time 0;", "  connect retry time 1;", "  ipv4 { import all; export none; };", "}"]) + "\n"


def bird_node_conf() -> str:
    """BIRD 2 in the node's place: the same session to the same peer, dialing at once."""
    return "\n".join([
        f"router id {NODE};", "protocol device {}",
        "protocol bgp peer {", f"  local {NODE} as {NODE_AS};", f"  neighbor {PEER} as {PEER_AS};",
        "  connect delay time 0;", "  connect retry time 1;", "  ipv4 { import all; export none; };", "}"]) + "\n"


def log_times(log: Path, spawned: float) -> dict[str, float]:
    """Seconds from the spawn to the first of each agent event this bench reads from the log."""
    wanted = {"exabgp_started": "exabgp_s", "agent_start": "loop_s"}
    out: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp() - spawned
        except ValueError:
            continue
        for name, key in wanted.items():
            if f"event={name} " in line + " " and key not in out:
                out[key] = round(at, 2)
        if "event=peer_state" in line and "state=up" in line and "start_s" not in out:
            out["start_s"] = round(at, 2)
    return out


def pss_by_part(pid: int) -> dict[str, float]:
    out = dict.fromkeys(PARTS, 0.0)
    for p in proc_tree(pid):
        kind = part_of(p)
        kind = kind if kind in ("exabgp", "bridge") else "agent"
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    out[kind] += int(line.split()[1]) / 1024
        except OSError:
            pass
    return out


def two_namespaces(net: Net, ledger: Ledger, d: Path) -> tuple[str, Bird]:
    """The node's namespace and the peer's, one veth between them, the peer BIRD running."""
    node, peer = net.namespace("node"), net.namespace("bird")
    net.veth(node, "eth0", peer, "eth0")
    net.address(node, "eth0", f"{NODE}/24")
    net.address(peer, "eth0", f"{PEER}/24")
    bird = Bird(peer, None, d / "bird")
    bird.start(ledger, config=bird_conf())
    return node, bird


def bird_run(i: int, work: Path) -> dict:
    d = work / f"bird{i}"
    ledger = Ledger(d / "ledger")
    try:
        node, peer = two_namespaces(Net(ledger, f"sb{i}"), ledger, d)
        (d / "node.conf").write_text(bird_node_conf())
        spawned = time.time()
        daemon = Process(ledger, node, ["bird", "-f", "-c", str(d / "node.conf"), "-s", str(d / "node.ctl")],
                         d / "node.log")
        while not bird_established(peer.ctl, "node"):
            if time.time() - spawned > LIMIT_S or not daemon.alive():
                raise RuntimeError(f"BIRD run {i}: no session up after {time.time() - spawned:.0f} s")
            time.sleep(0.01)
        up = time.time() - spawned
        time.sleep(SETTLE_S)
        return {"start_s": round(up, 2), "rss_mb": round(cpu_and_rss(daemon.pid)[1], 1)}
    finally:
        ledger.teardown()


def one_run(i: int, work: Path, etcd: EtcdServer) -> dict:
    d = work / f"run{i}"
    ledger = Ledger(d / "ledger")
    try:
        node, _ = two_namespaces(Net(ledger, f"su{i}"), ledger, d)
        prefix = f"/startup{i}/calico-bgp/v1"
        cli = [sys.executable, "-m", "calico_bgp", "--etcd-endpoints", etcd.url, "--prefix", prefix]
        subprocess.run([*cli, "apply", "-f", "-"], input=one_peer_resources(NODE, NODE_AS, PEER, PEER_AS,
                       "198.19.0.0/16", "pods"), text=True, check=True, capture_output=True)
        argv = [sys.executable, "-m", "calico_bgp", "--etcd-endpoints", etcd.unix_url, "--prefix", prefix,
                "node", "run", "--name", "node", "--state-dir", str(d / "state"), "--grace", "0", "--filter-mode", "off"]
        spawned = time.time()
        agent = Process(ledger, node, argv, d / "agent.log")
        while "start_s" not in log_times(agent.log_path, spawned):
            if time.time() - spawned > LIMIT_S or not agent.alive():
                raise RuntimeError(f"run {i}: no session up after {time.time() - spawned:.0f} s; log:\n{agent.tail(30)}")
            time.sleep(0.02)
        time.sleep(SETTLE_S)
        usage, pss = usage_by_part(agent.pid), pss_by_part(agent.pid)
        times = log_times(agent.log_path, spawned)
        parts = {x: {"cpu_s": round(usage[x][0], 2), "rss_mb": round(usage[x][1], 1), "pss_mb": round(pss[x], 1)}
                 for x in PARTS}
        row = {**times, "cpu_s": round(sum(p["cpu_s"] for p in parts.values()), 2),
               "rss_mb": round(sum(p["rss_mb"] for p in parts.values()), 1),
               "pss_mb": round(sum(p["pss_mb"] for p in parts.values()), 1), "parts": parts}
        progress(f"run {i}: first session after {row['start_s']} s (ExaBGP started at {row.get('exabgp_s')} s, "
                 f"the agent's loop at {row.get('loop_s')} s); {row['cpu_s']} s of CPU, {row['rss_mb']} MB")
        return row
    finally:
        ledger.teardown()


def summary(rows: list[dict]) -> dict:
    def med(values: list[float], digits: int = 2) -> float:
        return round(statistics.median(values), digits)

    return {"start_s": med([r["start_s"] for r in rows]), "cpu_s": med([r["cpu_s"] for r in rows]),
            "rss_mb": med([r["rss_mb"] for r in rows], 1), "pss_mb": med([r["pss_mb"] for r in rows], 1),
            "parts": {x: {k: med([r["parts"][x][k] for r in rows], 1 if k != "cpu_s" else 2)
                          for k in ("cpu_s", "rss_mb", "pss_mb")} for x in PARTS},
            "runs": rows}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs (medians are reported)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not runnable("startup", ("bird", "birdc")):
        return 2
    rows, birds = [], []
    with bench_run("startup") as (work, _), EtcdServer() as etcd:
        for i in range(args.runs):
            rows.append(one_run(i, work, etcd))
            birds.append(bird_run(i, work))
            progress(f"run {i}: BIRD 2 as the node: first session after {birds[-1]['start_s']} s")
    s = summary(rows)
    bird = {"start_s": round(statistics.median(b["start_s"] for b in birds), 2),
            "rss_mb": round(statistics.median(b["rss_mb"] for b in birds), 1)}
    print(f"calico-bgp: first Established after {s['start_s']:.2f} s; {s['cpu_s']:.2f} s of CPU, "
          f"{s['rss_mb']:.1f} MB RSS, {s['pss_mb']:.1f} MB PSS (medians of {len(rows)})")
    for x in PARTS:
        p = s["parts"][x]
        print(f"  {x:<7} {p['cpu_s']:5.2f} s  {p['rss_mb']:5.1f} MB RSS  {p['pss_mb']:5.1f} MB PSS")
    print(f"BIRD 2:     first Established after {bird['start_s']:.2f} s; {bird['rss_mb']:.1f} MB RSS")
    if args.json:
        print(json.dumps({"startup": s, "bird": bird}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
