"""CNI ADD and DEL latency: the plugins exec'd as a container runtime execs them, 8 at a time on 2 nodes.

    .venv/bin/python -m bench.cni [--cycles 96] [--parallel 8] [--nodes 2] [--plugin calico-bgp-ipam] [--service] [--json]

Each worker repeats ADD then DEL for a new container on its node (workers alternate between the
nodes, each node with its own host-wide IPAM lock, as two hosts have), spawning the plugin from the
directory `calico-bgp cni install` fills. With `--plugin calico-bgp-ipam` (the default) the IPAM
plugin runs alone; with `--plugin calico-bgp-cni` (root) the main plugin attaches a fresh network
namespace per container from inside a namespace standing in for its node, reaching etcd through
its unix socket. `--service` sets `"ipam_service"` in the config (calico_bgp/cni/service.py: the
executable hands each invocation to a warm process; the first one starts it), which leaves 5 s after
the last cycle; the bench is its subreaper, so the service's CPU is counted with the plugins'. Reported: ADD and DEL p50 / p99 (wall, from spawn to exit), the plugin processes'
CPU per operation, and `start_ms`: the same executable answering VERSION (interpreter and imports,
no etcd), the floor under every operation. Target on a 2-core machine: ADD p50 <= 250 ms, p99 <= 1 s.
Progress goes to stderr; with --json the last stdout line is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import bench_run, progress
from calico_bgp.cni import install
from lab.etcd import EtcdServer
from lab.net import Net

ROOT = str(Path(__file__).resolve().parents[1])
PREFIX = "/bench-cni/calico-bgp/v1"
POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: bench-cni}
spec: {cidr: 198.19.64.0/18, blockSize: 26}
"""
TARGET = {"add_p50_ms": 250, "add_p99_ms": 1000}


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank), in ms."""
    s = sorted(values)
    return round(1000 * s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))], 1)


class Runner:
    """Spawns one plugin operation and times it."""

    def __init__(self, plugin: str, bin_dir: Path, etcd_url: str, work: Path, node_ns: dict[str, str] | None,
                 service: bool = False) -> None:
        self.plugin, self.bin_dir, self.etcd_url, self.work, self.node_ns = plugin, bin_dir, etcd_url, work, node_ns
        self.service = service

    def conf(self, node: str) -> bytes:
        return json.dumps({"cniVersion": "1.1.0", "name": "bench", "type": self.plugin, "nodename": node,
                           "etcd_endpoints": self.etcd_url, "etcd_prefix": PREFIX, "log_level": "warning",
                           "ipam_lock_file": str(self.work / f"{node}.lock"),
                           "ipam": {"type": "calico-bgp-ipam"}, **({"ipam_service": 5} if self.service else {})}).encode()

    def op(self, command: str, node: str, container: str) -> float:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command, "CNI_CONTAINERID": container,
               "CNI_NETNS": f"/var/run/netns/{container}", "CNI_IFNAME": "eth0", "CNI_PATH": str(self.bin_dir)}
        if os.environ.get("CALICO_BGP_CNI_EXEC_DELEGATES"):  # A/B: the IPAM plugin exec'd, not in process
            env["CALICO_BGP_CNI_EXEC_DELEGATES"] = os.environ["CALICO_BGP_CNI_EXEC_DELEGATES"]
        argv = [str(self.bin_dir / self.plugin)]
        if self.node_ns:
            argv = ["ip", "netns", "exec", self.node_ns[node], *argv]
        t = time.perf_counter()
        p = subprocess.run(argv, input=self.conf(node), env=env, capture_output=True, timeout=120)
        dt = time.perf_counter() - t
        if p.returncode != 0:
            raise RuntimeError(f"{self.plugin} {command} {container}: {p.stdout.decode().strip()} "
                               f"{p.stderr.decode().strip()[-500:]}")
        return dt


def adopt_orphans() -> None:
    """Become the subreaper of this process's descendants (prctl PR_SET_CHILD_SUBREAPER): the service a
    plugin starts in the background is re-parented here when that plugin exits, so that waiting for
    it adds its CPU to RUSAGE_CHILDREN (otherwise init reaps it and its CPU is nobody's)."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_orphans(keep: set[int], deadline: float) -> int:
    """Wait for this process's children other than `keep` (the adopted service, once it has left);
    returns how many were waited for."""
    me, reaped = os.getpid(), 0
    while time.monotonic() < deadline:
        adopted = [pid for pid in _children(me) if pid not in keep]
        if not adopted:
            break
        for pid in adopted:
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                time.sleep(0.1)
            else:
                reaped += 1
    return reaped


def _children(parent: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(b")", 1)[1].split()[1]) == parent:  # after "(comm)": state, then ppid
            out.append(int(name))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from click.testing import CliRunner

    from calico_bgp.cli import main as cli

    with bench_run("cni") as (work, ledger), EtcdServer() as etcd:
        res = CliRunner().invoke(cli, ["--etcd-endpoints", etcd.url, "--prefix", PREFIX, "apply", "-f", "-"], input=POOL)
        assert res.exit_code == 0, res.output
        bin_dir = work / "bin"
        install.write(install.plan(str(bin_dir), str(work / "conf"), {}, sys.executable,
                                   install.python_paths(ROOT))[:2])
        nodes = [f"n{i + 1}" for i in range(args.nodes)]
        node_ns = None
        if args.plugin == "calico-bgp-cni":
            net = Net(ledger, f"cb{os.getpid() % 10000}n")
            node_ns = {n: net.namespace(n) for n in nodes}
        runner = Runner(args.plugin, bin_dir, etcd.unix_url if node_ns else etcd.url, work, node_ns, args.service)
        starts = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([str(bin_dir / args.plugin)], input=b"{}", env={"CNI_COMMAND": "VERSION"},
                           capture_output=True, check=True)
            starts.append(time.perf_counter() - t)
        times: dict[str, list[float]] = {"ADD": [], "DEL": []}
        lock, errors = threading.Lock(), []
        tag = f"cb{os.getpid() % 10000}"  # container (namespace) names no other run makes
        if args.service:
            adopt_orphans()
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)

        def worker(w: int, share: int) -> None:
            node = nodes[w % len(nodes)]
            try:
                for i in range(share):
                    cid = f"{tag}w{w}c{i}"
                    if node_ns:
                        with lock:  # the ledger is one file: one writer at a time
                            ledger.add("namespaces", cid)
                        subprocess.run(["ip", "netns", "add", cid], check=True)
                    try:
                        add = runner.op("ADD", node, cid)
                        dele = runner.op("DEL", node, cid)
                    finally:
                        if node_ns:
                            subprocess.run(["ip", "netns", "del", cid], check=False)
                    with lock:
                        times["ADD"].append(add)
                        times["DEL"].append(dele)
                        done = len(times["ADD"])
                    if done % max(1, args.cycles // 8) == 0:
                        progress(f"{done}/{args.cycles} cycles")
            except Exception as exc:  # noqa: BLE001 - reported after the others finish
                errors.append(exc)

        share = args.cycles // args.parallel
        threads = [threading.Thread(target=worker, args=(w, share)) for w in range(args.parallel)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        if args.service:  # the service leaves 5 s after its last invocation: wait, so nothing outlives the run
            from calico_bgp.cni.service import socket_path

            deadline = time.monotonic() + 30
            while os.path.exists(socket_path()) and time.monotonic() < deadline:
                time.sleep(0.2)
            n = reap_orphans({etcd.proc.pid} if etcd.proc else set(), deadline)  # its CPU joins RUSAGE_CHILDREN
            progress(f"service processes waited for (their CPU counted): {n}")
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if errors:
            raise errors[0]
        ops = len(times["ADD"]) + len(times["DEL"])
        cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        check = CliRunner().invoke(cli, ["--etcd-endpoints", etcd.url, "--prefix", PREFIX, "ipam", "check", "-o", "json"])
        leaked = sum(p["inUse"] for p in json.loads(check.output)["pools"])
    return {"plugin": args.plugin, "service": args.service, "parallel": args.parallel, "nodes": args.nodes, "cycles": len(times["ADD"]),
            "add": {"p50_ms": pct(times["ADD"], 0.5), "p99_ms": pct(times["ADD"], 0.99)},
            "del": {"p50_ms": pct(times["DEL"], 0.5), "p99_ms": pct(times["DEL"], 0.99)},
            "cpu_ms_per_op": round(1000 * cpu / ops, 1), "start_ms": pct(starts, 0.5),
            "ops_per_s": round(ops / wall, 1), "leaked": leaked, "target": TARGET}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=96, help="ADD+DEL cycles in all (default 96)")
    ap.add_argument("--parallel", type=int, default=8, help="operations at once (default 8)")
    ap.add_argument("--nodes", type=int, default=2, help="nodes the workers alternate between (default 2)")
    ap.add_argument("--plugin", choices=["calico-bgp-ipam", "calico-bgp-cni"], default="calico-bgp-ipam")
    ap.add_argument("--service", action="store_true", help="calico-bgp-ipam through its opt-in warm service")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line last")
    args = ap.parse_args()
    if args.plugin == "calico-bgp-cni" and os.geteuid() != 0:
        sys.exit("python -m bench.cni --plugin calico-bgp-cni needs root (network namespaces)")
    r = run(args)
    print(f"{r['plugin']}{' (ipam_service)' if r['service'] else ''}: {r['cycles']} ADD/DEL cycles, {r['parallel']} at once on {r['nodes']} nodes "
          "(shared machine: medians are noisy)")
    print(f"  ADD  p50 {r['add']['p50_ms']:7.1f} ms   p99 {r['add']['p99_ms']:7.1f} ms   "
          f"(target p50 <= {TARGET['add_p50_ms']}, p99 <= {TARGET['add_p99_ms']})")
    print(f"  DEL  p50 {r['del']['p50_ms']:7.1f} ms   p99 {r['del']['p99_ms']:7.1f} ms")
    print(f"  CPU per operation {r['cpu_ms_per_op']} ms; start (VERSION) {r['start_ms']} ms; "
          f"{r['ops_per_s']} operations/s; addresses left allocated: {r['leaked']}")
    if args.json:
        print(json.dumps({"cni": r}))


if __name__ == "__main__":
    main()
