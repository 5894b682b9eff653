"""What a change of the cluster makes import policy judge again (soft reconfiguration). Pure.

Import policy reads the pools, each peer's BGPFilters, the node's own addresses (martians), and for
origin validation the nodes (AS, router id), the IPAM blocks and fabricASNumbers. The control loop
re-ran it over everything every peer sent on every datastore change, so a node joining the cluster
(its Node, then its block) cost every other node two passes over its whole RIB. Now:

- the pools, a peer's filters, the own addresses or fabricASNumbers changed (or nothing was judged
  yet): everything (`None`);
- else blocks or node origins changed: only the prefixes inside the blocks concerned: a block
  added, removed or changed, and a block whose affine node or an address's holder is a node whose
  origin appeared, went or changed. Origin validation finds a prefix's owner among the blocks at
  most as long as the prefix, inside the prefix's pool, so no other prefix's verdict can change;
- nothing changed: no prefix.

A peer whose own values changed (its `Peer`: AS, reflection role, link, originValidation mode) is
judged again in full by the caller, whatever this says.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Iterator, Mapping

import attrs

from calico_bgp.routing.origin import Origin
from calico_bgp.routing.prefix import Prefix
from ipam.block import Block

MAX_CANDIDATES = 1 << 16  # prefixes enumerated inside changed blocks before judging everything instead


@attrs.frozen
class PolicyInputs:
    """Everything import policy reads but the peers' own values."""

    pools: tuple[Any, ...]             # (name, spec) of each pool
    filters: tuple[Any, ...]           # (peer address, its BGPFilters) of each session
    own: frozenset[str]                # this node's addresses
    fabric_as: frozenset[int]          # fabricASNumbers
    origins: Mapping[str, Origin]      # node -> its origin
    blocks: Mapping[str, Block]        # CIDR -> block


def _nodes_of(block: Block) -> set[str]:
    out = {a.node for a in block.attributes if a.node}
    if block.host:
        out.add(block.host)
    return out


def _inside(cidr: str) -> Iterator[Prefix]:
    """Every prefix inside `cidr`, the block itself included (as long or longer)."""
    net = ipaddress.ip_network(cidr)
    top = net.max_prefixlen
    base = int(net.network_address)
    for plen in range(net.prefixlen, top + 1):
        step = 1 << (top - plen)
        for i in range(1 << (plen - net.prefixlen)):
            yield Prefix(net.version, base + i * step, plen)


def _size(cidr: str) -> int:
    net = ipaddress.ip_network(cidr)
    return (1 << (net.max_prefixlen - net.prefixlen + 1)) - 1


def rejudge(before: PolicyInputs | None, now: PolicyInputs) -> frozenset[Prefix] | None:
    """The prefixes whose import verdict may differ from `before` to `now`; None: every prefix."""
    if (before is None or before.pools != now.pools or before.filters != now.filters or before.own != now.own
            or before.fabric_as != now.fabric_as):
        return None
    if before.blocks is now.blocks and before.origins == now.origins:
        return frozenset()
    cidrs = {c for c in before.blocks.keys() | now.blocks.keys() if before.blocks.get(c) != now.blocks.get(c)}
    moved = {n for n in before.origins.keys() | now.origins.keys() if before.origins.get(n) != now.origins.get(n)}
    if moved:
        for blocks in (before.blocks, now.blocks):
            cidrs.update(c for c, b in blocks.items() if c not in cidrs and _nodes_of(b) & moved)
    if sum(_size(c) for c in cidrs) > MAX_CANDIDATES:
        return None
    return frozenset(p for c in cidrs for p in _inside(c))
