"""What BIRD says about its BFD sessions, as typed values (pure).

- `parse_sessions`: the table of `show bfd sessions` (bfd_show_sessions in BIRD 2's
  proto/bfd/bfd.c: "IP address  Interface  State  Since  Interval  Timeout", one row per session,
  intervals in seconds with three decimals);
- `parse_change`: one line of BIRD's log, the trace of bfd_session_update_state
  ("Session to <ip> changed state from <A> to <B>"), or None for any other line;
- `parse_removed`: the peer of a "Session to <ip> removed" line (bfd_remove_session_locked): BIRD
  removes a session without a state change when we configure it away, and when its interface goes
  down (its neighbour leaves scope, bfd_neigh_notify), which is a failure of the path.
States are RFC 5880's: AdminDown, Down, Init, Up.
"""
from __future__ import annotations

import re

import attrs

STATES = ("AdminDown", "Down", "Init", "Up")
UP, DOWN = "Up", "Down"


class BfdParseError(ValueError):
    """Output of BIRD this parser does not understand; the message quotes the line."""


@attrs.frozen
class BfdPeerState:
    """One row of `show bfd sessions`: `interval_ms` is the transmit interval in use (negotiated:
    the larger of our desired min TX and the peer's required min RX), `timeout_ms` the detection time."""

    peer: str
    interface: str
    state: str
    since: str         # BIRD's own words: "HH:MM:SS.mmm" today, a date before
    interval_ms: int
    timeout_ms: int


@attrs.frozen
class BfdChange:
    peer: str
    old: str
    new: str

    @property
    def failed(self) -> bool:
        """Up -> anything but Up: the forwarding path to the peer failed (or the peer said so)."""
        return self.old == UP and self.new != UP


_ROW = re.compile(r"^\s*(?P<peer>[0-9A-Fa-f:.]+(?:%\S+)?)\s+(?P<iface>\S+)\s+(?P<state>AdminDown|Down|Init|Up)\s+"
                  r"(?P<since>\d\d:\d\d:\d\d(?:\.\d+)?|\d{4}-\d\d-\d\d(?: \d\d:\d\d:\d\d(?:\.\d+)?)?)\s+"
                  r"(?P<interval>\d+\.\d+)\s+(?P<timeout>\d+\.\d+)\s*$")
_REMOVED = re.compile(r"Session to (?P<peer>\S+) removed$")
_CHANGE = re.compile(r"Session to (?P<peer>\S+) changed state from (?P<old>\w+) to (?P<new>\w+)")


def _ms(seconds: str) -> int:
    return round(float(seconds) * 1000)


def parse_sessions(text: str) -> list[BfdPeerState]:
    """The rows of `show bfd sessions` (its protocol-name and header lines skipped)."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.endswith(":") or s.startswith("IP address"):
            continue
        m = _ROW.match(line)
        if m is None:
            raise BfdParseError(f"show bfd sessions: unexpected line {line!r}")
        out.append(BfdPeerState(m["peer"], m["iface"], m["state"], m["since"], _ms(m["interval"]), _ms(m["timeout"])))
    return out


def parse_change(line: str) -> BfdChange | None:
    m = _CHANGE.search(line)
    if m is None or m["old"] not in STATES or m["new"] not in STATES:
        return None
    return BfdChange(m["peer"], m["old"], m["new"])


def parse_removed(line: str) -> str | None:
    m = _REMOVED.search(line.rstrip())
    return m["peer"] if m else None
