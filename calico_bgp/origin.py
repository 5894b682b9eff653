"""Origin validation from IPAM: who may originate a prefix inside an IP pool. Pure.

RPKI-style route origin validation (RFC 6811: a route is valid, invalid or not found), with the
IPAM blocks in etcd as the authority instead of ROAs:
- a block, or anything more specific inside it, belongs to the block's affine node;
- a host route (/32, /128) belongs to the node holding the address (a borrowed address is
  announced by its holder, not by the block's node); an unassigned address belongs to nobody;
- a prefix inside a pool but in no block (an aggregate, or space no node claimed) belongs to nobody;
- a prefix outside every pool is not ours to judge ("not found"): the import policy decides it.
A path is valid when it originates at the owner: over iBGP with an empty AS_PATH when it comes from
the owner's session or carries ORIGINATOR_ID = the owner's router id (reflected, RFC 4456); otherwise
when its origin AS (the last AS of the AS_PATH, RFC 6811 2; the peer's AS for an empty eBGP path)
is the owner's AS. With as-override at the ToRs the owner's AS is replaced by the fabric's, so a
fabric AS (BGPConfiguration fabricASNumbers) may stand in for it when every AS of the path is a
fabric AS or the owner's: a path that left the fabric (a hijacker's AS anywhere in it) never does.
This node's own blocks and addresses are never valid from anyone else.

Built once per cluster-state change (`OriginIndex.build`); `check` is one or two dict lookups per
path, for the import policy running over 100k-prefix bursts.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import attrs

from calico_bgp import model, topology
from calico_bgp.rib import PathAttrs, Peer, Prefix
from ipam.block import Block

REJECT, DEPREFER, OFF = "Reject", "Deprefer", "Off"
MODES = (REJECT, DEPREFER, OFF)
REASON_PREFIX = "origin invalid: "


@attrs.frozen(slots=True)
class Origin:
    """A node as an origin: its AS and BGP router id."""

    asn: int
    router_id: str


@attrs.frozen(slots=True)
class _Block:
    cidr: str
    host: str | None                 # the affine node
    holders: dict[int, str]          # address (as int) -> the node holding it


def _holders(block: Block) -> dict[int, str]:
    host = block.host
    base = int(block.network.network_address)
    out: dict[int, str] = {}
    for o, idx in enumerate(block.allocations):
        if idx is not None:
            node = block.attributes[idx].node or host
            if node:
                out[base + o] = node
    return out


class OriginIndex:
    """Who owns what inside the pools, indexed for `check`."""

    def __init__(self, me: str, pools: Iterable[tuple[str, Prefix]], blocks: Iterable[Block],
                 origins: Mapping[str, Origin], fabric_as: Iterable[int] = ()) -> None:
        self.me = me
        self.origins = dict(origins)
        self.fabric_as = frozenset(fabric_as)
        # (version, prefix length, network >> host bits, pool name), as bgpfilter matches pools
        self._pools = [(n.version, n.prefixlen, int(n.network_address) >> (n.max_prefixlen - n.prefixlen), name)
                       for name, n in pools]
        # blocks bucketed by (version, prefix length): network as int -> block; blocks never overlap
        self._tables: dict[tuple[int, int], dict[int, _Block]] = {}
        for b in blocks:
            net = b.network
            self._tables.setdefault((net.version, net.prefixlen), {})[int(net.network_address)] = \
                _Block(b.cidr, b.host, _holders(b))
        self._lengths = {v: sorted(plen for (ver, plen) in self._tables if ver == v) for v in (4, 6)}
        self._reasons: dict[tuple[str, str], str] = {}

    @classmethod
    def of_cluster(cls, me: str, nodes: Iterable[model.Node], pools: Iterable[model.IPPool],
                   blocks: Iterable[Block], config: model.BGPConfiguration) -> "OriginIndex":
        """The index for node `me` from the cluster's resources: every node with a BGP address is an
        origin (its AS, its router id as topology gives them), fabricASNumbers may stand in."""
        origins = {n.name: Origin(topology.node_as(n, config), topology.router_id(n))
                   for n in nodes if topology.node_addresses(n)}
        return cls(me, [(p.metadata.name, p.spec.network) for p in pools], blocks, origins,
                   config.spec.fabric_as_numbers)

    # --- lookup ----------------------------------------------------------------------------------
    def _pool(self, prefix: Prefix) -> str | None:
        version, plen, value, top = prefix.version, prefix.prefixlen, int(prefix.network_address), prefix.max_prefixlen
        for nv, nlen, nbits, name in self._pools:
            if nv == version and plen >= nlen and value >> (top - nlen) == nbits:
                return name
        return None

    def _block(self, prefix: Prefix) -> _Block | None:
        value, plen, top = int(prefix.network_address), prefix.prefixlen, prefix.max_prefixlen
        for blen in self._lengths[prefix.version]:
            if blen > plen:
                break
            found = self._tables[(prefix.version, blen)].get(value >> (top - blen) << (top - blen))
            if found is not None:
                return found
        return None

    def owner(self, prefix: Prefix) -> tuple[str | None, _Block | None, str] | None:
        """(the owning node or None, its block, its pool) for a prefix inside a pool; None outside them."""
        pool = self._pool(prefix)
        if pool is None:
            return None
        block = self._block(prefix)
        if block is None:
            return None, None, pool
        if prefix.prefixlen == prefix.max_prefixlen:
            return block.holders.get(int(prefix.network_address)), block, pool
        return block.host, block, pool

    @staticmethod
    def _what(prefix: Prefix, owner: str | None, block: _Block | None, pool: str) -> str:
        """What the prefix is, for a reason: built only for an invalid path."""
        if block is None:
            return f"{prefix} is in pool {pool} but in no block"
        if prefix.prefixlen == prefix.max_prefixlen:
            if owner is None:
                return f"{prefix.network_address} is not assigned (block {block.cidr})"
            return f"{prefix.network_address} is held by {owner}"
        if owner is None:
            return f"{block.cidr} is a block with no affine node"
        return f"{block.cidr} is {owner}'s block"

    # --- the check -------------------------------------------------------------------------------
    def check(self, peer: Peer, prefix: Prefix, attrs_: PathAttrs) -> str | None:
        """None when the path is valid or the prefix is outside every pool; else why it is invalid."""
        found = self.owner(prefix)
        if found is None:
            return None
        owner, block, pool = found
        why = self._invalid(peer, owner, attrs_)
        if why is None:
            return None
        what = self._what(prefix, owner, block, pool)
        key = (what, why)
        text = self._reasons.get(key)
        if text is None:  # the prefixes of one block from one path share one string
            if len(self._reasons) > 4096:
                self._reasons.clear()
            text = self._reasons[key] = REASON_PREFIX + (f"{what}, {why}" if why else what)
        return text

    def _invalid(self, peer: Peer, owner: str | None, attrs_: PathAttrs) -> str | None:
        """None when the path originates at `owner`; else how it does not ("" when nobody owns it)."""
        if owner is None:
            return ""
        if owner == self.me:
            return f"this node's own, path from {peer.address}"
        origin = self.origins.get(owner)
        if origin is None:
            return f"{owner} is not a BGP node"
        path = attrs_.as_path
        if not path and peer.ibgp:  # originated inside our AS: by the router that put it in
            rid = attrs_.originator_id or peer.router_id
            return None if rid == origin.router_id else f"path originates at router {rid}"
        origin_as = path[-1] if path else peer.asn
        if origin_as == origin.asn:
            return None
        fabric = self.fabric_as
        if origin_as not in fabric:
            return f"path originates at AS {origin_as}"
        outsider = next((a for a in path if a not in fabric and a != origin.asn), None)
        if outsider is None:
            return None  # the owner's AS replaced by the fabric's (as-override), never leaving the fabric
        return f"path originates at fabric AS {origin_as} but passed AS {outsider}, not a fabric AS"

