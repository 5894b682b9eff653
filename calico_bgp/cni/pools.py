"""Which pools an ADD may allocate from (pure): the network config's ipv4_pools / ipv6_pools, by
name or CIDR as Calico's ResolvePools takes them (cni-plugin/internal/pkg/utils/utils.go), else
every pool; then, as libcalico-go's ipam does, only enabled pools whose nodeSelector picks the node.

A pool the config names that does not exist, is disabled, or is of the other family is error 7
naming it: the config is wrong, not the cluster full.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Mapping, Sequence

from calico_bgp.cni.error import INVALID_CONFIG, CNIError


def choose(ippools: Sequence[Any], labels: Mapping[str, str], wanted: Sequence[str], version: int,
           field: str) -> list[Any]:
    """The IPPool resources to allocate from, in the order the config names them (else pool order)."""
    family = [p for p in ippools if ipaddress.ip_network(p.spec.cidr).version == version]
    if wanted:
        picked = []
        for ref in wanted:
            pool = next((p for p in ippools if p.metadata.name == ref or _same_cidr(p.spec.cidr, ref)), None)
            if pool is None:
                known = ", ".join(f"{p.metadata.name} ({p.spec.cidr})" for p in family) or "none"
                raise CNIError(INVALID_CONFIG, f"ipam.{field}: no IPPool named or with CIDR {ref!r} "
                                               f"(IPv{version} pools: {known})")
            if pool not in family:
                raise CNIError(INVALID_CONFIG, f"ipam.{field}: IPPool {pool.metadata.name} ({pool.spec.cidr}) "
                                               f"is not an IPv{version} pool")
            if pool.spec.disabled:
                raise CNIError(INVALID_CONFIG, f"ipam.{field}: IPPool {pool.metadata.name} is disabled")
            picked.append(pool)
        family = picked
    return [p for p in family if not p.spec.disabled and p.spec.node_selector.matches(labels)]


def _same_cidr(cidr: str, ref: str) -> bool:
    try:
        return ipaddress.ip_network(ref, strict=False) == ipaddress.ip_network(cidr)
    except ValueError:
        return False
