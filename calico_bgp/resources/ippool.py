"""IPPool: a range of addresses cut into blocks affine to nodes (ipam/), announced over BGP.

Calico's shape; calico-bgp routes natively, so IPIP, VXLAN and NAT outgoing are refused, never ignored.
"""
from __future__ import annotations

import ipaddress
from typing import Any, ClassVar

import attrs

from calico_bgp.resources.fields import Integer, bad, boolean, checked, cidr, int_range, selector
from calico_bgp.resources.model import Metadata
from calico_bgp.resources.selector import ALL, Selector


def _never(value: Any) -> str:
    if value in (None, "", "Never"):
        return "Never"
    raise ValueError("only Never is supported: calico-bgp routes natively over BGP, without IPIP/VXLAN")


def _no_nat(value: Any) -> bool:
    if boolean(value):
        raise ValueError("natOutgoing is not supported by calico-bgp (no NAT on the nodes)")
    return False


def default_block_size(pool_cidr: str) -> int:
    return 122 if ":" in pool_cidr else 26


@attrs.frozen
class IPPoolSpec:
    cidr: str = attrs.field(converter=checked(cidr))
    # 26 for IPv4 and 122 for IPv6 (Calico's defaults); v4 20..32, v6 116..128, not shorter than the pool.
    block_size: Integer = attrs.field(default=attrs.Factory(lambda s: default_block_size(s.cidr), takes_self=True),
                                  converter=checked(int_range(0, 128)))
    disabled: bool = attrs.field(default=False, converter=checked(boolean))
    node_selector: Selector = attrs.field(default=ALL, converter=checked(selector))
    disable_bgp_export: bool = attrs.field(default=False, converter=checked(boolean))
    ipip_mode: str = attrs.field(default="Never", converter=checked(_never))
    vxlan_mode: str = attrs.field(default="Never", converter=checked(_never))
    nat_outgoing: bool = attrs.field(default=False, converter=checked(_no_nat))

    calico_only: ClassVar[frozenset[str]] = frozenset(
        {"namespaceSelector", "allowedUses", "assignmentMode", "ipip", "nat-outgoing"})

    def __attrs_post_init__(self) -> None:
        net = self.network
        lo, hi = (116, 128) if net.version == 6 else (20, 32)
        if not lo <= self.block_size <= hi:
            raise bad("blockSize", self.block_size, f"IPv{net.version} block sizes are {lo}..{hi}")
        if self.block_size < net.prefixlen:
            raise bad("blockSize", self.block_size,
                       f"blocks cannot be larger than the pool (/{net.prefixlen})")

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)

    @property
    def version(self) -> int:
        return self.network.version


@attrs.frozen
class IPPool:
    kind: ClassVar[str] = "IPPool"
    metadata: Metadata
    spec: IPPoolSpec

    @property
    def name(self) -> str:
        return self.metadata.name
