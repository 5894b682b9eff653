"""The lab end to end, through its CLI: each shipped topology comes up, passes `lab check`, survives
one chaos scenario, and `lab down` leaves no namespace, veth, mount or process behind.

One `lab up` per topology, shared by that topology's tests (a class-scoped fixture), so the whole
file stays around three minutes.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import pytest

from tests.marks import needs_root

ROOT = Path(__file__).resolve().parents[2]
CLAB = ROOT / "containerlab"

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (./bootstrap.sh setup)"),
    pytest.mark.skipif(not all(shutil.which(b) for b in ("bird", "vtysh", "gobgpd")),
                       reason="needs bird2, frr and gobgpd (./bootstrap.sh setup)"),
]


def lab(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "calico_bgp", "lab", *args], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT)
    if check and res.returncode != 0:
        raise AssertionError(f"calico-bgp lab {' '.join(args)} -> {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


class Leftovers:
    """What a lab run may leave behind, found by its name and run directory."""

    def __init__(self, name: str, run_dir: Path) -> None:
        self.tag = f"clab-{name}"
        self.run_dir = str(run_dir)
        self.veth_prefix = f"v{zlib.crc32(self.tag.encode()):08x}"[:7]

    def find(self) -> list[str]:
        out = []
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
        out += [f"netns {line.split()[0]}" for line in netns if line.startswith(self.tag + "-")]
        links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout or "[]")
        out += [f"link {link['ifname']}" for link in links if link["ifname"].startswith(self.veth_prefix)]
        for line in Path("/proc/mounts").read_text().splitlines():
            if self.run_dir in line or f"/run/netns/{self.tag}-" in line:
                out.append(f"mount {line.split()[1]}")
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if self.run_dir in cmd and int(pid) != os.getpid():
                out.append(f"process {pid}: {cmd[:120]}")
        return out


class RunningLab:
    def __init__(self, topology: Path, name: str) -> None:
        self.topology = topology
        self.name = name
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"calico-bgp-lab-{name}-"))
        self.leftovers = Leftovers(name, self.run_dir)
        self.up_output = ""
        self.up_seconds = 0.0

    def up(self) -> None:
        t0 = time.monotonic()
        res = lab("up", str(self.topology), "--name", self.name, "--run-dir", str(self.run_dir), timeout=240)
        self.up_seconds = time.monotonic() - t0
        self.up_output = res.stdout
        print(res.stdout)

    def __call__(self, *args: str, **kw) -> subprocess.CompletedProcess[str]:
        return lab(*args, "--run-dir", str(self.run_dir), **kw)

    def logs(self) -> str:
        """Each log's warnings and errors from its start (the first 40: what went wrong first), then
        its last 30 lines."""
        out = []
        for p in sorted((self.run_dir / "logs").glob("*.log")):
            lines = p.read_text(errors="replace").splitlines()
            alarms = [ln for ln in lines[:-30] if " WARNING " in ln or " ERROR " in ln][:40]
            out.append(f"--- {p.name} ---\n" + "\n".join(alarms + (["[...]"] if alarms else []) + lines[-30:]))
        return "\n".join(out)

    def down(self) -> list[str]:
        lab("down", "--run-dir", str(self.run_dir), timeout=120)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        deadline = time.monotonic() + 10
        while (left := self.leftovers.find()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left


@contextlib.contextmanager
def running(path: Path, name: str):
    r = RunningLab(path, name)
    try:
        r.up()
        yield r
    except BaseException:
        print(r.logs())
        raise
    finally:
        left = r.down()
        assert not left, f"lab down left behind: {left}"


def _check(r: RunningLab, timeout: float = 120) -> dict:
    res = r("check", "--timeout", str(timeout), "-o", "json", check=False, timeout=timeout + 120)
    report = json.loads(res.stdout)
    if not report["ok"]:
        print(r.logs())
    assert report["ok"], json.dumps(report, indent=2)
    assert res.returncode == 0
    return report


def _chaos(r: RunningLab, *args: str) -> dict:
    res = r("chaos", *args, "-o", "json", check=False, timeout=400)
    result = json.loads(res.stdout)
    print(json.dumps(result, indent=2))
    return result


# --------------------------------------------------------------------------------------------- rack

@pytest.fixture(scope="class")
def rack():
    with running(CLAB / "rack.clab.yml", f"t{os.getpid() % 10000}rack") as r:
        yield r


class TestRack:

    def test_up_check_and_ecmp_over_both_tors(self, rack):
        report = _check(rack)
        assert any("ECMP x2" in i["detail"] for i in report["items"])
        status = json.loads(rack("status", "-o", "json").stdout)
        assert {r["kind"] for r in status["routers"]} == {"frr", "bird", "gobgp"}
        for agent in status["agents"]:
            learned = {p: hops for p, hops in agent["kernel"].items() if hops != ["blackhole"]}
            assert len(learned) == 3 and all(len(h) == 2 for h in learned.values()), agent
            assert agent["rejected"] >= 2  # the spine's default route and external prefix: refused

    def test_chaos_tor_stop_loses_no_route(self, rack):
        result = _chaos(rack, "tor-stop", "--target", "tor2", "--outage", "5")
        assert result["reconverged"]
        assert result["routesLost"] == []
        assert result["faultConvergedSeconds"] is not None and result["faultConvergedSeconds"] < 10
        _check(rack, 60)


    def test_chaos_agent_kill_keeps_the_nodes_block_at_its_peers(self, rack):
        """The agent advertises graceful restart: the ToRs (FRR, BIRD) keep a SIGKILLed node's block
        until its restarted agent has re-announced it and sent End-of-RIB."""
        result = _chaos(rack, "agent-kill", "--target", "n4")
        assert result["reconverged"]
        assert result["routesLost"] == []


# --------------------------------------------------------------------------------------------- rr

@pytest.fixture(scope="class")
def rr():
    with running(CLAB / "rr.clab.yml", f"t{os.getpid() % 10000}rr") as r:
        yield r


class TestRouteReflectors:

    def test_up_check_next_hop_is_the_originating_client(self, rr):
        report = _check(rr)
        assert any("next hop = originating node" in i["detail"] for i in report["items"])
        status = json.loads(rr("status", "-o", "json").stdout)
        c1 = next(a for a in status["agents"] if a["node"] == "c1")
        assert {s["peer_node"] for s in c1["sessions"]} == {"rr1", "rr2"}  # clients peer only with the reflectors

    def test_chaos_kill_one_reflector_clients_keep_each_others_routes(self, rr):
        result = _chaos(rr, "agent-kill", "--target", "rr1")
        assert result["reconverged"]
        # no client loses another client's block, and with graceful restart not even rr1's own goes
        assert result["routesLost"] == [], result["routesLost"]
        assert result["pingsLost"] == 0


# --------------------------------------------------------------------------------------------- mesh

@pytest.fixture(scope="class")
def mesh():
    with running(CLAB / "mesh.clab.yml", f"t{os.getpid() % 10000}mesh") as r:
        yield r


class TestMesh:

    def test_up_check_full_mesh(self, mesh):
        _check(mesh)
        status = json.loads(mesh("status", "-o", "json").stdout)
        assert len(status["agents"]) == 6
        assert all(len(a["sessions"]) == 5 for a in status["agents"])

    def test_chaos_etcd_stop_keeps_the_dataplane(self, mesh):
        result = _chaos(mesh, "etcd-stop", "--outage", "10")
        assert result["reconverged"]
        assert result["routesLost"] == []
        assert result["pingsLost"] == 0


# --------------------------------------------------------------------------------------------- others' files

FOREIGN = """\
# written for containerlab: FRR routers through a group, hosts through kinds/defaults, exec and binds
name: foreign
topology:
  defaults:
    kind: linux
    env: {GREETING: hello}
  kinds:
    linux:
      image: alpine:3.20
      exec: ["ip link set lo up"]
  groups:
    frr:
      image: quay.io/frrouting/frr:8.4.1
      binds:
        - frr/daemons:/etc/frr/daemons
  nodes:
    r1:
      group: frr
      binds: [frr/r1.conf:/etc/frr/frr.conf]
      exec:
        - ip addr add 198.18.50.0/31 dev eth1
        - ip addr add 198.18.51.1/24 dev eth2
    r2:
      group: frr
      binds: [frr/r2.conf:/etc/frr/frr.conf]
      exec:
        - ip addr add 198.18.50.1/31 dev eth1
        - ip addr add 198.18.52.1/24 dev eth2
    h1:
      exec:
        - ip addr add 198.18.51.10/24 dev eth1
        - ip route add default via 198.18.51.1
    h2:
      exec:
        - sh -c 'ip addr add 198.18.52.10/24 dev eth1 && ip route add default via 198.18.52.1'
  links:
    - endpoints: ["r1:eth1", "r2:eth1"]
    - endpoints: ["r1:eth2", "h1:eth1"]
    - endpoints: ["r2:eth2", "h2:eth1"]
"""
FRR = """\
frr defaults datacenter
hostname {name}
router bgp {asn}
 no bgp ebgp-requires-policy
 neighbor {peer} remote-as {peer_as}
 neighbor {peer} timers connect 1
 address-family ipv4 unicast
  redistribute connected
 exit-address-family
"""


def test_a_topology_written_for_containerlab_runs_unchanged(tmp_path):
    d = tmp_path / "foreign"
    (d / "frr").mkdir(parents=True)
    (d / "foreign.clab.yml").write_text(FOREIGN)
    (d / "frr" / "daemons").write_text("bgpd=yes\nbfdd=no\nvtysh_enable=yes\n")
    (d / "frr" / "r1.conf").write_text(FRR.format(name="r1", asn=65201, peer="198.18.50.1", peer_as=65202))
    (d / "frr" / "r2.conf").write_text(FRR.format(name="r2", asn=65202, peer="198.18.50.0", peer_as=65201))
    with running(d / "foreign.clab.yml", f"t{os.getpid() % 10000}frn") as r:
        _check(r, 60)  # both FRR sessions Established
        h1 = f"clab-{r.name}-h1"
        deadline = time.monotonic() + 30
        while subprocess.run(["ip", "netns", "exec", h1, "ping", "-c1", "-W1", "198.18.52.10"],
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "h1 never reached h2 through the two FRR routers"


def test_unsupported_topology_fails_before_creating_anything(tmp_path):
    p = tmp_path / "bad.clab.yml"
    p.write_text("name: bad\ntopology:\n  nodes:\n    a: {kind: nokia_srlinux}\n    b: {kind: linux, exec: ['ip addr add 10.1.1.1/24 dev eth1']}\n")  # refused on purpose
    res = lab("up", str(p), "--run-dir", str(tmp_path / "run"), check=False)
    assert res.returncode == 2
    assert "nokia_srlinux" in res.stderr and "10.1.1.1/24" in res.stderr
    assert not (tmp_path / "run").exists()


def test_down_after_a_crashed_up_removes_everything(tmp_path):
    name = f"t{os.getpid() % 10000}crash"
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "calico_bgp", "lab", "up", str(CLAB / "mesh.clab.yml"), "--name", name,
                             "--run-dir", str(run_dir)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stdout:  # crash in the middle: once the agents are being started
        if "agent" in line and "started" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = Leftovers(name, run_dir)
    assert left.find(), "the crash came too late to leave anything"
    lab("down", "--run-dir", str(run_dir), timeout=120)
    deadline = time.monotonic() + 10
    while left.find() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left.find() == []
