"""Node: one host's BGP addresses, AS and route-reflector role, and its labels (what selectors match)."""
from __future__ import annotations

import ipaddress
from typing import Any, ClassVar

import attrs

from calico_bgp.resources.fields import ASNumber, checked, interface, missing, optional_as_number
from calico_bgp.resources.model import Metadata


def _cluster_id(value: Any) -> str:
    if value in (None, ""):
        return ""
    try:
        return str(ipaddress.IPv4Address(value))
    except (ValueError, TypeError):
        raise ValueError("expected an IPv4 dotted quad like 198.18.0.1") from None


@attrs.frozen
class NodeBGPSpec:
    ipv4_address: str = attrs.field(default="", converter=checked(interface(4)))
    ipv6_address: str = attrs.field(default="", converter=checked(interface(6)))
    as_number: ASNumber | None = attrs.field(default=None, converter=checked(optional_as_number))
    # Set: this node is a route reflector for that cluster ID (RFC 4456).
    route_reflector_cluster_id: str = attrs.field(default="", converter=checked(_cluster_id))

    calico_only: ClassVar[frozenset[str]] = frozenset(
        {"ipv4IPIPTunnelAddr", "ipv4VXLANTunnelAddr", "ipv6VXLANTunnelAddr"})

    def __attrs_post_init__(self) -> None:
        if not self.ipv4_address and not self.ipv6_address:
            raise missing("ipv4Address", "a node's bgp needs ipv4Address and/or ipv6Address")

    @property
    def ipv4(self) -> ipaddress.IPv4Interface | None:
        return ipaddress.IPv4Interface(self.ipv4_address) if self.ipv4_address else None

    @property
    def ipv6(self) -> ipaddress.IPv6Interface | None:
        return ipaddress.IPv6Interface(self.ipv6_address) if self.ipv6_address else None


@attrs.frozen
class NodeAddress:
    address: str = attrs.field(converter=checked(lambda v: str(ipaddress.ip_interface(v))))
    type: str = ""


@attrs.frozen
class NodeSpec:
    bgp: NodeBGPSpec | None = None
    addresses: tuple[NodeAddress, ...] = ()

    calico_only: ClassVar[frozenset[str]] = frozenset(
        {"orchRefs", "wireguard", "ipv4VXLANTunnelAddr", "vxlanTunnelMACAddr", "ipv6VXLANTunnelAddr",
         "vxlanTunnelMACAddrV6", "interfaceIPv4Address", "interfaceIPv6Address"})


@attrs.frozen
class Node:
    kind: ClassVar[str] = "Node"
    metadata: Metadata
    spec: NodeSpec = attrs.field(factory=NodeSpec)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.labels
