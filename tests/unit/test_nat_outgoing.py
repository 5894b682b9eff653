"""IPPool natOutgoing: which pools go in which set (routing/nat_outgoing.py, as felix's masq_mgr.go),
what the nft and iptables backends write and how they read the kernel back (pure parts of
dataplane/nat/), and the agent's reconciler."""
from __future__ import annotations

import ipaddress

import pytest
import trio

from calico_bgp.agent.nat import NatReconciler
from calico_bgp.resources import model
from calico_bgp.resources.ippool import IPPool
from calico_bgp.routing.nat_outgoing import nat_set
from dataplane.nat import ipt, nft
from dataplane.nat.engine import candidates
from dataplane.nat.rules import InvalidNat, NatError, NatSet


def pool(name: str, cidr: str, nat: bool = False, **spec) -> IPPool:
    return model.from_dict(IPPool, {"metadata": {"name": name}, "spec": {"cidr": cidr, "natOutgoing": nat, **spec}},
                           where=name)


def nets(*cidrs: str) -> tuple:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def test_masquerade_pools_and_every_pool_per_family():
    """felix: every pool in all-ipam-pools; natOutgoing ones in masq-ipam-pools too."""
    ns = nat_set([pool("a", "198.19.0.0/24", True), pool("b", "198.19.1.0/24"), pool("c", "2001:db8:5::/64", True),
                  pool("d", "198.18.128.0/20", True)])
    assert ns.masquerade == nets("198.18.128.0/20", "198.19.0.0/24", "2001:db8:5::/64")
    assert ns.pools == nets("198.18.128.0/20", "198.19.0.0/23", "2001:db8:5::/64")   # adjacent ones merged
    assert ns.versions == (4, 6)
    assert ns.family(4) == (nets("198.18.128.0/20", "198.19.0.0/24"), nets("198.18.128.0/20", "198.19.0.0/23"))


def test_a_disabled_pool_still_masquerades_and_no_pool_means_nothing():
    """felix's event sequencer sends every pool's Masquerade flag, disabled or not."""
    ns = nat_set([pool("a", "198.19.0.0/24", True, disabled=True, nodeSelector="rack == 'r1'")])
    assert ns.masquerade == nets("198.19.0.0/24")
    assert nat_set([pool("a", "198.19.0.0/24")]).empty
    assert nat_set([]) == NatSet()
    v6 = nat_set([pool("a", "198.19.0.0/24"), pool("b", "2001:db8::/64", True)])
    assert v6.versions == (6,) and v6.family(4) == ((), ())


def test_a_bad_cidr_is_named():
    with pytest.raises(InvalidNat, match="natOutgoing CIDR '198.19.0.300/24'"):
        NatSet.of(["198.19.0.300/24"], [])


NS = nat_set([pool("a", "198.19.0.0/24", True), pool("b", "198.19.4.0/24"), pool("c", "2001:db8:5::/64", True)])


def test_nft_render_from_nothing_and_its_reading_back():
    script = nft.render(NS, nft.NftNatState())
    assert "add chain inet calico_bgp_nat postrouting { type nat hook postrouting priority 100; policy accept; }" in script
    assert "add element inet calico_bgp_nat masq4 { 198.19.0.0/24 }" in script
    assert "add element inet calico_bgp_nat pools4 { 198.19.0.0/24, 198.19.4.0/24 }" in script
    assert ('add rule inet calico_bgp_nat postrouting ip6 saddr @masq6 ip6 daddr != @pools6 counter masquerade '
            'comment "calico-bgp natOutgoing"') in script
    listed = {"nftables": [
        {"table": {"family": "inet", "name": "calico_bgp_nat"}},
        {"set": {"name": "masq4", "type": "ipv4_addr", "elem": [{"prefix": {"addr": "198.19.0.0", "len": 24}}]}},
        {"set": {"name": "pools4", "type": "ipv4_addr", "elem": [
            {"prefix": {"addr": "198.19.0.0", "len": 24}}, {"range": ["198.19.4.0", "198.19.4.255"]}]}},
        {"set": {"name": "masq6", "type": "ipv6_addr", "elem": [{"prefix": {"addr": "2001:db8:5::", "len": 64}}]}},
        {"set": {"name": "pools6", "type": "ipv6_addr", "elem": [{"prefix": {"addr": "2001:db8:5::", "len": 64}}]}},
        {"chain": {"name": "postrouting", "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
        *({"rule": {"chain": "postrouting", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": p, "field": "saddr"}}, "right": f"@masq{v}"}},
            {"match": {"op": "!=", "left": {"payload": {"protocol": p, "field": "daddr"}}, "right": f"@pools{v}"}},
            {"counter": {"packets": 3, "bytes": 252}}, {"masquerade": None}]}} for p, v in (("ip", 4), ("ip6", 6)))]}
    assert nft.parse_state(listed) == nft.wanted(NS)
    # a rule turned into an accept, a member gone, the chain on another hook: each differs
    accept = {"nftables": [i if "rule" not in i or "ip6" in str(i) else
                           {"rule": {**i["rule"], "expr": i["rule"]["expr"][:3] + [{"accept": None}]}}
                           for i in listed["nftables"]]}
    assert nft.parse_state(accept) != nft.wanted(NS)
    hooked = nft.parse_state({"nftables": [{"chain": {"name": "postrouting", "type": "nat", "hook": "output",
                                                      "prio": 100, "policy": "accept"}}]})
    assert hooked.chain and not hooked.hooked
    assert "delete chain inet calico_bgp_nat postrouting" in nft.render(NS, hooked)


def test_nft_render_drops_the_family_no_pool_masquerades_any_more():
    v4 = nat_set([pool("a", "198.19.0.0/24", True), pool("c", "2001:db8:5::/64")])
    cur = nft.wanted(NS)
    script = nft.render(v4, cur)
    assert "delete set inet calico_bgp_nat masq6" in script and "delete set inet calico_bgp_nat pools6" in script
    assert "add chain" not in script                    # hooked already: not re-registered
    assert script.index("flush chain") < script.index("delete set")


def test_ipt_rule_and_sets_as_the_tools_print_them():
    assert ipt.rule(4) == ('-A CBN-POSTROUTING -m set --match-set cbn-masq-4 src -m set ! --match-set cbn-pools-4 '
                           'dst -m comment --comment "calico-bgp natOutgoing" -j MASQUERADE')
    saved = ("create cbn-masq-4 hash:net family inet hashsize 1024 maxelem 65536\nadd cbn-masq-4 198.19.0.0/24\n"
             "create cbn-pools-6 hash:net family inet6 hashsize 1024 maxelem 65536\nadd cbn-pools-6 2001:db8:5::/64\n"
             "create other hash:ip family inet\nadd other 198.18.0.1\n")
    assert ipt.parse_sets(saved) == {"cbn-masq-4": nets("198.19.0.0/24"), "cbn-pools-6": nets("2001:db8:5::/64")}
    table = f"*nat\n:POSTROUTING ACCEPT [0:0]\n:CBN-POSTROUTING - [0:0]\n{ipt.HOOK}\n{ipt.rule(4)}\nCOMMIT\n"
    assert ipt.parse_table(table) == ((ipt.rule(4),), True, True)


def test_ipt_sets_are_refilled_atomically_and_stale_ones_destroyed():
    before, after = ipt.ipset_script(NS, {"cbn-masq-4": nets("198.19.0.0/24"), "cbn-masq-4-n": (),
                                          "cbn-pools-4": nets("198.19.0.0/24")})
    assert not any("cbn-masq-4 " in line and "swap" in line for line in before)  # unchanged: left alone
    assert before[:3] == ["create cbn-pools-4 hash:net family inet -exist",
                          "create cbn-pools-4-n hash:net family inet -exist", "flush cbn-pools-4-n"]
    assert "add cbn-pools-4-n 198.19.4.0/24 -exist" in before
    assert before[before.index("swap cbn-pools-4-n cbn-pools-4") + 1] == "destroy cbn-pools-4-n"
    assert "create cbn-masq-6 hash:net family inet6 -exist" in before
    assert after == ["destroy cbn-masq-4-n"]   # a temporary set a crash left behind
    assert ipt.ipset_members(ipaddress.ip_network("0.0.0.0/0")) == ["0.0.0.0/1", "128.0.0.0/1"]


def test_ipt_restore_scripts():
    assert ipt.restore_script(4, True, hooked=False, chain=False) == (
        f"*nat\n:CBN-POSTROUTING - [0:0]\n{ipt.rule(4)}\n-I POSTROUTING 1 -j CBN-POSTROUTING\nCOMMIT\n")
    assert "-I POSTROUTING" not in ipt.restore_script(6, True, hooked=True, chain=True)
    assert ipt.restore_script(4, False, hooked=True, chain=True) == (
        "*nat\n-D POSTROUTING -j CBN-POSTROUTING\n-F CBN-POSTROUTING\n-X CBN-POSTROUTING\nCOMMIT\n")
    assert ipt.restore_script(4, False, hooked=False, chain=False) is None


def test_mode_order_follows_the_filters_then_nftables():
    assert candidates("iptables", nft=True, ipt=True) == ["iptables", "nft"]
    assert candidates("nft", nft=True, ipt=True) == ["nft", "iptables"]
    assert candidates("xdp", nft=True, ipt=True) == ["nft", "iptables"]     # XDP cannot rewrite addresses
    assert candidates(None, nft=False, ipt=True) == ["iptables"]
    assert candidates("nft", nft=False, ipt=False) == []


class FakeEngine:
    def __init__(self) -> None:
        self.mode: str | None = None
        self.calls: list[tuple[NatSet, str | None]] = []
        self.kernel = NatSet()
        self.fail: Exception | None = None

    def apply(self, nat: NatSet, prefer: str | None) -> bool:
        self.calls.append((nat, prefer))
        if self.fail:
            raise self.fail
        changed, self.kernel = self.kernel != nat, nat
        self.mode = None if nat.empty else prefer
        return changed


def test_the_reconciler_applies_repairs_and_keeps_what_is_there_on_failure():
    engine = FakeEngine()
    rec = NatReconciler(engine)
    pools = [pool("a", "198.19.0.0/24", True)]

    async def main() -> list:
        out = [await rec.reconcile(pools, "nft"), await rec.reconcile(pools, "nft")]
        engine.kernel = NatSet()                           # flushed behind our back
        out.append(await rec.reconcile(pools, "nft"))
        engine.fail = NatError("nft: boom")
        out.append(await rec.reconcile([], "nft"))
        engine.fail = None
        out += [await rec.reconcile([], "nft"), await rec.reconcile([], "nft")]
        return out

    assert trio.run(main) == ["applied", None, "repaired", None, "applied", None]
    assert rec.last_error is None and engine.kernel.empty
    assert len(engine.calls) == 5     # once removed, an empty NatSet is not looked for again


class FakeBackend:
    def __init__(self, mode: str, log: list) -> None:
        self.mode, self.log = mode, log

    def apply(self, nat: NatSet) -> bool:
        self.log.append((self.mode, "apply"))
        return True

    def remove(self) -> bool:
        self.log.append((self.mode, "remove"))
        return False


def _engine(tmp_path, monkeypatch, log: list):
    from dataplane.nat import engine as nat_engine

    monkeypatch.setattr(nat_engine.NftNat, "available", staticmethod(lambda nft="nft": True))
    monkeypatch.setattr(nat_engine.IptNat, "available", staticmethod(lambda iptables="iptables", ipset="ipset": True))
    e = nat_engine.NatEngine(state_dir=tmp_path)
    e._backends = {m: FakeBackend(m, log) for m in ("nft", "iptables")}
    return e


def test_the_state_dir_spares_a_node_without_nat_every_tool_and_a_restart_the_sweep(tmp_path, monkeypatch):
    log: list = []
    e = _engine(tmp_path, monkeypatch, log)
    assert e.apply(NatSet()) is False and log == []          # never masqueraded: nothing run
    e.apply(NS, prefer="xdp")
    assert log == [("nft", "apply"), ("iptables", "remove")]  # first apply: the other mode swept
    assert (tmp_path / "nat-mode.json").exists()
    log.clear()
    again = _engine(tmp_path, monkeypatch, log)               # a restart, same mode: that mode alone
    assert again.mode == "nft"
    again.apply(NS, prefer="nft")
    assert log == [("nft", "apply")]
    log.clear()
    again.apply(NS, prefer="iptables")                        # the filters moved: NAT follows
    assert log == [("iptables", "apply"), ("nft", "remove")]
    log.clear()
    again.apply(NatSet())
    assert set(log) == {("nft", "remove"), ("iptables", "remove")}
    assert not (tmp_path / "nat-mode.json").exists()


async def test_the_status_document_and_the_metrics_show_the_nat_mode_and_pools(tmp_path):
    """What the agent programs for natOutgoing (as felix's masq_mgr.go: the natOutgoing pools'
    CIDRs) is in `calico-bgp status` and in calico_bgp_nat_mode / calico_bgp_nat_masquerade_cidrs:
    the tool in use, the CIDRs, and a failure while the last programmed NAT stays."""
    import attrs

    from tests.unit.test_agent_wiring import agent, cluster

    a, _ = agent(tmp_path)
    a.nat = NatReconciler(FakeEngine())
    base = cluster()
    state = attrs.evolve(base, pools={"a": pool("a", "198.19.0.0/24", True), "b": pool("b", "198.19.4.0/24"),
                                      "c": pool("c", "2001:db8:5::/64", True)})
    await a.control.sync(state)
    await a.upkeep.nat_once(a.nat, "nft")
    doc = a.build_status()
    assert (doc.nat_mode, doc.nat_masquerade, doc.nat_error) == ("nft", ("198.19.0.0/24", "2001:db8:5::/64"), "")
    reg = a.metrics.registry
    assert reg.get_sample_value("calico_bgp_nat_mode", {"mode": "nft"}) == 1
    assert reg.get_sample_value("calico_bgp_nat_mode", {"mode": "iptables"}) == 0
    assert reg.get_sample_value("calico_bgp_nat_masquerade_cidrs") == 2
    # a failing pass is said, and what is programmed is still shown
    a.nat.engine.fail = NatError("nft: boom")
    await a.control.sync(attrs.evolve(state, pools={"b": state.pools["b"]}))
    await a.upkeep.nat_once(a.nat, "nft")
    doc = a.build_status()
    assert doc.nat_mode == "nft" and doc.nat_error == "NatError: nft: boom"
    # no pool asks: nothing shown
    a.nat.engine.fail = None
    await a.upkeep.nat_once(a.nat, "nft")
    doc = a.build_status()
    assert (doc.nat_mode, doc.nat_masquerade, doc.nat_error) == ("", (), "")
    assert reg.get_sample_value("calico_bgp_nat_mode", {"mode": "nft"}) == 0


def test_calico_bgp_status_names_the_nat_mode_its_pools_and_a_failure(monkeypatch):
    import time

    from click.testing import CliRunner

    from calico_bgp.agent import status as st
    from calico_bgp.cli import status as cli_status
    from calico_bgp.cli.common import Globals

    doc = st.NodeStatus(node="n1", version="v", address="198.18.0.1", asn=64512, router_id="198.18.0.1", role="node",
                        updated=time.time(), started=0.0, nat_mode="iptables",
                        nat_masquerade=("198.19.0.0/24", "2001:db8:5::/64"), nat_error="NatError: ipset: boom")
    monkeypatch.setattr(cli_status, "_statuses", lambda g, node: [doc])
    out = CliRunner().invoke(cli_status.status_cmd, [], obj=Globals([]))
    assert "NAT: iptables (198.19.0.0/24 2001:db8:5::/64), NAT failed: NatError: ipset: boom" in out.output, out.output
    quiet = CliRunner()
    monkeypatch.setattr(cli_status, "_statuses", lambda g, node: [st.NodeStatus(
        node="n1", version="v", address="", asn=1, router_id="", role="node", updated=time.time(), started=0.0)])
    assert "NAT" not in quiet.invoke(cli_status.status_cmd, [], obj=Globals([])).output
