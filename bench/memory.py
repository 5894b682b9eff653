#!/usr/bin/env python3
"""Agent memory under rejected routes: fabric peers announce N host routes outside every pool (all
rejected by import policy), then withdraw them; the agent's RSS before, at its peak and after, beside
BIRD 2's in the agent's place (same sources, same routes, importing only the pool), in the same run.

    src (BIRD 2 x --peers, AS 65001, 198.18.0.1, .3, ...) --one veth-- node (198.18.0.2, AS 64512)

    sudo .venv/bin/python -m bench.memory [--n 200000] [--peers 2] [--settle 10] [--json]

Each session announces the same N/peers /32s from 198.18.64.0 (the test range 198.18.0.0/15 holds
~114k of them after the pool): N rejected paths in all. The only pool is the link's 198.18.0.0/24.
The agent once went from 163 to 300 MB with 200k rejected /128s and stayed there after withdrawal;
the goal is RSS after within 20 MB of before. The RSS is the agent's own process (ExaBGP and the bridge
are reported apart), from /proc; the peak is the kernel's high-water mark (VmHWM). The agent's count
of received paths comes from its published status in etcd. Everything (namespaces, BIRD, etcd, the
agent) is removed at the end, even on failure or SIGTERM.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from bench.common import bench_run, cpu_and_rss, proc_tree, progress, runnable
from lab.bird import Bird
from lab.etcd import EtcdServer
from lab.net import Ledger, Net, Process

NODE = "198.18.0.2"
SOURCES = ("198.18.0.1", "198.18.0.3", "198.18.0.4", "198.18.0.5")
SRC_AS, NODE_AS = 65001, 64512
POOL = "198.18.0.0/24"                       # the only pool: every announced /32 is outside it
FIRST = int(ipaddress.IPv4Address("198.18.64.0"))
LAST = int(ipaddress.IPv4Address("198.19.255.255"))
GOAL_MB = 20.0


def src_conf(per_peer: int, src: str) -> str:
    """One source BIRD: its own address (bound strictly, so several share the namespace), one session."""
    lines = [f"router id {src};", "protocol device {}", "protocol static hosts {", "  disabled;", "  ipv4;"]
    lines += [f"  route {ipaddress.IPv4Address(FIRST + i)}/32 blackhole;" for i in range(per_peer)]
    lines += ["}", "protocol bgp node {", f"  local {src} as {SRC_AS};", f"  neighbor {NODE} as {NODE_AS};",
              "  strict bind on;", "  connect delay time 0;", "  connect retry time 1;",
              "  ipv4 { import none; export where source = RTS_STATIC; next hop self; };", "}"]
    return "\n".join(lines) + "\n"


def receiver_conf(peers: int) -> str:
    """BIRD 2 in the agent's place, the reference: the same sessions, importing only the pool (as the
    agent's policy does), so every /32 is filtered; BIRD keeps no filtered route unless told to
    (`import keep filtered`), so this is its memory for the same work."""
    lines = [f"router id {NODE};", "protocol device {}",
             f"filter pool_only {{ if net ~ [ {POOL}+ ] then accept; reject; }}"]
    for i, src in enumerate(SOURCES[:peers]):
        lines += [f"protocol bgp src{i} {{", f"  local {NODE} as {NODE_AS};", f"  neighbor {src} as {SRC_AS};",
                  "  connect delay time 0;", "  connect retry time 1;",
                  "  ipv4 { import filter pool_only; export none; };", "}"]
    return "\n".join(lines) + "\n"


def bird_received(bird: Bird, peers: int) -> tuple[int, int, int]:
    """(sessions Established, import updates received, import withdraws received) over its sessions."""
    up = updates = withdraws = 0
    for i in range(peers):
        text = bird.birdc("show", "protocols", "all", f"src{i}")
        up += "BGP state:          Established" in text
        m = re.search(r"Import updates:\s+(\d+)", text)
        w = re.search(r"Import withdraws:\s+(\d+)", text)
        updates += int(m.group(1)) if m else 0
        withdraws += int(w.group(1)) if w else 0
    return up, updates, withdraws


def resources(peers: int) -> str:
    return "\n---\n".join([
        f"kind: BGPConfiguration\napiVersion: projectcalico.org/v3\nmetadata: {{name: default}}\n"
        f"spec: {{asNumber: {NODE_AS}, nodeToNodeMeshEnabled: false}}",
        f"kind: IPPool\napiVersion: projectcalico.org/v3\nmetadata: {{name: link}}\nspec: {{cidr: {POOL}}}",
        f"kind: Node\napiVersion: projectcalico.org/v3\nmetadata: {{name: node}}\nspec: {{bgp: {{ipv4Address: {NODE}/24}}}}",
        *(f"kind: BGPPeer\napiVersion: projectcalico.org/v3\nmetadata: {{name: src{i}}}\n"
          f"spec: {{node: node, peerIP: {src}, asNumber: {SRC_AS}}}" for i, src in enumerate(SOURCES[:peers]))])


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of one process in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and its descendants (ExaBGP, the bridge)."""
    return cpu_and_rss(pid)[0]


def others_mb(pid: int) -> float:
    """RSS of the agent's children (ExaBGP, the API bridge), for the record."""
    total = 0.0
    for p in proc_tree(pid)[1:]:
        try:
            total += rss_mb(p)[0]
        except (OSError, KeyError):
            pass
    return total


class Agent:
    def __init__(self, ledger: Ledger, ns: str, etcd: EtcdServer, work: Path, log_level: str, peers: int) -> None:
        self.prefix = f"/memory{os.getpid()}/calico-bgp/v1"
        self.cli = [sys.executable, "-m", "calico_bgp", "--etcd-endpoints", etcd.url, "--prefix", self.prefix]
        subprocess.run([*self.cli, "apply", "-f", "-"], input=resources(peers), text=True, check=True, capture_output=True)
        self.proc = Process(ledger, ns, [
            sys.executable, "-m", "calico_bgp", "--etcd-endpoints", etcd.unix_url, "--prefix", self.prefix,
            "node", "run", "--name", "node", "--ip", f"{NODE}/24",
            "--state-dir", str(work / "state"), "--grace", "0",
            "--log-level", log_level], work / "agent.log")

    def sessions(self) -> dict | None:
        """Over our sources' sessions: how many are Established, and the sums of received/rejected/not kept."""
        res = subprocess.run([*self.cli, "status", "-o", "json"], capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            return None
        mine = [s for s in json.loads(res.stdout)[0]["sessions"] if s["peer"] in SOURCES]
        return {"up": sum(s["state"] == "Established" for s in mine),
                **{k: sum(s.get(k, 0) for s in mine) for k in ("received", "rejected", "rejectedNotKept")}}

    def wait(self, what: str, check, timeout: float, quiet: bool = False) -> dict:  # type: ignore[no-untyped-def]
        """Until `check(status sums)`; with `quiet`, and the agent and ExaBGP used under 10% of a core for 3 s: done
        with it. An announce the status counts nothing of (as once, with only rejected
        paths, when an empty RIB was falsy) ends when they went quiet."""
        t0 = time.monotonic()
        last = 0.0
        cpu, still_since = cpu_s(self.proc.pid), time.monotonic()
        polled = still_since
        while True:
            if not self.proc.alive():
                raise RuntimeError(f"the agent exited:\n{self.proc.tail(30)}")
            s = self.sessions()
            now_cpu, now = cpu_s(self.proc.pid), time.monotonic()
            if now_cpu - cpu > 0.1 * (now - polled):  # over 10% of a core: more than timers and status
                still_since = now
            cpu, polled = now_cpu, now
            settled = time.monotonic() - t0 > 4 and time.monotonic() - still_since >= 3
            if s is not None and check(s) and (settled or not quiet):
                return s
            if quiet and s is not None and settled and s["received"] == 0 and what == "announce":
                progress(f"{what}: the agent's status does not count them ({s}); it went quiet")
                return s
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{what}: not after {timeout:.0f}s (last {s})\n{self.proc.tail(30)}")
            if time.monotonic() - last >= 5:
                last = time.monotonic()
                rss = rss_mb(self.proc.pid)[0]
                progress(f"{what}: received {s['received'] if s else '-'} after {time.monotonic() - t0:.0f}s, "
                         f"agent RSS {rss:.0f} MB")
            time.sleep(1.0)


def run(args: argparse.Namespace, work: Path, ledger: Ledger) -> dict:
    per_peer = args.n // args.peers
    net = Net(ledger, f"mem{os.getpid() % 10000}")
    src_ns, node_ns = net.namespace("src"), net.namespace("node")
    net.veth(src_ns, "eth0", node_ns, "eth0")
    for src in SOURCES[:args.peers]:
        net.address(src_ns, "eth0", f"{src}/24")
    net.address(node_ns, "eth0", f"{NODE}/24")
    progress(f"{args.peers} source BIRDs, each to announce the same {per_peer} /32s outside every pool")
    srcs = []
    for i, addr in enumerate(SOURCES[:args.peers]):
        srcs.append(Bird(src_ns, None, work / f"src{i}"))
        srcs[-1].start(ledger, config=src_conf(per_peer, addr))
    total = per_peer * args.peers
    with EtcdServer() as etcd:
        agent = Agent(ledger, node_ns, etcd, work, args.log_level, args.peers)
        agent.wait("sessions up", lambda s: s["up"] == args.peers, 90)
        time.sleep(args.settle)
        before, _ = rss_mb(agent.proc.pid)
        progress(f"agent RSS before: {before:.1f} MB; announcing {total} paths")
        t0 = time.monotonic()
        for src in srcs:
            if "enabled" not in src.birdc("enable", "hosts"):
                raise RuntimeError("birdc enable hosts failed")
        got = agent.wait("announce", lambda s: s["received"] >= total, args.timeout, quiet=True)
        announced_s = time.monotonic() - t0
        time.sleep(2.0)
        during, _ = rss_mb(agent.proc.pid)
        progress(f"all {total} received in {announced_s:.1f}s (rejected {got['rejected']}, "
                 f"not kept {got['rejectedNotKept']}); agent RSS {during:.1f} MB; withdrawing")
        t0 = time.monotonic()
        for src in srcs:
            if "disabled" not in src.birdc("disable", "hosts"):
                raise RuntimeError("birdc disable hosts failed")
        agent.wait("withdraw", lambda s: s["received"] == 0, args.timeout, quiet=True)
        withdrawn_s = time.monotonic() - t0
        samples = []
        for _ in range(int(args.settle)):
            time.sleep(1.0)
            samples.append(rss_mb(agent.proc.pid)[0])
        after, peak = rss_mb(agent.proc.pid)
        children = others_mb(agent.proc.pid)
        progress(f"withdrawn in {withdrawn_s:.1f}s; agent RSS after {args.settle:.0f}s: {after:.1f} MB")
        agent.proc.stop(timeout=10)
        bird = reference(args, work, ledger, node_ns, srcs, total)
    return {**bird, "n": total, "peers": args.peers, "rss_before_mb": round(before, 1), "rss_loaded_mb": round(during, 1),
            "rss_peak_mb": round(peak, 1), "rss_after_mb": round(after, 1), "delta_mb": round(after - before, 1),
            "goal_mb": GOAL_MB, "met": after - before <= GOAL_MB, "settle_samples_mb": [round(x, 1) for x in samples],
            "announce_s": round(announced_s, 1), "withdraw_s": round(withdrawn_s, 1),
            "children_rss_mb": round(children, 1), "rejected_reported": got["rejected"],
            "rejected_not_kept": got["rejectedNotKept"]}


def wait_bird(what: str, bird: Bird, pid: int, peers: int, check, timeout: float) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    t0 = last = time.monotonic()
    while True:
        got = bird_received(bird, peers)
        if check(got):
            return got
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"BIRD {what}: not after {timeout:.0f}s (sessions up, updates, withdraws: {got})")
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            progress(f"BIRD {what}: {got[1]} updates, {got[2]} withdraws received, RSS {rss_mb(pid)[0]:.0f} MB")
        time.sleep(0.5)


def reference(args: argparse.Namespace, work: Path, ledger: Ledger, node_ns: str, srcs: list[Bird],
              total: int) -> dict:
    """BIRD 2 receives the same routes in the agent's place: its RSS before, loaded and after."""
    bird = Bird(node_ns, None, work / "receiver")
    pid = bird.start(ledger, config=receiver_conf(args.peers))
    progress("reference: BIRD 2 in the agent's place")
    wait_bird("sessions up", bird, pid, args.peers, lambda g: g[0] == args.peers, 90)
    time.sleep(args.settle)
    before = rss_mb(pid)[0]
    for src in srcs:
        src.birdc("enable", "hosts")
    wait_bird("announce", bird, pid, args.peers, lambda g: g[1] >= total, args.timeout)
    time.sleep(2.0)
    loaded = rss_mb(pid)[0]
    for src in srcs:
        src.birdc("disable", "hosts")
    wait_bird("withdraw", bird, pid, args.peers, lambda g: g[2] >= total, args.timeout)
    time.sleep(args.settle)
    after, peak = rss_mb(pid)
    progress(f"BIRD RSS MB: before {before:.1f}, loaded {loaded:.1f}, after {after:.1f}")
    return {"bird_rss_before_mb": round(before, 1), "bird_rss_loaded_mb": round(loaded, 1),
            "bird_rss_peak_mb": round(peak, 1), "bird_rss_after_mb": round(after, 1)}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="rejected paths announced in all (default 200000)")
    ap.add_argument("--peers", type=int, default=2, help=f"sessions sharing them (1..{len(SOURCES)}, default 2)")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds to wait before each RSS reading (default 20)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds the announce or the withdraw may take")
    ap.add_argument("--log-level", default="info", help="the agent's log level (default info, as deployed)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if not 1 <= args.peers <= len(SOURCES):
        ap.error(f"--peers {args.peers}: must be 1..{len(SOURCES)}")
    if not 0 < args.n // args.peers <= LAST - FIRST + 1:
        ap.error(f"--n {args.n}: each of the {args.peers} sessions announces n/peers, at most {LAST - FIRST + 1}")
    if not runnable("memory", ("bird", "birdc")):
        return 2
    with bench_run("mem") as (work, ledger):
        out = run(args, work, ledger)
    print(f"agent RSS MB: before {out['rss_before_mb']}, with {out['n']} rejected paths {out['rss_loaded_mb']}, "
          f"peak {out['rss_peak_mb']}, after withdrawal {out['rss_after_mb']} "
          f"(delta {out['delta_mb']:+}, goal <= {GOAL_MB:.0f}: {'met' if out['met'] else 'NOT met'})")
    print(f"BIRD 2 RSS MB (same routes, in the agent's place): before {out['bird_rss_before_mb']}, loaded "
          f"{out['bird_rss_loaded_mb']}, peak {out['bird_rss_peak_mb']}, after {out['bird_rss_after_mb']}")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
