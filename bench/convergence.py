#!/usr/bin/env python3
"""BGP to kernel convergence: a fabric router announces N prefixes to one node; calico-bgp beside
BIRD 2 (kernel protocol) and FRR (bgpd + zebra) in the node's place, same topology, same run.

    src (BIRD 2, AS 65001, 198.18.I.1) --veth I-- node I (198.18.I.2, AS 64512): receiver I under test

Each receiver has a node namespace of its own (slot I, its own veth and session to the source),
and all run side by side: the runs alternate between them (for each N and repeat: each receiver
in turn, the order reversed every other repeat), so a load that comes and goes on a shared machine
falls on every receiver alike, and each stays as warm as the others. (Measured one receiver after
the other, the ratio was partly of the minutes each ran in: the same code gave 1.5x to 2.6x.)
The source holds, per receiver slot, one routing table and one static protocol per N (N /32s
from 198.18.64.0, all inside 198.18.0.0/15), each disabled; `birdc enable rIsN` announces them over
slot I's live session only, `birdc disable rIsN` withdraws them. For each receiver, each N and each
repeat we time from that birdc command until all N are in its node's main table (announce), and
until none is (withdraw). Each node's table is followed through route events on a netlink socket
in its namespace (a dump checks the count at the end of every phase), so no polling loop competes
with the receiver for the CPU; before a receiver's run every receiver is idle (wait_quiet) and
our agent's deferred work after its own last run (memory give-back, a full collection) is done.

    sudo .venv/bin/python -m bench.convergence [--sizes 1000,10000,100000] [--repeat 3] [--json]
    sudo .venv/bin/python -m bench.convergence --systems calico-bgp --sizes 100000 --profile /tmp/prof
    sudo .venv/bin/python -m bench.convergence --systems bird,calico-bgp:cpython,calico-bgp:pypy --sizes 10000

`calico-bgp` runs ExaBGP as the agent would (PyPy when bootstrap.sh built its venv);
`calico-bgp:pypy` and `calico-bgp:cpython` force one interpreter for it (CALICO_BGP_EXABGP_RUNTIME),
so both are measured beside BIRD in the same run.

Prints seconds (min and median of the repeats) and the ratio of medians to BIRD's; with --json the
last line is one JSON object holding `ratio_vs_bird` {"N": {"announce": r, "withdraw": r}} and
the raw figures, among them each calico-bgp process's RSS and peak RSS after the phases. `--profile DIR` records py-spy (if on PATH) for our agent, bridge and ExaBGP
during each phase, as collapsed stacks. Everything (namespaces, daemons, agent, etcd) is removed
at the end, even on failure or SIGTERM.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from bench.common import (
    bench_run,
    bird_receiver_conf,
    cpu_by_process,
    one_peer_resources,
    part_of,
    proc_tree,
    progress,
    runnable,
)
from bench.observe import KernelTable, Profiler, wait_quiet
from lab.bird import Bird
from lab.clab import Bind, NodeDef
from lab.etcd import EtcdServer
from lab.net import Ledger, Net, Process, sh
from lab.routers import Frr



def src_ip(slot: int) -> str:
    return f"198.18.{slot}.1"


def node_ip(slot: int) -> str:
    return f"198.18.{slot}.2"


def static_name(slot: int, n: int) -> str:
    return f"r{slot}s{n}"
SRC_AS, NODE_AS = 65001, 64512
FIRST = int(ipaddress.IPv4Address("198.18.64.0"))
LAST = int(ipaddress.IPv4Address("198.19.255.255"))
POOL = "198.18.0.0/15"
SYSTEMS = ("calico-bgp", "bird", "frr")
RUNTIMES = ("pypy", "cpython")  # calico-bgp:RUNTIME forces ExaBGP's interpreter
DEFAULT_SIZES = (1000, 10000, 100000)
LABELS = {"calico-bgp": "calico-bgp", "bird": "BIRD 2", "frr": "FRR"}


def ours(system: str) -> bool:
    return system.split(":")[0] == "calico-bgp"


def known(system: str) -> bool:
    name, _, runtime = system.partition(":")
    return name in SYSTEMS and (not runtime or (name == "calico-bgp" and runtime in RUNTIMES))


def label(system: str) -> str:
    name, _, runtime = system.partition(":")
    return LABELS[name] + (f" {runtime}" if runtime else "")


def prefixes(n: int) -> list[str]:
    if FIRST + n - 1 > LAST:
        raise SystemExit(f"N={n} does not fit in 198.18.0.0/15 from {ipaddress.IPv4Address(FIRST)}")
    return [f"{ipaddress.IPv4Address(FIRST + i)}/32" for i in range(n)]


# ---------------------------------------------------------------- configs
def src_conf(sizes: list[int], slots: int) -> str:
    """One table per receiver slot (the same prefixes in each: a slot's statics never hide another's)."""
    lines = [f"router id {src_ip(0)};", "protocol device {}"]
    for slot in range(slots):
        lines.append(f"ipv4 table t{slot};")
        for n in sizes:
            lines += [f"protocol static {static_name(slot, n)} {{", "  disabled;", f"  ipv4 {{ table t{slot}; }};"]
            lines += [f"  route {p} blackhole;" for p in prefixes(n)]
            lines.append("}")
        lines += [f"protocol bgp node{slot} {{", f"  local {src_ip(slot)} as {SRC_AS};", f"  neighbor {node_ip(slot)} as {NODE_AS};",
                  "  connect delay time 0;", "  connect retry time 1;", "  error wait time 1, 5;",
                  f"  ipv4 {{ table t{slot}; import none; export where source = RTS_STATIC; next hop self; }};", "}"]
    return "\n".join(lines) + "\n"


def frr_node_conf(slot: int) -> str:
    src, node = src_ip(slot), node_ip(slot)
    return "\n".join([
        "frr defaults datacenter", "hostname node", "!",
        f"router bgp {NODE_AS}", f" bgp router-id {node}", " no bgp ebgp-requires-policy",
        f" neighbor {src} remote-as {SRC_AS}", " address-family ipv4 unicast", f"  neighbor {src} activate",
        " exit-address-family", "!"]) + "\n"


# ---------------------------------------------------------------- receivers
class Receiver:
    """One system in a node's place (slot I): started, watched for its session, stopped."""

    def __init__(self, system: str, slot: int, ns: str, work: Path, ledger: Ledger, etcd: EtcdServer | None,
                 log_level: str) -> None:
        self.system, self.slot, self.ns, self.dir, self.ledger = system, slot, ns, work / system.replace(":", "-"), ledger
        self.table: KernelTable | None = None  # the node's main table, followed once the receiver is up
        self.started = 0.0
        self.etcd, self.log_level = etcd, log_level
        self.pids: list[int] = []
        self.proc: Process | None = None
        self.frr: Frr | None = None
        self.dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.started = time.monotonic()
        if self.system == "bird":
            self.pids = [Bird(self.ns, None, self.dir / "bird").start(
                self.ledger, config=bird_receiver_conf(node_ip(self.slot), NODE_AS, src_ip(self.slot), SRC_AS))]
        elif self.system == "frr":
            conf = self.dir / "node-frr.conf"
            conf.write_text(frr_node_conf(self.slot))
            self.frr = Frr(NodeDef("node", "linux", binds=(Bind(str(conf), "/etc/frr/frr.conf"),)),
                           self.ns, self.dir / "frr")
            self.pids = self.frr.start(self.ledger)
        else:
            assert self.etcd is not None
            prefix = f"/convergence{os.getpid()}-{self.slot}/calico-bgp/v1"
            cli = [sys.executable, "-m", "calico_bgp", "--etcd-endpoints", self.etcd.url, "--prefix", prefix]
            subprocess.run([*cli, "apply", "-f", "-"], input=one_peer_resources(node_ip(self.slot), NODE_AS, src_ip(self.slot), SRC_AS, POOL, "bench"), text=True, check=True, capture_output=True)
            runtime = self.system.partition(":")[2]
            self.proc = Process(self.ledger, self.ns, [
                sys.executable, "-m", "calico_bgp", "--etcd-endpoints", self.etcd.unix_url, "--prefix", prefix,
                "node", "run", "--name", "node", "--ip", f"{node_ip(self.slot)}/24", "--state-dir", str(self.dir / "state"),
                "--grace", "0", "--log-level", self.log_level], self.dir / "agent.log",
                env={"CALICO_BGP_EXABGP_RUNTIME": runtime} if runtime else None)
            self.pids = [self.proc.pid]

    def memory(self) -> dict:
        """RSS and peak RSS (VmHWM) in MB of each of our processes (agent, exabgp, bridge), and the
        interpreter ExaBGP runs under."""
        out: dict = {"rss_mb": {}, "peak_mb": {}}
        for root in self.pids:
            for p in proc_tree(root):
                part = part_of(p)
                try:
                    status = Path(f"/proc/{p}/status").read_text()
                    cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                fields = {k: v.split()[0] for k, _, v in (line.partition(":") for line in status.splitlines()) if v.strip()}
                for key, field in (("rss_mb", "VmRSS"), ("peak_mb", "VmHWM")):
                    if field in fields:
                        out[key][part] = round(out[key].get(part, 0.0) + int(fields[field]) / 1024, 1)
                if part == "exabgp" and b"calico_bgp.speaker.exabgp_run" in cmd:
                    out["exabgp_python"] = cmd[0].decode(errors="replace")
        return out

    def alive(self) -> bool:
        return all(Path(f"/proc/{p}").exists() for p in self.pids)

    def tail(self) -> str:
        if self.proc is not None:
            return self.proc.tail(30)
        logs = sorted(self.dir.rglob("*.log"))
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-10:]) for p in logs)

    def stop(self) -> None:
        for p in self.pids:
            try:
                os.killpg(p, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 10
        for p in self.pids:
            while time.monotonic() < deadline and Path(f"/proc/{p}").exists() and not _zombie(p):
                time.sleep(0.05)
            try:
                os.killpg(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc is not None:
            self.proc.stop(timeout=5)
        # whatever a receiver left in the table must not count for the next one
        for proto in ("86", "bird", "bgp"):
            sh("ip", "route", "flush", "table", "main", "proto", proto, ns=self.ns, check=False)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


# ---------------------------------------------------------------- the run
def wait_established(src: Bird, rx: Receiver, timeout: float = 90.0) -> float:
    """Seconds from the receiver's start to its session Established."""
    t0 = rx.started
    while True:
        out = src.birdc("show", "protocols", f"node{rx.slot}")
        if "Established" in out:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout or not rx.alive():
            raise RuntimeError(f"{rx.system}: session not up after {time.monotonic() - t0:.0f}s:\n{out}\n{rx.tail()}")
        time.sleep(0.1)


def phase(table: KernelTable, src: Bird, rx: Receiver, action: str, n: int, target: int, timeout: float,
          prof: Profiler, tag: str) -> dict:
    prof.start(rx.pids, tag)
    cpu0 = cpu_by_process(rx.pids)
    table.mark()
    t0 = time.monotonic()
    name = static_name(rx.slot, n)
    out = src.birdc(action, name)
    if f"{name}: {action}d" not in out:
        raise RuntimeError(f"source: birdc {action} {name}: {out.strip()}")

    def tick(count: int) -> None:
        progress(f"{rx.system} N={n} {action}: {count}/{n} in the kernel after {time.monotonic() - t0:.1f}s")

    done = table.wait(target, timeout, tick)
    if done is None:
        prof.stop()
        raise RuntimeError(f"{rx.system} N={n}: {table.count()} routes in the kernel, not {target}, after {timeout:.0f}s\n"
                           f"{rx.tail()}")
    wait_quiet(rx.pids)
    cpu1 = cpu_by_process(rx.pids)
    prof.stop()
    seen = len(table.dump())
    if seen != target:
        raise RuntimeError(f"{rx.system} N={n} {action}: events said {target}, a dump finds {seen}")
    first = table.first_at
    return {"seconds": round(done - t0, 3), "first_s": round(first - t0, 3) if first is not None else None,
            "cpu_s": {k: round(cpu1.get(k, 0.0) - cpu0.get(k, 0.0), 2) for k in cpu1}}


AFTER_BURST = 8.0  # seconds our agent may still work after a burst: its upkeep's give-back (5 s quiet, checked every 2 s)


def settle_others(rx: Receiver, rxs: list[Receiver], ended: dict[str, float]) -> None:
    """Before `rx` runs: the other receivers' deferred work (our agent's memory give-back and full
    collection a few seconds after a burst) done, and every receiver idle, so none of it lands in
    `rx`'s phases."""
    for other in rxs:
        if other is not rx and ours(other.system) and other.system in ended:
            time.sleep(max(0.0, ended[other.system] + AFTER_BURST - time.monotonic()))
    wait_quiet([p for o in rxs for p in o.pids])


def measure(args: argparse.Namespace, work: Path, ledger: Ledger, nss: dict[str, str], src: Bird,
            etcd: EtcdServer | None, prof: Profiler) -> dict:
    """Every receiver started in its own slot, then the runs alternated between them."""
    rxs = [Receiver(system, slot, nss[f"node{slot}"], work, ledger, etcd if ours(system) else None, args.log_level)
           for slot, system in enumerate(args.systems)]
    out: dict = {rx.system: {"sizes": {}} for rx in rxs}
    try:
        for rx in rxs:
            progress(f"{rx.system}: starting in node {rx.slot}'s place")
            rx.start()
        for rx in rxs:
            up = wait_established(src, rx)
            progress(f"{rx.system}: session Established after {up:.1f}s")
            out[rx.system]["session_s"] = round(up, 2)
            rx.table = KernelTable(rx.ns, FIRST, LAST)
        wait_quiet([p for rx in rxs for p in rx.pids])
        ended: dict[str, float] = {}  # receiver -> when its last run ended
        for n in args.sizes:
            runs: dict[str, list[dict]] = {rx.system: [] for rx in rxs}
            for r in range(args.repeat):
                for rx in rxs if r % 2 == 0 else rxs[::-1]:  # neither always first after the previous N
                    table = rx.table
                    assert table is not None
                    if table.wait(0, 10) is None:
                        raise RuntimeError(f"{rx.system}: {table.count()} routes left over in the kernel before N={n}")
                    settle_others(rx, rxs, ended)
                    a = phase(table, src, rx, "enable", n, n, args.timeout, prof, f"{rx.system}-{n}-{r}-announce")
                    w = phase(table, src, rx, "disable", n, 0, args.timeout, prof, f"{rx.system}-{n}-{r}-withdraw")
                    progress(f"{rx.system} N={n} run {r + 1}/{args.repeat}: announce {a['seconds']:.3f}s "
                             f"(first route at {a['first_s']}s), withdraw {w['seconds']:.3f}s (first at {w['first_s']}s)")
                    runs[rx.system].append({"announce": a, "withdraw": w})
                    ended[rx.system] = time.monotonic()
            for rx in rxs:
                out[rx.system]["sizes"][str(n)] = summarise(runs[rx.system])
        for rx in rxs:
            if ours(rx.system):
                mem = rx.memory()
                out[rx.system].update(mem)
                progress(f"{rx.system}: RSS MB {mem['rss_mb']}, peak {mem['peak_mb']}; ExaBGP under {mem.get('exabgp_python')}")
        return out
    finally:
        for rx in rxs:
            if rx.table is not None:
                rx.table.close()
                if rx.table.resyncs:
                    progress(f"{rx.system}: the event socket overflowed {rx.table.resyncs} time(s); the table was re-read each time")
            rx.stop()


def summarise(runs: list[dict]) -> dict:
    out = {}
    for ph in ("announce", "withdraw"):
        secs = [r[ph]["seconds"] for r in runs]
        cpu: dict[str, float] = {}
        for r in runs:
            for k, v in r[ph]["cpu_s"].items():
                cpu[k] = cpu.get(k, 0.0) + v / len(runs)
        out[ph] = {"min": min(secs), "median": round(statistics.median(secs), 3), "runs": secs,
                   "cpu_s": {k: round(v, 2) for k, v in sorted(cpu.items())}}
    return out


def versions() -> dict[str, str]:
    def first(cmd: list[str]) -> str:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except OSError:
            return "?"
        return ((res.stdout or res.stderr).strip().splitlines() or ["?"])[0]
    exa = Path(sys.executable).with_name("exabgp")
    return {"bird": first(["bird", "--version"]), "frr": first(["/usr/lib/frr/zebra", "--version"]),
            "exabgp": first([str(exa) if exa.exists() else "exabgp", "version"])}


def run(args: argparse.Namespace, work: Path, ledger: Ledger) -> dict:
    net = Net(ledger, f"cv{os.getpid() % 10000}")
    slots = len(args.systems)
    nss = {name: net.namespace(name) for name in ["src", *(f"node{i}" for i in range(slots))]}
    for i in range(slots):
        net.veth(nss["src"], f"eth{i}", nss[f"node{i}"], "eth0")
        net.address(nss["src"], f"eth{i}", f"{src_ip(i)}/24")
        net.address(nss[f"node{i}"], "eth0", f"{node_ip(i)}/24")
    # the source always holds the default sizes too: a run of one size then meets the same source as
    # the full run (a source holding only 10,000 routes sent them 2.5x slower here, its memory being
    # handed back to the system and faulted in again between runs), so BIRD's time is the receiver's
    held = sorted(set(args.sizes) | set(DEFAULT_SIZES))
    progress(f"source BIRD with {slots} x {sum(held)} static routes in {slots} x {len(held)} disabled protocols")
    src = Bird(nss["src"], None, work / "src")
    src.start(ledger, config=src_conf(held, slots))
    prof = Profiler(Path(args.profile) if args.profile else None)
    etcd_ctx = EtcdServer() if any(map(ours, args.systems)) else None
    try:
        if etcd_ctx is not None:
            etcd_ctx.start()
        return measure(args, work, ledger, nss, src, etcd_ctx, prof)
    finally:
        prof.stop()
        if etcd_ctx is not None:
            etcd_ctx.stop()


def ratios(results: dict, system: str, sizes: list[int]) -> dict[str, dict[str, float]]:
    if "bird" not in results or system not in results:
        return {}
    out = {}
    for n in sizes:
        row = {}
        for ph in ("announce", "withdraw"):
            ours, ref = results[system]["sizes"][str(n)][ph]["median"], results["bird"]["sizes"][str(n)][ph]["median"]
            row[ph] = round(ours / max(ref, 1e-3), 2)
        out[str(n)] = row
    return out


TARGETS = {10000: 1.5, 100000: 1.5}


def report(results: dict, args: argparse.Namespace) -> dict:
    systems = list(results)
    print(f"{'N':>7}  {'phase':<9}" + "".join(f" {label(s) + ' s':>16}" for s in systems)
          + "".join(f" {label(s) + '/BIRD':>16}" for s in systems if s != "bird" and "bird" in results))
    for n in args.sizes:
        for ph in ("announce", "withdraw"):
            cells = "".join(f" {results[s]['sizes'][str(n)][ph]['min']:>7.3f}/{results[s]['sizes'][str(n)][ph]['median']:<8.3f}"
                            for s in systems)
            rs = ""
            if "bird" in results:
                ref = results["bird"]["sizes"][str(n)][ph]["median"]
                for s in systems:
                    if s != "bird":
                        r = results[s]["sizes"][str(n)][ph]["median"] / max(ref, 1e-3)
                        mark = ""
                        if ours(s) and n in TARGETS:
                            mark = " ok" if r <= TARGETS[n] else f" >{TARGETS[n]}"
                        rs += f" {r:>12.2f}{mark:<4}"
            print(f"{n:>7}  {ph:<9}{cells}{rs}")
    print("seconds are min/median of", args.repeat, "runs; ratios are of medians; targets for calico-bgp: "
          "<= 1.5x BIRD at 10,000 and at 100,000")
    mine = [s for s in systems if ours(s)]
    for s in mine:
        for n in args.sizes:
            for ph in ("announce", "withdraw"):
                cpu = results[s]["sizes"][str(n)][ph]["cpu_s"]
                print(f"{label(s)} CPU s N={n} {ph}: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
        print(f"{label(s)} RSS MB after the phases: " + ", ".join(f"{k} {v:.0f} (peak {results[s]['peak_mb'].get(k, 0):.0f})"
                                                              for k, v in results[s]["rss_mb"].items()))
    first = mine[0] if mine else "calico-bgp"
    summary = {"ratio_vs_bird": ratios(results, first, args.sizes),
               "ratio_vs_bird_by_system": {s: ratios(results, s, args.sizes) for s in mine},
               "frr_ratio_vs_bird": ratios(results, "frr", args.sizes),
               "targets_met": None, "results": results, "repeat": args.repeat, "versions": versions()}
    met = [summary["ratio_vs_bird"].get(str(n), {}).get(ph, 0) <= t for n, t in TARGETS.items() if n in args.sizes
           for ph in ("announce", "withdraw") if summary["ratio_vs_bird"]]
    summary["targets_met"] = all(met) if met else None
    return summary


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.convergence", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="comma-separated N (default 1000,10000,100000)")
    ap.add_argument("--repeat", type=int, default=3, help="announce/withdraw runs per system and N (default 3)")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"receivers, in order (default {','.join(SYSTEMS)}); "
                    f"calico-bgp:pypy / calico-bgp:cpython force ExaBGP's interpreter")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds one phase may take at most")
    ap.add_argument("--log-level", default="info", help="our agent's log level (default info, as deployed)")
    ap.add_argument("--profile", metavar="DIR", help="record py-spy collapsed stacks of our processes per phase into DIR")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    args.sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    args.systems = [s for s in args.systems.split(",") if s]
    if len(set(args.systems)) != len(args.systems):
        ap.error(f"--systems names a receiver twice: {args.systems}")
    bad = [s for s in args.systems if not known(s)]
    if bad:
        ap.error(f"unknown system(s) {bad}; choose from {SYSTEMS}, or calico-bgp:RUNTIME ({', '.join(RUNTIMES)})")
    if not runnable("convergence", ("bird", "birdc") + (("vtysh",) if "frr" in args.systems else ())):
        return 2
    prefixes(max(args.sizes))  # fits, or exits with the reason
    with bench_run("conv") as (work, ledger):
        os.chmod(work, 0o755)  # FRR drops to the frr user
        results = run(args, work, ledger)
    summary = report(results, args)
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
