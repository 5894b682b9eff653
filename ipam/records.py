"""The other stored IPAM values: a handle (which blocks hold its addresses) and a block affinity."""
from __future__ import annotations

import attrs

PENDING = "pending"
CONFIRMED = "confirmed"


@attrs.frozen
class Handle:
    """Which blocks hold a handle's addresses, and how many in each (Calico's IPAMHandle)."""
    handle_id: str
    blocks: dict[str, int] = attrs.field(factory=dict)
    node: str | None = None  # the node it was allocated for, so `ipam check` can find leaks

    @property
    def count(self) -> int:
        return sum(self.blocks.values())

    def is_empty(self) -> bool:
        return not self.blocks

    def add(self, block: str, n: int) -> "Handle":
        blocks = dict(self.blocks)
        blocks[block] = blocks.get(block, 0) + n
        return attrs.evolve(self, blocks=blocks)

    def remove(self, block: str, n: int) -> "Handle":
        blocks = dict(self.blocks)
        left = blocks.get(block, 0) - n
        if left > 0:
            blocks[block] = left
        else:
            blocks.pop(block, None)
        return attrs.evolve(self, blocks=blocks)


@attrs.frozen
class Affinity:
    """A node's claim on a block: pending while the block is being created, then confirmed."""
    state: str = PENDING
