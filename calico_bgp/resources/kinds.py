"""The kinds by name: the Resource union, the classes by kind, the names and short forms the CLI takes."""
from __future__ import annotations

from typing import Union

from calico_bgp.resources.bfdconfig import BFDConfiguration
from calico_bgp.resources.bgpconfig import BGPConfiguration
from calico_bgp.resources.bgpfilter import BGPFilter
from calico_bgp.resources.bgppeer import BGPPeer
from calico_bgp.resources.fields import UnknownKind
from calico_bgp.resources.ippool import IPPool
from calico_bgp.resources.node import Node
from calico_bgp.resources.policyfilter import PolicyFilter

Resource = Union[IPPool, Node, BGPConfiguration, BGPPeer, BGPFilter, PolicyFilter, BFDConfiguration]
KINDS: dict[str, type] = {c.kind: c for c in (IPPool, Node, BGPConfiguration, BGPPeer, BGPFilter, PolicyFilter,
                                               BFDConfiguration)}
CALICO_KINDS = frozenset({"IPPool", "Node", "BGPConfiguration", "BGPPeer", "BGPFilter", "BFDConfiguration"})

_ALIASES = {
    "IPPool": ["ippool", "ippools", "pool", "pools", "ipp"],
    "Node": ["node", "nodes", "no"],
    "BGPConfiguration": ["bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs", "bgpc"],
    "BGPPeer": ["bgppeer", "bgppeers", "peer", "peers", "bgpp"],
    "BGPFilter": ["bgpfilter", "bgpfilters", "bgpf"],
    "PolicyFilter": ["policyfilter", "policyfilters", "pf", "policy", "policies"],
    "BFDConfiguration": ["bfdconfiguration", "bfdconfigurations", "bfdconfig", "bfdconfigs", "bfdc"],
}
_BY_ALIAS = {alias: kind for kind, aliases in _ALIASES.items() for alias in aliases}


def resolve_kind(text: str) -> type:
    """'ippools', 'BGPConfig', 'bgppeer' ... -> the resource class; UnknownKind otherwise."""
    kind = _BY_ALIAS.get(text.lower())
    if kind is None:
        raise UnknownKind(f"unknown kind {text!r}; known: {', '.join(KINDS)}")
    return KINDS[kind]


def kind_of(kind: str | type) -> type:
    """A resource class, or the class a kind name or alias stands for."""
    return kind if isinstance(kind, type) else resolve_kind(kind)
