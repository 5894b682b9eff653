"""Network namespaces, veth pairs, bridges and processes inside them, for the lab and the e2e tests.

Everything made is recorded in a `Ledger` (a JSON file in the run directory) as it is made, so
`teardown()` removes it even after a crash of the process that made it. Only addresses from
198.18.0.0/15 and 2001:db8::/32 are ever configured.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import zlib
from pathlib import Path
from typing import Iterator, Sequence

ALLOWED = ("198.18.", "198.19.", "2001:db8:")


class LabError(RuntimeError):
    pass


def sh(*args: str, ns: str | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {res.returncode}: {(res.stderr or res.stdout).strip()}")
    return res


def check_address(addr: str) -> None:
    if not addr.startswith(ALLOWED):
        raise LabError(f"address {addr} is outside 198.18.0.0/15 and 2001:db8::/32, which the lab may use")


class Ledger:
    """What this lab run created: namespaces and pids (interfaces die with their namespaces)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "ledger.json"
        self.data: dict[str, list] = {"namespaces": [], "pids": [], "links": []}
        if self.path.exists():
            self.data.update(json.loads(self.path.read_text()))

    def add(self, kind: str, item: object) -> None:
        self.data[kind].append(item)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)

    def add_process(self, pid: int) -> None:
        """A process group we started (its leader's pid), with the leader's start time: a pid the
        system gave to someone else since is never signalled."""
        self.add("pids", [pid, _start_time(pid)])

    def _ours(self) -> list[int]:
        out = []
        for entry in self.data["pids"]:
            pid, started = entry if isinstance(entry, list) else (entry, None)
            now = _start_time(pid)
            # a live leader that started at another time is another process; a dead leader may
            # leave members of our group behind (killpg reaches them, nobody else has that group id)
            if now is None or started is None or now == started:
                out.append(pid)
        return out

    def teardown(self) -> list[str]:
        """Kill every recorded process, delete every recorded namespace; returns what was removed."""
        removed = []
        ours = self._ours()
        for pid in reversed(ours):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
                removed.append(f"pid {pid}")
        deadline = time.monotonic() + 5
        for pid in ours:
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for ns in reversed(self.data["namespaces"]):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            if sh("ip", "netns", "del", ns, check=False).returncode == 0:
                removed.append(f"netns {ns}")
        for link in self.data["links"]:
            if sh("ip", "link", "del", link, check=False).returncode == 0:
                removed.append(f"link {link}")
        self.data = {"namespaces": [], "pids": [], "links": []}
        self.path.unlink(missing_ok=True)
        return removed


def _start_time(pid: int) -> int | None:
    """When a process started (clock ticks since boot, /proc/<pid>/stat field 22); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Net:
    """Makes namespaces and links, recording each in the ledger before it exists."""

    def __init__(self, ledger: Ledger, tag: str) -> None:
        self.ledger = ledger
        self.tag = tag  # short prefix of every name this run makes
        self._n = 0

    def namespace(self, name: str) -> str:
        ns = f"{self.tag}-{name}"
        self.ledger.add("namespaces", ns)
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
                    "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"):
            sh("sysctl", "-qw", key, ns=ns)
        return ns

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        self._n += 1
        short = f"{zlib.crc32(self.tag.encode()):08x}"[:6]  # temporary names unique per run, <= 15 chars
        tmp_a, tmp_b = f"v{short}{self._n}a", f"v{short}{self._n}b"
        self.ledger.add("links", tmp_a)  # in case we die before it moves into a namespace
        sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        sh("ip", "link", "set", tmp_a, "netns", ns_a, "name", if_a)
        sh("ip", "link", "set", tmp_b, "netns", ns_b, "name", if_b)
        sh("ip", "link", "set", if_a, "up", ns=ns_a)
        sh("ip", "link", "set", if_b, "up", ns=ns_b)

    def bridge(self, ns: str, name: str) -> None:
        sh("ip", "link", "add", name, "type", "bridge", ns=ns)
        sh("ip", "link", "set", name, "up", ns=ns)

    def attach(self, ns: str, ifname: str, bridge: str) -> None:
        sh("ip", "link", "set", ifname, "master", bridge, ns=ns)

    def address(self, ns: str, ifname: str, cidr: str) -> None:
        check_address(cidr)
        extra = ["nodad"] if ":" in cidr else []
        sh("ip", "addr", "add", cidr, "dev", ifname, *extra, ns=ns)


class Process:
    """A process in a namespace with its output in a log file; its own process group."""

    def __init__(self, ledger: Ledger, ns: str | None, argv: Sequence[str], log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.ns, self.argv, self.log_path = ns, list(argv), Path(log)
        cmd = (["ip", "netns", "exec", ns] if ns else []) + self.argv
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **(env or {})})
        ledger.add_process(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10) -> int | None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.proc.returncode

    def kill(self, group: bool = True) -> None:
        """SIGKILL (what a crash looks like): the whole group, or only the process itself."""
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def lab_run(run_dir: Path, tag: str) -> Iterator[tuple[Ledger, Net]]:
    """A ledger and a Net whose every namespace, link and process is removed on exit."""
    ledger = Ledger(run_dir)
    try:
        yield ledger, Net(ledger, tag)
    finally:
        ledger.teardown()
