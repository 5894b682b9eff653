"""Outgoing NAT with iptables + ipset (hosts without nftables), as felix does it.

    nat POSTROUTING    -j CBN-POSTROUTING                 (inserted once, first)
    CBN-POSTROUTING    -m set --match-set cbn-masq-4 src -m set ! --match-set cbn-pools-4 dst -j MASQUERADE
    ipsets             cbn-masq-4, cbn-pools-4 (hash:net, family inet), cbn-masq-6, cbn-pools-6 (inet6)

felix/rules/nat.go makeNATOutgoingRuleIPTables, with felix's cali40masq-ipam-pools and
cali40all-ipam-pools under our own names. A set's members are replaced atomically (filled under a
temporary name, then `ipset swap`); the chain is rewritten by one `iptables-restore --noflush` per
family. `apply` compares first and writes only what differs, so calling it periodically repairs a
change made behind our back. A family without a natOutgoing pool has no chain, hook or sets.
"""
from __future__ import annotations

import ipaddress
import logging

import attrs

from dataplane.logfmt import event
from dataplane.nat.rules import IPNetwork, NatError, NatSet, collapsed
from dataplane.tool import IptTool

log = logging.getLogger(__name__)

CHAIN = "CBN-POSTROUTING"
HOOK = f"-A POSTROUTING -j {CHAIN}"
COMMENT = "calico-bgp natOutgoing"


def set_names(version: int) -> tuple[str, str]:
    return f"cbn-masq-{version}", f"cbn-pools-{version}"


def rule(version: int) -> str:
    """The rule as iptables-save prints it (so a saved table compares equal to what is wanted)."""
    masq, pools = set_names(version)
    return (f"-A {CHAIN} -m set --match-set {masq} src -m set ! --match-set {pools} dst "
            f'-m comment --comment "{COMMENT}" -j MASQUERADE')


@attrs.frozen
class IptNatState:
    sets: dict[str, tuple[IPNetwork, ...]] = attrs.field(factory=dict)  # our sets -> members, collapsed
    rules: dict[int, tuple[str, ...]] = attrs.field(factory=dict)        # family -> our chain's rules
    hooked: dict[int, bool] = attrs.field(factory=dict)                  # family -> POSTROUTING jumps to it
    chains: frozenset[int] = frozenset()                                 # families where our chain exists


def wanted(nat: NatSet) -> IptNatState:
    sets: dict[str, tuple[IPNetwork, ...]] = {}
    for v in nat.versions:
        masq_name, pools_name = set_names(v)
        sets[masq_name], sets[pools_name] = nat.family(v)
    return IptNatState(sets, {v: (rule(v),) for v in nat.versions}, {v: True for v in nat.versions},
                       frozenset(nat.versions))


def parse_sets(saved: str) -> dict[str, tuple[IPNetwork, ...]]:
    """`ipset save` -> our sets (cbn-*) and their members (pure)."""
    members: dict[str, list[IPNetwork]] = {}
    versions: dict[str, int] = {}
    for line in saved.splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[1].startswith("cbn-"):
            continue
        if parts[0] == "create":
            members.setdefault(parts[1], [])
            versions[parts[1]] = 6 if "inet6" in parts else 4
        elif parts[0] == "add":
            members.setdefault(parts[1], []).append(ipaddress.ip_network(parts[2], strict=False))
    return {name: collapsed(nets, versions.get(name, 4)) for name, nets in members.items()}


def parse_table(saved: str) -> tuple[tuple[str, ...], bool, bool]:
    """`iptables-save -t nat` -> (our chain's rules, POSTROUTING jumps to it, the chain exists)."""
    lines = saved.splitlines()
    return (tuple(ln for ln in lines if ln.startswith(f"-A {CHAIN} ")), HOOK in lines,
            any(ln.startswith(f":{CHAIN} ") for ln in lines))


def ipset_members(net: IPNetwork) -> list[str]:
    """hash:net holds prefixes of length 1 and up: a /0 is stored as its two halves."""
    return [str(h) for h in net.subnets(1)] if net.prefixlen == 0 else [str(net)]


def ipset_script(nat: NatSet, have: dict[str, tuple[IPNetwork, ...]]) -> tuple[list[str], list[str]]:
    """(before the chains are written: each wanted set made or refilled atomically, after: the sets
    no family uses any more destroyed) as `ipset restore` lines (pure)."""
    want = wanted(nat).sets
    before: list[str] = []
    for name, nets in want.items():
        if have.get(name) == nets:
            continue
        fam = "inet6" if name.endswith("-6") else "inet"
        tmp = f"{name}-n"
        before += [f"create {name} hash:net family {fam} -exist", f"create {tmp} hash:net family {fam} -exist",
                   f"flush {tmp}"]
        before += [f"add {tmp} {m} -exist" for n in nets for m in ipset_members(n)]
        before += [f"swap {tmp} {name}", f"destroy {tmp}"]
    after = [f"destroy {name}" for name in sorted(set(have) - set(want))]
    return before, after


def restore_script(version: int, active: bool, hooked: bool, chain: bool) -> str | None:
    """One `iptables-restore --noflush` input for the nat table of one family (pure); None: nothing to do."""
    lines = ["*nat"]
    if active:
        lines += [f":{CHAIN} - [0:0]", rule(version)]   # a declared chain is (re)made empty
        if not hooked:
            lines.append(f"-I POSTROUTING 1 -j {CHAIN}")
    else:
        if hooked:
            lines.append(f"-D POSTROUTING -j {CHAIN}")
        if chain:
            lines += [f"-F {CHAIN}", f"-X {CHAIN}"]
        if len(lines) == 1:
            return None
    return "\n".join([*lines, "COMMIT", ""])


class IptNat(IptTool):
    error = NatError

    def state(self) -> IptNatState:
        sets = parse_sets(self._run([self.ipset, "save"], check=False).stdout)
        rules: dict[int, tuple[str, ...]] = {}
        hooked: dict[int, bool] = {}
        chains: set[int] = set()
        for v in (4, 6):
            r, h, c = parse_table(self._run([f"{self.tools[v]}-save", "-t", "nat"]).stdout)
            if r:
                rules[v] = r
            if h:
                hooked[v] = True
            if c:
                chains.add(v)
        return IptNatState(sets, rules, hooked, frozenset(chains))

    def apply(self, nat: NatSet) -> bool:
        """Program `nat` (an empty one removes everything); True when something had to change."""
        cur = self.state()
        if cur == wanted(nat):
            return False
        try:
            self._write(nat, cur)
        except NatError:
            if not cur.sets and not cur.chains:
                raise
            # something of ours the tools will not change in place (a set remade as another type):
            # our chains and sets removed, then made again
            self._write(NatSet(), cur)
            self._write(nat, IptNatState())
        event(log, "ipt_nat_applied" if not nat.empty else "ipt_nat_removed",
              families=",".join(map(str, nat.versions)) or "-", masquerade=",".join(map(str, nat.masquerade)) or "-")
        return True

    def _write(self, nat: NatSet, cur: IptNatState) -> None:
        before, after = ipset_script(nat, cur.sets)
        if before:
            self._run([self.ipset, "restore"], stdin="\n".join(before) + "\n")
        for v in (4, 6):
            active = v in nat.versions
            if active and cur.rules.get(v) == (rule(v),) and cur.hooked.get(v):
                continue
            script = restore_script(v, active, cur.hooked.get(v, False), v in cur.chains)
            if script:
                self._run([f"{self.tools[v]}-restore", "--noflush"], stdin=script)
        if after:
            self._run([self.ipset, "restore"], stdin="\n".join(after) + "\n")

    def remove(self) -> bool:
        return self.apply(NatSet())

    def counters(self) -> dict[int, int]:
        """Packets masqueraded (the first of each connection) per family."""
        out: dict[int, int] = {}
        for v in (4, 6):
            r = self._run([f"{self.tools[v]}-save", "-t", "nat", "-c"], check=False)
            for line in r.stdout.splitlines():
                if line.startswith("[") and f"-A {CHAIN} " in line:
                    out[v] = out.get(v, 0) + int(line[1:].split(":", 1)[0])
        return out
