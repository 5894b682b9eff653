"""What the benchmarks share: whether one can run here, progress lines on stderr, per-process CPU/RSS
from /proc, and the resources and BIRD configs of the one-peer benches. Every bench runs from the
repository's root as `python -m bench.<name>` and imports nothing from tests/.

A node's cost is the agent plus its children (ExaBGP and the API bridge): `proc_tree` finds them
through every thread's children list, so a child forked from a worker thread is counted too.
"""
from __future__ import annotations

import compileall
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from calico_bgp.speaker.exabgp_run import is_exabgp
from lab.net import Ledger

CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cannot_run(bench: str, tools: Sequence[str] = ()) -> str | None:
    """Why `python -m bench.<bench>` cannot run here (it needs root for namespaces, and `tools`), or None."""
    if os.geteuid() != 0:
        return f"python -m bench.{bench} needs root (network namespaces)"
    missing = [t for t in tools if shutil.which(t) is None]
    return f"python -m bench.{bench} needs {', '.join(missing)}" if missing else None


def runnable(bench: str, tools: Sequence[str] = ()) -> bool:
    """True when the bench can run here; else False, with the reason on stderr."""
    why = cannot_run(bench, tools)
    if why:
        print(why, file=sys.stderr)
    return why is None


@contextlib.contextmanager
def bench_run(bench: str) -> Iterator[tuple[Path, Ledger]]:
    """A scratch directory and a ledger for one run: on the way out (SIGTERM too) everything in the
    ledger is removed and the directory deleted (kept, and named, with BENCH_KEEP=1)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup on kill too
    compile_sources()
    work = Path(tempfile.mkdtemp(prefix=f"calico-bgp-bench-{bench}-"))
    ledger = Ledger(work / "ledger")
    try:
        yield work, ledger
    finally:
        ledger.teardown()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            progress(f"kept {work}")


def compile_sources() -> None:
    """Bytecode for the processes a bench starts, as an installed package has it, and the compiled API
    bridge (bootstrap.sh does the same): with PYTHONDONTWRITEBYTECODE=1 every agent would compile our modules from source at
    each start, a cost no installed node pays. Nothing is rewritten when the bytecode is current."""
    root = Path(__file__).resolve().parents[1]
    for package in ("calico_bgp", "dataplane", "ipam"):
        compileall.compile_dir(root / package, quiet=2)
    if shutil.which("make") and shutil.which("cc"):  # the compiled API bridge, as bootstrap.sh builds it
        subprocess.run(["make", "-s", "-C", str(root / "calico_bgp" / "speaker")], check=True)
    # attrs' generated methods as bytecode (calico_bgp/cli/attrs_cache.py), as the first `node run` leaves them
    subprocess.run([sys.executable, "-c", "from calico_bgp.cli.attrs_cache import prime; prime()"], cwd=root,
                   check=True)


def progress(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def proc_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir() for c in (t / "children").read_text().split()]
        except OSError:
            pass
    return out


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_and_rss(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) and RSS in MB of `pid` and all its descendants."""
    cpu = rss = 0.0
    for p in proc_tree(pid):
        fields = _stat(p)
        if fields:
            cpu += (int(fields[11]) + int(fields[12])) / CLK
            rss += int(fields[21]) * PAGE / 2**20
    return cpu, rss


def part_of(pid: int) -> str:
    """What a receiver's process is, by its command line: agent, exabgp, bridge, else the program's name."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "gone"
    if b"speaker.bridge" in cmd or b"speaker/bridge.py" in cmd or b"calico-bgp-bridge" in cmd:
        return "bridge"
    if is_exabgp(cmd):
        return "exabgp"
    if b"calico_bgp" in cmd:
        return "agent"
    return Path(cmd.split(b"\0")[0].decode(errors="replace")).name or "other"


def pss_mb(pid: int) -> float:
    """Proportional set size in MB of `pid` and all its descendants: shared pages (the interpreter,
    libcrypto) split between the processes sharing them, where RSS counts them in full in each."""
    total = 0.0
    for p in proc_tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
                    break
        except OSError:
            pass
    return total


def cpu_by_process(pids: list[int]) -> dict[str, float]:
    """CPU seconds of a receiver by process kind: agent / exabgp / bridge for ours, the daemon's name otherwise."""
    parts: dict[str, float] = {}
    for root in pids:
        for p in proc_tree(root):
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            name = part_of(p)
            parts[name] = parts.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK
    return parts


def cpu_by_part(pid: int) -> dict[str, float]:
    """CPU seconds of a node split into the agent, its ExaBGP and the API bridge (by command line)."""
    parts = {"agent": 0.0, "exabgp": 0.0, "bridge": 0.0}
    for kind, cpu in cpu_by_process([pid]).items():
        parts[kind if kind in ("exabgp", "bridge") else "agent"] += cpu
    return parts


def usage_by_part(pid: int) -> dict[str, tuple[float, float]]:
    """(CPU seconds, RSS MB) of a node's agent, its ExaBGP and the API bridge, each apart (by command line)."""
    parts = {"agent": (0.0, 0.0), "exabgp": (0.0, 0.0), "bridge": (0.0, 0.0)}
    for p in proc_tree(pid):
        fields = _stat(p)
        if fields:
            kind = part_of(p)
            kind = kind if kind in ("exabgp", "bridge") else "agent"
            cpu, rss = parts[kind]
            parts[kind] = (cpu + (int(fields[11]) + int(fields[12])) / CLK, rss + int(fields[21]) * PAGE / 2**20)
    return parts


def one_peer_resources(node_ip: str, node_as: int, peer_ip: str, peer_as: int, pool: str, pool_name: str,
                       origin_validation: str = "Deprefer") -> str:
    """The resources of a bench with one node agent ("node", mesh off) and one fabric peer ("src").
    The source's prefixes are in the pool but in no block: origin-invalid, so the peer's
    originValidation is Deprefer by default (every path is checked, then still installed)."""
    return "\n---\n".join([
        f"kind: BGPConfiguration\napiVersion: projectcalico.org/v3\nmetadata: {{name: default}}\n"
        f"spec: {{asNumber: {node_as}, nodeToNodeMeshEnabled: false}}",
        f"kind: IPPool\napiVersion: projectcalico.org/v3\nmetadata: {{name: {pool_name}}}\nspec: {{cidr: {pool}}}",
        f"kind: Node\napiVersion: projectcalico.org/v3\nmetadata: {{name: node}}\n"
        f"spec: {{bgp: {{ipv4Address: {node_ip}/24}}}}",
        f"kind: BGPPeer\napiVersion: projectcalico.org/v3\nmetadata: {{name: src}}\n"
        f"spec: {{node: node, peerIP: {peer_ip}, asNumber: {peer_as}, originValidation: {origin_validation}}}"])


def bird_receiver_conf(router_id: str, local_as: int, source: str, source_as: int) -> str:
    """BIRD 2 as the reference receiver: one passive eBGP session from `source`, everything it learns
    exported to the kernel's main table (the job our agent does in the same run)."""
    return "\n".join([
        f"router id {router_id};", "protocol device {}",
        "protocol kernel { ipv4 { export all; import none; }; }",
        "protocol bgp upstream {", f"  local {router_id} as {local_as};", f"  neighbor {source} as {source_as};",
        "  passive on;", "  ipv4 { import all; export none; };", "}"]) + "\n"
