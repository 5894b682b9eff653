"""Giving addresses and blocks back: release by address or by handle, and empty blocks reclaimed.

Each release is one transaction per block: the block and every handle record it touches are
compared and written together, so a handle never counts addresses its blocks no longer hold. A
lost race reads the block again and retries, up to `max_attempts`. An empty block loses its
affinity only after two sweeps have seen it empty (a node between two pods keeps its block).
"""
from __future__ import annotations

import ipaddress
import logging
from typing import Any, Iterable

from calico_bgp.datastore.keys import Keys
from calico_bgp.datastore.types import Compare, Delete, Get, Put
from calico_bgp.resources import codec
from dataplane.logfmt import event
from ipam.block import Released, parse_network
from ipam.errors import CASRetriesExhausted, CorruptBlock, InvalidAddress
from ipam.seen import Seen
from ipam.store import IPAMStore, Stored, decode_handle

log = logging.getLogger("ipam")


def _within(ip: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise InvalidAddress(f"{ip!r} is not an IP address") from None
    return addr.version == net.version and addr in net


class Releaser:
    """The release side of a BlockAllocator, sharing its client, its `seen` state and its `stats`."""

    def __init__(self, client: Any, keys: Keys, store: IPAMStore, seen: Seen, stats: Any, max_attempts: int) -> None:
        self.client = client
        self.keys = keys
        self.store = store
        self.seen = seen
        self.stats = stats
        self.max_attempts = max_attempts

    async def release(self, ips: Iterable[str | tuple[str, int | None]],
                      blocks: list[str] | None = None) -> Released:
        """Free addresses (optionally `(ip, seq)`: a stale seq is refused). Idempotent: addresses
        already free, or in no block, come back in `not_allocated`."""
        items = [(i, None) if isinstance(i, str) else i for i in ips]
        cidrs = sorted(set(blocks)) if blocks else await self.store.block_keys()
        nets = [(c, parse_network(c)) for c in cidrs]
        per_block: dict[str, list[tuple[str, int | None]]] = {}
        not_allocated: list[str] = []
        for ip, seq in items:
            home = next((c for c, net in nets if _within(ip, net)), None)
            if home is None:
                not_allocated.append(ip)
            else:
                per_block.setdefault(home, []).append((ip, seq))
        by_handle: dict[str, int] = {}
        for cidr, wanted in per_block.items():
            rel = await self._release_in_block(cidr, lambda b, w=wanted: b.release(w))  # type: ignore[misc]
            for h, n in rel.by_handle.items():
                by_handle[h] = by_handle.get(h, 0) + n
            not_allocated += rel.not_allocated
        return Released(by_handle, tuple(not_allocated))

    async def release_handle(self, handle: str) -> int:
        """Free every address of `handle`; idempotent (an unknown handle frees nothing)."""
        hkey = self.keys.handle(handle)
        freed = 0
        misses = 0  # passes that freed nothing: a lost race or a stale entry; a freed block is progress
        while misses < self.max_attempts:
            kv = await self.client.get(hkey)
            if kv is None:
                self.seen.handles.pop(handle, None)
                return freed
            h = decode_handle(hkey, kv.value)
            if h.is_empty():
                await self.client.cas_delete(hkey, kv.mod_revision)
                misses += 1
                continue
            cidr = next(iter(h.blocks))
            rel = await self._release_in_block(cidr, lambda b: b.release_handle(handle),
                                               handle_hint=(handle, Stored(h, kv.mod_revision)))
            freed += rel.count
            misses = 0 if rel.count else misses + 1
        raise CASRetriesExhausted(hkey, self.max_attempts)

    async def _release_in_block(self, cidr: str, change: Any,
                                handle_hint: tuple[str, Stored] | None = None) -> Released:
        """Apply `change(block) -> (block, Released)` and fix the handle records, in one txn."""
        bkey = self.keys.block(cidr)
        for _ in range(self.max_attempts):
            kv = await self.client.get(bkey)
            stored = self.seen.block(bkey, [kv]) if kv is not None else None
            if stored is None and kv is not None:
                raise CorruptBlock(bkey, self.seen.corrupt.get(bkey, "does not decode"))
            if stored is None:
                new_block, rel = None, Released()
            else:
                new_block, rel = change(stored.value)
            touched = set(rel.by_handle)
            if handle_hint:
                touched.add(handle_hint[0])
            hkeys = {h: self.keys.handle(h) for h in touched}
            res = await self.client.txn([], [Get(k) for k in hkeys.values()], []) if hkeys else None
            compares = [Compare.mod(bkey, stored.mod_revision)] if stored else [Compare.created(bkey, 0)]
            ops: list[Any] = [Put(bkey, codec.encode(new_block))] if stored and rel.count else []
            for (h, hkey), kvs in zip(hkeys.items(), res.responses if res else []):
                if not kvs:
                    compares.append(Compare.created(hkey, 0))
                    continue
                compares.append(Compare.mod(hkey, kvs[0].mod_revision))
                cur = decode_handle(hkey, kvs[0].value)
                if handle_hint and h == handle_hint[0]:
                    new_h = cur.remove(cidr, cur.blocks.get(cidr, 0))  # the block is the truth
                else:
                    new_h = cur.remove(cidr, rel.by_handle.get(h, 0))
                ops.append(Delete(hkey) if new_h.is_empty() else Put(hkey, codec.encode(new_h)))
            if not ops:
                return rel
            done = await self.client.txn(compares, ops, [])
            self.stats.txns += 1
            if done.succeeded:
                for h in touched:
                    self.seen.handles.pop(h, None)
                if new_block is not None:
                    self.seen.block_written(cidr, Stored(new_block, done.revision))
                event(log, "ipam_released", logging.DEBUG, block=cidr, count=rel.count)
                return rel
            self.stats.conflicts += 1
        raise CASRetriesExhausted(bkey, self.max_attempts)

    async def reclaim_empty(self, node: str | None = None, cidrs: Iterable[str] | None = None) -> list[str]:
        """One sweep: count a sighting on every empty affine block (of `node`, or among `cidrs`);
        release (delete block and affinity) those already seen empty once before, so a block
        must stay empty across two sweeps to lose its affinity. Returns the released CIDRs."""
        blocks, _ = await self.store.blocks(self.seen.corrupt)
        only = set(cidrs) if cidrs is not None else None
        released = []
        for cidr, stored in blocks.items():
            b = stored.value
            if not b.is_empty() or b.host is None or (node is not None and b.host != node):
                continue
            if only is not None and cidr not in only:
                continue
            bkey = self.keys.block(cidr)
            seen = b.observe_empty()
            if seen.seen_empty >= 2:
                res = await self.client.txn([Compare.mod(bkey, stored.mod_revision)],
                                            [Delete(bkey), Delete(self.keys.affinity(b.host, cidr))], [])
                if res.succeeded:
                    released.append(cidr)
                    self.seen.forget_block(b.host, cidr)
                    event(log, "ipam_block_reclaimed", block=cidr, node=b.host)
            else:
                res = await self.client.txn([Compare.mod(bkey, stored.mod_revision)],
                                            [Put(bkey, codec.encode(seen))], [])
                if res.succeeded and cidr in self.seen.affine.get(b.host, {}):
                    self.seen.affine[b.host][cidr] = Stored(seen, res.revision)
        return released

    async def drop_block_if_empty(self, cidr: str, node: str) -> bool:
        """Delete `node`'s block `cidr` and its affinity if it holds no address (one CAS)."""
        bkey = self.keys.block(cidr)
        kv = await self.client.get(bkey)
        if kv is None:
            return False
        stored = self.seen.block(bkey, [kv])
        if stored is None or not stored.value.is_empty() or stored.value.host != node:
            return False
        res = await self.client.txn([Compare.mod(bkey, kv.mod_revision)],
                                    [Delete(bkey), Delete(self.keys.affinity(node, cidr))], [])
        if res.succeeded:
            self.seen.forget_block(node, cidr)
        return res.succeeded
