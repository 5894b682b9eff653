"""A cluster of node agents, each in its own namespace on one L2 segment, for the e2e tests and the
benchmarks.

The segment is a bridge inside a "hub" namespace the test creates; etcd runs on the host's
loopback and the agents reach it through its unix socket (the filesystem crosses namespaces, so
no traffic leaves the namespaces the test made).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from calico_bgp.speaker.exabgp_run import is_exabgp
from lab.net import Ledger, Net, Process, sh
from lab.workload import CniNetwork, attach_workload, detach_workload, install_plugins

CLI = [sys.executable, "-m", "calico_bgp"]
PROTO = 86  # dataplane's default protocol number for our routes
# a full mesh in AS 64512 and one pool of /26 blocks: what a cluster needs to route between its nodes
MESH_RESOURCES = """
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMeshEnabled: true}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pods}
spec: {cidr: 198.19.0.0/16, blockSize: 26}
"""


class MeshCluster:
    """Nodes on a bridge in a hub namespace, their agents, workloads and kernel routes; etcd is the caller's."""

    def __init__(self, run_dir: Path, etcd, prefix: str, tag: str) -> None:
        self.run_dir = Path(run_dir)
        self.etcd = etcd
        self.prefix = prefix
        self.ledger = Ledger(self.run_dir / "ledger")
        self.net = Net(self.ledger, tag)
        self.hub = self.net.namespace("hub")
        self.net.bridge(self.hub, "br0")
        self.nodes: dict[str, str] = {}       # name -> namespace
        self.addrs: dict[str, str] = {}       # name -> IPv4 address
        self.addrs6: dict[str, str] = {}      # name -> IPv6 address (dual-stack nodes)
        self.agents: dict[str, Process] = {}
        self.workloads: dict[str, tuple[str, str]] = {}  # node -> (workload ns, ip)
        self.workloads6: dict[str, str] = {}              # node -> workload IPv6 address
        self.cni_bin = install_plugins(self.run_dir / "cni-bin")

    # ---------------------------------------------------------------- etcd / CLI
    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([*CLI, "--etcd-endpoints", self.etcd.url, "--prefix", self.prefix, *args],
                             capture_output=True, text=True, input=input, timeout=60)
        if check and res.returncode != 0:
            raise AssertionError(f"calico-bgp {' '.join(args)} -> {res.returncode}: {res.stderr}{res.stdout}")
        return res

    def apply(self, yaml_text: str) -> None:
        self.cli("apply", "-f", "-", input=yaml_text)

    def status(self, node: str) -> dict:
        return json.loads(self.cli("status", "--node", node, "-o", "json").stdout)[0]

    # ---------------------------------------------------------------- nodes and agents
    def add_node(self, name: str, index: int, ipv6: bool = False) -> str:
        ns = self.net.namespace(name)
        self.nodes[name] = ns
        addr = f"198.18.0.{index}"
        self.addrs[name] = addr
        self.net.veth(ns, "eth0", self.hub, f"p{index}")
        self.net.attach(self.hub, f"p{index}", "br0")
        self.net.address(ns, "eth0", f"{addr}/24")
        if ipv6:
            self.addrs6[name] = f"2001:db8::{index}"
            self.net.address(ns, "eth0", f"2001:db8::{index}/64")
        return ns

    def start_agent(self, name: str, *extra: str) -> Process:
        ns = self.nodes[name]
        proc = Process(self.ledger, ns, [*CLI, "--etcd-endpoints", self.etcd.unix_url, "--prefix", self.prefix,
                                          "node", "run", "--name", name, "--ip", f"{self.addrs[name]}/24",
                                          *(["--ip6", f"{self.addrs6[name]}/64"] if name in self.addrs6 else []),
                                          "--state-dir", str(self.run_dir / "state" / name), "--grace", "10", "--ipam-sweep", "1",
                                          "--log-level", "debug", *extra],
                       self.run_dir / "logs" / f"{name}.log")
        self.agents[name] = proc
        return proc

    def network(self, ipv6: bool = False) -> CniNetwork:
        return CniNetwork(self.etcd.unix_url, self.prefix, self.cni_bin, ipv6, str(self.run_dir / "logs" / "cni.log"))

    def add_workload(self, node: str, ipv6: bool = False) -> str:
        """A workload on `node` attached by calico-bgp-cni (its container ID is w<node>); its IPv4 address."""
        ws, ips = attach_workload(self.net, self.nodes[node], f"w{node}", self.network(ipv6), node)
        self.workloads[node] = (ws, ips[0])
        if ipv6:
            self.workloads6[node] = ips[1]
        return ips[0]

    def remove_workload(self, node: str) -> None:
        """DEL through calico-bgp-cni: the workload's veth, routes and addresses go (its namespace stays)."""
        ws, _ip = self.workloads.pop(node)
        detach_workload(self.nodes[node], ws, f"w{node}", self.network(node in self.workloads6), node)
        self.workloads6.pop(node, None)

    # ---------------------------------------------------------------- kernel state
    def routes(self, node: str) -> dict[str, list[str]]:
        """prefix -> sorted gateways ('blackhole' for blackholes) of our protocol in the node's main table."""
        out = {}
        for fam in ("-4", "-6"):
            raw = sh("ip", "-j", fam, "route", "show", "proto", str(PROTO), ns=self.nodes[node]).stdout or "[]"
            for r in json.loads(raw):
                dst = r["dst"] if "/" in r["dst"] else r["dst"] + ("/128" if ":" in r["dst"] else "/32")
                if r.get("type") == "blackhole":
                    out[dst] = ["blackhole"]
                elif "nexthops" in r:
                    out[dst] = sorted(h["gateway"] for h in r["nexthops"])
                else:
                    out[dst] = [r.get("gateway", r.get("dev", ""))]
        return out

    def sessions_up(self, node: str, expected: int) -> bool:
        st = self.status(node)
        states = [s["state"] for s in st.get("sessions", [])]
        return len(states) == expected and all(s == "Established" for s in states)

    def ping(self, src_node: str, dst_ip: str, count: int = 1, wait: float = 1.0) -> bool:
        ws, _ = self.workloads[src_node]
        res = sh("ping", *(["-6"] if ":" in dst_ip else []), "-c", str(count), "-W", str(wait), "-i", "0.2", dst_ip,
                 ns=ws, check=False, timeout=count + 10)
        return res.returncode == 0

    def exabgp_pids(self, node: str) -> list[int]:
        pids = []
        for pid in sh("ip", "netns", "pids", self.nodes[node], check=False).stdout.split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if is_exabgp(cmdline):
                pids.append(int(pid))
        return pids

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{p.tail(60)}" for n, p in self.agents.items())

    def teardown(self) -> None:
        for p in self.agents.values():
            p.stop(timeout=10)
        self.ledger.teardown()
        # bpffs mounts the agents made for pinned XDP state under their state dirs
        for line in reversed(Path("/proc/mounts").read_text().splitlines()):
            target = line.split()[1]
            if target.startswith(str(self.run_dir)):
                subprocess.run(["umount", "-l", target], capture_output=True)


@contextlib.contextmanager
def mesh(etcd, tag: str, resources: str, names: Sequence[str] | Mapping[str, int],
         ipv6: bool = False, agent_args: Sequence[str] = ()) -> Iterator[MeshCluster]:
    """A cluster of `names` (addresses .1, .2, ... in order, or name -> host index), each with a workload
    and a running agent (`agent_args` added to its `node run`); its logs are printed when the body
    fails, and everything is removed on the way out."""
    indices = dict(names) if isinstance(names, Mapping) else {n: i for i, n in enumerate(names, start=1)}
    run_dir = Path(tempfile.mkdtemp(prefix=f"calico-bgp-{tag}-"))
    c = MeshCluster(run_dir, etcd, f"/{tag}{os.getpid()}/calico-bgp/v1", f"cb{tag[:2]}{os.getpid() % 1000}")
    try:
        c.apply(resources)
        for name, i in indices.items():
            c.add_node(name, i, ipv6=ipv6)
            c.add_workload(name, ipv6=ipv6)
            c.start_agent(name, *agent_args)
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.teardown()
        shutil.rmtree(run_dir, ignore_errors=True)
