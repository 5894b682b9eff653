"""What `calico-bgp node sessions` shows of each session (pure): one row per session, in Calico's words.

The rows come from the sessions the agent computes (topology.sessions_for, then topology.runnable), so
what they show is what runs; a session Calico would make that the speaker cannot run (a second port
to one address) is shown with the reason it does not run. A password is shown as set or not, never
its value or where it is kept.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Iterable

from calico_bgp.routing.topology import Session, Skipped

# the columns of the table; `wide` adds the rest
TABLE = ("peerIP", "port", "asNumber", "localAS", "family", "kind", "rrClient", "passive", "password", "reason")
WIDE = ("peerIP", "port", "asNumber", "localAS", "family", "kind", "rrClient", "passive", "password",
        "sourceAddress", "ttlSecurity", "nextHopMode", "gracefulRestartTime", "filters", "reason")


def calico_kind(s: Session) -> str:
    """Calico's name for the session's kind: mesh, global, node-specific, or for route reflection
    `rr client` (we reflect to it) and `route reflector` (it is a reflector we peer with)."""
    if s.rr_client:
        return "rr client"
    if s.kind in ("to-rr", "rr-peer"):
        return "route reflector"
    return s.scope


def row(s: Session, skipped: str = "") -> dict[str, Any]:
    """One session as `-o json` gives it (the keys of WIDE)."""
    return {
        "peerIP": s.peer_address, "port": s.peer_port, "asNumber": s.peer_as, "localAS": s.local_as,
        "family": 6 if ":" in s.peer_address else 4, "kind": calico_kind(s), "rrClient": s.rr_client,
        "passive": s.passive, "password": s.password is not None, "sourceAddress": s.source_address,
        "ttlSecurity": s.ttl_security, "nextHopMode": s.next_hop_mode, "gracefulRestartTime": s.restart_time,
        "filters": list(s.filters), "reason": f"{s.reason}; {skipped}" if skipped else s.reason,
    }


def rows(sessions: Iterable[Session], skipped: Iterable[Skipped] = ()) -> list[dict[str, Any]]:
    """Every session, the skipped ones among them, ordered by family, address and port."""
    out = [row(s) for s in sessions] + [row(k.session, k.why) for k in skipped]
    return sorted(out, key=lambda r: (r["family"], _address_key(r["peerIP"]), r["port"]))


def cells(r: dict[str, Any], columns: Iterable[str]) -> list[str]:
    """A row as table cells: booleans as yes/no, the empty as '-'."""
    out = []
    for c in columns:
        v = r[c]
        if isinstance(v, bool):
            out.append("yes" if v else "no")
        elif isinstance(v, list):
            out.append(",".join(v) or "-")
        elif c == "ttlSecurity":
            out.append(str(v) if v else "off")
        else:
            out.append(str(v) if v not in ("", None) else "-")
    return out


def _address_key(text: str) -> int:
    return int(ipaddress.ip_address(text))
