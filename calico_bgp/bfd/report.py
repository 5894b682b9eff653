"""What the status document and the CLI say about BFD (pure values and their one-cell rendering)."""
from __future__ import annotations

import attrs


@attrs.frozen
class BfdSessionStatus:
    peer: str
    interface: str
    state: str                 # Up / Down / Init / AdminDown, or Unavailable while BIRD is not answering
    interval_ms: int = 0       # negotiated transmit interval (0: not known yet)
    timeout_ms: int = 0        # detection time
    since: float = 0.0         # wall clock of the last state change seen


@attrs.frozen
class BfdStatus:
    engine: str = "off"                 # off (no session asks for BFD) / running / unavailable
    unavailable_since: float = 0.0
    restarts: int = 0                   # engine starts after the first
    sessions: tuple[BfdSessionStatus, ...] = ()

    def of(self, peer: str) -> BfdSessionStatus | None:
        return next((s for s in self.sessions if s.peer == peer), None)


def cell(status: BfdStatus | None, peer: str, since: str) -> str:
    """The BFD column of `status` for one BGP session: "-" without BFD, else the state, the
    negotiated transmit interval / detection time and how long ago it changed (`since`, as the
    caller writes ages), e.g. "Up 100ms/300ms 4m"."""
    s = status.of(peer) if status is not None else None
    if s is None:
        return "-"
    if not s.interval_ms:
        return s.state
    return f"{s.state} {s.interval_ms}ms/{s.timeout_ms}ms {since}"
