"""BFD toward BGP peers: the sessions this node's BFD engine must run, as values.

A `BfdSession` is what the engine is told about one peer: the peer's address, the interface of the
node's directly connected link it is reached on, and the timers of the BFDConfiguration interface
entry that matched that interface (RFC 5880 section 6.8.1 names: desired min TX, required min RX,
detect multiplier; `idle_tx_ms` is the slower rate used while the session is not up)."""
from __future__ import annotations

import attrs


@attrs.frozen(order=True)
class BfdSession:
    peer: str
    interface: str
    min_rx_ms: int
    min_tx_ms: int
    idle_tx_ms: int
    multiplier: int

    @property
    def detect_ms(self) -> int:
        """How long without a packet before the session is down, by our own timers (the negotiated
        figure is the peer's transmit interval times its multiplier, RFC 5880 section 6.8.4)."""
        return self.min_rx_ms * self.multiplier
