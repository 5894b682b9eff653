"""PolicyFilter (ours, not Calico's): host protection at XDP. Which nodes and interfaces, which
source nets are denied or allowed (with protocol/port exceptions), and the failsafe ports that
always pass. What they compile to: dataplane/filters/rules.py."""
from __future__ import annotations

import re
from typing import Any, ClassVar

import attrs

from calico_bgp.resources.fields import (
    Integer,
    Port,
    bad,
    checked,
    cidr,
    int_range,
    missing,
    one_of,
    port,
    selector,
    tuple_of,
)
from calico_bgp.resources.model import Metadata
from calico_bgp.resources.selector import ALL, Selector


_PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP", "icmp": "ICMP", "icmpv6": "ICMPv6", "udplite": "UDPLite"}


def _protocol(value: Any) -> str | int:
    if value in (None, ""):
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 255:
        return value
    if isinstance(value, str) and value.lower() in _PROTOCOLS:
        return _PROTOCOLS[value.lower()]
    raise ValueError(f"expected one of {', '.join(_PROTOCOLS.values())} or a number 1..255")


@attrs.frozen
class ProtoPort:
    protocol: str = attrs.field(converter=checked(lambda v: one_of("tcp", "udp", case_insensitive=True)(v)))
    port: Integer = attrs.field(converter=checked(int_range(1, 65535)))

    def __str__(self) -> str:
        return f"{self.protocol}:{self.port}"


# Calico's failsafe defaults: ssh, DHCP, BGP, etcd client and peer.
DEFAULT_FAILSAFE_INBOUND = (ProtoPort("tcp", 22), ProtoPort("udp", 68), ProtoPort("tcp", 179),
                            ProtoPort("tcp", 2379), ProtoPort("tcp", 2380))


@attrs.frozen
class RuleSource:
    nets: tuple[str, ...] = attrs.field(default=(), converter=checked(tuple_of(cidr)))


@attrs.frozen
class RuleDestination:
    ports: tuple[Port, ...] = attrs.field(default=(), converter=checked(tuple_of(port)))


@attrs.frozen
class PolicyRule:
    action: str = attrs.field(converter=checked(one_of("Deny", "Allow")))
    source: RuleSource = attrs.field(factory=RuleSource)
    protocol: str | int = attrs.field(default="", converter=checked(_protocol))
    destination: RuleDestination = attrs.field(factory=RuleDestination)

    calico_only: ClassVar[frozenset[str]] = frozenset(
        {"notProtocol", "icmp", "notICMP", "ipVersion", "http", "metadata"})

    def __attrs_post_init__(self) -> None:
        if not self.source.nets:
            raise missing("source.nets", "at least one source CIDR: 0.0.0.0/0 or ::/0 for all")
        if self.destination.ports and self.protocol not in ("TCP", "UDP", "SCTP", 6, 17, 132):
            raise bad("destination.ports", list(self.destination.ports), "ports need protocol TCP, UDP or SCTP")
        if self.action == "Deny" and (self.protocol or self.destination.ports):
            raise bad("protocol", self.protocol or "",
                       "Deny rules match on source nets only; use an Allow rule for protocol/port exceptions")


_IFNAME = re.compile(r"^[a-zA-Z0-9_.:@+*-]{1,15}$")


def _ifname(value: Any) -> str:
    if not isinstance(value, str) or not _IFNAME.match(value):
        raise ValueError("expected an interface name or pattern like eth0, ens*, max 15 characters")
    return value


@attrs.frozen
class PolicyFilterSpec:
    node_selector: Selector = attrs.field(default=ALL, converter=checked(selector))
    interfaces: tuple[str, ...] = attrs.field(default=(), converter=checked(tuple_of(_ifname)))  # empty: uplinks
    rules: tuple[PolicyRule, ...] = ()
    failsafe_inbound_ports: tuple[ProtoPort, ...] = DEFAULT_FAILSAFE_INBOUND


@attrs.frozen
class PolicyFilter:
    kind: ClassVar[str] = "PolicyFilter"
    metadata: Metadata
    spec: PolicyFilterSpec = attrs.field(factory=PolicyFilterSpec)

    @property
    def name(self) -> str:
        return self.metadata.name
