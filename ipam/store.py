"""Reading IPAM state from etcd: decode every stored value through the one codec, and set aside
(and name) any key whose value does not decode, so one corrupt block never stops the others."""
from __future__ import annotations

import logging
from typing import Any

import attrs

from calico_bgp.datastore.keys import Keys, cidr_from_key
from calico_bgp.datastore.types import Get
from calico_bgp.resources import codec
from dataplane.logfmt import event
from ipam.block import Block, parse_network
from ipam.errors import CorruptBlock
from ipam.records import Affinity, Handle

log = logging.getLogger("ipam")


@attrs.frozen
class Stored:
    """A decoded value with the revision a compare-and-swap needs."""
    value: Any
    mod_revision: int


@attrs.frozen
class AffinityRecord:
    node: str
    cidr: str
    state: str
    mod_revision: int


@attrs.frozen
class Snapshot:
    """Everything IPAM stores (blocks, then handles, then affinities; `revision` is the blocks')."""
    blocks: dict[str, Stored]          # cidr -> Stored(Block)
    handles: dict[str, Stored]         # handle id -> Stored(Handle)
    affinities: list[AffinityRecord]
    corrupt: dict[str, str]            # key -> why it does not decode
    revision: int = 0


def decode_block(key: str, raw: bytes) -> Block:
    try:
        block = codec.decode(Block, raw, where=key)
    except codec.DecodeError as exc:
        raise CorruptBlock(key, str(exc).removeprefix(f"{key}: ")) from None
    expected = cidr_from_key(key)
    try:
        size = block.network.num_addresses
    except ValueError as exc:
        raise CorruptBlock(key, f"cidr {block.cidr!r}: {exc}") from None
    if block.cidr != expected or len(block.allocations) != size:
        raise CorruptBlock(key, f"block describes {block.cidr} with {len(block.allocations)} addresses")
    problem = block.inconsistency()
    if problem is not None:
        raise CorruptBlock(key, problem)
    return block


def decode_handle(key: str, raw: bytes) -> Handle:
    try:
        return codec.decode(Handle, raw, where=key)
    except codec.DecodeError as exc:
        raise CorruptBlock(key, str(exc).removeprefix(f"{key}: ")) from None


def decode_affinity(key: str, raw: bytes) -> Affinity:
    try:
        return codec.decode(Affinity, raw, where=key)
    except codec.DecodeError as exc:
        raise CorruptBlock(key, str(exc).removeprefix(f"{key}: ")) from None


class IPAMStore:
    """Read-side helpers over one client; the allocator does the writes."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def _note_corrupt(self, corrupt: dict[str, str], exc: CorruptBlock) -> None:
        corrupt[exc.key] = exc.reason
        event(log, "ipam_corrupt_value", logging.WARNING, key=exc.key, reason=exc.reason)

    async def blocks(self, corrupt: dict[str, str] | None = None) -> tuple[dict[str, Stored], int]:
        """Every block that decodes; corrupt ones are put in `corrupt` (key -> reason)."""
        corrupt = {} if corrupt is None else corrupt
        res = await self.client.range(self.keys.blocks())
        out: dict[str, Stored] = {}
        for kv in res.kvs:
            try:
                out[cidr_from_key(kv.key)] = Stored(decode_block(kv.key, kv.value), kv.mod_revision)
            except CorruptBlock as exc:
                self._note_corrupt(corrupt, exc)
        return out, res.revision

    async def block_keys(self) -> list[str]:
        """CIDRs of every stored block (corrupt values included), without reading the values. A key
        that names no network (written by hand: `…/blocks/junk`) is logged and left out."""
        res = await self.client.txn([], [Get(self.keys.blocks(), prefix=True, keys_only=True)], [])
        out = []
        for kv in res.responses[0]:
            cidr = cidr_from_key(kv.key)
            try:
                parse_network(cidr)
            except ValueError as exc:
                event(log, "ipam_corrupt_value", logging.WARNING, key=kv.key, reason=f"not a block key: {exc}")
                continue
            out.append(cidr)
        return out

    async def get_blocks(self, cidrs: list[str],
                         corrupt: dict[str, str] | None = None) -> dict[str, Stored | None]:
        """Several blocks in one round trip; None for a block that is absent or corrupt."""
        if not cidrs:
            return {}
        corrupt = {} if corrupt is None else corrupt
        res = await self.client.txn([], [Get(self.keys.block(c)) for c in cidrs], [])
        out: dict[str, Stored | None] = {}
        for cidr, kvs in zip(cidrs, res.responses):
            out[cidr] = None
            if kvs:
                try:
                    out[cidr] = Stored(decode_block(kvs[0].key, kvs[0].value), kvs[0].mod_revision)
                except CorruptBlock as exc:
                    self._note_corrupt(corrupt, exc)
        return out

    async def affinities(self, node: str | None = None,
                         corrupt: dict[str, str] | None = None) -> list[AffinityRecord]:
        corrupt = {} if corrupt is None else corrupt
        prefix = self.keys.affinities(node)
        root = self.keys.affinities()
        res = await self.client.range(prefix)
        out = []
        for kv in res.kvs:
            rest = kv.key[len(root):]
            owner = rest.rsplit("/", 1)[0]
            try:
                aff = decode_affinity(kv.key, kv.value)
            except CorruptBlock as exc:
                self._note_corrupt(corrupt, exc)
                continue
            out.append(AffinityRecord(owner, cidr_from_key(kv.key), aff.state, kv.mod_revision))
        return out

    async def handles(self, corrupt: dict[str, str] | None = None) -> dict[str, Stored]:
        corrupt = {} if corrupt is None else corrupt
        res = await self.client.range(self.keys.handles())
        out: dict[str, Stored] = {}
        for kv in res.kvs:
            try:
                h = decode_handle(kv.key, kv.value)
            except CorruptBlock as exc:
                self._note_corrupt(corrupt, exc)
                continue
            out[h.handle_id] = Stored(h, kv.mod_revision)
        return out

    async def snapshot(self) -> Snapshot:
        corrupt: dict[str, str] = {}
        blocks, rev = await self.blocks(corrupt)
        handles = await self.handles(corrupt)
        affinities = await self.affinities(None, corrupt)
        return Snapshot(blocks, handles, affinities, corrupt, rev)
