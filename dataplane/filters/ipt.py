"""Enforce a FilterSet with iptables + ipset in the raw table (for hosts without nftables).

    raw PREROUTING  -j CBF-PRE                      (inserted once, first)
    CBF-PRE         -i <if> -g CBF-I-<if>           rewritten on every change
    CBF-I-<if>      [ip6: ICMPv6 ND -j ACCEPT]
                    -m set --match-set cbf-<if>-<v>-<4|6> src -g CBF-C-<if>-<v>   per distinct verdict
    CBF-C-<if>-<v>  exceptions / failsafe / verdict, each jumping to a counter chain; named by content,
                    so it is created once and never rewritten
    CBF-R-<hash>    one rule: `-m comment --comment "<if> <filter> <index> <action>" -j ACCEPT|DROP` — its
                    counter is the rule's counter, untouched by later updates
    CBF-F-<if>      the failsafe counter, -j ACCEPT

The sets hold the compiled entries flattened to disjoint CIDRs, so which set matches first does
not matter. Update order: members are only added to sets (new sets created full), then one
`iptables-restore --noflush` per family rewrites the dispatch chains atomically, then members that
moved are deleted and sets nothing references any more are destroyed.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from typing import Iterable

from dataplane.filters.nft import iface_token
from dataplane.filters.rules import (
    FAILSAFE_RULE,
    EntryAction,
    FilterSet,
    InterfaceFilter,
    RuleCounter,
    RuleId,
    Verdict,
)
from dataplane.logfmt import event
from dataplane.tool import IptTool

log = logging.getLogger(__name__)

_L4 = {6: "tcp", 17: "udp", 132: "sctp"}
_COUNTER_RE = re.compile(r'^\[(\d+):(\d+)\] -A CBF-[RF]-\S+ .*--comment "?([^"]+?)"? -j (ACCEPT|DROP)')


class IptError(RuntimeError):
    """iptables/ipset refused a change or is missing."""


def _h(text: str, n: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def counter_chain(ifname: str, rule_id: RuleId, action: str) -> str:
    if rule_id == FAILSAFE_RULE:
        return f"CBF-F-{iface_token(ifname)}"
    return f"CBF-R-{_h(f'{ifname} {rule_id} {action}', 16)}"


def _multiport(ranges: list[str]) -> list[str]:
    """multiport takes 15 ports per rule, a range counting as two."""
    chunks, cur, weight = [], [], 0
    for r in ranges:
        w = 2 if ":" in r else 1
        if weight + w > 15:
            chunks.append(cur)
            cur, weight = [], 0
        cur.append(r)
        weight += w
    if cur:
        chunks.append(cur)
    return [",".join(c) for c in chunks]


class Plan:
    """What one FilterSet needs, per family: chains with their rules, counter chains, sets."""

    def __init__(self, fs: FilterSet, version: int) -> None:
        self.version = version
        self.dispatch: dict[str, list[str]] = {}        # CBF-I-<tok> -> rules
        self.verdict_chains: dict[str, list[str]] = {}  # CBF-C-... -> rules
        self.counter_chains: dict[str, str] = {}        # CBF-R/F-... -> the single rule
        self.sets: dict[str, list[str]] = {}            # ipset name -> CIDRs
        self.pre: list[str] = []
        for f in fs.interfaces:
            self._interface(f)

    def _counter(self, f: InterfaceFilter, rule_id: RuleId, action: str) -> str:
        chain = counter_chain(f.interface, rule_id, action)
        self.counter_chains[chain] = (f'-m comment --comment "{f.interface} {rule_id.filter} {rule_id.index} {action}" '
                                      f'-j {"DROP" if action == "Deny" else "ACCEPT"}')
        return chain

    def _verdict(self, f: InterfaceFilter, v: Verdict) -> list[str]:
        rules: list[str] = []
        for e in v.exceptions:
            target = self._counter(f, e.rule_id, "Allow")
            if e.ports:
                ports = [str(r.first) if r.first == r.last else f"{r.first}:{r.last}" for r in e.ports]
                rules += [f"-p {_L4[e.protocol]} -m multiport --dports {c} -j {target}" for c in _multiport(ports)]
            else:
                rules.append(f"-p {e.protocol} -j {target}")
        if v.action is EntryAction.DENY:
            fs_chain = self._counter(f, FAILSAFE_RULE, "Allow")
            for proto, name in _L4.items():
                ports = [str(p.port) for p in f.failsafe if p.protocol == proto]
                rules += [f"-p {name} -m multiport --dports {c} -j {fs_chain}" for c in _multiport(ports)]
            rules.append(f"-j {self._counter(f, v.rule_id, 'Deny')}")
        elif v.action is EntryAction.ALLOW:
            rules.append(f"-j {self._counter(f, v.rule_id, 'Allow')}")
        else:
            rules.append("-j ACCEPT")
        return rules

    def _interface(self, f: InterfaceFilter) -> None:
        tok = iface_token(f.interface)
        dispatch = f"CBF-I-{tok}"
        self.pre.append(f"-i {f.interface} -g {dispatch}")
        rules: list[str] = []
        if self.version == 6:
            rules.append("-p ipv6-icmp -m icmp6 --icmpv6-type 133 -j ACCEPT")
            rules += [f"-p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT" for t in (134, 135, 136, 137)]
        groups: dict[str, list[str]] = {}
        for net, v in f.flatten(self.version):
            vrules = self._verdict(f, v)
            digest = _h("\n".join([f.interface, *vrules]), 8)
            chain = f"CBF-C-{tok}-{digest}"
            self.verdict_chains[chain] = vrules
            groups.setdefault(digest, []).append(str(net))
        for digest, nets in sorted(groups.items()):
            name = f"cbf-{tok}-{digest}-{self.version}"
            self.sets[name] = nets
            rules.append(f"-m set --match-set {name} src -g CBF-C-{tok}-{digest}")
        self.dispatch[dispatch] = rules


class IptFilter(IptTool):
    error = IptError

    def _save(self, version: int) -> str:
        return self._run([f"{self.tools[version]}-save", "-t", "raw", "-c"]).stdout

    def _sets(self) -> dict[str, set[str]]:
        """Our sets and their members (normalised CIDRs)."""
        out = self._run([self.ipset, "save"], check=False).stdout
        sets: dict[str, set[str]] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1].startswith("cbf-"):
                if parts[0] == "create":
                    sets.setdefault(parts[1], set())
                elif parts[0] == "add":
                    sets.setdefault(parts[1], set()).add(str(ipaddress.ip_network(parts[2], strict=False)))
        return sets

    def apply(self, fs: FilterSet) -> None:
        plans = {v: Plan(fs, v) for v in (4, 6)}
        have = self._sets()
        wanted = {n: {m for c in nets for m in _ipset_members(c)} for p in plans.values() for n, nets in p.sets.items()}
        # 1. only additions: new sets created full, members added to existing ones. An address whose
        #    verdict does not change is in its (old = new) set throughout; one that moves is briefly in
        #    both its old and its new set, and gets one of the two verdicts, never none.
        batch: list[str] = []
        for version, plan in plans.items():
            fam = "inet" if version == 4 else "inet6"
            for name in plan.sets:
                if name not in have:
                    batch.append(f"create {name} hash:net family {fam} maxelem 262144")
                batch += [f"add {name} {n} -exist" for n in sorted(wanted[name] - have.get(name, set()))]
        self._ipset_batch(batch)
        # 2. chains, one atomic restore per family
        for version, plan in plans.items():
            self._restore(version, plan)
        # 3. only removals: members that moved away, then sets nothing references now
        batch = [f"del {name} {n} -exist" for name, nets in wanted.items() for n in sorted(have.get(name, set()) - nets)]
        batch += [f"destroy {s}" for s in sorted(set(have) - set(wanted))]
        self._ipset_batch(batch)
        event(log, "ipt_filter_applied", interfaces=",".join(fs.names) or "-", sets=len(wanted))

    def _ipset_batch(self, batch: list[str]) -> None:
        if batch:
            self._run([self.ipset, "restore"], stdin="\n".join(batch) + "\n")

    def _restore(self, version: int, plan: Plan) -> None:
        saved = self._save(version)
        chains = set(re.findall(r"^:(CBF-\S+)", saved, re.M))
        hooked = re.search(r"-A PREROUTING -j CBF-PRE\b", saved) is not None
        lines = ["*raw"]
        if not plan.dispatch:   # nothing to filter: unhook and delete every chain of ours
            if hooked:
                lines.append("-D PREROUTING -j CBF-PRE")
            lines += [f"-F {c}" for c in sorted(chains)] + [f"-X {c}" for c in sorted(chains)]
            if chains or hooked:
                self._run([f"{self.tools[version]}-restore", "--noflush"], stdin="\n".join(lines + ["COMMIT", ""]))
            return
        new_verdicts = {c: r for c, r in plan.verdict_chains.items() if c not in chains}
        new_counters = {c: r for c, r in plan.counter_chains.items() if c not in chains}
        for c in ["CBF-PRE", *plan.dispatch, *new_verdicts, *new_counters]:
            lines.append(f":{c} - [0:0]")   # declared chains are (re)created empty
        lines += [f"-A CBF-PRE {r}" for r in plan.pre]
        for c, rules in plan.dispatch.items():
            lines += [f"-A {c} {r}" for r in rules]
        for c, rules in new_verdicts.items():
            lines += [f"-A {c} {r}" for r in rules]
        for c, rule in new_counters.items():
            lines.append(f"-A {c} {rule}")
        if not hooked:
            lines.append("-I PREROUTING 1 -j CBF-PRE")
        keep = {"CBF-PRE", *plan.dispatch, *plan.verdict_chains, *plan.counter_chains}
        stale = sorted(chains - keep)
        # flush every stale chain before deleting any: they may reference each other
        lines += [f"-F {c}" for c in stale] + [f"-X {c}" for c in stale]
        lines.append("COMMIT")
        self._run([f"{self.tools[version]}-restore", "--noflush"], stdin="\n".join(lines) + "\n")

    def remove(self) -> None:
        self.apply(FilterSet())

    def counters(self) -> list[RuleCounter]:
        totals: dict[tuple[str, RuleId, str], list[int]] = {}
        for version in (4, 6):
            try:
                saved = self._save(version)
            except IptError:
                continue
            for pk, by, comment in _parse_counters(saved):
                ifname, filt, idx, action = comment.split(" ")
                t = totals.setdefault((ifname, RuleId(filt, int(idx)), action), [0, 0])
                t[0] += pk
                t[1] += by
        return [RuleCounter(i, r, a, p, b) for (i, r, a), (p, b) in sorted(totals.items())]

    def programmed(self) -> list[str]:
        return sorted({c.interface for c in self.counters()})


def _parse_counters(saved: str) -> Iterable[tuple[int, int, str]]:
    for line in saved.splitlines():
        m = _COUNTER_RE.match(line)
        if m and len(m.group(3).split(" ")) == 4:
            yield int(m.group(1)), int(m.group(2)), m.group(3)


def _ipset_members(cidr: object) -> list[str]:
    """ipset's hash:net holds prefixes of length 1 and up: a /0 is stored as its two /1 halves."""
    net = ipaddress.ip_network(cidr)  # type: ignore[arg-type]
    return [str(h) for h in net.subnets(1)] if net.prefixlen == 0 else [str(net)]
