"""Soft reconfiguration beyond the rejected paths the RIB kept: when to ask a peer to send again.

The RIB keeps at most rib.MAX_REJECTED_PER_PEER rejected paths per peer; re-running import policy
re-judges only those. When a peer's import policy changed (its inputs: pools and filters) and it
had sent more than were kept, it is asked for its routes again (ROUTE-REFRESH, RFC 2918) if it
advertised that capability and its session is up; else the operator is told what stays out until
the peer sends them again. Nothing is done the first time a peer's policy is seen, nor when it did
not change, nor when every rejected path was kept.
"""
from __future__ import annotations

from typing import Hashable

import attrs


@attrs.frozen
class Refresh:
    ask: bool      # send ROUTE-REFRESH (the RIB forgets the uncounted ones: they come back)
    detail: str    # the event's words


def after_policy_change(before: Hashable | None, inputs: Hashable, not_kept: int, can_refresh: bool) -> Refresh | None:
    if before is None or before == inputs or not not_kept:
        return None
    if can_refresh:
        return Refresh(True, f"import policy changed; {not_kept} rejected paths were not kept")
    return Refresh(False, f"import policy changed; {not_kept} rejected paths were not kept and the peer takes "
                          "no ROUTE-REFRESH: they stay out until it sends them again")
