"""Which pools an ADD may allocate from (pure): the network config's ipv4_pools / ipv6_pools, by
name or CIDR as Calico's ResolvePools takes them (cni-plugin/internal/pkg/utils/utils.go), else
every enabled pool whose nodeSelector picks the node; a pool the config names is used whatever its
nodeSelector, as libcalico-go's ipam does.
As libcalico-go/lib/ipam/ipam.go (determinePools, filterPoolsByUse) does for a workload's
address: a pool whose allowedUses lack Workload is never used (one the config names is error 7),
and a pool with assignmentMode Manual only when the config names it.

A pool the config names that does not exist, is disabled, or is of the other family is error 7
naming it: the config is wrong, not the cluster full.

The IPPools and the Node come from etcd as `calico-bgp apply` stored them (checked on the way in):
`stored_pool` and `stored_labels` read only the fields an allocation needs, instead of building
the whole resource model (attrs classes, converters, the YAML scalar rules: about a fifth of a
plugin's CPU); the selector parser is loaded only for a nodeSelector other than all().
"""
from __future__ import annotations

import ipaddress
import json
from typing import Any, Mapping, NamedTuple, Sequence

from calico_bgp.cni.error import INVALID_CONFIG, CNIError

_ALL = ("", "all()")


class PoolRow(NamedTuple):
    """What an allocation needs of one stored IPPool."""
    name: str
    cidr: str
    block_size: int
    disabled: bool
    node_selector: Any  # the parsed nodeSelector (resources/selector.py); None for all() and ""
    for_workloads: bool = True  # allowedUses holds Workload (Calico's default: Workload, Tunnel)
    automatic: bool = True  # assignmentMode Automatic (the default), not Manual

    def selects(self, labels: Mapping[str, str]) -> bool:
        return self.node_selector is None or bool(self.node_selector.matches(labels))


def stored_pool(raw: bytes) -> PoolRow:
    """An IPPool as stored (the codec's JSON: metadata.name, spec.cidr, spec.blockSize, ...); ValueError
    naming the field when it does not read (Calico's defaults: blockSize 26 / 122, nodeSelector all())."""
    doc = _object(json.loads(raw), "value")
    name, spec = _object(doc.get("metadata"), "metadata").get("name"), _object(doc.get("spec"), "spec")
    cidr, size = spec.get("cidr"), spec.get("blockSize")
    selector, disabled = spec.get("nodeSelector") or "", spec.get("disabled", False)
    if not isinstance(name, str) or not name:
        raise ValueError("metadata.name: not a name")
    if not isinstance(cidr, str):
        raise ValueError("spec.cidr: not a CIDR")
    net = ipaddress.ip_network(cidr)  # ValueError names the text
    if size is None:
        size = 122 if net.version == 6 else 26
    if type(size) is not int or not net.prefixlen <= size <= net.max_prefixlen:
        raise ValueError(f"spec.blockSize: {size!r} is no block size in {cidr}")
    if not isinstance(selector, str) or not isinstance(disabled, bool):
        raise ValueError("spec.nodeSelector / spec.disabled: not a string / boolean")
    uses, mode = spec.get("allowedUses") or ["Workload", "Tunnel"], spec.get("assignmentMode") or "Automatic"
    if not isinstance(uses, list) or not all(isinstance(u, str) for u in uses):
        raise ValueError(f"spec.allowedUses: {uses!r} is not a list of uses")
    if mode not in ("Automatic", "Manual"):
        raise ValueError(f"spec.assignmentMode: {mode!r} is neither Automatic nor Manual")
    return PoolRow(name, cidr, size, disabled, _selector(selector), "Workload" in uses, mode == "Automatic")


def stored_labels(raw: bytes) -> dict[str, str]:
    """A stored Node's metadata.labels; ValueError when they are not a map of strings."""
    labels = _object(_object(json.loads(raw), "value").get("metadata"), "metadata").get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ValueError("metadata.labels: not a map of strings")
    return labels


def choose(ippools: Sequence[PoolRow], labels: Mapping[str, str], wanted: Sequence[str], version: int,
           field: str) -> list[PoolRow]:
    """The IPPools to allocate from, in the order the config names them (else pool order). Named pools
    are used whatever their nodeSelector (libcalico-go lib/ipam/ipam.go determinePools: selectors came
    after pool lists); without a list, the enabled Automatic pools for workloads that select the node."""
    family = [p for p in ippools if ipaddress.ip_network(p.cidr).version == version]
    if wanted:
        picked = []
        for ref in wanted:
            pool = next((p for p in ippools if p.name == ref or _same_cidr(p.cidr, ref)), None)
            if pool is None:
                known = ", ".join(f"{p.name} ({p.cidr})" for p in family) or "none"
                raise CNIError(INVALID_CONFIG, f"ipam.{field}: no IPPool named or with CIDR {ref!r} "
                                               f"(IPv{version} pools: {known})")
            if pool not in family:
                raise CNIError(INVALID_CONFIG, f"ipam.{field}: IPPool {pool.name} ({pool.cidr}) "
                                               f"is not an IPv{version} pool")
            if pool.disabled:
                raise CNIError(INVALID_CONFIG, f"ipam.{field}: IPPool {pool.name} is disabled")
            if not pool.for_workloads:
                raise CNIError(INVALID_CONFIG, f"ipam.{field}: IPPool {pool.name}'s allowedUses do not include "
                                               "Workload")
            picked.append(pool)
        return picked  # named pools are used whatever their nodeSelector, as Calico's determinePools does
    # unnamed: Manual pools are left out, as pools not for workloads always are
    return [p for p in family if p.automatic and p.for_workloads and not p.disabled and p.selects(labels)]


def _selector(text: str) -> Any:
    if text.strip() in _ALL:
        return None
    from calico_bgp.resources.selector import parse

    return parse(text)  # a SelectorError is a ValueError naming the selector


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what}: not a JSON object")
    return value


def _same_cidr(cidr: str, ref: str) -> bool:
    try:
        return ipaddress.ip_network(ref, strict=False) == ipaddress.ip_network(cidr)
    except ValueError:
        return False
