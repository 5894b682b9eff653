"""CNI ADD and DEL latency: the plugins exec'd as a container runtime execs them, 8 at a time on 2 nodes,
beside Debian's reference plugins in the same run.

    .venv/bin/python -m bench.cni [--cycles 96] [--parallel 8] [--nodes 2] [--plugin calico-bgp-ipam] [--in-process] [--json]

Each worker repeats ADD then DEL for a new container on its node (workers alternate between the
nodes, each node with its own host-wide IPAM lock, as two hosts have), spawning the plugin from the
directory `calico-bgp cni install` fills. With `--plugin calico-bgp-ipam` (the default) the IPAM
plugin runs alone; with `--plugin calico-bgp-cni` (root) the main plugin attaches a fresh network
namespace per container from inside a namespace standing in for its node, reaching etcd through
its unix socket. Each node runs what its agent runs for the plugins (calico_bgp/agent/ipam_service.py,
`python -m calico_bgp.agent.ipam_service`: the socket, and the warm process it starts on first use;
one per node namespace, one for the host's with calico-bgp-ipam), so the work goes to the warm
process as it does where the agent runs; `--in-process` runs none and the config says
`"ipam_service": false` (the plugin's own fallback). The warm processes' CPU is counted with the
plugins' (they are stopped and waited for). Then the same workers run Debian's reference plugins
(containernetworking-plugins in /usr/lib/cni) on the same nodes: `host-local` for calico-bgp-ipam,
`ptp` with `host-local` for calico-bgp-cni (addresses from files on the node, no datastore: the floor
a compiled plugin sets). Reported for both: ADD and DEL p50 / p99 (wall, from spawn to exit), CPU per
operation, and `start_ms`: the same executable answering VERSION, the floor under every operation.
Target on a 2-core machine: ADD p50 <= 250 ms, p99 <= 1 s.
Progress goes to stderr; with --json the last stdout line is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import ipaddress
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


REFERENCE = {"calico-bgp-ipam": "host-local", "calico-bgp-cni": "ptp"}
REFERENCE_BIN = Path("/usr/lib/cni")
REFERENCE_RANGE = ipaddress.ip_network("198.19.128.0/18")  # host-local's, one /22 per node


class Runner:
    """Spawns one operation of our plugin (or, with `reference`, of Debian's) and times it."""

    def __init__(self, plugin: str, bin_dir: Path, etcd_url: str, work: Path, node_ns: dict[str, str] | None,
                 service: bool = True, reference: bool = False) -> None:
        self.plugin, self.bin_dir, self.etcd_url, self.work, self.node_ns = plugin, bin_dir, etcd_url, work, node_ns
        self.service, self.reference = service, reference
        self.executable = REFERENCE_BIN / REFERENCE[plugin] if reference else bin_dir / plugin

    def conf(self, node: str) -> bytes:
        if self.reference:
            index = int(node.lstrip("n")) - 1
            subnet = list(REFERENCE_RANGE.subnets(new_prefix=22))[index]
            return json.dumps({"cniVersion": "1.0.0", "name": "bench-ref", "type": REFERENCE[self.plugin],
                               "ipam": {"type": "host-local", "ranges": [[{"subnet": str(subnet)}]],
                                        "dataDir": str(self.work / "host-local" / node)}}).encode()
        return json.dumps({"cniVersion": "1.1.0", "name": "bench", "type": self.plugin, "nodename": node,
                           "etcd_endpoints": self.etcd_url, "etcd_prefix": PREFIX, "log_level": "warning",
                           "ipam_lock_file": str(self.work / f"{node}.lock"),
                           "ipam": {"type": "calico-bgp-ipam"}, **({} if self.service else {"ipam_service": False})}).encode()

    def op(self, command: str, node: str, container: str) -> float:
        cni_path = REFERENCE_BIN if self.reference else self.bin_dir
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command, "CNI_CONTAINERID": container,
               "CNI_NETNS": f"/var/run/netns/{container}", "CNI_IFNAME": "eth0", "CNI_PATH": str(cni_path)}
        if os.environ.get("CALICO_BGP_CNI_EXEC_DELEGATES"):  # A/B: the IPAM plugin exec'd, not in process
            env["CALICO_BGP_CNI_EXEC_DELEGATES"] = os.environ["CALICO_BGP_CNI_EXEC_DELEGATES"]
        argv = [str(self.executable)]
        if self.node_ns:
            argv = ["ip", "netns", "exec", self.node_ns[node], *argv]
        t = time.perf_counter()
        p = subprocess.run(argv, input=self.conf(node), env=env, capture_output=True, timeout=120)
        dt = time.perf_counter() - t
        if p.returncode != 0:
            raise RuntimeError(f"{self.executable.name} {command} {container}: {p.stdout.decode().strip()} "
                               f"{p.stderr.decode().strip()[-500:]}")
        return dt


def start_owners(namespaces: list[str | None]) -> list[subprocess.Popen[bytes]]:
    """What the agent runs for the plugins, in each namespace (None: this one), its socket bound when this returns."""
    code = "from calico_bgp.cni.service import socket_path; print(socket_path())"
    owners = []
    for ns in namespaces:
        prefix = ["ip", "netns", "exec", ns] if ns else []
        path = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": ROOT}).stdout.strip()
        owners.append(subprocess.Popen([*prefix, sys.executable, "-m", "calico_bgp.agent.ipam_service"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       env={**os.environ, "PYTHONPATH": ROOT}))
        deadline = time.monotonic() + 30
        while not os.path.exists(path):
            if owners[-1].poll() is not None or time.monotonic() > deadline:
                stop_owners(owners)
                raise RuntimeError(f"the IPAM socket {path} never appeared")
            time.sleep(0.05)
    return owners


def cpu_of(pid: int) -> float:
    """A process's own CPU seconds so far (utime + stime from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_owners(owners: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each and wait (their warm processes' CPU then joins RUSAGE_CHILDREN)."""
    for p in owners:
        if p.poll() is None:
            p.terminate()
    for p in owners:
        p.wait(timeout=30)


def phase(args: argparse.Namespace, runner: Runner, nodes: list[str], ledger: Any, tag: str) -> dict[str, Any]:
    """One system's run: the VERSION floor, then `args.cycles` ADD+DEL cycles by `args.parallel` workers."""
    node_ns = runner.node_ns
    starts = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([str(runner.executable)], input=b"{}", env={"CNI_COMMAND": "VERSION"},
                       capture_output=True, check=True)
        starts.append(time.perf_counter() - t)
    times: dict[str, list[float]] = {"ADD": [], "DEL": []}
    lock, errors = threading.Lock(), []
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    serve = runner.service and not runner.reference
    owners = start_owners(list(node_ns.values()) if node_ns else [None]) if serve else []
    agent_cpu = sum(cpu_of(p.pid) for p in owners)  # the stand-ins' own start (an agent has made it): not counted

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
                    progress(f"{runner.executable.name}: {done}/{args.cycles} cycles")
        except Exception as exc:  # noqa: BLE001 - reported after the others finish
            errors.append(exc)

    share = args.cycles // args.parallel
    threads = [threading.Thread(target=worker, args=(w, share)) for w in range(args.parallel)]
    t0 = time.perf_counter()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        stop_owners(owners)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if errors:
        raise errors[0]
    ops = len(times["ADD"]) + len(times["DEL"])
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime) - agent_cpu
    return {"plugin": runner.executable.name, "cycles": len(times["ADD"]),
            "add": {"p50_ms": pct(times["ADD"], 0.5), "p99_ms": pct(times["ADD"], 0.99)},
            "del": {"p50_ms": pct(times["DEL"], 0.5), "p99_ms": pct(times["DEL"], 0.99)},
            "cpu_ms_per_op": round(1000 * cpu / ops, 1), "start_ms": pct(starts, 0.5),
            "ops_per_s": round(ops / wall, 1)}


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
        url = etcd.unix_url if node_ns else etcd.url
        tag = f"cb{os.getpid() % 10000}"  # container (namespace) names no other run makes
        ours = phase(args, Runner(args.plugin, bin_dir, url, work, node_ns, not args.in_process), nodes, ledger, tag)
        check = CliRunner().invoke(cli, ["--etcd-endpoints", etcd.url, "--prefix", PREFIX, "ipam", "check", "-o", "json"])
        ours["leaked"] = sum(p["inUse"] for p in json.loads(check.output)["pools"])
        reference = None
        if (REFERENCE_BIN / REFERENCE[args.plugin]).exists():
            reference = phase(args, Runner(args.plugin, bin_dir, url, work, node_ns, reference=True),
                              nodes, ledger, f"{tag}r")
        else:
            progress(f"no {REFERENCE_BIN / REFERENCE[args.plugin]} (containernetworking-plugins): no reference run")
    ratio = {k: round(ours[k]["p50_ms"] / reference[k]["p50_ms"], 2) for k in ("add", "del")} if reference else None
    return {"plugin": args.plugin, "service": not args.in_process, "parallel": args.parallel, "nodes": args.nodes,
            **ours, "reference": reference, "ratio_p50": ratio, "target": TARGET}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=96, help="ADD+DEL cycles in all (default 96)")
    ap.add_argument("--parallel", type=int, default=8, help="operations at once (default 8)")
    ap.add_argument("--nodes", type=int, default=2, help="nodes the workers alternate between (default 2)")
    ap.add_argument("--plugin", choices=["calico-bgp-ipam", "calico-bgp-cni"], default="calico-bgp-ipam")
    ap.add_argument("--in-process", action="store_true",
                    help="no agent on the nodes: the plugin's own fallback (ipam_service: false)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line last")
    args = ap.parse_args()
    if args.plugin == "calico-bgp-cni" and os.geteuid() != 0:
        sys.exit("python -m bench.cni --plugin calico-bgp-cni needs root (network namespaces)")
    r = run(args)
    how = "IPAM in process" if args.in_process else "served by the agent's warm process"
    print(f"{r['plugin']} ({how}): {r['cycles']} ADD/DEL cycles, {r['parallel']} at once on {r['nodes']} nodes "
          "(shared machine: medians are noisy)")
    rows = [r] + ([r["reference"]] if r["reference"] else [])
    for row in rows:
        print(f"  {row['plugin']:16} ADD p50 {row['add']['p50_ms']:7.1f} ms  p99 {row['add']['p99_ms']:7.1f} ms   "
              f"DEL p50 {row['del']['p50_ms']:7.1f} ms  p99 {row['del']['p99_ms']:7.1f} ms   "
              f"CPU/op {row['cpu_ms_per_op']} ms  start {row['start_ms']} ms")
    print(f"  target ADD p50 <= {TARGET['add_p50_ms']} ms, p99 <= {TARGET['add_p99_ms']} ms; "
          f"addresses left allocated: {r['leaked']}"
          + (f"; ADD/DEL p50 vs Debian's {r['reference']['plugin']}: {r['ratio_p50']['add']}x / "
             f"{r['ratio_p50']['del']}x" if r["reference"] else ""))
    if args.json:
        print(json.dumps({"cni": r}))


if __name__ == "__main__":
    main()
