"""The BFD-only BIRD configuration for a node's BfdSessions (pure, deterministic).

One `protocol bfd` with an `interface` block per interface (the timers of the BFDConfiguration entry
that matched it) and one `neighbor <ip> dev "<if>"` per session; `protocol device` so BIRD learns the
interfaces itself (a link-local neighbour needs its interface). No other protocol: this BIRD carries
no routes. Grammar as in BIRD 2's proto/bfd/config.Y (bfd_iface_item: `min rx interval`, `min tx
interval`, `idle tx interval`, `multiplier`; bfd_neighbor: `neighbor ip [dev "name"]`).

`debug { events }` makes BIRD trace "Session to <ip> changed state from <A> to <B>"
(bfd_session_update_state in proto/bfd/bfd.c): the agent reads state changes from that log stream.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Iterable

from calico_bgp.routing.bfd import BfdSession

PROTOCOL = "calico_bfd"
ROUTER_ID = "0.0.0.1"  # BIRD wants one; BFD never sends it (RFC 5880 discriminators are per session)
_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")  # a Linux interface name BIRD can take in quotes


class BfdConfigError(ValueError):
    """Sessions that cannot be written as a BIRD configuration; the message names the session."""


def check(s: BfdSession) -> None:
    """Raise BfdConfigError, naming the session, when BIRD could not be told about it."""
    try:
        ipaddress.ip_address(s.peer)
    except ValueError:
        raise BfdConfigError(f"BFD session peer {s.peer!r}: not an IP address") from None
    if not _IFNAME.match(s.interface):
        raise BfdConfigError(f"BFD session to {s.peer}: interface {s.interface!r} is not an interface name")
    for name in ("min_rx_ms", "min_tx_ms", "idle_tx_ms"):
        if getattr(s, name) <= 0:
            raise BfdConfigError(f"BFD session to {s.peer}: {name} {getattr(s, name)} must be above 0")
    if not 1 <= s.multiplier <= 255:
        raise BfdConfigError(f"BFD session to {s.peer}: multiplier {s.multiplier} not in 1..255")


def _timers(s: BfdSession) -> tuple[int, int, int, int]:
    return s.min_rx_ms, s.min_tx_ms, s.idle_tx_ms, s.multiplier


def render(sessions: Iterable[BfdSession]) -> str:
    """BIRD's configuration text for `sessions` (same sessions, same text, whatever their order).
    Two sessions on one interface with different timers are refused: BIRD keeps timers per interface."""
    chosen = sorted(set(sessions))
    by_iface: dict[str, tuple[int, int, int, int]] = {}
    for s in chosen:
        check(s)
        got = by_iface.setdefault(s.interface, _timers(s))
        if got != _timers(s):
            raise BfdConfigError(f"BFD sessions on {s.interface} disagree on timers: {got} and {_timers(s)} "
                                 f"(the session to {s.peer})")
    lines = [f"router id {ROUTER_ID};", "log stderr all;", "protocol device { scan time 10; }",
             f"protocol bfd {PROTOCOL} {{", "  debug { events };"]
    for iface, (rx, tx, idle, mult) in sorted(by_iface.items()):
        lines += [f'  interface "{iface}" {{',
                  f"    min rx interval {rx} ms;", f"    min tx interval {tx} ms;",
                  f"    idle tx interval {idle} ms;", f"    multiplier {mult};", "  };"]
    seen = set()
    for s in chosen:
        if (s.peer, s.interface) in seen:
            continue
        seen.add((s.peer, s.interface))
        lines.append(f'  neighbor {s.peer} dev "{s.interface}";')
    lines.append("}")
    return "\n".join(lines) + "\n"
