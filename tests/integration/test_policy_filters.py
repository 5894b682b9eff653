"""Policy filters with real traffic between two namespaces, in every enforcement mode.

A sender namespace holds several source addresses on its veth; the receiver namespace runs the
filter on the other end. The same tests run with XDP, nftables and iptables+ipset.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import attrs
import pytest

from dataplane.filters.engine import FilterEngine, UnknownInterface
from dataplane.filters.rules import (
    FAILSAFE_RULE,
    Action,
    FilterRule,
    FilterSet,
    InvalidFilter,
    PortRange,
    RuleId,
    compile_interface,
    default_failsafe,
    parse_network,
)
from dataplane.filters.xdp import bpf
from dataplane.filters.xdp import loader as xdp_loader
from lab.net import netns, sh, unique, veth
from tests.marks import needs_root, not_applicable

ROOT = Path(__file__).resolve().parents[2]
OBJ = ROOT / "dataplane" / "filters" / "xdp" / "filter.o"
A, D, E = "198.18.10.2", "198.18.10.3", "198.18.10.4"          # allowed, denied, denied
A6, D6 = "2001:db8:10::2", "2001:db8:10::3"
DST, DST6 = "198.18.10.1", "2001:db8:10::1"
IFACE = "rcv0"

pytestmark = [needs_root, pytest.mark.root]


def _skip_reason(mode: str) -> str | None:
    if mode == "xdp" and not OBJ.exists():
        return f"{OBJ} is missing: build it with `make -C dataplane/filters/xdp` (bootstrap.sh does)"
    if mode == "nft" and not shutil.which("nft"):
        return "nft is not installed"
    if mode == "iptables" and not (shutil.which("iptables") and shutil.which("ipset")):
        return "iptables/ipset are not installed"
    return None


@attrs.define
class Lab:
    mode: str
    snd: str
    rcv: str
    pin_root: Path
    state_dir: Path
    engine: FilterEngine

    def new_engine(self) -> FilterEngine:
        return FilterEngine(self.mode, netns=self.rcv, pin_root=self.pin_root, state_dir=self.state_dir)

    def ping(self, src: str, count: int = 2) -> bool:
        dst = DST6 if ":" in src else DST
        r = sh("ping", "-c", str(count), "-i", "0.2", "-W", "1", "-I", src, dst, ns=self.snd, check=False)
        return r.returncode == 0

    def connect(self, src: str, port: int) -> bool:
        dst = DST6 if ":" in src else DST
        r = subprocess.run(["ip", "netns", "exec", self.snd, sys.executable, "-m", "tests.integration.traffic",
                            "connect", src, dst, str(port), "1.5"], cwd=ROOT, capture_output=True)
        return r.returncode == 0

    def counter(self, rule: RuleId, engine: FilterEngine | None = None) -> int:
        return sum(c.packets for c in (engine or self.engine).counters() if c.rule_id == rule and c.interface == IFACE)


@pytest.fixture(params=["xdp", "nft", "iptables"])
def lab(request, tmp_path) -> Iterator[Lab]:
    mode = request.param
    reason = _skip_reason(mode)
    if reason:
        pytest.skip(reason)
    pin_root = Path("/run/calico-bgp-test") / unique("pin")
    with netns("s") as snd, netns("r") as rcv:
        veth(snd, "snd0", rcv, IFACE,
             addrs_a=(f"{A}/24", f"{D}/24", f"{E}/24", f"{A6}/64", f"{D6}/64"),
             addrs_b=(f"{DST}/24", f"{DST6}/64"))
        engine = FilterEngine(mode, netns=rcv, pin_root=pin_root, state_dir=tmp_path / "state")
        try:
            yield Lab(mode, snd, rcv, pin_root, tmp_path / "state", engine)
        finally:
            with contextlib.suppress(Exception):
                engine.remove()
            with contextlib.suppress(OSError):
                if pin_root.exists() and xdp_loader._fs_type(pin_root) == xdp_loader.BPF_FS_MAGIC:
                    xdp_loader.unmount_bpffs(pin_root)
            with contextlib.suppress(OSError):
                pin_root.rmdir()
                pin_root.parent.rmdir()   # only when no other test's pins are there


def rules(spec: list[tuple], name: str = "f") -> list[FilterRule]:
    out = []
    for i, item in enumerate(spec):
        net, action, *rest = item
        proto = rest[0] if rest else None
        ports = tuple(PortRange.parse(p) for p in rest[1]) if len(rest) > 1 else ()
        out.append(FilterRule(parse_network(net), Action(action), RuleId(name, i), proto, ports))
    return out


def filterset(spec: list[tuple], name: str = "f") -> FilterSet:
    return FilterSet((compile_interface(IFACE, rules(spec, name), default_failsafe()),))


BASE = [("198.18.10.0/24", "Deny"), (f"{A}/32", "Allow"), ("2001:db8:10::/64", "Deny"), (f"{A6}/128", "Allow")]


@contextlib.contextmanager
def listener(lab: Lab, port: int) -> Iterator[None]:
    p = subprocess.Popen(["ip", "netns", "exec", lab.rcv, sys.executable, "-m", "tests.integration.traffic",
                          "listen", str(port)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        yield
    finally:
        p.kill()
        p.wait()


def test_deny_allow_failsafe_and_removal(lab: Lab):
    assert lab.ping(D) and lab.ping(D6)          # no filter yet
    mode = lab.engine.apply(filterset(BASE))
    assert mode == lab.mode == lab.engine.mode

    assert lab.ping(A) and lab.ping(A6)
    assert not lab.ping(D, count=3) and not lab.ping(E, count=1)
    assert not lab.ping(D6, count=3)
    assert lab.counter(RuleId("f", 0)) >= 4       # 3 from D + 1 from E
    assert lab.counter(RuleId("f", 2)) >= 3
    assert lab.counter(RuleId("f", 1)) >= 2       # the Allow counts what it passes
    deny = next(c for c in lab.engine.counters() if c.rule_id == RuleId("f", 0))
    assert deny.bytes == 84 * deny.packets        # L3 bytes (a default ping is 84) in every mode

    with listener(lab, 179), listener(lab, 8080):
        before = lab.counter(FAILSAFE_RULE)
        assert lab.connect(D, 179) and lab.connect(D6, 179)      # failsafe: BGP reaches us
        assert lab.counter(FAILSAFE_RULE) > before
        assert not lab.connect(D, 8080) and not lab.connect(D6, 8080)
        assert lab.connect(A, 8080) and lab.connect(A6, 8080)

    lab.engine.apply(FilterSet())
    assert lab.engine.mode is None
    assert lab.ping(D) and lab.ping(D6)
    assert lab.engine.counters() == []


def test_deny_everything_but_what_is_allowed(lab: Lab):
    """A /0 alone in a set: ipset's hash:net cannot hold a zero-length prefix (iptables mode)."""
    lab.engine.apply(filterset([("0.0.0.0/0", "Deny"), (f"{A}/32", "Allow"), ("::/0", "Deny")]))
    assert lab.engine.mode == lab.mode
    assert lab.ping(A)
    assert not lab.ping(D, count=1) and not lab.ping(A6, count=1) and not lab.ping(D6, count=1)


def test_port_exception(lab: Lab):
    lab.engine.apply(filterset(BASE + [("198.18.10.0/24", "Allow", 6, (8080,)), ("2001:db8:10::/64", "Allow", 6, ("8000:8090",))]))
    with listener(lab, 8080), listener(lab, 8081):
        assert lab.connect(D, 8080) and lab.connect(D6, 8080)
        assert not lab.connect(D, 8081)
        assert lab.connect(D6, 8081)
    assert lab.counter(RuleId("f", 4)) >= 2 and lab.counter(RuleId("f", 5)) >= 4
    assert not lab.ping(D, count=1)


def test_bad_input_leaves_the_programmed_filter(lab: Lab):
    lab.engine.apply(filterset(BASE))
    with pytest.raises(InvalidFilter):
        filterset(BASE + [("198.18.10.300/32", "Deny")])
    with pytest.raises(UnknownInterface):
        lab.engine.apply(FilterSet((compile_interface("nosuch0", rules(BASE)),)))
    assert not lab.ping(D, count=1) and lab.ping(A)
    assert lab.engine.mode == lab.mode


# -- no window: continuous traffic through 100 updates and a restart --------------------------

VARIANTS = [
    BASE,
    [("198.18.0.0/16", "Deny"), ("198.18.10.0/30", "Allow"), (f"{D}/32", "Deny"),
     ("2001:db8::/32", "Deny"), ("2001:db8:10::/126", "Allow"), (f"{D6}/128", "Deny")],
    [("198.18.0.0/15", "Allow"), (f"{D}/32", "Deny"), ("2001:db8::/32", "Allow"), (f"{D6}/128", "Deny")],
    [("198.18.10.0/25", "Deny"), ("198.18.10.2/31", "Allow"), (f"{D}/32", "Deny"), ("198.18.10.0/24", "Allow"),
     ("198.18.10.0/25", "Allow", 6, (443,)), ("2001:db8:10::/120", "Deny"), ("2001:db8:10::2/127", "Allow"),
     (f"{D6}/128", "Deny")],
]


def variant(i: int) -> FilterSet:
    spec = list(VARIANTS[i % len(VARIANTS)])
    spec += [(f"198.19.{(i * 7 + k) % 250}.0/24", "Deny") for k in range(i % 13)]
    spec += [(f"2001:db8:{0x100 + (i * 5 + k) % 200:x}::/48", "Deny") for k in range(i % 7)]
    fs = filterset(spec, name=f"v{i % len(VARIANTS)}")
    f = fs.interfaces[0]
    for src in (A, A6):
        assert f.decide(src, 17, 5000).passed, (i, src)
    for src in (D, D6):
        assert not f.decide(src, 17, 5000).passed, (i, src)
    return fs


def _spawn(ns: str, *args: str) -> subprocess.Popen:
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "tests.integration.traffic", *args],
                         cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def _stop(p: subprocess.Popen) -> dict:
    p.terminate()
    out, _ = p.communicate(timeout=10)
    return json.loads(out.strip().splitlines()[-1])


UPDATES = 40  # every variant 10 times, every count of extra Deny rules (i % 13, i % 7) 3 times or more


def test_no_window_during_updates_and_restart(lab: Lab):
    """Allowed traffic at 1,000 packets/s loses nothing and denied traffic never passes while the
    filters are replaced UPDATES times and then by a restarted engine. A window opened by an update
    shows within an update or two at that rate; more updates repeat the same transitions."""
    lab.engine.apply(variant(0))
    sink = _spawn(lab.rcv, "sink", "5000")
    senders = {}
    try:
        for src in (A, D, A6, D6):
            senders[src] = _spawn(lab.snd, "send", src, DST6 if ":" in src else DST, "5000", "1000")
        time.sleep(0.2)
        took, timeline = [], []
        for i in range(1, UPDATES + 1):
            t0 = time.monotonic()
            lab.engine.apply(variant(i))
            took.append(time.monotonic() - t0)
            timeline.append((i, round(t0, 3), round(took[-1], 3)))
        prog_before = _prog_id(lab)
        restarted = lab.new_engine()         # the agent restarts: a new engine on the same pins/state
        assert restarted.mode == lab.mode
        restarted.apply(variant(UPDATES))
        assert _prog_id(lab) == prog_before   # XDP: the pinned program was re-used, not reloaded
        for i in range(UPDATES + 1, UPDATES + 6):
            restarted.apply(variant(i))
        lab.engine = restarted
        time.sleep(0.2)
    finally:
        stopped = {src: _stop(p) for src, p in senders.items()}
        sent = {src: r["sent"] for src, r in stopped.items()}
        starts = {src: r["start"] for src, r in stopped.items()}
        time.sleep(0.3)
        out = _stop(sink)
    got = out["counts"]
    print(f"mode={lab.mode} updates={UPDATES + 5} apply_median_ms={sorted(took)[UPDATES // 2] * 1000:.1f} sent={sent} got={got}")
    if any(got.get(src) for src in (D, D6)):
        print("denied seqs", {s: out["seqs"].get(s) for s in (D, D6)}, "starts", starts, "timeline", timeline)
    for src in (A, A6):
        assert sent[src] > 1000
        assert got.get(src, 0) == sent[src], f"lost {sent[src] - got.get(src, 0)} packets from allowed {src}"
    for src in (D, D6):
        assert got.get(src, 0) == 0, f"{got[src]} packets from denied {src} passed"


def _prog_id(lab: Lab) -> int | None:
    if lab.mode != "xdp":
        return None
    att = xdp_loader.XdpLoader(lab.pin_root, netns=lab.rcv).attached(IFACE)
    return att.prog_id if att else None


# -- XDP ownership ----------------------------------------------------------------------------

FOREIGN = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int someone_else(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] SEC("license") = "GPL";
"""


def test_foreign_xdp_program_is_never_replaced_or_removed(lab: Lab, tmp_path):
    if lab.mode != "xdp":
        not_applicable("XDP ownership only")
    if not shutil.which("clang"):
        pytest.skip("clang is not installed")
    src = tmp_path / "foreign.c"
    src.write_text(FOREIGN)
    obj = tmp_path / "foreign.o"
    inc = [f"-I/usr/include/{os.uname().machine}-linux-gnu"]
    subprocess.run(["clang", "-O2", "-target", "bpf", *inc, "-c", str(src), "-o", str(obj)], check=True)
    sh("ip", "link", "set", "dev", IFACE, "xdpgeneric", "obj", str(obj), "sec", "xdp", ns=lab.rcv)
    foreign = _prog_id(lab)
    assert foreign
    from dataplane.filters.xdp.loader import ForeignProgram
    with pytest.raises(ForeignProgram):
        lab.engine.apply(filterset(BASE))
    assert _prog_id(lab) == foreign
    # auto mode falls back to nftables instead, and leaves the foreign program alone
    if shutil.which("nft"):
        auto = FilterEngine("auto", netns=lab.rcv, pin_root=lab.pin_root, state_dir=lab.state_dir / "auto")
        try:
            assert auto.apply(filterset(BASE)) == "nft"
            assert not lab.ping(D, count=1) and lab.ping(A)
            auto.apply(FilterSet())
        finally:
            auto.remove()
    lab.engine.remove()
    assert _prog_id(lab) == foreign
    sh("ip", "link", "set", "dev", IFACE, "xdpgeneric", "off", ns=lab.rcv)


def test_policy_show_reads_the_local_dataplane(lab: Lab):
    from click.testing import CliRunner

    from calico_bgp.cli import main

    lab.engine.apply(filterset(BASE))
    assert not lab.ping(D, count=2)
    args = ["policy", "show", "--netns", lab.rcv, "--state-dir", str(lab.state_dir), "--pin-root", str(lab.pin_root)]
    r = CliRunner().invoke(main, [*args, "-o", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["mode"] == lab.mode
    rows = {(c["filter"], c["rule"]): c for c in doc["counters"]}
    assert rows[("f", 0)]["packets"] >= 2 and rows[("f", 0)]["action"] == "Deny"
    assert rows[("", "failsafe")]["interface"] == IFACE
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and f"mode: {lab.mode}" in r.output and "INTERFACE" in r.output


def test_xdp_upgrade_swaps_the_program_keeps_maps_and_counters(lab: Lab, tmp_path):
    if lab.mode != "xdp":
        not_applicable("XDP only")
    lab.engine.apply(variant(0))
    assert not lab.ping(D, count=2)
    before = lab.counter(RuleId("v0", 0))
    old_prog = _prog_id(lab)
    newer = tmp_path / "filter-newer.o"   # another build: another program name, same maps
    subprocess.run(["make", "-s", "-C", str(OBJ.parent), f"OUT={newer}", "BUILD_ID=0000upgrade"], check=True)
    sink = _spawn(lab.rcv, "sink", "5000")
    senders = {src: _spawn(lab.snd, "send", src, DST6 if ":" in src else DST, "5000", "1000") for src in (A, D)}
    try:
        time.sleep(0.3)
        upgraded = FilterEngine("xdp", netns=lab.rcv, pin_root=lab.pin_root, state_dir=lab.state_dir, obj_path=newer)
        upgraded.apply(variant(0))
        time.sleep(0.3)
    finally:
        sent = {src: _stop(p)["sent"] for src, p in senders.items()}
        time.sleep(0.3)
        got = _stop(sink)["counts"]
    assert _prog_id(lab) not in (None, old_prog)
    fd = bpf.prog_fd_by_id(_prog_id(lab))
    try:
        assert bpf.prog_info(fd).name == "cbf_0000upgrade"   # the new build's program is the one attached
    finally:
        os.close(fd)
    assert got.get(A, 0) == sent[A] and got.get(D, 0) == 0
    assert lab.counter(RuleId("v0", 0), upgraded) >= before + sent[D]   # same maps: the count went on


def test_reapply_repairs_state_changed_behind_its_back(lab: Lab):
    fs = filterset(BASE)
    lab.engine.apply(fs)
    assert not lab.ping(D, count=1)
    if lab.mode == "xdp":
        sh("ip", "link", "set", "dev", IFACE, "xdp", "off", ns=lab.rcv)
    elif lab.mode == "nft":
        sh("nft", "delete", "table", "inet", "calico_bgp_filter", ns=lab.rcv)
    else:
        sh("iptables", "-t", "raw", "-D", "PREROUTING", "-j", "CBF-PRE", ns=lab.rcv)
        for name in sh("ipset", "list", "-n", ns=lab.rcv).stdout.split():
            sh("ipset", "flush", name, ns=lab.rcv)
    assert lab.ping(D, count=1)
    lab.engine.apply(fs)
    assert not lab.ping(D, count=1) and lab.ping(A, count=1)


def test_filters_follow_their_interfaces(lab: Lab):
    veth(lab.snd, "snd1", lab.rcv, "rcv1", addrs_a=("198.18.11.3/24",), addrs_b=("198.18.11.1/24",))

    def ping1() -> bool:
        return sh("ping", "-c", "1", "-W", "1", "-I", "198.18.11.3", "198.18.11.1", ns=lab.snd, check=False).returncode == 0

    spec = rules([("198.18.0.0/15", "Deny")])
    on = {name: compile_interface(name, spec, default_failsafe()) for name in (IFACE, "rcv1")}
    lab.engine.apply(FilterSet((on[IFACE],)))
    assert not lab.ping(D, count=1) and ping1()
    lab.engine.apply(FilterSet((on["rcv1"],)))          # moved: off rcv0, on rcv1
    assert lab.ping(D, count=1) and not ping1()
    lab.engine.apply(FilterSet((on[IFACE], on["rcv1"])))
    assert not lab.ping(D, count=1) and not ping1()
    assert {c.interface for c in lab.engine.counters()} == {IFACE, "rcv1"}
    assert sorted(lab.engine.programmed()) == [IFACE, "rcv1"]


@pytest.mark.parametrize("lab", ["iptables"], indirect=True)
def test_a_mode_left_behind_by_a_crash_is_removed_by_the_next_agent(lab: Lab):
    """An agent crashed mid-switch: nft enforces, the state file names nothing. The next agent's
    engine (iptables here) must not leave the old nft table dropping by rules nobody updates."""
    if not shutil.which("nft"):
        pytest.skip("nft is not installed")
    old = FilterEngine("nft", netns=lab.rcv, pin_root=lab.pin_root, state_dir=lab.state_dir / "old")
    old.apply(filterset(BASE))
    assert "calico_bgp_filter" in sh("nft", "list", "tables", ns=lab.rcv).stdout
    lab.engine.apply(filterset([("198.18.10.0/24", "Deny"), (f"{A}/32", "Allow"), (f"{D}/32", "Allow")]))
    assert "calico_bgp_filter" not in sh("nft", "list", "tables", ns=lab.rcv).stdout
    assert lab.ping(D) and not lab.ping(E, count=1)  # D allowed now: nothing else drops it
