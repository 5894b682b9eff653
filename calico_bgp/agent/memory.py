"""When the agent gives memory back (`give_back`, pure), and how (`release_memory`).

After a large table left (withdrawn, or rejected and not kept) the intake's cache of parsed
prefixes and the churn table hold entries nothing uses any more: once UPDATEs went quiet they are
dropped and the freed memory handed back to the system (it used to be: 200k rejected routes took
140 MB that stayed after their withdrawal).
"""
from __future__ import annotations

from pathlib import Path

import attrs

from calico_bgp.agent.bulk_gc import FULL_EVERY, collect_full

QUIET = 5.0          # seconds without UPDATEs or a session coming up before anything is dropped
TRIM_AT = 50_000     # parsed prefixes beyond what the RIB holds before the intake cache is trimmed
CHURN_QUIET = 10.0   # seconds without a change before a prefix's churn entry may go (all but the busiest)
CHURN_KEEP = 1000    # churn entries kept beyond what the RIB holds: the busiest, for `routes --churn`


@attrs.frozen
class GiveBack:
    trim_intake: bool = False
    settle_churn: bool = False
    collect: bool = False  # a full collection for what bulks promoted unwalked (agent/bulk_gc.py)


def give_back(quiet_for: float, cached: int, held: int, churn_entries: int, bulks: int = 0) -> GiveBack:
    """What to drop, `quiet_for` seconds after the last UPDATE or session up, with `cached` parsed
    prefixes and `churn_entries` churn records while the RIB holds `held` prefixes, and `bulks`
    applied with the collector held off since the last full collection."""
    if quiet_for < QUIET:
        return GiveBack(collect=bulks >= FULL_EVERY)
    return GiveBack(trim_intake=cached - held >= TRIM_AT,
                    settle_churn=quiet_for >= CHURN_QUIET and churn_entries > held + CHURN_KEEP,
                    collect=bulks > 0)


def release_memory() -> float:
    """A full collection, then glibc's malloc_trim: Python returns freed arenas to malloc, but glibc
    keeps the memory of a large release in its heap until asked. Returns the RSS in MB after."""
    collect_full()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to ask
        pass
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
