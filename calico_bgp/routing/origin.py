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

from calico_bgp.resources.bgpconfig import BGPConfiguration
from calico_bgp.resources.ippool import IPPool
from calico_bgp.resources.node import Node
from calico_bgp.routing import topology
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.path import Peer
from calico_bgp.routing.prefix import Network, Prefix
from ipam.block import Block

REJECT, DEPREFER, DISABLED = "Reject", "Deprefer", "Disabled"
MODES = (REJECT, DEPREFER, DISABLED)
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
    prefixlen: int


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

    def __init__(self, me: str, pools: Iterable[tuple[str, Network]], blocks: Iterable[Block],
                 origins: Mapping[str, Origin], fabric_as: Iterable[int] = ()) -> None:
        self.me = me
        self.origins = dict(origins)
        self.fabric_as = frozenset(fabric_as)
        # per IP version, pools as (prefix length, host bits, network >> host bits, name), as bgpfilter
        # matches them, and blocks bucketed by length: (length, host bits, {network >> host bits: block});
        # blocks never overlap.
        self._pools: dict[int, list[tuple[int, int, int, str]]] = {4: [], 6: []}
        for name, n in pools:
            shift = n.max_prefixlen - n.prefixlen
            self._pools[n.version].append((n.prefixlen, shift, int(n.network_address) >> shift, name))
        tables: dict[tuple[int, int], dict[int, _Block]] = {}
        for b in blocks:
            net = b.network
            shift = net.max_prefixlen - net.prefixlen
            tables.setdefault((net.version, net.prefixlen), {})[int(net.network_address) >> shift] = \
                _Block(b.cidr, b.host, _holders(b), net.prefixlen)
        self._blocks: dict[int, list[tuple[int, int, dict[int, _Block]]]] = {
            v: [(plen, (32 if v == 4 else 128) - plen, tables[(ver, plen)]) for ver, plen in sorted(tables) if ver == v]
            for v in (4, 6)}
        self._reasons: dict[tuple[bool, str | None, str, str], str] = {}
        self._no_block: dict[str, str] = {}  # pool -> the reason of a prefix of it in no block
        # the prefixes of one UPDATE share their peer and attributes: owner -> verdict for the last pair
        self._last_peer: Peer | None = None
        self._last_attrs: PathAttributes | None = None
        self._verdicts: dict[str | None, str | None] = {}

    @classmethod
    def of_cluster(cls, me: str, nodes: Iterable[Node], pools: Iterable[IPPool],
                   blocks: Iterable[Block], config: BGPConfiguration) -> "OriginIndex":
        """The index for node `me` from the cluster's resources: every node with a BGP address is an
        origin (its AS, its router id as topology gives them), fabricASNumbers may stand in."""
        origins = {n.name: Origin(topology.node_as(n, config), topology.router_id(n))
                   for n in nodes if topology.node_addresses(n)}
        return cls(me, [(p.metadata.name, p.spec.network) for p in pools], blocks, origins,
                   config.spec.fabric_as_numbers)

    # --- lookup ----------------------------------------------------------------------------------
    @staticmethod
    def _what(host_route: bool, owner: str | None, block: _Block | None, pool: str) -> str:
        """What the prefix is, for a reason; nothing in it varies by prefix within a block, so the
        reasons of a burst share a few strings (the prefix is shown beside its reason)."""
        if block is None:
            return f"in pool {pool} but in no block"
        if host_route:
            return f"held by {owner} (block {block.cidr})" if owner else f"an unassigned address of block {block.cidr}"
        if owner is None:
            return f"{block.cidr} is a block with no affine node"
        return f"{block.cidr} is {owner}'s block"

    def check(self, peer: Peer, prefix: Prefix, attrs_: PathAttributes) -> str | None:
        """None when the path is valid or the prefix is outside every pool; else why it is invalid."""
        version, value, plen = prefix
        host_route = plen == (32 if version == 4 else 128)
        for nlen, shift, bits, pool in self._pools[version]:
            if plen >= nlen and value >> shift == bits:
                break
        else:
            return None
        owner = block = None
        for blen, shift, table in self._blocks[version]:
            if blen > plen:
                break
            block = table.get(value >> shift)
            if block is not None:
                owner = block.holders.get(value) if host_route else block.host
                break
        else:  # in no block: nobody's, whatever the path (what a fabric announcing pool space sends)
            text = self._no_block.get(pool)
            if text is None:
                text = self._no_block[pool] = REASON_PREFIX + self._what(host_route, None, None, pool)
            return text
        if self._last_peer is not peer or self._last_attrs is not attrs_:
            self._last_peer, self._last_attrs, self._verdicts = peer, attrs_, {}
        if owner is not None and owner == self.me:
            # our own route come back through the fabric (as-override defeats the AS-path loop check): no
            # one else's claim, and never installed (what we originate is not learned); anything else is
            exact = host_route or plen == block.prefixlen  # type: ignore[union-attr]
            path = attrs_.as_path
            if exact and path and all(a in self.fabric_as for a in path):
                return None
            why: str | None = f"this node's own, path from {peer.address}"
        else:
            verdicts = self._verdicts
            try:
                why = verdicts[owner]
            except KeyError:
                why = verdicts[owner] = self._invalid(peer, owner, attrs_)
            if why is None:
                return None
        key = (host_route, owner, block.cidr if block else pool, why)
        text = self._reasons.get(key)
        if text is None:  # the prefixes of one block from one path share one string
            if len(self._reasons) > 4096:
                self._reasons.clear()
            what = self._what(host_route, owner, block, pool)
            text = self._reasons[key] = REASON_PREFIX + (f"{what}, {why}" if why else what)
        return text

    def _invalid(self, peer: Peer, owner: str | None, attrs_: PathAttributes) -> str | None:
        """None when the path originates at `owner`; else how it does not ("" when nobody owns it)."""
        if owner is None:
            return ""
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

