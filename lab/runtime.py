"""`lab up` and `lab down`: a containerlab topology realised on network namespaces.

    state = up(Path("containerlab/rack.clab.yml"), progress=print)
    down(Path(state.run_dir))

What `up` makes, in order (each thing recorded in the run directory's ledger before it exists):
a namespace per node (a `kind: bridge` node is a namespace holding a bridge), a management
namespace whose bridge every node's eth0 joins (addresses from the topology's mgmt subnet), a veth
per link with the endpoint names of the file, etcd (on loopback and a unix socket agents reach
through the filesystem), the resources file beside the topology, the fabric routers with their
bound configs, each node's `exec` commands (the agent-starting one run as a lab-owned agent), and
a workload namespace per agent, attached by calico-bgp-cni with an address from calico-bgp-ipam.
Nothing is put on the host's interfaces.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping

from dataplane.logfmt import event
from lab import execs
from lab.clab import NodeDef, Topology, TopologyError, UnsupportedTopology
from lab.clab import load as load_topology
from lab.etcd import find_etcd, free_port
from lab.net import LabError, Ledger, Net, Process, sh
from lab.routers import router_for
from lab.state import Agent, Etcd, LabState, Workload, run_dir_for, save
from lab.state import load as load_state
from lab.workload import CniNetwork, attach_workload, install_plugins

log = logging.getLogger("lab.runtime")
Progress = Callable[[str], None]
CLI = (sys.executable, "-m", "calico_bgp")
MGMT_BRIDGE = "mgmt0"


def _quiet(_: str) -> None:
    pass


# ------------------------------------------------------------------------------------------ pre-flight

def preflight(topo: Topology) -> dict[str, list[execs.Step]]:
    """Everything checked before anything is created: exec plans, resources file, binaries."""
    problems: list[str] = []
    plans: dict[str, list[execs.Step]] = {}
    for node in topo.nodes.values():
        try:
            plans[node.name] = execs.plan(node.name, node.exec, node.binds, node.role)
        except execs.ExecError as exc:
            problems.append(f"node {node.name}: {exc}")
    res = topo.resources_path()
    agents = [s for steps in plans.values() for s in steps if isinstance(s, execs.AgentStart)]
    if agents and not res.exists():
        problems.append(f"no resources file {res.name} beside the topology (BGPConfiguration, IPPools, BGPPeers, Nodes)")
    elif res.exists():
        from calico_bgp.resources.documents import load_documents
        try:
            load_documents(res.read_text())
        except ValueError as exc:
            problems.append(f"{res.name}: {exc}")
    need = {"frr": "vtysh", "bird": "bird", "gobgp": "gobgpd"}
    for node in topo.nodes.values():
        binary = need.get(node.role)
        if binary and shutil.which(binary) is None:
            problems.append(f"node {node.name}: {node.role} needs `{binary}` (./bootstrap.sh setup installs it)")
    if find_etcd() is None:
        problems.append("no etcd binary (./bootstrap.sh setup installs Debian's etcd-server)")
    if os.geteuid() != 0:
        problems.append("the lab creates network namespaces: run it as root")
    tag = tag_for(topo)
    taken = [ns.split()[0] for ns in sh("ip", "netns", "list", check=False).stdout.splitlines()
             if ns.startswith(tag + "-")]
    if taken:
        problems.append(f"namespaces of a lab named {topo.name!r} exist already ({', '.join(sorted(taken)[:3])}"
                        f"{', ...' if len(taken) > 3 else ''}): take it down, or choose another --name")
    if problems:
        raise UnsupportedTopology(topo.path, problems)
    return plans


# ------------------------------------------------------------------------------------------ up

def tag_for(topo: Topology) -> str:
    return topo.container_name("")[:-1] if topo.prefix else topo.name


def up(path: Path, run_dir: Path | None = None, progress: Progress = _quiet, name: str | None = None) -> LabState:
    """Realise the topology at `path`; `name` overrides its `name` (as `containerlab deploy --name`)."""
    t0 = time.monotonic()
    topo = load_topology(path)
    if name:
        import attrs
        topo = attrs.evolve(topo, name=name)
    plans = preflight(topo)
    run_dir = Path(run_dir or run_dir_for(topo.name)).resolve()
    if len(str(run_dir / "etcd" / "etcd.sock:2379")) > 100:  # a unix socket path holds 108 bytes
        raise LabError(f"run directory {run_dir} is too long for etcd's unix socket; choose a shorter --run-dir")
    if (run_dir / "state.json").exists() or (run_dir / "ledger" / "ledger.json").exists():
        raise LabError(f"a lab is already up in {run_dir}: `calico-bgp lab down --run-dir {run_dir}` first")
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(run_dir, 0o755)
    ledger = Ledger(run_dir / "ledger")
    tag = tag_for(topo)
    net = Net(ledger, tag)
    steps = 8
    try:
        progress(f"[1/{steps}] namespaces: {len(topo.nodes)} nodes of {topo.name} ({Path(topo.path).name})")
        namespaces = _namespaces(topo, net)
        progress(f"[2/{steps}] links: {len(topo.links)} veth pairs, management network {topo.mgmt.ipv4_subnet}")
        mgmt_ns = _mgmt(topo, net, namespaces)
        _links(topo, net, namespaces)
        progress(f"[3/{steps}] etcd on loopback and a unix socket")
        etcd = start_etcd(ledger, run_dir / "etcd")
        state = LabState(name=topo.name, topology=topo.path, run_dir=str(run_dir), tag=tag, etcd=etcd,
                         namespaces=namespaces, routers={}, mgmt_ns=mgmt_ns,
                         started=time.time() - (time.monotonic() - t0))
        save(state)
        res = topo.resources_path()
        if res.exists():
            progress(f"[4/{steps}] resources: calico-bgp apply -f {res.name}")
            out = cli(state, "apply", "-f", str(res))
            for line in out.strip().splitlines():
                progress(f"      {line}")
        else:
            progress(f"[4/{steps}] resources: none ({res.name} does not exist; no node runs an agent)")
        routers = topo.by_role("frr", "bird", "gobgp")
        progress(f"[5/{steps}] fabric routers: " + (", ".join(f"{n.name} ({n.role})" for n in routers) or "none"))
        pids: dict[str, tuple[int, ...]] = {}
        for node in routers:
            r = router_for(node, namespaces[node.name], run_dir / "routers" / node.name)
            pids[node.name] = tuple(r.start(ledger))
            progress(f"      {node.name}: {r.version()} started")
        state = _evolve(state, routers=pids)
        save(state)
        progress(f"[6/{steps}] exec commands and agents")
        agents: dict[str, Agent] = {}
        for node in topo.nodes.values():
            for step in plans[node.name]:
                if isinstance(step, execs.AgentStart):
                    agents[node.name] = start_agent(state, ledger, node.name, step, env=node.env)
                    progress(f"      {node.name}: agent {step.name} started (pid {agents[node.name].pid})")
                elif isinstance(step, execs.Shell):
                    run_exec(state, topo, node, step)
                    progress(f"      {node.name}: {step.original}")
                else:
                    progress(f"      {node.name}: skipped {step.original!r}: {step.reason}")
            if node.role == "node" and node.name not in agents:  # a calico-bgp image whose exec starts no agent
                step = execs.AgentStart(name=node.name, options=(), command="(the image's agent)")
                agents[node.name] = start_agent(state, ledger, node.name, step, env=node.env)
                progress(f"      {node.name}: no exec starts the agent; started `calico-bgp node run --name "
                         f"{node.name}` (address from its Node resource) (pid {agents[node.name].pid})")
        state = _evolve(state, agents=agents)
        save(state)
        progress(f"[7/{steps}] workloads: one namespace per agent node, attached by calico-bgp-cni")
        workloads: dict[str, Workload] = {}
        for node_name, agent in agents.items():
            workloads[node_name] = add_workload(state, net, node_name, agent)
            progress(f"      {node_name}: workload {workloads[node_name].ns} {workloads[node_name].ip}")
        state = _evolve(state, workloads=workloads, up_seconds=round(time.monotonic() - t0, 2))
        save(state)
        progress(f"[8/{steps}] up in {state.up_seconds:.1f}s: {len(agents)} agents, {len(routers)} routers; "
                 f"run dir {run_dir} (`calico-bgp lab check`, `calico-bgp lab down`)")
        event(log, "lab_up", lab=topo.name, seconds=state.up_seconds, agents=len(agents), routers=len(routers))
        return state
    except BaseException:
        progress("bring-up failed: removing everything made so far")
        _teardown(run_dir)
        raise


def _evolve(state: LabState, **changes: object) -> LabState:
    import attrs
    return attrs.evolve(state, **changes)


def _namespaces(topo: Topology, net: Net) -> dict[str, str]:
    out = {}
    for node in topo.nodes.values():
        if node.role == "etcd":
            continue  # the lab's own etcd stands in for it
        ns = net.namespace(node.name)
        out[node.name] = ns
        if node.role == "bridge":
            net.bridge(ns, "br0")
        for key, value in node.sysctls.items():
            sh("sysctl", "-qw", f"{key}={value}", ns=ns)
    return out


def _mgmt(topo: Topology, net: Net, namespaces: dict[str, str]) -> str:
    subnet = ipaddress.ip_network(topo.mgmt.ipv4_subnet, strict=False)
    ns = net.namespace("mgmt")
    net.bridge(ns, MGMT_BRIDGE)
    taken = {n.mgmt_ipv4 for n in topo.nodes.values() if n.mgmt_ipv4}
    hosts = (str(h) for h in subnet.hosts())
    next(hosts)  # .1 is the gateway in containerlab's scheme
    used_eth0 = {ep.node for link in topo.links for ep in (link.a, link.b) if ep.interface == "eth0"}
    for i, node in enumerate(topo.nodes.values()):
        if node.name not in namespaces or node.role == "bridge" or node.name in used_eth0:
            continue
        addr = node.mgmt_ipv4 or next(h for h in hosts if h not in taken)
        net.veth(namespaces[node.name], "eth0", ns, f"m{i}")
        net.attach(ns, f"m{i}", MGMT_BRIDGE)
        net.address(namespaces[node.name], "eth0", f"{addr}/{subnet.prefixlen}")
        if node.mgmt_ipv6 and topo.mgmt.ipv6_subnet:
            plen = ipaddress.ip_network(topo.mgmt.ipv6_subnet, strict=False).prefixlen
            net.address(namespaces[node.name], "eth0", f"{node.mgmt_ipv6}/{plen}")
    return ns


def _links(topo: Topology, net: Net, namespaces: dict[str, str]) -> None:
    for link in topo.links:
        ends = []
        for ep in (link.a, link.b):
            ends.append((namespaces[ep.node], ep.interface, topo.nodes[ep.node].role == "bridge"))
        (ns_a, if_a, br_a), (ns_b, if_b, br_b) = ends
        net.veth(ns_a, if_a, ns_b, if_b)
        for ns, ifname, is_bridge in ends:
            if is_bridge:
                net.attach(ns, ifname, "br0")
            if link.mtu:
                sh("ip", "link", "set", ifname, "mtu", str(link.mtu), ns=ns)
        for addrs in (link.ipv4, link.ipv6):
            for (ns, ifname, _), addr in zip(ends, addrs):
                if addr:
                    net.address(ns, ifname, addr)


# ------------------------------------------------------------------------------------------ etcd

def start_etcd(ledger: Ledger, data_dir: Path, port: int | None = None, peer_port: int | None = None) -> Etcd:
    """etcd as a lab process (it outlives `lab up`), data and unix socket under `data_dir`."""
    binary = find_etcd()
    if binary is None:
        raise LabError("no etcd binary: install Debian's etcd-server (./bootstrap.sh setup)")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    peer = f"http://127.0.0.1:{peer_port or free_port()}"
    url = f"http://127.0.0.1:{port}"
    argv = (binary, "--name", "lab", "--data-dir", str(data_dir / "data"),
            "--listen-client-urls", f"{url},unix://etcd.sock:2379", "--advertise-client-urls", url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"lab={peer}",
            "--log-level", "warn", "--logger", "zap")
    proc = _etcd_process(ledger, data_dir, argv)
    return Etcd(pid=proc.pid, url=url, unix_url=f"unix://{data_dir}/etcd.sock:2379", data_dir=str(data_dir), argv=argv)


def _etcd_process(ledger: Ledger, data_dir: Path, argv: tuple[str, ...]) -> Process:
    cwd = os.getcwd()
    os.chdir(data_dir)  # the unix socket is created relative to the working directory
    try:
        proc = Process(ledger, None, argv, data_dir / "etcd.log", env={"ETCD_UNSUPPORTED_ARCH": "arm64"})
    finally:
        os.chdir(cwd)
    _wait_healthy(argv, proc)
    return proc


def restart_etcd(state: LabState, ledger: Ledger) -> Etcd:
    proc = _etcd_process(ledger, Path(state.etcd.data_dir), state.etcd.argv)
    return Etcd(pid=proc.pid, url=state.etcd.url, unix_url=state.etcd.unix_url, data_dir=state.etcd.data_dir,
                argv=state.etcd.argv)


def _wait_healthy(argv: tuple[str, ...], proc: Process) -> None:
    import urllib.request
    url = argv[argv.index("--advertise-client-urls") + 1]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not proc.alive():
            raise LabError(f"etcd exited with {proc.proc.returncode}: {proc.tail(10)}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if b"true" in r.read():
                    return
        except OSError:
            time.sleep(0.1)
    raise LabError("etcd did not become healthy within 20 s")


# ------------------------------------------------------------------------------------------ CLI, exec, agents

def cli(state: LabState, *args: str, check: bool = True, timeout: float = 60) -> str:
    """Run the calico-bgp CLI against the lab's etcd; returns stdout."""
    res = subprocess.run([*CLI, "--etcd-endpoints", state.etcd.url, *args], capture_output=True, text=True,
                         timeout=timeout)
    if check and res.returncode != 0:
        raise LabError(f"calico-bgp {' '.join(args)}: exit {res.returncode}: {(res.stderr or res.stdout).strip()}")
    return res.stdout


def _wrappers(state: LabState, topo: Topology, node: NodeDef) -> Path:
    """A bin directory first on PATH for a node's exec commands: calico-bgp and the router CLIs."""
    d = Path(state.run_dir) / "bin" / node.name
    d.mkdir(parents=True, exist_ok=True)
    scripts = {"calico-bgp": f'exec {sys.executable} -m calico_bgp "$@"'}
    if node.role in ("frr", "bird", "gobgp"):
        r = router_for(node, state.namespaces[node.name], Path(state.run_dir) / "routers" / node.name)
        scripts.update(r.wrappers())
    for name, body in scripts.items():
        p = d / name
        p.write_text(f"#!/bin/sh\n{body}\n")
        p.chmod(0o755)
    return d


def exec_env(state: LabState, node: NodeDef, bin_dir: Path | None = None) -> dict[str, str]:
    env = {**os.environ, **node.env}
    env["CALICO_BGP_ETCD_ENDPOINTS"] = state.etcd.unix_url  # the topology's endpoint is containerlab's etcd
    if "CALICO_BGP_PREFIX" not in node.env:
        env.pop("CALICO_BGP_PREFIX", None)
    if bin_dir:
        env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def run_exec(state: LabState, topo: Topology, node: NodeDef, step: execs.Shell, timeout: float = 60) -> None:
    bin_dir = _wrappers(state, topo, node)
    try:
        res = subprocess.run(["ip", "netns", "exec", state.namespaces[node.name], "sh", "-c", step.text],
                             capture_output=True, text=True, env=exec_env(state, node, bin_dir), timeout=timeout,
                             cwd=topo.directory)
    except subprocess.TimeoutExpired:
        raise LabError(f"node {node.name}: exec {step.original!r} did not finish within {timeout:.0f}s") from None
    if res.returncode != 0:
        raise LabError(f"node {node.name}: exec {step.original!r} failed (exit {res.returncode}): "
                       f"{(res.stderr or res.stdout).strip()}")


def agent_argv(state: LabState, node: str, step: execs.AgentStart) -> tuple[str, ...]:
    return (*CLI, "--etcd-endpoints", state.etcd.unix_url, "node", "run", "--name", step.name, *step.options,
            "--state-dir", str(Path(state.run_dir) / "agents" / node))


def start_agent(state: LabState, ledger: Ledger, node: str, step: execs.AgentStart | None = None,
                argv: tuple[str, ...] | None = None, env: Mapping[str, str] | None = None) -> Agent:
    """The node's agent as a lab process; the topology's env for the node, etcd always the lab's."""
    argv = argv or agent_argv(state, node, step)  # type: ignore[arg-type]
    log_path = Path(state.run_dir) / "logs" / f"{node}.log"
    extra = {k: v for k, v in (env or {}).items() if k not in ("CALICO_BGP_ETCD_ENDPOINTS", "CALICO_BGP_PREFIX")}
    proc = Process(ledger, state.namespaces[node], argv, log_path, env=extra)
    return Agent(node=node, ns=state.namespaces[node], pid=proc.pid, argv=tuple(argv), log=str(log_path))


def add_workload(state: LabState, net: Net, node: str, agent: Agent) -> Workload:
    """The node's workload, attached through calico-bgp-cni with an address from calico-bgp-ipam."""
    name = _agent_name(agent)
    run_dir = Path(state.run_dir)
    network = CniNetwork(state.etcd.unix_url, None, install_plugins(run_dir / "cni-bin"),
                         log_file=str(run_dir / "logs" / "cni.log"))
    ws, ips = attach_workload(net, state.namespaces[node], f"{node}-w", network, name)
    return Workload(node=node, ns=ws, ip=ips[0])


def _agent_name(agent: Agent) -> str:
    argv = list(agent.argv)
    return argv[argv.index("--name") + 1]


# ------------------------------------------------------------------------------------------ down

def down(run_dir: Path, progress: Progress = _quiet) -> list[str]:
    """Remove everything the lab in `run_dir` made (works after a crash: it reads the ledger)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        progress(f"nothing to take down: {run_dir} does not exist")
        return []
    removed = _teardown(run_dir)
    progress(f"removed {sum(1 for r in removed if r.startswith('netns'))} namespaces and "
             f"{sum(1 for r in removed if r.startswith('pid'))} process groups; {run_dir} deleted")
    return removed


def _teardown(run_dir: Path) -> list[str]:
    removed = []
    ledger_dir = run_dir / "ledger"
    if ledger_dir.exists():
        removed = Ledger(ledger_dir).teardown()
    shutil.rmtree(run_dir, ignore_errors=True)
    event(log, "lab_down", run_dir=run_dir, removed=len(removed))
    return removed


def current(run_dir: Path) -> tuple[LabState, Topology]:
    state = load_state(run_dir)
    try:
        topo = load_topology(state.topology)
    except TopologyError as exc:
        raise LabError(f"the topology of the running lab no longer parses: {exc}") from None
    return state, topo
