"""Policy filter semantics, decided once, purely, for all three enforcement modes (XDP, nft, iptables).

Input: per interface, a list of `FilterRule`s (a source prefix, Allow or Deny, optionally a protocol
and destination ports on an Allow) and the failsafe (protocol, port)s. Output: an `InterfaceFilter`,
a table of *entries* (prefix -> `Verdict`) that a longest-prefix-match lookup applies as is.

The semantics (also in README.md, "Policy filters"):

1. The most specific source prefix that carries a rule decides. Rule order does not matter except to
   pick which of two identical rules gets the counter (the first).
2. At equal prefix length, an unrestricted Allow beats a Deny.
3. An Allow with a protocol (and optionally destination ports) is an *exception*: packets of that
   protocol/port from the prefix pass and count on that Allow. Every other packet from the prefix gets
   what it would get without that Allow: the Deny at the same prefix if there is one, else the verdict
   of the nearest less specific prefix (whose exceptions also still apply), else pass, uncounted.
   A Deny at a more specific prefix overrides exceptions of less specific ones.
4. A packet that a Deny would drop still passes when it is TCP/UDP to a failsafe destination port of
   the interface; it counts on the interface's failsafe counter.
5. No entry matches: pass, uncounted. Non-IP frames, and ICMPv6 neighbour discovery, always pass.

Deny rules take no protocol or ports (an exception is always an Allow). Ports need TCP, UDP or SCTP;
failsafe ports are TCP or UDP.
"""
from __future__ import annotations

import enum
import ipaddress
from typing import Iterable, Mapping, Sequence, Union

import attrs

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

PROTOCOLS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPV6": 58, "SCTP": 132, "UDPLITE": 136}
PROTOCOL_NAMES = {v: k.replace("ICMPV6", "ICMPv6") for k, v in PROTOCOLS.items()}
PORT_PROTOCOLS = (6, 17, 132)   # TCP, UDP, SCTP: the destination port is at the same offset
DEFAULT_FAILSAFE = (("tcp", 22), ("udp", 68), ("tcp", 179), ("tcp", 2379), ("tcp", 2380))


class FilterError(ValueError):
    """A filter that cannot be programmed; the message names the field and the bad value."""


class InvalidFilter(FilterError):
    pass


class CapacityExceeded(FilterError):
    """More rules/prefixes/ports than the dataplane's maps hold."""


@attrs.frozen
class Limits:
    """Sizes of the XDP maps (filter.c); the fallbacks are held to the same so modes stay equivalent."""

    rules: int = 4095          # counter slots minus the failsafe slot
    prefixes: int = 65536      # per family
    exception_keys: int = 65536


LIMITS = Limits()


class Action(enum.Enum):
    ALLOW = "Allow"
    DENY = "Deny"


class EntryAction(enum.IntEnum):
    """What an entry does to packets no exception matched (values are filter.c's ACTION_*)."""

    PASS = 0
    ALLOW = 1
    DENY = 2


@attrs.frozen(order=True)
class RuleId:
    filter: str
    index: int

    def __str__(self) -> str:
        return f"{self.filter}/{self.index}"


FAILSAFE_RULE = RuleId("failsafe", -1)


@attrs.frozen(order=True)
class PortRange:
    first: int
    last: int

    def __attrs_post_init__(self) -> None:
        if not (0 <= self.first <= self.last <= 65535):
            raise InvalidFilter(f"port range {self.first}:{self.last} is not within 0..65535 in order")

    @classmethod
    def parse(cls, value: object) -> "PortRange":
        """80, "80" or "8000:8080" (Calico's range syntax)."""
        if isinstance(value, bool):
            raise InvalidFilter(f"port {value!r} is not a number or range")
        if isinstance(value, int):
            return cls(value, value)
        text = str(value).strip()
        lo, sep, hi = text.partition(":")
        try:
            return cls(int(lo), int(hi if sep else lo))
        except ValueError:
            raise InvalidFilter(f"port {value!r} is not a number or a first:last range") from None

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"

    def __len__(self) -> int:
        return self.last - self.first + 1


def parse_protocol(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 255:
            return value
    elif isinstance(value, str):
        key = value.strip().upper()
        if key in PROTOCOLS:
            return PROTOCOLS[key]
        if key.isdigit() and int(key) <= 255:
            return int(key)
    raise InvalidFilter(f"protocol {value!r} is not one of {', '.join(PROTOCOL_NAMES.values())} or 0..255")


def parse_network(value: object) -> IPNetwork:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise InvalidFilter(f"source net {value!r} is not a CIDR") from None


@attrs.frozen
class FilterRule:
    prefix: IPNetwork
    action: Action
    rule_id: RuleId
    protocol: int | None = None
    ports: tuple[PortRange, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.action is Action.DENY and (self.protocol is not None or self.ports):
            raise InvalidFilter(f"rule {self.rule_id}: a Deny takes no protocol or ports (exceptions are Allows)")
        if self.ports and self.protocol not in PORT_PROTOCOLS:
            raise InvalidFilter(f"rule {self.rule_id}: destination ports need protocol TCP, UDP or SCTP, "
                                f"not {self.protocol!r}")

    @property
    def is_exception(self) -> bool:
        return self.action is Action.ALLOW and self.protocol is not None


@attrs.frozen(order=True)
class FailsafePort:
    protocol: int   # 6 or 17
    port: int

    @classmethod
    def parse(cls, protocol: object, port: object) -> "FailsafePort":
        proto = parse_protocol(protocol)
        if proto not in (6, 17):
            raise InvalidFilter(f"failsafe protocol {protocol!r} must be TCP or UDP")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidFilter(f"failsafe port {port!r} is not 0..65535")
        return cls(proto, port)

    def __str__(self) -> str:
        return f"{PROTOCOL_NAMES[self.protocol].lower()}:{self.port}"


def default_failsafe() -> tuple[FailsafePort, ...]:
    return tuple(sorted(FailsafePort.parse(p, n) for p, n in DEFAULT_FAILSAFE))


@attrs.frozen(order=True)
class PortException:
    protocol: int
    ports: tuple[PortRange, ...]    # empty: every packet of the protocol
    rule_id: RuleId


@attrs.frozen
class Verdict:
    action: EntryAction
    rule_id: RuleId | None              # counted when no exception matches (None for PASS)
    exceptions: tuple[PortException, ...] = ()


@attrs.frozen(order=True)
class Entry:
    prefix: IPNetwork = attrs.field(order=lambda n: (n.version, n.network_address, n.prefixlen))
    verdict: Verdict = attrs.field(order=False)


@attrs.frozen
class RuleInfo:
    rule_id: RuleId
    action: Action


@attrs.frozen
class RuleCounter:
    """Packets/bytes one rule (or the failsafe, FAILSAFE_RULE) matched on one interface."""

    interface: str
    rule_id: RuleId
    action: str     # "Allow" | "Deny" (the failsafe counts as "Allow")
    packets: int
    bytes: int


@attrs.frozen
class Decision:
    """What a packet gets: passed or not, and which counter it lands on (None: uncounted)."""

    passed: bool
    counted: RuleId | None


@attrs.frozen
class InterfaceFilter:
    interface: str
    entries: tuple[Entry, ...]
    failsafe: tuple[FailsafePort, ...]
    rules: tuple[RuleInfo, ...]

    def entries_for(self, version: int) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.prefix.version == version)

    def lookup(self, src: IPAddress) -> Entry | None:
        best: Entry | None = None
        for e in self.entries:
            if e.prefix.version == src.version and src in e.prefix:
                if best is None or e.prefix.prefixlen > best.prefix.prefixlen:
                    best = e
        return best

    def decide(self, src: IPAddress | str, protocol: int, dport: int | None) -> Decision:
        """The reference semantics, per packet; every dataplane must agree with this."""
        entry = self.lookup(ipaddress.ip_address(src))
        if entry is None:
            return Decision(True, None)
        return decide_verdict(entry.verdict, self.failsafe, protocol, dport)

    def flatten(self, version: int) -> tuple[tuple[IPNetwork, Verdict], ...]:
        """The entries as disjoint CIDRs (each address keeps its most specific verdict), for
        dataplanes without longest-prefix match (nft interval maps, ipset)."""
        return flatten(self.entries_for(version))


@attrs.frozen
class FilterSet:
    """The whole node: one compiled filter per interface. Interfaces absent here get no filter."""

    interfaces: tuple[InterfaceFilter, ...] = ()

    def __attrs_post_init__(self) -> None:
        names = [f.interface for f in self.interfaces]
        if len(set(names)) != len(names):
            raise InvalidFilter(f"interfaces listed twice: {sorted(n for n in set(names) if names.count(n) > 1)}")

    def get(self, interface: str) -> InterfaceFilter | None:
        return next((f for f in self.interfaces if f.interface == interface), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.interface for f in self.interfaces)


def decide_verdict(v: Verdict, failsafe: Sequence[FailsafePort], protocol: int, dport: int | None) -> Decision:
    for exc in v.exceptions:
        if exc.protocol != protocol:
            continue
        if not exc.ports or (dport is not None and any(r.first <= dport <= r.last for r in exc.ports)):
            return Decision(True, exc.rule_id)
    if v.action is EntryAction.DENY:
        if dport is not None and FailsafePort(protocol, dport) in failsafe:
            return Decision(True, FAILSAFE_RULE)
        return Decision(False, v.rule_id)
    if v.action is EntryAction.ALLOW:
        return Decision(True, v.rule_id)
    return Decision(True, None)


# -- compile ----------------------------------------------------------------------------------

def _ancestor(prefix: IPNetwork, verdicts: Mapping[IPNetwork, Verdict]) -> Verdict | None:
    for plen in range(prefix.prefixlen - 1, -1, -1):
        parent = prefix.supernet(new_prefix=plen)
        if parent in verdicts:
            return verdicts[parent]
    return None


def compile_interface(interface: str, rules: Iterable[FilterRule], failsafe: Iterable[FailsafePort] = (),
                      limits: Limits = LIMITS) -> InterfaceFilter:
    rules = list(rules)
    fs = tuple(sorted(set(failsafe)))
    # one rule may list many source nets (one FilterRule each), but the same id must mean one rule
    shapes: dict[RuleId, tuple] = {}
    for r in rules:
        if shapes.setdefault(r.rule_id, (r.action, r.protocol, r.ports)) != (r.action, r.protocol, r.ports):
            raise InvalidFilter(f"{interface}: rule id {r.rule_id} is used by two different rules")
    if len(shapes) > limits.rules:
        raise CapacityExceeded(f"{interface}: {len(shapes)} rules, the maps hold {limits.rules}")
    by_prefix: dict[IPNetwork, list[FilterRule]] = {}
    for r in rules:
        by_prefix.setdefault(r.prefix, []).append(r)
    verdicts: dict[IPNetwork, Verdict] = {}
    # shorter prefixes first, so a prefix's ancestors are decided before it
    for prefix in sorted(by_prefix, key=lambda p: (p.version, p.prefixlen)):
        here = by_prefix[prefix]
        allow = next((r for r in here if r.action is Action.ALLOW and r.protocol is None), None)
        deny = next((r for r in here if r.action is Action.DENY), None)
        own = tuple(PortException(r.protocol, r.ports, r.rule_id) for r in here if r.is_exception)
        if allow is not None:
            v = Verdict(EntryAction.ALLOW, allow.rule_id)
        elif deny is not None:
            v = Verdict(EntryAction.DENY, deny.rule_id, own)
        else:
            parent = _ancestor(prefix, verdicts)
            if parent is None:
                v = Verdict(EntryAction.PASS, None, own)
            elif parent.action is EntryAction.ALLOW:
                # the covering Allow passes everything; own exceptions only move the counting
                v = Verdict(EntryAction.ALLOW, parent.rule_id, own)
            else:
                v = Verdict(parent.action, parent.rule_id, own + parent.exceptions)
        verdicts[prefix] = v
    entries = tuple(sorted(Entry(p, v) for p, v in verdicts.items()))
    for version in (4, 6):
        n = sum(1 for e in entries if e.prefix.version == version)
        if n > limits.prefixes:
            raise CapacityExceeded(f"{interface}: {n} IPv{version} prefixes, the maps hold {limits.prefixes}")
    keys = sum(exception_keys(v.exceptions) for v in {e.verdict.exceptions: e.verdict for e in entries}.values())
    if keys > limits.exception_keys:
        raise CapacityExceeded(f"{interface}: exceptions expand to {keys} (protocol, port) keys, "
                               f"the maps hold {limits.exception_keys}")
    infos = tuple(RuleInfo(rid, shape[0]) for rid, shape in shapes.items())
    return InterfaceFilter(interface, entries, fs, infos)


def exception_keys(excs: Sequence[PortException]) -> int:
    return sum(sum(len(r) for r in e.ports) if e.ports else 1 for e in excs)


def flatten(entries: Sequence[Entry]) -> tuple[tuple[IPNetwork, Verdict], ...]:
    """Disjoint CIDRs covering exactly the entries' union, each with its most specific verdict."""
    nets = sorted(entries, key=lambda e: (e.prefix.network_address, -e.prefix.num_addresses))
    out: list[tuple[IPNetwork, Verdict]] = []

    def emit(lo: int, hi: int, v: Verdict, version: int) -> None:
        cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        if lo <= hi:
            for net in ipaddress.summarize_address_range(cls(lo), cls(hi)):
                out.append((net, v))

    # a stack of enclosing entries; each emits the gaps its children leave
    stack: list[tuple[Entry, int]] = []  # (entry, next uncovered address inside it)

    def close_until(addr: int | None) -> None:
        while stack and (addr is None or addr > int(stack[-1][0].prefix.broadcast_address)):
            e, cursor = stack.pop()
            emit(cursor, int(e.prefix.broadcast_address), e.verdict, e.prefix.version)
            if stack:
                stack[-1] = (stack[-1][0], int(e.prefix.broadcast_address) + 1)

    for e in nets:
        start = int(e.prefix.network_address)
        close_until(start)
        if stack:
            parent, cursor = stack[-1]
            emit(cursor, start - 1, parent.verdict, parent.prefix.version)
        stack.append((e, start))
    close_until(None)
    return tuple(out)


# -- XDP slot assignment (pure; the loader persists the result) -------------------------------

def assign_slots(rule_ids: Iterable[RuleId], previous: Mapping[RuleId, int], capacity: int) -> dict[RuleId, int]:
    """Counter slots 1..capacity for the rules: a rule keeps its slot across updates, new rules take
    the lowest free ones. Slot 0 is the failsafe counter."""
    wanted = list(dict.fromkeys(rule_ids))
    kept = {r: s for r, s in previous.items() if r in set(wanted) and 1 <= s <= capacity}
    used = set(kept.values())
    released = set(previous.values()) - used
    # a slot just released may still be hit by packets on entries not yet replaced: reuse it last
    free = iter([s for s in range(1, capacity + 1) if s not in used and s not in released]
                + sorted(s for s in released if 1 <= s <= capacity))
    out = dict(kept)
    for r in wanted:
        if r not in out:
            try:
                out[r] = next(free)
            except StopIteration:
                raise CapacityExceeded(f"{len(wanted)} rules, {capacity} counter slots") from None
    return out
