"""The cyclic garbage collector held off while a bulk of routes is applied.

A table arriving makes several container objects per prefix (paths, selections, kernel routes,
churn entries) that live as long as the route. The collector walked each of them in the young
generations, to find no garbage: 0.13-0.31 s of the 1.0 s the agent's loop spent on 100k
prefixes (bench/convergence.py, gc.callbacks). While a large UPDATE or kernel batch is applied
the collector is off; after it, what was made goes straight to the oldest generation
(gc.freeze + gc.unfreeze: two list splices, no walk). Reference counting still frees everything
that is not a cycle at once. The splice takes every young object, a garbage cycle made by any task
since the last young collection too, and objects moved so never bring an automatic full
collection nearer: each bulk is counted (`bulks_since_full`), and the agent's upkeep runs a full
collection once UPDATEs went quiet after one, or after FULL_EVERY bulks without a quiet spell
(memory.give_back). Small UPDATEs (churn) are not touched: their objects are few and often
short-lived.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

BULK_MIN = 256  # prefixes in one UPDATE or kernel batch from which the collector is held off
FULL_EVERY = 2000  # bulks promoted without a quiet spell before a full collection all the same
_bulks = 0  # bulks promoted since the last full collection


def bulks_since_full() -> int:
    return _bulks


def collect_full() -> None:
    """A full collection, which also sweeps what the bulks promoted."""
    global _bulks
    gc.collect()
    _bulks = 0


@contextmanager
def held_off(prefixes: int) -> Iterator[None]:
    """The collector off while the body applies `prefixes` prefixes (from BULK_MIN on); nested or
    with the collector already off, nothing changes."""
    if prefixes < BULK_MIN or not gc.isenabled():
        yield
        return
    global _bulks
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()  # every tracked object to the permanent generation...
        gc.unfreeze()  # ...and back into the oldest one: the new ones are never walked young
        gc.enable()
        _bulks += 1
