"""The allocator: the compare-and-swap loop between pure blocks and etcd.

Steady state is one transaction per allocation: the node's affine blocks are read once and kept
with their mod_revision; an allocation is `compare block mod_revision (and the handle's) ->
put block + handle`, and a lost race carries the current block back in the failure branch of the
same transaction, so a retry needs no extra read. Claiming a block follows Calico: write a
pending affinity, create the block with a create-if-absent transaction, confirm the affinity;
whoever loses the create drops its pending affinity and tries the next free block. Releasing is
release.py's; what was last read (affine blocks, handles, corrupt keys) is seen.py's.
"""
from __future__ import annotations

import contextlib
import logging
import random
from typing import Any, Awaitable, Callable, ContextManager, Iterable, Mapping

import attrs

from calico_bgp.datastore.keys import Keys, cidr_from_key
from calico_bgp.datastore.types import Compare, Delete, Get, Put
from calico_bgp.resources import codec
from dataplane.logfmt import event
from ipam.block import Allocated, Block, Released
from ipam.errors import CASRetriesExhausted, CorruptBlock, NoEligiblePool, PoolExhausted
from ipam.pool import Pool
from ipam.records import CONFIRMED, PENDING, Affinity, Handle
from ipam.release import Releaser
from ipam.seen import Seen
from ipam.store import IPAMStore, Stored, decode_affinity, decode_handle

log = logging.getLogger("ipam")

_AFF_PENDING = codec.encode(Affinity(PENDING))
_AFF_CONFIRMED = codec.encode(Affinity(CONFIRMED))


@attrs.define
class Stats:
    txns: int = 0
    conflicts: int = 0
    claims: int = 0
    claim_races_lost: int = 0
    borrowed: int = 0


class BlockAllocator:
    """Allocates and releases addresses for nodes; safe to run in many processes at once."""

    def __init__(self, client: Any, keys: Keys, *, max_attempts: int = 100, handle_cache: int = 4096,
                 backoff: float = 0.001, pause: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.client = client
        # how a lost CAS round waits: trio's sleep, or (with a blocking client, no event loop) `pause`
        self.pause = pause
        self.keys = keys
        self.store = IPAMStore(client, keys)
        self.max_attempts = max_attempts
        self.backoff = backoff  # seconds: the first retry waits up to this, doubling after each loss
        self.stats = Stats()
        self.seen = Seen(handle_cache)
        self.corrupt = self.seen.corrupt  # keys seen corrupt: key -> reason
        self.releaser = Releaser(client, keys, self.store, self.seen, self.stats, max_attempts)

    # --- allocation --------------------------------------------------------------------------
    async def allocate(self, node: str, handle: str, count: int, pools: Iterable[Pool],
                       attrs: Mapping[str, str] | None = None, ipv6: bool = False,
                       max_blocks_per_host: int | None = None, strict_affinity: bool = False) -> list[Allocated]:
        """`count` addresses for `handle` on `node` from the given (eligible) pools, all or nothing."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        for what, value in (("node", node), ("handle", handle)):
            if not value or "/" in value:  # each is a segment of an etcd key
                raise ValueError(f"{what} {value!r}: must be non-empty, without '/'")
        version = 6 if ipv6 else 4
        eligible = [p for p in pools if not p.disabled and p.version == version]
        if not eligible:
            raise NoEligiblePool(f"no enabled IPv{version} pool is eligible for node {node}")
        got: list[Allocated] = []
        claimed: list[str] = []
        try:
            await self._allocate(node, handle, count, eligible, attrs or {}, max_blocks_per_host,
                                 strict_affinity, got, claimed)
        except BaseException:
            # all or nothing, whatever stopped it (pool exhausted, etcd gone, cancelled): give back
            # what was taken, as far as etcd lets us; the original error is what the caller sees
            if got or claimed:
                with self._shielded(10):
                    try:
                        await self._roll_back(node, got, claimed)
                    except Exception as exc:  # noqa: BLE001 - `ipam check --repair` finds what is left
                        event(log, "ipam_rollback_failed", logging.ERROR, node=node, handle=handle,
                              addresses=len(got), error=str(exc))
            raise
        event(log, "ipam_allocated", logging.DEBUG, node=node, handle=handle, count=len(got))
        return got

    async def _allocate(self, node: str, handle: str, count: int, pools: list[Pool], attrs: Mapping[str, str],
                        max_blocks: int | None, strict: bool, got: list[Allocated], claimed: list[str]) -> None:
        # 1. the node's affine blocks as cached; 2. the same after a re-scan (another process on
        # this node may have claimed more); 3. claim new blocks; 4. borrow.
        scanned = node not in self.seen.affine
        if scanned:
            await self._scan(node)
        while True:
            for cidr in self._usable(node, pools):
                got += await self._take(node, handle, count - len(got), cidr, attrs, affine=True)
                if len(got) == count:
                    return
            if scanned:
                break
            scanned = True
            await self._scan(node)
        # every stored block's CIDR (keys only) is read only now, to claim a block no one holds
        existing = set(await self.store.block_keys())
        while len(got) < count:
            cidr = await self._claim(node, pools, max_blocks, existing)
            if cidr is None:
                break
            claimed.append(cidr)
            got += await self._take(node, handle, count - len(got), cidr, attrs, affine=True)
        if len(got) < count and not strict:
            await self._borrow(node, handle, count, pools, attrs, got)
        if len(got) < count:
            names = ",".join(p.name for p in pools)
            raise PoolExhausted(f"pool(s) {names} exhausted for node {node}: wanted {count}, "
                                f"{len(got)} free" + ("" if strict else " (borrowing included)"))

    async def _scan(self, node: str) -> None:
        """The node's affinities in one round trip; in one more, the blocks among them that are not
        cached, or cached full (another process may have released in them), and pending ones (a claim
        to finish). Other nodes' blocks are not read: with thousands of blocks, their keys alone were
        most of a CNI plugin's etcd work."""
        res = await self.client.txn([], [Get(self.keys.affinities(node), prefix=True)], [])
        confirmed, pending = set(), set()
        for kv in res.responses[0]:
            try:
                state = decode_affinity(kv.key, kv.value).state
            except CorruptBlock as exc:
                self.corrupt[exc.key] = exc.reason
                continue
            (confirmed if state == CONFIRMED else pending).add(cidr_from_key(kv.key))
        cache = self.seen.affine.setdefault(node, {})
        for cidr in [c for c in cache if c not in confirmed]:
            del cache[cidr]
        stale = {c for c in confirmed if c not in cache or cache[c].value.free_count == 0}
        blocks = await self.store.get_blocks(sorted(stale | pending), self.corrupt)
        # a claim that stopped between creating its block and confirming the affinity (a crash, a
        # lost connection): the block is ours, finish the claim rather than leave it to borrowers
        for cidr in sorted(pending):
            stored = blocks.get(cidr)
            if stored is not None and stored.value.host == node:
                await self.client.put(self.keys.affinity(node, cidr), _AFF_CONFIRMED)
                cache[cidr] = stored
                event(log, "ipam_claim_completed", node=node, block=cidr)
        for cidr in sorted(stale):
            stored = blocks.get(cidr)
            if stored is not None and stored.value.host == node:
                cache[cidr] = stored
            else:
                cache.pop(cidr, None)  # gone, corrupt, or no longer ours
        event(log, "ipam_scan", logging.DEBUG, node=node, affine=len(cache))

    async def refresh(self, node: str) -> None:
        """Forget what is cached for `node` and read its affine blocks again."""
        self.seen.affine.pop(node, None)
        await self._scan(node)

    def _usable(self, node: str, pools: list[Pool]) -> list[str]:
        blocks = self.seen.affine.get(node, {})
        return [c for c, s in blocks.items()
                if s.value.free_count > 0 and any(p.contains(c) for p in pools)]

    async def _take(self, node: str, handle: str, n: int, cidr: str, attrs: Mapping[str, str], *,
                    affine: bool, current: Stored | None = None) -> list[Allocated]:
        """Up to `n` addresses from one block in one transaction (retried on conflict)."""
        cache = self.seen.affine.setdefault(node, {})
        stored = cache.get(cidr) if affine else current
        bkey, hkey = self.keys.block(cidr), self.keys.handle(handle)
        for attempt in range(self.max_attempts):
            if attempt:
                await self._back_off(attempt)
            if stored is None or (affine and stored.value.host != node):
                cache.pop(cidr, None)  # gone, or no longer ours
                return []
            new_block, got = stored.value.allocate(n, handle, node, attrs)
            if not got:
                return []
            known = self.seen.handles.get(handle)
            h = known.value if known else Handle(handle, node=node)
            hcmp = Compare.mod(hkey, known.mod_revision) if known else Compare.created(hkey, 0)
            new_h = h.add(cidr, len(got))
            res = await self.client.txn(
                [Compare.mod(bkey, stored.mod_revision), hcmp],
                [Put(bkey, codec.encode(new_block)), Put(hkey, codec.encode(new_h))],
                [Get(bkey), Get(hkey)])
            self.stats.txns += 1
            if res.succeeded:
                # a successful txn's puts carry the txn's revision as their mod_revision
                stored = Stored(new_block, res.revision)
                if affine:
                    cache[cidr] = stored
                self.seen.remember_handle(handle, Stored(new_h, res.revision))
                if not affine:
                    self.stats.borrowed += len(got)
                return got
            self.stats.conflicts += 1
            bkvs, hkvs = res.responses
            stored = self.seen.block(bkey, bkvs)
            if affine and stored is not None:
                cache[cidr] = stored
            self.seen.remember_handle(handle, Stored(decode_handle(hkey, hkvs[0].value), hkvs[0].mod_revision)
                                  if hkvs else None)
        raise CASRetriesExhausted(bkey, self.max_attempts)

    async def _back_off(self, attempt: int) -> None:
        # contenders on one block lose most CAS rounds; jitter spreads their retries
        delay = random.uniform(0, self.backoff * (1 << min(attempt - 1, 6)))
        if self.pause is not None:
            await self.pause(delay)
            return
        import trio

        await trio.sleep(delay)

    def _shielded(self, seconds: float) -> ContextManager[Any]:
        """The roll-back runs even when the allocation was cancelled (under trio); a blocking client
        cannot be cancelled, so it needs no shield."""
        if self.pause is not None:
            return contextlib.nullcontext()
        import trio

        return trio.move_on_after(seconds, shield=True)

    # --- claiming ----------------------------------------------------------------------------
    async def _claim(self, node: str, pools: list[Pool], max_blocks: int | None, existing: set[str]) -> str | None:
        """Claim one free block for `node`: pending affinity -> create block -> confirm."""
        if max_blocks is not None:
            mine = sum(1 for c in self.seen.affine.get(node, {}) if any(p.contains(c) for p in pools))
            if mine >= max_blocks:
                event(log, "ipam_claim_refused", node=node, reason="maxBlocksPerHost", affine=mine, max=max_blocks)
                return None
        for pool in pools:
            for cidr in pool.block_cidrs(node):
                if cidr in existing:
                    continue
                existing.add(cidr)
                if await self._claim_block(node, cidr):
                    return cidr
        return None

    async def _claim_block(self, node: str, cidr: str) -> bool:
        akey, bkey = self.keys.affinity(node, cidr), self.keys.block(cidr)
        await self.client.create(akey, _AFF_PENDING)  # an existing one (ours, from a crash) is re-used
        block = Block.new(cidr, node)
        res = await self.client.txn([Compare.created(bkey, 0)], [Put(bkey, codec.encode(block))], [Get(bkey)])
        self.stats.txns += 2
        if res.succeeded:
            stored = Stored(block, res.revision)
        else:
            stored = self.seen.block(bkey, res.responses[0])
            if stored is None or stored.value.host != node:
                # lost the race to another node: drop our pending claim, try the next block
                await self.client.txn([Compare.value(akey, _AFF_PENDING)], [Delete(akey)], [])
                self.stats.claim_races_lost += 1
                event(log, "ipam_claim_lost", node=node, block=cidr)
                return False
        await self.client.put(akey, _AFF_CONFIRMED)
        self.seen.affine.setdefault(node, {})[cidr] = stored
        self.stats.claims += 1
        event(log, "ipam_claimed", node=node, block=cidr)
        return True

    # --- borrowing ---------------------------------------------------------------------------
    async def _borrow(self, node: str, handle: str, count: int, pools: list[Pool],
                      attrs: Mapping[str, str], got: list[Allocated]) -> None:
        blocks, _ = await self.store.blocks(self.corrupt)
        # unaffine blocks first, then other nodes' blocks
        order = sorted((s.value.host is not None, c) for c, s in blocks.items()
                       if s.value.host != node and s.value.free_count > 0 and any(p.contains(c) for p in pools))
        for _, cidr in order:
            taken = await self._take(node, handle, count - len(got), cidr, attrs, affine=False,
                                     current=blocks[cidr])
            if taken:
                event(log, "ipam_borrowed", node=node, block=cidr, owner=blocks[cidr].value.host, count=len(taken))
            got += taken
            if len(got) == count:
                return

    async def _roll_back(self, node: str, got: list[Allocated], claimed: list[str]) -> None:
        """An allocation that cannot complete leaves nothing behind."""
        if got:
            await self.release([(a.ip, a.seq) for a in got], blocks=[a.block for a in got])
        for cidr in claimed:
            await self._drop_block_if_empty(cidr, node)

    # --- release (release.py) ------------------------------------------------------------------
    async def release(self, ips: Iterable[str | tuple[str, int | None]],
                      blocks: list[str] | None = None) -> Released:
        """Free addresses (optionally `(ip, seq)`: a stale seq is refused). Idempotent: addresses
        already free, or in no block, come back in `not_allocated`."""
        return await self.releaser.release(ips, blocks)

    async def release_handle(self, handle: str) -> int:
        """Free every address of `handle`; idempotent (an unknown handle frees nothing)."""
        return await self.releaser.release_handle(handle)

    async def reclaim_empty(self, node: str | None = None, cidrs: Iterable[str] | None = None) -> list[str]:
        """One sweep of empty blocks (see Releaser.reclaim_empty); returns the released CIDRs."""
        return await self.releaser.reclaim_empty(node, cidrs)

    async def _drop_block_if_empty(self, cidr: str, node: str) -> bool:
        return await self.releaser.drop_block_if_empty(cidr, node)
