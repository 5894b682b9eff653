"""Enforce a FilterSet with nftables: one table of our own, every change one `nft -f` transaction.

    table inet calico_bgp_filter
      chain in_<if>        ingress hook of the interface, priority -300 (before anything else):
                           ICMPv6 neighbour discovery accepted, then `ip saddr vmap @m4_<if>_<gen>`
                           and `ip6 saddr vmap @m6_<if>_<gen>`
      map m4_<if>_<gen>    the compiled entries flattened to disjoint CIDRs (nft intervals cannot
                           overlap, so longest-prefix match is resolved at compile time) -> goto a
                           verdict chain
      chain c_<if>_<hash>  one per distinct verdict, named by its content: exceptions, failsafe
                           ports, then the verdict, each with a named counter
      counter r_<hash>     one per rule and interface (comment: "<if> <filter> <index> <action>"), fs_<if> for
                           the failsafe; they outlive every update, so counts never reset

An update is three transactions: (1) add the new maps (full), verdict chains and counters, which
nothing references yet; (2) repoint the ingress chains to the new maps; (3) delete what nothing
references any more. Not one: a packet reads the rule generation once when it enters the ingress
chain but the set generation at each lookup, and a set's lookup data is published after the
generation flips, so a packet straddling a commit that creates, repoints to, or deletes a map can
miss in it — and a miss passes. Measured with 100 updates under 1,000 pps from a denied source: a
few such packets in one or two transactions, none in three.
"""
from __future__ import annotations

import hashlib
import json
import logging
import zlib
from typing import Iterable

import attrs

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
from dataplane.tool import NftTool

log = logging.getLogger(__name__)

TABLE = "calico_bgp_filter"
PRIORITY = -300
ND_TYPES = "nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect"
_L4 = {6: "tcp", 17: "udp", 132: "sctp"}


class NftError(RuntimeError):
    """nft refused a command or is not installed; the table is as it was before the call."""


def iface_token(ifname: str) -> str:
    return f"{zlib.crc32(ifname.encode()):08x}"


def rule_counter(ifname: str, rule_id: RuleId) -> str:
    if rule_id == FAILSAFE_RULE:
        return f"fs_{iface_token(ifname)}"
    return "r_" + hashlib.sha1(f"{ifname}\0{rule_id}".encode()).hexdigest()[:16]


@attrs.frozen
class NftState:
    exists: bool = False
    chains: frozenset[str] = frozenset()
    maps: frozenset[str] = frozenset()
    counters: frozenset[str] = frozenset()


def parse_state(doc: dict) -> NftState:
    chains, maps, counters = set(), set(), set()
    for item in doc.get("nftables", []):
        if "chain" in item:
            chains.add(item["chain"]["name"])
        elif "map" in item:
            maps.add(item["map"]["name"])
        elif "counter" in item:
            counters.add(item["counter"]["name"])
    return NftState(True, frozenset(chains), frozenset(maps), frozenset(counters))


def _ports(ranges) -> str:
    return ", ".join(str(r.first) if r.first == r.last else f"{r.first}-{r.last}" for r in ranges)


def verdict_rules(ifname: str, v: Verdict, f: InterfaceFilter) -> list[str]:
    rules: list[str] = []
    for e in v.exceptions:
        match = f"{_L4[e.protocol]} dport {{ {_ports(e.ports)} }}" if e.ports else f"meta l4proto {e.protocol}"
        rules.append(f'{match} counter name "{rule_counter(ifname, e.rule_id)}" accept')
    if v.action is EntryAction.DENY:
        fs = rule_counter(ifname, FAILSAFE_RULE)
        for proto, name in _L4.items():
            ports = [str(p.port) for p in f.failsafe if p.protocol == proto]
            if ports:
                rules.append(f'{name} dport {{ {", ".join(ports)} }} counter name "{fs}" accept')
        rules.append(f'counter name "{rule_counter(ifname, v.rule_id)}" drop')
    elif v.action is EntryAction.ALLOW:
        rules.append(f'counter name "{rule_counter(ifname, v.rule_id)}" accept')
    else:
        rules.append("accept")
    return rules


def verdict_chain(ifname: str, rules: list[str]) -> str:
    digest = hashlib.sha1("\n".join([ifname, *rules]).encode()).hexdigest()[:12]
    return f"c_{iface_token(ifname)}_{digest}"


def _gen(name: str) -> int:
    try:
        return int(name.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return 0


def render(fs: FilterSet, cur: NftState) -> tuple[str, str, str]:
    """The three transactions that take the table from `cur` to `fs` (pure: text only): add (new
    maps, chains, counters, nothing references them yet), repoint the ingress chains, delete what
    nothing references any more."""
    t = f"inet {TABLE}"
    out = [f"add table {t}"]
    want_counters: dict[str, str] = {}
    want_chains: dict[str, list[str]] = {}
    want_maps: set[str] = set()
    maps: list[str] = []
    tail: list[str] = []
    for f in fs.interfaces:
        tok = iface_token(f.interface)
        for info in f.rules:
            want_counters[rule_counter(f.interface, info.rule_id)] = (
                f"{f.interface} {info.rule_id.filter} {info.rule_id.index} {info.action.value}")
        want_counters[rule_counter(f.interface, FAILSAFE_RULE)] = f"{f.interface} failsafe -1 Allow"
        mine = [m for m in cur.maps if m.startswith((f"m4_{tok}_", f"m6_{tok}_"))]
        gen = max((_gen(m) for m in mine), default=0) + 1
        for version in (4, 6):
            elems = []
            for net, v in f.flatten(version):
                rules = verdict_rules(f.interface, v, f)
                chain = verdict_chain(f.interface, rules)
                want_chains[chain] = rules
                elems.append(f"{net} : goto {chain}")
            name = f"m{version}_{tok}_{gen}"
            want_maps.add(name)
            body = f"type ipv{version}_addr : verdict; flags interval;"
            if elems:
                body += f" elements = {{ {', '.join(elems)} }}"
            maps.append(f"add map {t} {name} {{ {body} }}")
        base = f"in_{tok}"
        if base not in cur.chains:
            # only when new: re-adding an existing base chain re-registers its hook (a gap)
            tail.append(f'add chain {t} {base} {{ type filter hook ingress device "{f.interface}" '
                        f'priority {PRIORITY}; policy accept; }}')
        tail += [
            f"flush chain {t} {base}",
            f"add rule {t} {base} icmpv6 type {{ {ND_TYPES} }} accept",
            f"add rule {t} {base} ip saddr vmap @m4_{tok}_{gen}",
            f"add rule {t} {base} ip6 saddr vmap @m6_{tok}_{gen}",
        ]
    for name, comment in sorted(want_counters.items()):
        if name not in cur.counters:
            out.append(f'add counter {t} {name} {{ comment "{comment}" }}')
    for chain, rules in sorted(want_chains.items()):
        if chain not in cur.chains:
            out.append(f"add chain {t} {chain}")
            out += [f"add rule {t} {chain} {r}" for r in rules]
    out += maps
    wanted_bases = {f"in_{iface_token(f.interface)}" for f in fs.interfaces}
    first, second, out = out, tail, []
    for chain in sorted(c for c in cur.chains if c.startswith("in_") and c not in wanted_bases):
        out += [f"flush chain {t} {chain}", f"delete chain {t} {chain}"]
    for m in sorted(cur.maps - want_maps):
        out.append(f"delete map {t} {m}")
    for chain in sorted(c for c in cur.chains if c.startswith("c_") and c not in want_chains):
        out += [f"flush chain {t} {chain}", f"delete chain {t} {chain}"]
    for name in sorted(cur.counters - set(want_counters)):
        out.append(f"delete counter {t} {name}")
    return tuple("\n".join(part) + "\n" if part else "" for part in (first, second, out))  # type: ignore[return-value]


class NftFilter(NftTool):
    error = NftError

    def state(self) -> NftState:
        doc = self._listed("inet", TABLE)
        return NftState() if doc is None else parse_state(doc)

    def programmed(self) -> list[str]:
        """Interfaces with a filter, from the counter comments (self-describing, no state file)."""
        names = {c.interface for c in self.counters()}
        return sorted(names)

    def apply(self, fs: FilterSet) -> None:
        if not fs.interfaces:
            self.remove()
            return
        scripts = render(fs, self.state())
        for script in scripts:
            if script:
                self._run(["-f", "-"], stdin=script)
        event(log, "nft_filter_applied", interfaces=",".join(fs.names), lines="".join(scripts).count("\n"))

    def remove(self) -> None:
        if self.state().exists:
            self._run(["delete", "table", "inet", TABLE])
            event(log, "nft_filter_removed", table=TABLE)

    def counters(self) -> list[RuleCounter]:
        r = self._run(["-j", "list", "counters", "table", "inet", TABLE], check=False)
        if r.returncode != 0:
            return []
        return list(_counters(json.loads(r.stdout)))


def _counters(doc: dict) -> Iterable[RuleCounter]:
    for item in doc.get("nftables", []):
        c = item.get("counter")
        if not c:
            continue
        parts = c.get("comment", "").split(" ")
        if len(parts) != 4:
            continue
        ifname, filt, idx, action = parts
        yield RuleCounter(ifname, RuleId(filt, int(idx)), action, int(c.get("packets", 0)), int(c.get("bytes", 0)))
