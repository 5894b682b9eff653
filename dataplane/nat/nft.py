"""Outgoing NAT with nftables: one table of our own, every change one `nft -f` transaction.

    table inet calico_bgp_nat
      set masq4, pools4      ipv4_addr intervals: the natOutgoing pools, every pool
      set masq6, pools6      the same for IPv6 (only for a family with a natOutgoing pool)
      chain postrouting      nat hook postrouting, priority srcnat (100):
                             ip saddr @masq4 ip daddr != @pools4 counter masquerade
                             ip6 saddr @masq6 ip6 daddr != @pools6 counter masquerade

The rule is felix's cali-nat-outgoing (felix/rules/nat.go makeNATOutgoingRuleIPTables) with nft sets
in place of its ipsets. `apply` reads the table first and writes only when it differs from what is
wanted (a set's members, the chain's hook, the rules), so a periodic call repairs a change made
behind our back and costs one `nft list` otherwise. No NatSet wanted: the table is deleted.
"""
from __future__ import annotations

import ipaddress
import json
import logging
from typing import Any

import attrs

from dataplane.logfmt import event
from dataplane.nat.rules import IPNetwork, NatError, NatSet, collapsed
from dataplane.tool import NftTool

log = logging.getLogger(__name__)

TABLE = "calico_bgp_nat"
CHAIN = "postrouting"
PRIORITY = 100  # srcnat
COMMENT = "calico-bgp natOutgoing"
_PROTO = {4: "ip", 6: "ip6"}


@attrs.frozen
class NftNatState:
    """What our table holds, as far as `apply` compares it."""

    exists: bool = False
    sets: dict[str, tuple[IPNetwork, ...]] = attrs.field(factory=dict)  # name -> members, collapsed
    chain: bool = False                                                  # our chain exists
    hooked: bool = False                                                 # ... on the right hook
    rules: tuple[tuple[Any, ...], ...] = ()                              # each rule's signature


def rule_signature(version: int) -> tuple[Any, ...]:
    """A rule as `parse_state` reduces it: the matches and the verdict, not the counter."""
    p = _PROTO[version]
    return ((p, "saddr", "==", f"@masq{version}"), (p, "daddr", "!=", f"@pools{version}"), "masquerade")


def wanted(nat: NatSet) -> NftNatState:
    sets: dict[str, tuple[IPNetwork, ...]] = {}
    for v in nat.versions:
        masq, pools = nat.family(v)
        sets[f"masq{v}"], sets[f"pools{v}"] = masq, pools
    return NftNatState(True, sets, True, True, tuple(rule_signature(v) for v in nat.versions))


def _member(elem: Any) -> list[IPNetwork]:
    if isinstance(elem, str):
        return [ipaddress.ip_network(elem)]
    if "prefix" in elem:
        return [ipaddress.ip_network(f"{elem['prefix']['addr']}/{elem['prefix']['len']}")]
    if "range" in elem:
        lo, hi = (ipaddress.ip_address(a) for a in elem["range"])
        return list(ipaddress.summarize_address_range(lo, hi))  # type: ignore[arg-type]
    if "elem" in elem:  # an element with options (a timeout, a comment)
        return _member(elem["elem"]["val"])
    raise ValueError(f"unexpected set element {elem!r}")


def _reduce(expr: dict) -> Any:
    if "match" in expr:
        m = expr["match"]
        payload = m.get("left", {}).get("payload", {})
        return (payload.get("protocol"), payload.get("field"), m.get("op"), json.dumps(m.get("right"))
                if not isinstance(m.get("right"), str) else m["right"])
    return next(iter(expr)) if expr else None


def parse_state(doc: dict) -> NftNatState:
    """`nft -j list table inet calico_bgp_nat` -> NftNatState (pure)."""
    sets: dict[str, tuple[IPNetwork, ...]] = {}
    chain, hooked, rules = False, False, []
    for item in doc.get("nftables", []):
        if "set" in item:
            s = item["set"]
            version = 6 if s.get("type") == "ipv6_addr" else 4
            members = [n for e in s.get("elem", []) for n in _member(e)]
            sets[s["name"]] = collapsed(members, version)
        elif "chain" in item and item["chain"]["name"] == CHAIN:
            c = item["chain"]
            chain = True
            hooked = (c.get("type"), c.get("hook"), c.get("prio"), c.get("policy")) == ("nat", "postrouting", PRIORITY, "accept")
        elif "rule" in item and item["rule"].get("chain") == CHAIN:
            rules.append(tuple(r for r in (_reduce(e) for e in item["rule"].get("expr", [])) if r != "counter"))
    return NftNatState(True, sets, chain, hooked, tuple(rules))


def _elements(nets: tuple[IPNetwork, ...]) -> str:
    return ", ".join(str(n) for n in nets)


def render(nat: NatSet, cur: NftNatState) -> str:
    """The one transaction that takes the table from `cur` to `nat` (pure: text only). The base chain
    is added only when it is missing or on the wrong hook: re-adding one re-registers its hook."""
    t = f"inet {TABLE}"
    want = wanted(nat)
    out = [f"add table {t}"]
    for name, members in want.sets.items():
        kind = "ipv6_addr" if name.endswith("6") else "ipv4_addr"
        out += [f"add set {t} {name} {{ type {kind}; flags interval; }}", f"flush set {t} {name}"]
        if members:
            out.append(f"add element {t} {name} {{ {_elements(members)} }}")
    if cur.chain and not cur.hooked:  # changed behind our back: made again
        out += [f"flush chain {t} {CHAIN}", f"delete chain {t} {CHAIN}"]
    if not cur.hooked:
        out.append(f"add chain {t} {CHAIN} {{ type nat hook postrouting priority {PRIORITY}; policy accept; }}")
    out.append(f"flush chain {t} {CHAIN}")
    for v in nat.versions:
        p = _PROTO[v]
        out.append(f'add rule {t} {CHAIN} {p} saddr @masq{v} {p} daddr != @pools{v} counter masquerade comment "{COMMENT}"')
    out += [f"delete set {t} {name}" for name in sorted(set(cur.sets) - set(want.sets))]
    return "\n".join(out) + "\n"


class NftNat(NftTool):
    error = NatError

    def state(self) -> NftNatState:
        doc = self._listed("inet", TABLE)
        return NftNatState() if doc is None else parse_state(doc)

    def apply(self, nat: NatSet) -> bool:
        """Program `nat`; True when something had to change (False: the table was already right)."""
        if nat.empty:
            return self.remove()
        cur = self.state()
        if cur == wanted(nat):
            return False
        try:
            self._run(["-f", "-"], stdin=render(nat, cur))
        except NatError:
            if not cur.exists:
                raise
            # something of ours nft will not change in place (a set remade with other flags): the
            # whole table replaced, in one transaction all the same
            self._run(["-f", "-"], stdin=f"delete table inet {TABLE}\n" + render(nat, NftNatState()))
        event(log, "nft_nat_applied", families=",".join(map(str, nat.versions)),
              repaired=cur.exists, masquerade=",".join(map(str, nat.masquerade)))
        return True

    def remove(self) -> bool:
        if not self.state().exists:
            return False
        self._run(["delete", "table", "inet", TABLE])
        event(log, "nft_nat_removed", table=TABLE)
        return True

    def counters(self) -> dict[int, int]:
        """Packets masqueraded (the first of each connection) per family."""
        r = self._run(["-j", "list", "chain", "inet", TABLE, CHAIN], check=False)
        out: dict[int, int] = {}
        if r.returncode != 0:
            return out
        for item in json.loads(r.stdout).get("nftables", []):
            rule = item.get("rule")
            if not rule:
                continue
            exprs = rule.get("expr", [])
            proto = next((e["match"]["left"].get("payload", {}).get("protocol") for e in exprs if "match" in e), None)
            packets = next((e["counter"]["packets"] for e in exprs if "counter" in e), 0)
            version = {"ip": 4, "ip6": 6}.get(proto or "")
            if version:
                out[version] = out.get(version, 0) + packets
        return out
