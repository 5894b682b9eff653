"""What an allocator last read of IPAM state, so the next compare-and-swap needs no read first.

Per node, its affine blocks with their mod_revision; the handles recently written (a bounded LRU:
None records one known absent); and the keys seen corrupt (key -> reason), which `ipam check`
reports and every reader steps around.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from dataplane.logfmt import event
from ipam.errors import CorruptBlock
from ipam.store import Stored, decode_block

log = logging.getLogger("ipam")


class Seen:
    def __init__(self, handle_cache: int = 4096) -> None:
        self.affine: dict[str, dict[str, Stored]] = {}  # node -> cidr -> block as last seen
        self.handles: OrderedDict[str, Stored | None] = OrderedDict()  # handle -> last seen (None: absent)
        self.handle_cache = handle_cache
        self.corrupt: dict[str, str] = {}  # keys seen corrupt: key -> reason

    def block(self, key: str, kvs: list[Any]) -> Stored | None:
        """The block in a read's answer (`kvs`: none or one key-value); None when absent or corrupt."""
        if not kvs:
            return None
        try:
            return Stored(decode_block(key, kvs[0].value), kvs[0].mod_revision)
        except CorruptBlock as exc:
            self.corrupt[exc.key] = exc.reason
            event(log, "ipam_corrupt_value", logging.WARNING, key=exc.key, reason=exc.reason)
            return None

    def remember_handle(self, handle: str, stored: Stored | None) -> None:
        self.handles[handle] = stored
        self.handles.move_to_end(handle)
        while len(self.handles) > self.handle_cache:
            self.handles.popitem(last=False)

    def block_written(self, cidr: str, stored: Stored) -> None:
        """A block this process wrote: the node that has it cached sees the new revision."""
        for cache in self.affine.values():
            if cidr in cache:
                cache[cidr] = stored

    def forget_block(self, node: str | None, cidr: str) -> None:
        self.affine.get(node or "", {}).pop(cidr, None)
