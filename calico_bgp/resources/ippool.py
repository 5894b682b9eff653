"""IPPool: a range of addresses cut into blocks affine to nodes (ipam/), announced over BGP.

Calico's shape, validated as libcalico-go validates it (lib/clientv3/ippool.go). natOutgoing masquerades
the pool's traffic to addresses in no pool (routing/nat_outgoing.py, dataplane/nat/); IPIP/VXLAN modes and
namespaceSelector are stored, not acted on (pending.py says so at apply); allowedUses and assignmentMode
are acted on where addresses are assigned (cni/pools.py).
"""
from __future__ import annotations

import ipaddress
from typing import Any, ClassVar

import attrs

from calico_bgp.resources.fields import (
    Integer,
    bad,
    boolean,
    checked,
    cidr,
    int_range,
    one_of,
    optional_selector,
    selector,
    tuple_of,
)
from calico_bgp.resources.model import Metadata
from calico_bgp.resources.selector import ALL, Selector


ENCAP_MODES = ("Never", "Always", "CrossSubnet")
ALLOWED_USES = ("Workload", "Tunnel", "LoadBalancer")


def _encap(value: Any) -> str:
    return "Never" if value in (None, "") else one_of(*ENCAP_MODES)(value)


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
    ipip_mode: str = attrs.field(default="Never", converter=checked(_encap))
    vxlan_mode: str = attrs.field(default="Never", converter=checked(_encap))
    nat_outgoing: bool = attrs.field(default=False, converter=checked(boolean))
    allowed_uses: tuple[str, ...] = attrs.field(default=(), converter=checked(tuple_of(one_of(*ALLOWED_USES))))
    assignment_mode: str = attrs.field(
        default="", converter=checked(lambda v: "" if v in (None, "") else one_of("Automatic", "Manual")(v)))
    namespace_selector: Selector | None = attrs.field(default=None, converter=checked(optional_selector))

    # calicoctl prints these at their default; Calico's examples give them
    always_shown: ClassVar[frozenset[str]] = frozenset(
        {"ipip_mode", "vxlan_mode", "nat_outgoing", "node_selector", "block_size", "disabled", "disable_bgp_export"})
    # Calico v1's spellings (ipip: {enabled}, nat-outgoing) are not v3 fields
    calico_only: ClassVar[frozenset[str]] = frozenset({"ipip", "nat-outgoing"})

    def __attrs_post_init__(self) -> None:
        net = self.network
        lo, hi = (116, 128) if net.version == 6 else (20, 32)
        if not lo <= self.block_size <= hi:
            raise bad("blockSize", self.block_size, f"IPv{net.version} block sizes are {lo}..{hi}")
        if self.block_size < net.prefixlen:
            raise bad("blockSize", self.block_size,
                       f"blocks cannot be larger than the pool (/{net.prefixlen})")
        # libcalico-go lib/clientv3/ippool.go validateAndSetDefaults: IPIP is IPv4 only; one encapsulation
        if net.version == 6 and self.ipip_mode != "Never":
            raise bad("ipipMode", self.ipip_mode, "IPIP is not supported on an IPv6 pool")
        if self.ipip_mode != "Never" and self.vxlan_mode != "Never":
            raise bad("vxlanMode", self.vxlan_mode, "cannot enable both VXLAN and IPIP on the same pool")
        if len(set(self.allowed_uses)) != len(self.allowed_uses):
            raise bad("allowedUses", list(self.allowed_uses), "a use is listed twice")

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
