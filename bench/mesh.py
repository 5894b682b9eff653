#!/usr/bin/env python3
"""Full-mesh convergence and one node joining: K calico-bgp agents vs K BIRD 2 daemons on one L2 segment.

For each K: start K nodes at once (each owning one /26 block) and time until every node's kernel
holds every other node's block (`converged_s`: on 2 cores mostly 2K Python processes starting);
then start a (K+1)th node and time until all K+1 kernels hold every block (`join_s`: what a rack
feels when a node is added). Per agent: from its start to its first Established session (`start_s`,
from the agent's log: the joining agent's, whose peers are all up, and the median of the cold
start), its CPU (agent + ExaBGP + bridge) until the mesh converged (`cpu_s_per_agent`, median) and
its memory (`rss_mb_median`: agent + ExaBGP + bridge, and each apart; `pss_mb_median` splits the
pages they share, the interpreter's among them, instead of counting them in each). Then the same
topology with BIRD 2 (iBGP, `direct`, the lower address passive, `protocol kernel` exporting to the
main table), in the same run; its join rewrites every BIRD's configuration and runs `birdc
configure`, as a configuration agent would, before the new BIRD starts: none of its first connections
is refused, BIRD's best case (the other way round its join took 1-4 s).

During the join the other nodes' CPU (`join_cpu_s_others`) is mostly what they spend idle
(keepalives, status, upkeep: `idle_cpu_s_per_s_others`, watched for 3 s before) times the join's
length; `join_cpu_s_per_other_net` is what each spent beyond that, the join's own work there.
`--profile DIR` records py-spy stacks of one of them (n1: agent, ExaBGP, bridge) during the join,
and of the joiner from its start (its ExaBGP and bridge as they appear: one file, py-spy's
`--subprocesses`).

    sudo .venv/bin/python -m bench.mesh [--k 5 10 20] [--json] [--profile DIR]

The JSON line holds, per K: {"k", "agents": {converged_s, join_s, start_s, cpu_s_per_agent,
rss_mb_median, ...}, "bird": {converged_s, join_s, ...}, "ratio", "ratio_join"}.
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

from bench.common import bench_run, cpu_and_rss, progress, pss_mb, runnable, usage_by_part
from bench.observe import Prefixes, Profiler, wait_quiet
from lab.cluster import MESH_RESOURCES as POOL
from lab.cluster import PROTO, MeshCluster
from lab.etcd import EtcdServer
from lab.net import Ledger, Net, Process

BIRD_PROTO = 12  # rtnetlink's number for routes BIRD installs
LIMIT_S = 300.0
IDLE_WINDOW = 3.0  # seconds the converged mesh is watched doing nothing before the join


def block(i: int) -> str:
    """The BIRD mesh's block of node i (the agents' come from IPAM)."""
    return f"198.19.{i}.0/26"


def wait_mesh(readers: dict[str, Prefixes], blocks: dict[str, str], t0: float, what: str,
              each: Callable[[], None] | None = None) -> float:
    """Seconds from `t0` until every node's kernel holds every other node's block; `each()` runs per poll."""
    want = set(blocks.values())
    done: set[str] = set()
    last = time.monotonic()
    while len(done) < len(blocks):
        for n, r in readers.items():
            if n not in done and want - {blocks[n]} <= r.read():
                done.add(n)
        if each is not None:
            each()
        now = time.monotonic()
        if now - t0 > LIMIT_S:
            raise RuntimeError(f"{what}: not converged after {LIMIT_S:.0f} s ({len(done)}/{len(blocks)} nodes)")
        if now - last >= 5:
            progress(f"{what}: {len(done)}/{len(blocks)} nodes have every block after {now - t0:.0f}s")
            last = now
        time.sleep(0.02)
    return time.monotonic() - t0


def first_established(log: Path) -> float | None:
    """Wall-clock time of the agent's first session going up, from its log (None: not yet)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if "event=peer_state" in line and "state=up" in line:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def follow(prof: Profiler, pid: int, tag: str) -> subprocess.Popen[bytes] | None:
    """py-spy on a process just started and the children it starts (the joiner: agent, ExaBGP, bridge),
    raw stacks in one file of the profile directory; None when not profiling."""
    if prof.out is None or prof.exe is None:
        return None
    return subprocess.Popen([prof.exe, "record", "--pid", str(pid), "--subprocesses", "--rate", "250", "--format",
                             "raw", "--nonblocking", "--output", str(prof.out / f"{tag}-{pid}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_follow(p: subprocess.Popen[bytes] | None) -> None:
    if p is None:
        return
    p.send_signal(signal.SIGINT)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def med(values: list[float], digits: int = 2) -> float:
    return round(statistics.median(values), digits) if values else 0.0


class AgentMesh:
    """K+1 nodes on one bridge (the last one joins later), their blocks, kernels and agents."""

    def __init__(self, k: int, etcd: EtcdServer, work: Path) -> None:
        self.k = k
        self.c = MeshCluster(work / f"agents{k}", etcd, f"/bench{k}/calico-bgp/v1", f"bm{k}")
        self.readers: dict[str, Prefixes] = {}
        self.blocks: dict[str, str] = {}
        self.spawned: dict[str, float] = {}  # node -> wall-clock time its agent was started

    def prepare(self, names: list[str], first: int) -> None:
        for i, name in enumerate(names, start=first):
            self.c.add_node(name, i)
            self.c.cli("ipam", "allocate", "--node", name, "--handle", f"h{i}")
            self.readers[name] = Prefixes(self.c.nodes[name], PROTO)

    def start(self, names: list[str]) -> None:
        for name in names:
            self.spawned[name] = time.time()
            # a rack runs at info (debug logs every netlink message) and sweeps empty IPAM blocks once a
            # minute: the tests' sweep every second had each agent read and decode every block each
            # second, a K x K cost that took CPU from the agents being timed
            self.c.start_agent(name, "--log-level", "info", "--ipam-sweep", "60")

    def find_blocks(self, names: list[str], t0: float) -> None:
        """Each node's own block: the blackhole its agent installs for it."""
        for name in names:
            while name not in self.blocks:
                bh = [p for p, h in self.c.routes(name).items() if h == ["blackhole"]]
                if bh:
                    self.blocks[name] = bh[0]
                elif time.monotonic() - t0 > LIMIT_S:
                    raise RuntimeError(f"{name}: no blackhole for its block after {LIMIT_S:.0f} s")
                else:
                    time.sleep(0.05)

    def start_s(self, name: str) -> float | None:
        at = first_established(self.c.agents[name].log_path)
        return None if at is None else round(at - self.spawned[name], 2)

    def cpu_rss(self, names: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
        return {n: usage_by_part(self.c.agents[n].pid) for n in names}

    def close(self) -> None:
        for r in self.readers.values():
            r.close()
        self.c.teardown()


def run_agents(k: int, etcd: EtcdServer, work: Path, prof: Profiler) -> dict:
    m = AgentMesh(k, etcd, work)
    cold = [f"n{i}" for i in range(1, k + 1)]
    joiner = f"n{k + 1}"
    try:
        m.c.apply(POOL)
        m.prepare(cold, 1)
        progress(f"{k} namespaces ready, blocks allocated; starting {k} agents")
        t0 = time.monotonic()
        m.start(cold)
        m.find_blocks(cold, t0)
        converged = wait_mesh({n: m.readers[n] for n in cold}, m.blocks, t0, f"agents K={k}")
        usage = m.cpu_rss(cold)
        pss = [pss_mb(m.c.agents[n].pid) for n in cold]
        progress(f"agents K={k}: all routes in all kernels after {converged:.2f}s")
        established = all(m.c.sessions_up(n, k - 1) for n in cold)
        starts = [s for s in (m.start_s(n) for n in cold) if s is not None]
        wait_quiet([m.c.agents[n].pid for n in cold])
        # what the converged mesh spends doing nothing (keepalives, status, upkeep): the join's CPU
        # on the other nodes is this rate times the join's length, plus the join's own work
        idle0 = sum(sum(c for c, _ in p.values()) for p in m.cpu_rss(cold).values())
        time.sleep(IDLE_WINDOW)
        before = {n: sum(c for c, _ in p.values()) for n, p in m.cpu_rss(cold).items()}
        idle_rate = (sum(before.values()) - idle0) / IDLE_WINDOW

        m.prepare([joiner], k + 1)
        progress(f"agents K={k}: mesh converged and quiet; {joiner} joins")
        prof.start([m.c.agents[cold[0]].pid], f"join{k}-existing")
        t1 = time.monotonic()
        m.start([joiner])
        joiner_prof = follow(prof, m.c.agents[joiner].pid, f"join{k}-joiner")
        m.find_blocks([joiner], t1)
        join = wait_mesh(m.readers, m.blocks, t1, f"agents K={k} join")
        prof.stop()
        stop_follow(joiner_prof)
        joined = m.cpu_rss([joiner])[joiner]
        after = {n: sum(c for c, _ in p.values()) for n, p in m.cpu_rss(cold).items()}
        start_join = m.start_s(joiner)
        progress(f"agents K={k}: {joiner} joined, all routes in all {k + 1} kernels after {join:.2f}s "
                 f"(its first session after {start_join}s)")

        node_rss = [sum(r for _, r in p.values()) for p in usage.values()]
        node_cpu = [sum(c for c, _ in p.values()) for p in usage.values()]
        parts = ("agent", "exabgp", "bridge")
        return {
            "k": k, "converged_s": round(converged, 2), "join_s": round(join, 2),
            "start_s": start_join, "start_s_cold_median": med(starts),
            "cpu_s_per_agent": med(node_cpu),
            "cpu_s_per_agent_parts": {x: med([p.get(x, (0, 0))[0] for p in usage.values()]) for x in parts},
            "join_cpu_s": round(sum(c for c, _ in joined.values()), 2),
            "join_cpu_s_others": round(sum(after[n] - before[n] for n in cold), 2),
            "idle_cpu_s_per_s_others": round(idle_rate, 3),
            # each other node's CPU for the join itself: what it spent beyond its idle rate
            "join_cpu_s_per_other_net": round((sum(after[n] - before[n] for n in cold) - idle_rate * join) / k, 3),
            "all_established": established,
            "rss_mb_median": med(node_rss, 1), "rss_mb_max": round(max(node_rss), 1),
            "rss_mb_parts": {x: med([p.get(x, (0, 0))[1] for p in usage.values()], 1) for x in parts},
            "pss_mb_median": med(pss, 1),
        }
    finally:
        m.close()


def bird_conf(i: int, peers: Sequence[int]) -> str:
    me = f"198.18.0.{i}"
    lines = [f"router id {me};", "protocol device {}",
             "protocol kernel { ipv4 { export where source = RTS_BGP; import none; }; }",
             f"protocol static {{ ipv4; route {block(i)} blackhole; }}"]
    for j in peers:
        if j == i:
            continue
        lines += [f"protocol bgp p{j} {{", f"  local {me} as 64512;", f"  neighbor 198.18.0.{j} as 64512;",
                  "  direct;", "  connect delay time 0;", "  connect retry time 1;",
                  "  passive on;" if i < j else "",
                  "  ipv4 { import all; export where source = RTS_STATIC; };", "}"]
    return "\n".join(lines) + "\n"


def run_bird(k: int, work: Path) -> dict:
    d = work / f"bird{k}"
    ledger = Ledger(d / "ledger")
    net = Net(ledger, f"bb{k}")
    readers: dict[str, Prefixes] = {}
    procs: dict[int, Process] = {}
    spaces: dict[int, str] = {}

    def start(i: int) -> None:
        procs[i] = Process(ledger, spaces[i], ["bird", "-f", "-c", str(d / f"n{i}.conf"), "-s", str(d / f"n{i}.ctl")],
                           d / f"n{i}.log")

    try:
        hub = net.namespace("hub")
        net.bridge(hub, "br0")
        for i in range(1, k + 2):
            ns = spaces[i] = net.namespace(f"n{i}")
            net.veth(ns, "eth0", hub, f"p{i}")
            net.attach(hub, f"p{i}", "br0")
            net.address(ns, "eth0", f"198.18.0.{i}/24")
            (d / f"n{i}.conf").write_text(bird_conf(i, range(1, k + 1)))
            readers[f"n{i}"] = Prefixes(ns, BIRD_PROTO)
        cold = {f"n{i}": block(i) for i in range(1, k + 1)}
        progress(f"{k} namespaces ready; starting {k} BIRDs")
        t0 = time.monotonic()
        for i in range(1, k + 1):
            start(i)
        converged = wait_mesh({n: readers[n] for n in cold}, cold, t0, f"BIRD K={k}")
        usage = [cpu_and_rss(procs[i].pid) for i in range(1, k + 1)]
        progress(f"BIRD K={k}: all routes in all kernels after {converged:.2f}s; n{k + 1} joins")

        j = k + 1
        for i in range(1, k + 2):
            (d / f"n{i}.conf").write_text(bird_conf(i, range(1, k + 2)))
        up: list[float] = []

        def joiner_up() -> None:
            if not up:
                out = subprocess.run(["birdc", "-s", str(d / f"n{j}.ctl"), "show", "protocols"],
                                     capture_output=True, text=True).stdout
                if "Established" in out:
                    up.append(time.monotonic())

        t1 = time.monotonic()
        for i in range(1, k + 1):  # the others first: its first connections are not refused (its best case)
            subprocess.run(["birdc", "-s", str(d / f"n{i}.ctl"), "configure"], capture_output=True, check=True)
        spawned = time.monotonic()
        start(j)
        join = wait_mesh(readers, {**cold, f"n{j}": block(j)}, t1, f"BIRD K={k} join", joiner_up)
        progress(f"BIRD K={k}: n{j} joined, all routes in all {k + 1} kernels after {join:.2f}s")
        return {"k": k, "converged_s": round(converged, 2), "join_s": round(join, 2),
                "start_s": round(up[0] - spawned, 2) if up else None,
                "cpu_s_per_node": med([c for c, _ in usage]), "rss_mb_median": med([r for _, r in usage], 1)}
    finally:
        for r in readers.values():
            r.close()
        ledger.teardown()


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.mesh", description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    ap.add_argument("--profile", metavar="DIR",
                    help="py-spy an existing node (n1: agent, ExaBGP, bridge) and the joiner during the join, "
                         "raw stacks in DIR")
    return ap


def table(results: list[dict]) -> str:
    head = (f"{'K':>4}  {'cold: ours / BIRD (s)':>22}  {'ratio':>6}  {'join: ours / BIRD (s)':>22}  {'ratio':>6}  "
            f"{'start (s)':>9}  {'CPU/agent (s)':>13}  {'RSS/node (MB)':>13}  {'agent/ExaBGP/bridge (MB)':>24}")
    rows = [head]
    for r in results:
        a, b = r["agents"], r["bird"]
        p = a["rss_mb_parts"]
        rows.append(f"{r['k']:>4}  {a['converged_s']:>10.2f} / {b['converged_s']:<9.2f}  {r['ratio']:>6.2f}  "
                    f"{a['join_s']:>10.2f} / {b['join_s']:<9.2f}  {r['ratio_join']:>6.2f}  "
                    f"{a['start_s'] if a['start_s'] is not None else '-':>9}  {a['cpu_s_per_agent']:>13.2f}  "
                    f"{a['rss_mb_median']:>13.1f}  {p['agent']:>8.1f} /{p['exabgp']:>6.1f} /{p['bridge']:>5.1f}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not runnable("mesh", ("bird", "birdc")):
        return 2
    results = []
    with bench_run("mesh") as (work, _), EtcdServer() as etcd:
        for k in args.k:
            ours = run_agents(k, etcd, work, Profiler(Path(args.profile) if args.profile else None))
            bird = run_bird(k, work)
            results.append({"k": k, "agents": ours, "bird": bird,
                            "ratio": round(ours["converged_s"] / max(bird["converged_s"], 1e-3), 2),
                            "ratio_join": round(ours["join_s"] / max(bird["join_s"], 1e-3), 2)})
    print(table(results))
    if args.json:
        print(json.dumps({"mesh": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
