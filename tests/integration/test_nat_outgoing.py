"""IPPool natOutgoing with real traffic through a node namespace, in nftables and in iptables + ipset.

    workload ns  198.19.50.2 / 2001:db8:50::2 (in the natOutgoing pool)
        | veth
    node ns      198.19.50.1 / 2001:db8:50::1, forwarding; NatEngine runs here
        | veth   198.18.70.1 / 2001:db8:70::1
    far ns       198.18.70.2 / 2001:db8:70::2 (in no pool), and 198.19.60.2 / 2001:db8:60::2 (in
                 another pool, which does not masquerade)

A UDP sink in the far namespace records the source address of what it receives: the node's address
for traffic to an address in no pool, the workload's own for traffic to another pool (felix's
cali-nat-outgoing rule: source in a masquerade pool, destination in no pool).
"""
from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import attrs
import pytest

from calico_bgp.resources import model
from calico_bgp.resources.ippool import IPPool
from calico_bgp.routing.nat_outgoing import nat_set
from dataplane.nat import ipt as nat_ipt
from dataplane.nat import nft as nat_nft
from dataplane.nat.engine import NatEngine
from dataplane.nat.rules import NatSet
from lab.net import netns, sh, veth, wait_for
from tests.marks import needs_root

ROOT = Path(__file__).resolve().parents[2]
W4, W6 = "198.19.50.2", "2001:db8:50::2"            # the workload, in the natOutgoing pool
N4, N6 = "198.18.70.1", "2001:db8:70::1"            # the node's address towards the far side
FAR4, FAR6 = "198.18.70.2", "2001:db8:70::2"        # in no pool
OTHER4, OTHER6 = "198.19.60.2", "2001:db8:60::2"    # in a pool without natOutgoing
PORT = 5599

pytestmark = [needs_root, pytest.mark.root]


def pool(name: str, cidr: str, nat: bool, **spec) -> IPPool:
    return model.from_dict(IPPool, {"metadata": {"name": name}, "spec": {"cidr": cidr, "natOutgoing": nat, **spec}},
                           where=name)


POOLS = [pool("masq", "198.19.50.0/24", True), pool("masq6", "2001:db8:50::/64", True),
         pool("plain", "198.19.60.0/24", False), pool("plain6", "2001:db8:60::/64", False)]


def _skip_reason(mode: str) -> str | None:
    if mode == "nft" and not shutil.which("nft"):
        return "nft is not installed"
    if mode == "iptables" and not (shutil.which("iptables") and shutil.which("ipset")):
        return "iptables/ipset are not installed"
    return None


def sources_seen(src_ns: str, src: str, dst_ns: str, dst: str, port: int = PORT) -> set[str]:
    """The source addresses a UDP sink in `dst_ns` sees for a fifth of a second of datagrams (about
    ten) sent from `src` in `src_ns` to `dst` (tests/integration/traffic.py's sink and send). One flow:
    conntrack gives every datagram of it the same source, so more would only repeat it; none at all
    is an empty set, which no assertion takes for an answer."""
    sink = subprocess.Popen(["ip", "netns", "exec", dst_ns, sys.executable, "-m", "tests.integration.traffic",
                             "sink", str(port)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        send = subprocess.Popen(["ip", "netns", "exec", src_ns, sys.executable, "-m", "tests.integration.traffic",
                                 "send", src, dst, str(port), "50"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            assert send.stdout is not None and send.stdout.readline().strip() == "ready"
            with contextlib.suppress(subprocess.TimeoutExpired):
                send.wait(0.2)
        finally:
            send.send_signal(signal.SIGTERM)
            send.communicate(timeout=10)
        sink.send_signal(signal.SIGTERM)
        out, _ = sink.communicate(timeout=10)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    return set(json.loads(out.strip().splitlines()[-1])["counts"])


@attrs.define
class Lab:
    mode: str
    wl: str
    node: str
    far: str
    engine: NatEngine

    def sources(self, dst: str) -> set[str]:
        """The source addresses the far side sees for a burst of UDP from the workload to `dst`."""
        return sources_seen(self.wl, W6 if ":" in dst else W4, self.far, dst)

    def pings(self, dst: str) -> bool:
        return sh("ping", "-c", "1", "-W", "2", dst, ns=self.wl, check=False).returncode == 0


@pytest.fixture(params=["nft", "iptables"])
def lab(request) -> Iterator[Lab]:
    mode = request.param
    reason = _skip_reason(mode)
    if reason:
        pytest.skip(reason)
    with netns("w") as wl, netns("n") as node, netns("f") as far:
        veth(wl, "eth0", node, "wl0", addrs_a=(f"{W4}/24", f"{W6}/64"),
             addrs_b=("198.19.50.1/24", "2001:db8:50::1/64"))
        veth(node, "up0", far, "eth0", addrs_a=(f"{N4}/24", f"{N6}/64"), addrs_b=(f"{FAR4}/24", f"{FAR6}/64"))
        sh("ip", "addr", "add", f"{OTHER4}/32", "dev", "lo", ns=far)
        sh("ip", "addr", "add", f"{OTHER6}/128", "dev", "lo", "nodad", ns=far)
        sh("ip", "route", "add", "default", "via", "198.19.50.1", ns=wl)
        sh("ip", "-6", "route", "add", "default", "via", "2001:db8:50::1", ns=wl)
        sh("ip", "route", "add", "198.19.60.0/24", "via", FAR4, ns=node)
        sh("ip", "-6", "route", "add", "2001:db8:60::/64", "via", FAR6, ns=node)
        sh("ip", "route", "add", "198.19.50.0/24", "via", N4, ns=far)      # un-NATed replies find their way
        sh("ip", "-6", "route", "add", "2001:db8:50::/64", "via", N6, ns=far)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", ns=node)
        engine = NatEngine(netns=node)
        lab = Lab(mode, wl, node, far, engine)
        for dst in (FAR4, FAR6, OTHER4, OTHER6):  # neighbour discovery done (link-local DAD) before counting
            wait_for(f"{dst} answering the workload", lambda dst=dst: lab.pings(dst), timeout=15)
        try:
            yield lab
        finally:
            with contextlib.suppress(Exception):
                engine.remove()


def test_out_of_every_pool_leaves_with_the_node_address_and_other_pools_keep_theirs(lab: Lab):
    assert lab.sources(FAR4) == {W4} and lab.sources(FAR6) == {W6}   # no NAT yet
    assert lab.engine.apply(nat_set(POOLS), prefer=lab.mode) is True
    assert lab.engine.mode == lab.mode
    assert lab.sources(FAR4) == {N4}
    assert lab.sources(FAR6) == {N6}
    assert lab.sources(OTHER4) == {W4}          # another pool: not NATed
    assert lab.sources(OTHER6) == {W6}
    # the far side has no route back to the workload's pool now; the NATed ping is answered anyway
    sh("ip", "route", "del", "198.19.50.0/24", ns=lab.far)
    assert lab.pings(FAR4)
    assert not lab.pings(OTHER4)                # not NATed: its reply has no way back
    counters = lab.engine.counters()
    assert counters.get(4, 0) >= 2 and counters.get(6, 0) >= 1


def test_idempotent_repaired_and_removed(lab: Lab):
    nat = nat_set(POOLS)
    assert lab.engine.apply(nat, prefer=lab.mode) is True
    assert lab.engine.apply(nat, prefer=lab.mode) is False        # nothing to change
    # behind our back: the rule (nft: the whole chain; iptables: the hook) and a set's member
    if lab.mode == "nft":
        sh("nft", "delete", "chain", "inet", nat_nft.TABLE, nat_nft.CHAIN, ns=lab.node)
    else:
        sh("iptables", "-t", "nat", "-D", "POSTROUTING", "-j", nat_ipt.CHAIN, ns=lab.node)
    assert lab.sources(FAR4) == {W4}
    assert lab.engine.apply(nat, prefer=lab.mode) is True         # repaired
    assert lab.sources(FAR4) == {N4}
    if lab.mode == "nft":
        sh("nft", "delete", "element", "inet", nat_nft.TABLE, "masq4", "{ 198.19.50.0/24 }", ns=lab.node)
    else:
        sh("ipset", "del", "cbn-masq-4", "198.19.50.0/24", ns=lab.node)
    assert lab.sources(FAR4) == {W4}
    assert lab.engine.apply(nat, prefer=lab.mode) is True
    assert lab.sources(FAR4) == {N4}

    if lab.mode == "nft":  # a set of ours remade with other flags: nft cannot change it in place
        script = (f"flush chain inet {nat_nft.TABLE} {nat_nft.CHAIN}\ndelete set inet {nat_nft.TABLE} pools4\n"
                  f"add set inet {nat_nft.TABLE} pools4 {{ type ipv4_addr; }}\n")
        subprocess.run(["ip", "netns", "exec", lab.node, "nft", "-f", "-"], input=script, text=True, check=True)
    else:  # a set of ours remade as another type: ipset cannot swap it
        sh("iptables", "-t", "nat", "-F", nat_ipt.CHAIN, ns=lab.node)
        sh("ipset", "destroy", "cbn-pools-4", ns=lab.node)
        sh("ipset", "create", "cbn-pools-4", "hash:ip", ns=lab.node)
    assert lab.sources(FAR4) == {W4}
    assert lab.engine.apply(nat, prefer=lab.mode) is True
    assert lab.sources(FAR4) == {N4}

    # natOutgoing false on the v4 pool: v4 goes out as it is, v6 still masqueraded
    v6_only = nat_set([pool("masq", "198.19.50.0/24", False), *POOLS[1:]])
    assert v6_only.versions == (6,)
    assert lab.engine.apply(v6_only, prefer=lab.mode) is True
    assert lab.sources(FAR4) == {W4} and lab.sources(FAR6) == {N6}
    # no pool asks any more (pools deleted): nothing of ours is left in either tool
    assert lab.engine.apply(nat_set(POOLS[2:]), prefer=lab.mode) is True
    assert lab.engine.mode is None
    assert lab.sources(FAR6) == {W6}
    assert not nat_nft.NftNat(lab.node).state().exists if shutil.which("nft") else True
    ipt_state = nat_ipt.IptNat(lab.node).state()
    assert ipt_state == nat_ipt.IptNatState()


def test_a_mode_change_moves_the_nat_without_leaving_the_old_one(lab: Lab):
    other = "iptables" if lab.mode == "nft" else "nft"
    if _skip_reason(other):
        pytest.skip(_skip_reason(other))
    nat = nat_set(POOLS)
    lab.engine.apply(nat, prefer=lab.mode)
    assert lab.engine.apply(nat, prefer=other) is True       # the filters moved to the other tool (or XDP)
    assert lab.engine.mode == other
    assert lab.sources(FAR4) == {N4}
    if other == "nft":
        assert nat_ipt.IptNat(lab.node).state() == nat_ipt.IptNatState()
    else:
        assert not nat_nft.NftNat(lab.node).state().exists
    # a new engine (an agent restart) keeps what is there and cleans the other tool once
    again = NatEngine(netns=lab.node)
    assert again.apply(nat, prefer="xdp") is (other != "nft")   # XDP: nftables first
    assert again.mode == "nft"


def test_empty_natset_on_a_clean_node_changes_nothing(lab: Lab):
    assert lab.engine.apply(NatSet(), prefer=lab.mode) is False
    assert lab.engine.mode is None


def test_policy_show_names_the_nat_mode_and_counts_what_it_masqueraded(lab: Lab, tmp_path):
    from click.testing import CliRunner

    from calico_bgp.cli import main

    engine = NatEngine(netns=lab.node, state_dir=tmp_path / "nat")      # as the agent makes it
    args = ["policy", "show", "--netns", lab.node, "--state-dir", str(tmp_path / "filters"),
            "--nat-state-dir", str(tmp_path / "nat")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "nat: none (no pool has natOutgoing)" in r.output, r.output
    try:
        engine.apply(nat_set(POOLS), prefer=lab.mode)
        assert lab.sources(FAR4) == {N4} and lab.sources(FAR6) == {N6}
        r = CliRunner().invoke(main, [*args, "-o", "json"])
        assert r.exit_code == 0, r.output
        nat = json.loads(r.output)["nat"]
        assert nat["mode"] == lab.mode and nat["masqueraded"]["4"] >= 1 and nat["masqueraded"]["6"] >= 1
        r = CliRunner().invoke(main, args)
        assert f"nat: {lab.mode} (connections masqueraded: IPv4 " in r.output
    finally:
        engine.remove()
