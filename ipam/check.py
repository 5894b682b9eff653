"""`ipam check`: what is wrong with the stored IPAM state, and the plan to repair it.

`check()` and `plan_repair()` are pure, over a Snapshot; `repair()` carries a plan out through
the allocator (each step a compare-and-swap, so a repair racing live allocations is safe).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import attrs

from calico_bgp.datastore.types import Compare, Delete, Put
from calico_bgp.resources import codec
from dataplane.logfmt import event
from ipam.pool import Pool
from ipam.records import CONFIRMED, Affinity, Handle
from ipam.store import Snapshot

log = logging.getLogger("ipam")


@attrs.frozen
class LeakedHandle:
    handle: str
    node: str | None
    count: int
    blocks: tuple[str, ...]


@attrs.frozen
class OrphanedAffinity:
    node: str
    cidr: str
    reason: str


@attrs.frozen
class Borrowed:
    ip: str
    block: str
    owner: str | None  # the block's affine node (None: an unaffine block)
    node: str | None   # the node that borrowed it
    handle: str | None


@attrs.frozen
class Inconsistency:
    kind: str      # handle-count | missing-handle | no-affinity-record | block-outside-pools
    key: str
    detail: str


@attrs.frozen
class PoolUsage:
    name: str
    cidr: str
    size: int
    blocks: int
    allocated: int
    free_in_blocks: int
    disabled: bool = False

    @property
    def utilisation(self) -> float:
        return self.allocated / self.size if self.size else 0.0


@attrs.frozen
class EmptyBlock:
    cidr: str
    node: str
    seen_empty: int


@attrs.frozen
class Report:
    leaked_handles: tuple[LeakedHandle, ...]
    orphaned_affinities: tuple[OrphanedAffinity, ...]
    inconsistencies: tuple[Inconsistency, ...]
    corrupt: dict[str, str]
    borrowed: tuple[Borrowed, ...]
    pools: tuple[PoolUsage, ...]
    empty_blocks: tuple[EmptyBlock, ...] = ()  # not a problem: reclaimed once seen empty twice

    @property
    def clean(self) -> bool:
        return not (self.leaked_handles or self.orphaned_affinities or self.inconsistencies or self.corrupt)

    def problem_count(self) -> int:
        return len(self.leaked_handles) + len(self.orphaned_affinities) + len(self.inconsistencies) + len(self.corrupt)


def pool_usage(snap: Snapshot, pools: list[Pool]) -> tuple[PoolUsage, ...]:
    out = []
    for p in pools:
        blocks = [s.value for c, s in snap.blocks.items() if p.contains(c)]
        out.append(PoolUsage(p.name, p.cidr, p.size, len(blocks), sum(b.used_count for b in blocks),
                             sum(b.free_count for b in blocks), p.disabled))
    return tuple(out)


def check(snap: Snapshot, pools: list[Pool], nodes: set[str] | None = None) -> Report:
    """Leaked handles (node gone), orphaned affinities, handle/block disagreements, borrowed addresses,
    pool utilisation. `nodes=None` skips the checks that need to know which nodes exist."""
    leaked, orphaned, bad, borrowed = [], [], [], []
    # what the blocks say each handle holds
    actual: dict[str, dict[str, int]] = {}
    for cidr, s in sorted(snap.blocks.items()):
        b = s.value
        for h, n in b.handle_counts().items():
            actual.setdefault(h, {})[cidr] = n
        for u in b.borrowed():
            borrowed.append(Borrowed(u.ip, cidr, b.host, u.node, u.handle))
        if pools and not any(p.contains(cidr) for p in pools):
            bad.append(Inconsistency("block-outside-pools", cidr, f"block {cidr} lies in no pool"))
    for h, s in sorted(snap.handles.items()):
        rec: Handle = s.value
        held = actual.get(h, {})
        if rec.blocks != held:
            bad.append(Inconsistency("handle-count", h, f"handle {h} records {rec.blocks or '{}'} but the blocks hold {held or '{}'}"))
        if nodes is not None and rec.node is not None and rec.node not in nodes:
            leaked.append(LeakedHandle(h, rec.node, sum(held.values()), tuple(sorted(held))))
    for h in sorted(set(actual) - set(snap.handles)):
        bad.append(Inconsistency("missing-handle", h, f"blocks hold {actual[h]} for handle {h} which has no record"))
    recorded = {(a.node, a.cidr) for a in snap.affinities}
    for a in snap.affinities:
        block = snap.blocks.get(a.cidr)
        corrupt_block = any(k.endswith("/" + a.cidr.replace("/", "-")) for k in snap.corrupt)
        if nodes is not None and a.node not in nodes:
            orphaned.append(OrphanedAffinity(a.node, a.cidr, "node gone"))
        elif block is None and not corrupt_block:
            orphaned.append(OrphanedAffinity(a.node, a.cidr, "block missing"))
        elif block is not None and block.value.host != a.node:
            orphaned.append(OrphanedAffinity(a.node, a.cidr, f"block is affine to {block.value.host}"))
        elif a.state != CONFIRMED:
            orphaned.append(OrphanedAffinity(a.node, a.cidr, f"affinity left {a.state}"))
    for cidr, s in sorted(snap.blocks.items()):
        host = s.value.host
        if host is not None and (host, cidr) not in recorded:
            bad.append(Inconsistency("no-affinity-record", cidr, f"block {cidr} is affine to {host} without an affinity record"))
    empty = tuple(EmptyBlock(c, s.value.host, s.value.seen_empty) for c, s in sorted(snap.blocks.items())
                  if s.value.is_empty() and s.value.host is not None)
    return Report(tuple(leaked), tuple(orphaned), tuple(bad), dict(snap.corrupt), tuple(borrowed),
                  pool_usage(snap, pools), empty)


@attrs.frozen
class Action:
    kind: str     # release-handle | fix-handle | delete-affinity | confirm-affinity | release-block | reclaim-empty
    target: str
    node: str | None = None
    why: str = ""

    def describe(self) -> str:
        on = f" (node {self.node})" if self.node else ""
        return f"{self.kind} {self.target}{on}: {self.why}"


def plan_repair(report: Report) -> list[Action]:
    """Leaked handles first (their release may empty blocks), then handle records, then affinities."""
    plan = [Action("release-handle", lh.handle, lh.node, f"node {lh.node} is gone") for lh in report.leaked_handles]
    plan += [Action("fix-handle", i.key, None, i.detail) for i in report.inconsistencies
             if i.kind in ("handle-count", "missing-handle")]
    gone = set()
    for o in report.orphaned_affinities:
        kind = {"node gone": "release-block", "affinity left pending": "confirm-affinity"}.get(o.reason, "delete-affinity")
        plan.append(Action(kind, o.cidr, o.node, o.reason))
        gone.add(o.cidr)
    plan += [Action("confirm-affinity", i.key, i.detail.split(" is affine to ")[1].split(" ")[0], i.detail)
             for i in report.inconsistencies if i.kind == "no-affinity-record"]
    plan += [Action("reclaim-empty", e.cidr, e.node,
                    "empty; affinity released on the second sighting" if e.seen_empty == 0
                    else "seen empty before; releasing its affinity")
             for e in report.empty_blocks if e.cidr not in gone]
    return plan


async def repair(allocator: Any, plan: list[Action],
                 progress: Callable[[int, int, Action], None] | None = None) -> list[tuple[Action, str]]:
    """Carry out `plan`; returns (action, outcome) per step. Every write is a compare-and-swap."""
    from ipam.store import decode_affinity, decode_block

    client, keys = allocator.client, allocator.keys
    done = []
    for i, act in enumerate(plan, 1):
        if progress:
            progress(i, len(plan), act)
        if act.kind == "release-handle":
            n = await allocator.release_handle(act.target)
            outcome = f"released {n} address(es)"
        elif act.kind == "fix-handle":
            outcome = await _fix_handle(allocator, act.target)
        elif act.kind == "release-block":
            dropped = await allocator._drop_block_if_empty(act.target, act.node)
            akey = keys.affinity(act.node, act.target)
            kv = await client.get(akey)
            if kv is not None:
                await client.txn([Compare.mod(akey, kv.mod_revision)], [Delete(akey)], [])
            outcome = "block and affinity deleted" if dropped else "affinity deleted (block kept: not empty or not affine)"
        elif act.kind == "delete-affinity":
            akey = keys.affinity(act.node, act.target)
            kv = await client.get(akey)
            if kv is None:
                outcome = "already gone"
            else:
                decode_affinity(akey, kv.value)
                res = await client.txn([Compare.mod(akey, kv.mod_revision)], [Delete(akey)], [])
                outcome = "deleted" if res.succeeded else "changed meanwhile; left alone"
        elif act.kind == "confirm-affinity":
            # the block says it is this node's: write the record it should have
            akey = keys.affinity(act.node, act.target)
            blk = await client.get(keys.block(act.target))
            if blk is None or decode_block(blk.key, blk.value).host != act.node:
                outcome = "block no longer affine to the node; left alone"
            else:
                await client.put(akey, codec.encode(Affinity(CONFIRMED)))
                outcome = "affinity confirmed"
        elif act.kind == "reclaim-empty":
            released = await allocator.reclaim_empty(act.node, [act.target])
            outcome = "block and affinity released" if released else "sighting counted (or no longer empty)"
        else:
            outcome = "unknown action"
        event(log, "ipam_repair", action=act.kind, target=act.target, outcome=outcome)
        done.append((act, outcome))
    return done


async def _fix_handle(allocator: Any, handle: str) -> str:
    """Rewrite a handle record from what the blocks hold (the blocks are the truth)."""
    client, keys = allocator.client, allocator.keys
    # the handle first: an allocation or release that commits after this read changes it too (one
    # transaction writes both), so the compare below refuses a rewrite from blocks read too early
    hkey = keys.handle(handle)
    kv = await client.get(hkey)
    cmp = Compare.mod(hkey, kv.mod_revision) if kv else Compare.created(hkey, 0)
    blocks, _ = await allocator.store.blocks()
    held = {c: n for c, s in blocks.items() if (n := s.value.count_for(handle))}
    if held:
        node = None
        for s in blocks.values():
            for u in s.value.in_use():
                if u.handle == handle:
                    node = u.node
        op: Any = Put(hkey, codec.encode(Handle(handle, held, node)))
    else:
        op = Delete(hkey)
    res = await client.txn([cmp], [op], [])
    return ("rewritten from blocks: " + str(held)) if res.succeeded else "changed meanwhile; left alone"
