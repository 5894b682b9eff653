"""A block: one slice of a pool, affine to at most one node, with an allocation array.

Pure values and pure methods: every change returns a new Block. The allocator stores blocks in
etcd by compare-and-swap; nothing here does I/O.

Layout (as in Calico's AllocationBlock): `allocations[ordinal]` is an index into `attributes`
(or None when free); `unallocated` is the order free ordinals are handed out in (a released
ordinal goes to the back, so an address is not re-used at once); `sequence_numbers[ordinal]`
is the block counter at the moment the ordinal was allocated, so a release naming an older
sequence number cannot free an address that has since been re-used. Counters are stored as
offsets from `sequence_base` (the creation time in ns, so a recreated block never repeats a
number) to keep the stored block small.
"""
from __future__ import annotations

import functools
import ipaddress
import time
from typing import Any, Iterable, Mapping

import attrs

from calico_bgp.resources import codec
from ipam.errors import BlockConflict, InvalidAddress, StaleRelease

HOST_PREFIX = "host:"


@functools.lru_cache(maxsize=4096)
def parse_network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr)


def host_affinity(node: str) -> str:
    return HOST_PREFIX + node


@attrs.frozen
class AllocationAttribute:
    handle_id: str | None = None
    node: str | None = None  # the node the address was allocated for; borrowed when not the affine node
    owner_attrs: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Allocated:
    """One address handed out: the IP, the block it came from, its sequence number."""
    ip: str
    block: str
    seq: int
    handle: str | None
    node: str | None
    borrowed: bool = False


@attrs.frozen
class InUse:
    ip: str
    ordinal: int
    seq: int | None
    handle: str | None
    node: str | None
    owner_attrs: dict[str, str]
    borrowed: bool


@attrs.frozen
class Released:
    """What a release did: addresses freed per handle, and addresses that were already free."""
    by_handle: dict[str, int] = attrs.field(factory=dict)
    not_allocated: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return sum(self.by_handle.values())


@attrs.frozen
class Block:
    cidr: str
    allocations: tuple[int | None, ...]
    unallocated: tuple[int, ...]
    affinity: str | None = None
    attributes: tuple[AllocationAttribute, ...] = ()
    sequence_base: int = 0
    sequence_number: int = 0  # the next offset from sequence_base
    sequence_numbers: dict[str, int] = attrs.field(factory=dict)  # ordinal -> offset (JSON keys are strings)
    seen_empty: int = 0

    # --- construction and addressing -------------------------------------------------------
    @classmethod
    def new(cls, cidr: str, node: str | None = None, sequence_number: int | None = None) -> "Block":
        net = ipaddress.ip_network(cidr, strict=True)
        n = net.num_addresses
        # A recreated block starts from a new counter, so old sequence numbers never match again.
        seq = time.time_ns() if sequence_number is None else sequence_number
        return cls(cidr=str(net), allocations=(None,) * n, unallocated=tuple(range(n)),
                   affinity=host_affinity(node) if node else None, sequence_base=seq)

    def inconsistency(self) -> str | None:
        """Why this block (as read from storage) cannot be trusted, or None: every free ordinal is in
        `unallocated` exactly once, every used one points at an attribute. Allocating from a block
        that breaks this would hand out an address twice."""
        n = len(self.allocations)
        if any(type(o) is not int or not 0 <= o < n for o in self.unallocated):
            return f"unallocated holds something that is not an ordinal 0..{n - 1}"
        if len(set(self.unallocated)) != len(self.unallocated):
            return "unallocated lists an ordinal twice"
        free = {o for o, idx in enumerate(self.allocations) if idx is None}
        if free != set(self.unallocated):
            return (f"unallocated does not match the free allocations "
                    f"({len(self.unallocated)} listed, {len(free)} free)")
        bad = next((idx for idx in self.allocations
                    if idx is not None and (type(idx) is not int or not 0 <= idx < len(self.attributes))), None)
        if bad is not None:
            return f"an allocation points at attribute {bad!r}, outside 0..{len(self.attributes) - 1}"
        return None

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return parse_network(self.cidr)

    @property
    def size(self) -> int:
        return len(self.allocations)

    @property
    def host(self) -> str | None:
        """The affine node, or None when the block has no host affinity."""
        if self.affinity and self.affinity.startswith(HOST_PREFIX):
            return self.affinity[len(HOST_PREFIX):]
        return None

    def ip(self, ordinal: int) -> str:
        return str(self.network.network_address + ordinal)

    def ordinal(self, ip: str) -> int:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidAddress(f"{ip!r} is not an IP address") from None
        net = self.network
        if addr.version != net.version or addr not in net:
            raise InvalidAddress(f"{ip} is not in block {self.cidr}")
        return int(addr) - int(net.network_address)

    def contains(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return addr.version == self.network.version and addr in self.network

    # --- queries ---------------------------------------------------------------------------
    @property
    def free_count(self) -> int:
        return len(self.unallocated)

    @property
    def used_count(self) -> int:
        return self.size - len(self.unallocated)

    def is_empty(self) -> bool:
        return len(self.unallocated) == self.size

    def seq_of(self, ordinal: int) -> int | None:
        off = self.sequence_numbers.get(str(ordinal))
        return None if off is None else self.sequence_base + off

    def handle_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for idx in self.allocations:
            if idx is not None:
                h = self.attributes[idx].handle_id
                if h is not None:
                    counts[h] = counts.get(h, 0) + 1
        return counts

    def count_for(self, handle: str) -> int:
        return self.handle_counts().get(handle, 0)

    def in_use(self) -> list[InUse]:
        host = self.host
        out = []
        for o, idx in enumerate(self.allocations):
            if idx is None:
                continue
            a = self.attributes[idx]
            out.append(InUse(self.ip(o), o, self.seq_of(o), a.handle_id, a.node, a.owner_attrs,
                             borrowed=a.node is not None and a.node != host))
        return out

    def borrowed(self) -> list[InUse]:
        """Addresses allocated for a node other than the affine one (or from an unaffine block)."""
        return [u for u in self.in_use() if u.borrowed]

    # --- changes (each returns a new Block) ------------------------------------------------
    def allocate(self, n: int, handle: str | None, node: str | None = None,
                 owner_attrs: Mapping[str, str] | None = None) -> tuple["Block", list[Allocated]]:
        """Take up to `n` free addresses (fewer if the block has fewer), in `unallocated` order."""
        take = self.unallocated[:max(0, n)]
        if not take:
            return self, []
        owner = dict(owner_attrs or {})
        attributes = list(self.attributes)
        idx = next((i for i, a in enumerate(attributes)
                    if a.handle_id == handle and a.node == node and a.owner_attrs == owner), None)
        if idx is None:
            idx = len(attributes)
            attributes.append(AllocationAttribute(handle, node, owner))
        allocations = list(self.allocations)
        seqs = dict(self.sequence_numbers)
        seq = self.sequence_number
        borrowed = node is not None and node != self.host
        first = int(self.network.network_address)
        make_ip = type(self.network.network_address)
        out = []
        for o in take:
            allocations[o] = idx
            seqs[str(o)] = seq
            out.append(Allocated(str(make_ip(first + o)), self.cidr, self.sequence_base + seq, handle, node, borrowed))
            seq += 1
        block = attrs.evolve(self, allocations=tuple(allocations), unallocated=self.unallocated[len(take):],
                             attributes=tuple(attributes), sequence_number=seq, sequence_numbers=seqs,
                             seen_empty=0)
        return block, out

    def release(self, ips: Iterable[str | tuple[str, int | None]],
                handle: str | None = None) -> tuple["Block", Released]:
        """Free the given addresses; an item may be `(ip, seq)`. A stale sequence number (or a
        different handle, when one is given) refuses the whole request; already-free addresses
        are reported, not an error (release is idempotent)."""
        wanted: dict[int, tuple[str, int | None]] = {}
        for item in ips:
            ip, seq = (item, None) if isinstance(item, str) else item
            wanted[self.ordinal(ip)] = (ip, seq)
        free: list[int] = []
        not_allocated: list[str] = []
        for o, (ip, seq) in sorted(wanted.items()):
            idx = self.allocations[o]
            if idx is None:
                not_allocated.append(ip)
                continue
            current = self.seq_of(o)
            if seq is not None and seq != current:
                raise StaleRelease(ip, seq, current)
            if handle is not None and self.attributes[idx].handle_id != handle:
                raise BlockConflict(f"release of {ip} refused: it belongs to handle "
                                    f"{self.attributes[idx].handle_id!r}, not {handle!r}")
            free.append(o)
        return self._free(free, not_allocated)

    def release_handle(self, handle: str, seq: int | None = None) -> tuple["Block", Released]:
        """Free every address of `handle` in this block (skipping any whose seq differs from `seq`)."""
        free = [o for o, idx in enumerate(self.allocations)
                if idx is not None and self.attributes[idx].handle_id == handle
                and (seq is None or self.seq_of(o) == seq)]
        return self._free(free, [])

    def _free(self, ordinals: list[int], not_allocated: list[str]) -> tuple["Block", Released]:
        if not ordinals:
            return self, Released({}, tuple(not_allocated))
        by_handle: dict[str, int] = {}
        allocations = list(self.allocations)
        seqs = dict(self.sequence_numbers)
        for o in ordinals:
            h = self.attributes[allocations[o]].handle_id  # type: ignore[index]
            if h is not None:
                by_handle[h] = by_handle.get(h, 0) + 1
            allocations[o] = None
            seqs.pop(str(o), None)
        allocations_t, attributes = _compact(allocations, self.attributes)
        block = attrs.evolve(self, allocations=allocations_t, unallocated=self.unallocated + tuple(ordinals),
                             attributes=attributes, sequence_numbers=seqs)
        return block, Released(by_handle, tuple(not_allocated))

    def observe_empty(self) -> "Block":
        """Count one more sighting of this block empty (reset when it is not)."""
        return attrs.evolve(self, seen_empty=self.seen_empty + 1 if self.is_empty() else 0)

    def with_affinity(self, node: str | None) -> "Block":
        return attrs.evolve(self, affinity=host_affinity(node) if node else None)


def _compact(allocations: list[int | None],
             attributes: tuple[AllocationAttribute, ...]) -> tuple[tuple[int | None, ...], tuple[AllocationAttribute, ...]]:
    """Drop attributes no address refers to any more, and renumber the allocation array."""
    used = sorted({i for i in allocations if i is not None})
    if len(used) == len(attributes):
        return tuple(allocations), attributes
    remap = {old: new for new, old in enumerate(used)}
    return (tuple(None if i is None else remap[i] for i in allocations),
            tuple(attributes[i] for i in used))


# The block is encoded on every allocation: a direct hook for the one codec, the same JSON as its
# generic attrs path (camelCase, defaults omitted; tests/unit/test_ipam_block.py checks they agree).
def _attribute_to_dict(a: AllocationAttribute) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if a.handle_id is not None:
        d["handleId"] = a.handle_id
    if a.node is not None:
        d["node"] = a.node
    if a.owner_attrs:
        d["ownerAttrs"] = dict(a.owner_attrs)
    return d


def block_to_dict(b: Block) -> dict[str, Any]:
    d: dict[str, Any] = {"cidr": b.cidr, "allocations": list(b.allocations), "unallocated": list(b.unallocated)}
    if b.affinity is not None:
        d["affinity"] = b.affinity
    if b.attributes:
        d["attributes"] = [_attribute_to_dict(a) for a in b.attributes]
    if b.sequence_base:
        d["sequenceBase"] = b.sequence_base
    if b.sequence_number:
        d["sequenceNumber"] = b.sequence_number
    if b.sequence_numbers:
        d["sequenceNumbers"] = dict(b.sequence_numbers)
    if b.seen_empty:
        d["seenEmpty"] = b.seen_empty
    return d


codec.converter.register_unstructure_hook(Block, block_to_dict)
