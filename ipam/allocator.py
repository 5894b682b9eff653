"""The allocator: the compare-and-swap loop between pure blocks and etcd.

Steady state is one transaction per allocation: the node's affine blocks are read once and kept
with their mod_revision; an allocation is `compare block mod_revision (and the handle's) ->
put block + handle`, and a lost race carries the current block back in the failure branch of the
same transaction, so a retry needs no extra read. Claiming a block follows Calico: write a
pending affinity, create the block with a create-if-absent transaction, confirm the affinity;
whoever loses the create drops its pending affinity and tries the next free block.
"""
from __future__ import annotations

import ipaddress
import logging
import random
from collections import OrderedDict
from typing import Any, Iterable, Mapping

import attrs
import trio

from calico_bgp.datastore.keys import Keys, cidr_from_key
from calico_bgp.datastore.types import Compare, Delete, Get, Put
from calico_bgp.resources import codec
from ipam.block import Allocated, Block, Released, parse_network
from ipam.errors import CASRetriesExhausted, CorruptBlock, InvalidAddress, NoEligiblePool, PoolExhausted
from ipam.pool import Pool
from ipam.records import CONFIRMED, PENDING, Affinity, Handle
from ipam.store import IPAMStore, Stored, decode_affinity, decode_block, decode_handle

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


def _within(ip: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise InvalidAddress(f"{ip!r} is not an IP address") from None
    return addr.version == net.version and addr in net


class BlockAllocator:
    """Allocates and releases addresses for nodes; safe to run in many processes at once."""

    def __init__(self, client: Any, keys: Keys, *, max_attempts: int = 100, handle_cache: int = 4096,
                 backoff: float = 0.001) -> None:
        self.client = client
        self.keys = keys
        self.store = IPAMStore(client, keys)
        self.max_attempts = max_attempts
        self.backoff = backoff  # seconds: the first retry waits up to this, doubling after each loss
        self.stats = Stats()
        self.corrupt: dict[str, str] = {}  # keys seen corrupt: key -> reason
        self._affine: dict[str, dict[str, Stored]] = {}  # node -> cidr -> block as last seen
        self._handles: OrderedDict[str, Stored | None] = OrderedDict()  # handle -> last seen (None: absent)
        self._handle_cache = handle_cache

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
                with trio.move_on_after(10, shield=True):
                    try:
                        await self._roll_back(node, got, claimed)
                    except Exception as exc:  # noqa: BLE001 - `ipam check --repair` finds what is left
                        log.error("event=ipam_rollback_failed node=%s handle=%s addresses=%d error=%r",
                                  node, handle, len(got), str(exc))
            raise
        log.debug("event=ipam_allocated node=%s handle=%s count=%d", node, handle, len(got))
        return got

    async def _allocate(self, node: str, handle: str, count: int, pools: list[Pool], attrs: Mapping[str, str],
                        max_blocks: int | None, strict: bool, got: list[Allocated], claimed: list[str]) -> None:
        # 1. the node's affine blocks as cached; 2. the same after a re-scan (another process on
        # this node may have claimed more); 3. claim new blocks; 4. borrow.
        existing = await self._scan(node) if node not in self._affine else None
        while True:
            for cidr in self._usable(node, pools):
                got += await self._take(node, handle, count - len(got), cidr, attrs, affine=True)
                if len(got) == count:
                    return
            if existing is not None:
                break
            existing = await self._scan(node)
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

    async def _scan(self, node: str) -> set[str]:
        """One round trip: the node's affinities and the CIDRs of every stored block. Blocks newly
        affine to the node (claimed by another process on it), and cached ones that looked full
        (another process may have released in them), are then read in one more."""
        res = await self.client.txn([], [Get(self.keys.affinities(node), prefix=True),
                                         Get(self.keys.blocks(), prefix=True, keys_only=True)], [])
        affs, bkvs = res.responses
        revs = {cidr_from_key(kv.key): kv.mod_revision for kv in bkvs}
        existing = set(revs)
        confirmed, pending = set(), set()
        for kv in affs:
            try:
                state = decode_affinity(kv.key, kv.value).state
            except CorruptBlock as exc:
                self.corrupt[exc.key] = exc.reason
                continue
            (confirmed if state == CONFIRMED else pending).add(cidr_from_key(kv.key))
        # a claim that stopped between creating its block and confirming the affinity (a crash, a
        # lost connection): the block is ours, finish the claim rather than leave it to borrowers
        adopt = [c for c in sorted(pending) if c in revs]
        for cidr, stored in (await self.store.get_blocks(adopt, self.corrupt)).items():
            if stored is not None and stored.value.host == node:
                await self.client.put(self.keys.affinity(node, cidr), _AFF_CONFIRMED)
                confirmed.add(cidr)
                log.info("event=ipam_claim_completed node=%s block=%s", node, cidr)
        cache = self._affine.setdefault(node, {})
        for cidr in [c for c in cache if c not in confirmed]:
            del cache[cidr]
        missing = [c for c in sorted(confirmed) if c in revs and (
            c not in cache or (cache[c].value.free_count == 0 and cache[c].mod_revision != revs[c]))]
        for cidr, stored in (await self.store.get_blocks(missing, self.corrupt)).items():
            if stored is not None and stored.value.host == node:
                cache[cidr] = stored
        log.debug("event=ipam_scan node=%s affine=%d blocks=%d", node, len(cache), len(existing))
        return existing

    async def refresh(self, node: str) -> None:
        """Forget what is cached for `node` and read its affine blocks again."""
        self._affine.pop(node, None)
        await self._scan(node)

    def _usable(self, node: str, pools: list[Pool]) -> list[str]:
        blocks = self._affine.get(node, {})
        return [c for c, s in blocks.items()
                if s.value.free_count > 0 and any(p.contains(c) for p in pools)]

    async def _take(self, node: str, handle: str, n: int, cidr: str, attrs: Mapping[str, str], *,
                    affine: bool, current: Stored | None = None) -> list[Allocated]:
        """Up to `n` addresses from one block in one transaction (retried on conflict)."""
        cache = self._affine.setdefault(node, {})
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
            known = self._handles.get(handle)
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
                self._remember_handle(handle, Stored(new_h, res.revision))
                if not affine:
                    self.stats.borrowed += len(got)
                return got
            self.stats.conflicts += 1
            bkvs, hkvs = res.responses
            stored = self._decode_current(bkey, bkvs)
            if affine and stored is not None:
                cache[cidr] = stored
            self._remember_handle(handle, Stored(decode_handle(hkey, hkvs[0].value), hkvs[0].mod_revision)
                                  if hkvs else None)
        raise CASRetriesExhausted(bkey, self.max_attempts)

    async def _back_off(self, attempt: int) -> None:
        # contenders on one block lose most CAS rounds; jitter spreads their retries
        await trio.sleep(random.uniform(0, self.backoff * (1 << min(attempt - 1, 6))))

    def _decode_current(self, key: str, kvs: list[Any]) -> Stored | None:
        if not kvs:
            return None
        try:
            return Stored(decode_block(key, kvs[0].value), kvs[0].mod_revision)
        except CorruptBlock as exc:
            self.corrupt[exc.key] = exc.reason
            log.warning("event=ipam_corrupt_value key=%s reason=%r", exc.key, exc.reason)
            return None

    def _remember_handle(self, handle: str, stored: Stored | None) -> None:
        self._handles[handle] = stored
        self._handles.move_to_end(handle)
        while len(self._handles) > self._handle_cache:
            self._handles.popitem(last=False)

    # --- claiming ----------------------------------------------------------------------------
    async def _claim(self, node: str, pools: list[Pool], max_blocks: int | None, existing: set[str]) -> str | None:
        """Claim one free block for `node`: pending affinity -> create block -> confirm."""
        if max_blocks is not None:
            mine = sum(1 for c in self._affine.get(node, {}) if any(p.contains(c) for p in pools))
            if mine >= max_blocks:
                log.info("event=ipam_claim_refused node=%s reason=maxBlocksPerHost affine=%d max=%d",
                         node, mine, max_blocks)
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
            stored = self._decode_current(bkey, res.responses[0])
            if stored is None or stored.value.host != node:
                # lost the race to another node: drop our pending claim, try the next block
                await self.client.txn([Compare.value(akey, _AFF_PENDING)], [Delete(akey)], [])
                self.stats.claim_races_lost += 1
                log.info("event=ipam_claim_lost node=%s block=%s", node, cidr)
                return False
        await self.client.put(akey, _AFF_CONFIRMED)
        self._affine.setdefault(node, {})[cidr] = stored
        self.stats.claims += 1
        log.info("event=ipam_claimed node=%s block=%s", node, cidr)
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
                log.info("event=ipam_borrowed node=%s block=%s owner=%s count=%d",
                         node, cidr, blocks[cidr].value.host, len(taken))
            got += taken
            if len(got) == count:
                return

    async def _roll_back(self, node: str, got: list[Allocated], claimed: list[str]) -> None:
        """An allocation that cannot complete leaves nothing behind."""
        if got:
            await self.release([(a.ip, a.seq) for a in got], blocks=[a.block for a in got])
        for cidr in claimed:
            await self._drop_block_if_empty(cidr, node)

    async def _drop_block_if_empty(self, cidr: str, node: str) -> bool:
        bkey = self.keys.block(cidr)
        kv = await self.client.get(bkey)
        if kv is None:
            return False
        stored = self._decode_current(bkey, [kv])
        if stored is None or not stored.value.is_empty() or stored.value.host != node:
            return False
        res = await self.client.txn([Compare.mod(bkey, kv.mod_revision)],
                                    [Delete(bkey), Delete(self.keys.affinity(node, cidr))], [])
        if res.succeeded:
            self._affine.get(node, {}).pop(cidr, None)
        return res.succeeded

    # --- release -----------------------------------------------------------------------------
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
                self._handles.pop(handle, None)
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
            stored = self._decode_current(bkey, [kv]) if kv is not None else None
            if stored is None and kv is not None:
                raise CorruptBlock(bkey, self.corrupt.get(bkey, "does not decode"))
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
                    self._handles.pop(h, None)
                for cache in self._affine.values():
                    if cidr in cache and new_block is not None:
                        cache[cidr] = Stored(new_block, done.revision)
                log.debug("event=ipam_released block=%s count=%d", cidr, rel.count)
                return rel
            self.stats.conflicts += 1
        raise CASRetriesExhausted(bkey, self.max_attempts)

    # --- empty blocks ------------------------------------------------------------------------
    async def reclaim_empty(self, node: str | None = None, cidrs: Iterable[str] | None = None) -> list[str]:
        """One sweep: count a sighting on every empty affine block (of `node`, or among `cidrs`);
        release (delete block and affinity) those already seen empty once before, so a block
        must stay empty across two sweeps to lose its affinity. Returns the released CIDRs."""
        blocks, _ = await self.store.blocks(self.corrupt)
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
                    self._affine.get(b.host, {}).pop(cidr, None)
                    log.info("event=ipam_block_reclaimed block=%s node=%s", cidr, b.host)
            else:
                res = await self.client.txn([Compare.mod(bkey, stored.mod_revision)],
                                            [Put(bkey, codec.encode(seen))], [])
                if res.succeeded and cidr in self._affine.get(b.host, {}):
                    self._affine[b.host][cidr] = Stored(seen, res.revision)
        return released
