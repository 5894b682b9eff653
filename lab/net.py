"""Network namespaces, veth pairs, bridges and processes inside them: the one helper of the lab,
the tests and the benchmarks.

    sh("ip", "link", ns=ns)                      one command, in a namespace or not; LabError if it fails
    wait_for("session up", fn, timeout=30)       poll until fn() is truthy; TimedOut names what and the last value
    with netns("r") as ns: veth(a, "e0", ns, "e1", ("198.18.1.1/24",), ("198.18.1.2/24",))
                                                 a namespace of its own for one test, removed on exit
    with lab_run(run_dir, tag) as (ledger, net): a lab's namespaces, links and processes, in a ledger

What a lab makes is recorded in a `Ledger` (a JSON file in the run directory) before it is made, so
`teardown()` removes it even after a crash of the process that made it. Only addresses from
198.18.0.0/15 and 2001:db8::/32 are ever configured.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
import zlib
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

ALLOWED = ("198.18.", "198.19.", "2001:db8:")
T = TypeVar("T")
_ids = itertools.count()


class LabError(RuntimeError):
    pass


class TimedOut(LabError, AssertionError):
    """A condition did not hold in time; an AssertionError too, so a test reports it as a failed check."""


def sh(*args: str, ns: str | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {res.returncode}: {(res.stderr or res.stdout).strip()}")
    return res


def wait_for(what: str, fn: Callable[[], T], timeout: float = 30.0, interval: float = 0.2) -> T:
    """Poll `fn` until it returns something truthy and return that; an exception from `fn` counts as
    not yet. TimedOut after `timeout` seconds, naming `what` and the last value or exception."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = fn()
            if last:
                return last  # type: ignore[return-value]
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last problem
            last = exc
        if time.monotonic() >= deadline:
            raise TimedOut(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def unique(tag: str) -> str:
    """A name no other process of this machine makes (interface names are at most 15 characters)."""
    return f"cb{os.getpid() % 10000}{tag}{next(_ids)}"


def remove_namespace(ns: str) -> bool:
    """Kill what runs in `ns` (or its file lingers), then delete it; False if it did not exist."""
    for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    return sh("ip", "netns", "del", ns, check=False).returncode == 0


@contextlib.contextmanager
def netns(tag: str = "n") -> Iterator[str]:
    """A new namespace with lo up, uniquely named; deleted with everything in it on exit, even on failure."""
    name = unique(tag)
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "link", "set", "lo", "up", ns=name)
        yield name
    finally:
        remove_namespace(name)


def veth(ns_a: str, if_a: str, ns_b: str, if_b: str, addrs_a: Sequence[str] = (), addrs_b: Sequence[str] = ()) -> None:
    """Connect two namespaces with a veth pair; both ends up, with the given addresses (CIDR form)."""
    _veth_pair(unique("a"), unique("b"), ns_a, if_a, ns_b, if_b)
    for ns, ifname, addrs in ((ns_a, if_a, addrs_a), (ns_b, if_b, addrs_b)):
        for addr in addrs:
            add_address(ns, ifname, addr)


def _veth_pair(tmp_a: str, tmp_b: str, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
    try:
        sh("ip", "link", "set", tmp_a, "netns", ns_a, "name", if_a)
        sh("ip", "link", "set", tmp_b, "netns", ns_b, "name", if_b)
    except LabError:
        for end in (tmp_a, tmp_b):  # an end still on the host goes with its peer
            sh("ip", "link", "del", end, check=False)
        raise
    sh("ip", "link", "set", if_a, "up", ns=ns_a)
    sh("ip", "link", "set", if_b, "up", ns=ns_b)


def add_address(ns: str, ifname: str, cidr: str) -> None:
    check_address(cidr)
    extra = ["nodad"] if ":" in cidr else []
    sh("ip", "addr", "add", cidr, "dev", ifname, *extra, ns=ns)


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
            if remove_namespace(ns):
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
        _veth_pair(tmp_a, tmp_b, ns_a, if_a, ns_b, if_b)

    def bridge(self, ns: str, name: str) -> None:
        sh("ip", "link", "add", name, "type", "bridge", ns=ns)
        sh("ip", "link", "set", name, "up", ns=ns)

    def attach(self, ns: str, ifname: str, bridge: str) -> None:
        sh("ip", "link", "set", ifname, "master", bridge, ns=ns)

    def address(self, ns: str, ifname: str, cidr: str) -> None:
        add_address(ns, ifname, cidr)


class Process:
    """A process in a namespace with its output in a log file; its own process group, recorded in
    `ledger` when there is one (a test's namespace kills what is left in it on exit)."""

    def __init__(self, ledger: Ledger | None, ns: str | None, argv: Sequence[str], log: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.ns, self.argv, self.log_path = ns, list(argv), Path(log)
        cmd = (["ip", "netns", "exec", ns] if ns else []) + self.argv
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **(env or {})}, cwd=cwd)
        if ledger is not None:
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
