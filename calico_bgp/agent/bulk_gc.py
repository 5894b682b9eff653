"""The cyclic garbage collector held off while a bulk of routes is applied.

A table arriving makes several container objects per prefix (paths, selections, kernel routes,
churn entries) that live as long as the route. The collector walked each of them in the young
generations, to find no garbage: 0.13-0.31 s of the 1.0 s the agent's loop spent on 100k
prefixes (bench/convergence.py, gc.callbacks). While a large UPDATE or kernel batch is applied
the collector is off; after it, what was made goes straight to the oldest generation
(gc.freeze + gc.unfreeze: two list splices, no walk). Reference counting still frees everything
that is not a cycle at once, and a cycle made meanwhile waits for a full collection (there is
one at every quiet spell's memory give-back, agent/memory.py). Small UPDATEs (churn) are not
touched: their objects are few and often short-lived.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

BULK_MIN = 256  # prefixes in one UPDATE or kernel batch from which the collector is held off


@contextmanager
def held_off(prefixes: int) -> Iterator[None]:
    """The collector off while the body applies `prefixes` prefixes (from BULK_MIN on); nested or
    with the collector already off, nothing changes."""
    if prefixes < BULK_MIN or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()  # every tracked object to the permanent generation...
        gc.unfreeze()  # ...and back into the oldest one: the new ones are never walked young
        gc.enable()
