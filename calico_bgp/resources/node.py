"""Node: one host's BGP addresses, AS and route-reflector role, and its labels (what selectors match)."""
from __future__ import annotations

import ipaddress
import re
from typing import Any, ClassVar

import attrs

from calico_bgp.resources.fields import ASNumber, checked, interface, ip_address, missing, optional_as_number
from calico_bgp.resources.model import Metadata


def _cluster_id(value: Any) -> str:
    if value in (None, ""):
        return ""
    try:
        return str(ipaddress.IPv4Address(value))
    except (ValueError, TypeError):
        raise ValueError("expected an IPv4 dotted quad like 198.18.0.1") from None


def _address(version: int) -> Any:
    def parse(value: Any) -> str:
        if value in (None, ""):
            return ""
        addr = ipaddress.ip_address(ip_address(value))
        if addr.version != version:
            raise ValueError(f"expected an IPv{version} address")
        return str(addr)
    return parse


_MAC = re.compile(r"^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}$")


def _mac(value: Any) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not _MAC.match(value):
        raise ValueError("expected a MAC address like 66:3e:ca:a4:db:65")
    return value.lower()


@attrs.frozen
class NodeBGPSpec:
    ipv4_address: str = attrs.field(default="", converter=checked(interface(4)))
    ipv6_address: str = attrs.field(default="", converter=checked(interface(6)))
    as_number: ASNumber | None = attrs.field(default=None, converter=checked(optional_as_number))
    # Set: this node is a route reflector for that cluster ID (RFC 4456).
    route_reflector_cluster_id: str = attrs.field(default="", converter=checked(_cluster_id))
    # the IPIP tunnel address Calico's node allocates: stored, not used (this project routes natively)
    ipv4_ipip_tunnel_addr: str = attrs.field(default="", converter=checked(_address(4)))

    calico_only: ClassVar[frozenset[str]] = frozenset({"ipv4VXLANTunnelAddr", "ipv6VXLANTunnelAddr"})

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
    # VXLAN tunnel addresses Calico's node allocates: stored, not used (this project routes natively)
    ipv4_vxlan_tunnel_addr: str = attrs.field(default="", converter=checked(_address(4)))
    ipv6_vxlan_tunnel_addr: str = attrs.field(default="", converter=checked(_address(6)))
    vxlan_tunnel_mac_addr: str = attrs.field(default="", converter=checked(_mac))
    vxlan_tunnel_mac_addr_v6: str = attrs.field(default="", converter=checked(_mac))

    calico_only: ClassVar[frozenset[str]] = frozenset(
        {"orchRefs", "wireguard", "interfaceIPv4Address", "interfaceIPv6Address"})


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
