"""RFC 7606 for received UPDATEs: what a malformed one does to the routes it carries. Pure.

ExaBGP decodes the wire and handles what it can (a malformed MP_REACH_NLRI or a framing error
resets the session or withdraws the routes itself, RFC 7606 3(j) and 4); what it passes on, it
describes (speaker/parse.py turns that into `Malformation`s). Here each reason gets its RFC 7606
action, as BIRD 2 does (bgp/attrs.c: WITHDRAW for a missing mandatory attribute, an undefined
ORIGIN, an unknown attribute without the Optional bit; DISCARD for a repeated attribute):

- treat-as-withdraw (RFC 7606 2): the UPDATE's announcements count as withdrawals, so a path the
  peer sent before for those prefixes goes too; the session stays up.
- kept: the UPDATE is processed without the offending attribute (RFC 7606 3(g) for a repeated
  attribute, the first occurrence counts; "attribute discard" for one ExaBGP dropped).
- withdrawn by ExaBGP: it already turned the announcements into withdrawals.

Every one is counted and reported; `MalformedReports` says which are worth an event (the first of
each reason per peer and session: a peer that sends 10k broken UPDATEs gives one event, not 10k).
"""
from __future__ import annotations

from typing import Iterable

import attrs

from calico_bgp.routing.path import Peer

TREAT_AS_WITHDRAW = "treat-as-withdraw"
KEPT = "attribute discarded, route kept"
WITHDRAWN_BY_EXABGP = "treat-as-withdraw (by ExaBGP)"

ACTIONS: dict[str, str] = {
    "missing-origin": TREAT_AS_WITHDRAW,           # RFC 7606 3(d)
    "missing-as-path": TREAT_AS_WITHDRAW,          # RFC 7606 3(d)
    "missing-next-hop": TREAT_AS_WITHDRAW,         # RFC 7606 3(d): NLRI field without NEXT_HOP
    "invalid-origin": TREAT_AS_WITHDRAW,           # RFC 7606 7.1: undefined value or length != 1
    "unrecognized-well-known": TREAT_AS_WITHDRAW,  # RFC 4271 6.3 would reset; BIRD 2 withdraws (RFC 7606 3(c))
    "first-as-mismatch": TREAT_AS_WITHDRAW,        # RFC 4271 6.3 malformed AS_PATH, RFC 7606 7.2
    "empty-as-path": TREAT_AS_WITHDRAW,            # from an eBGP peer: no first AS at all (RFC 7606 7.2)
    "as-zero": TREAT_AS_WITHDRAW,                  # RFC 7607: AS 0 in AS_PATH
    "duplicate-attribute": KEPT,                   # RFC 7606 3(g)
    "attribute-discarded": KEPT,                   # RFC 7606 2 "attribute discard": ExaBGP's, or iBGP-only
                                                   # attributes from an eBGP peer (7.5, 7.9, 7.10; intake.py)
    "malformed-attribute": WITHDRAWN_BY_EXABGP,    # ExaBGP's own treat-as-withdraw
}
REASONS = tuple(ACTIONS)


@attrs.frozen(slots=True)
class Malformation:
    """Something wrong with a received UPDATE's path attributes (RFC 7606), as ExaBGP reported it
    (speaker/parse.py) or the intake found it. `reason` is one of REASONS (a metric label), `detail`
    what exactly, for a person."""

    reason: str
    detail: str = ""


def action(reason: str) -> str:
    """What a malformation does; an unknown reason is treat-as-withdraw (the safe side)."""
    return ACTIONS.get(reason, TREAT_AS_WITHDRAW)


def first_as(peer: Peer, as_path: tuple[int, ...], as_set: tuple[int, ...]) -> Malformation | None:
    """RFC 4271 6.3: the leftmost AS of an eBGP peer's AS_PATH must be the peer's own AS (FRR's
    `enforce-first-as`, on by default); an eBGP peer must have put at least its AS there. iBGP
    paths are not checked. `as_path`: the AS_SEQUENCE numbers in order, `as_set`: AS_SET members."""
    if peer.ibgp:
        return None
    if not as_path:
        if as_set:
            return Malformation("first-as-mismatch", f"AS_PATH starts with an AS_SET, not the peer's AS {peer.asn}")
        return Malformation("empty-as-path", f"empty AS_PATH from eBGP peer AS {peer.asn}")
    if as_path[0] != peer.asn:
        return Malformation("first-as-mismatch", f"AS_PATH starts with {as_path[0]}, not the peer's AS {peer.asn}")
    return None


def as_path_error(peer: Peer, as_path: tuple[int, ...], as_set: tuple[int, ...]) -> Malformation | None:
    """What is wrong with a path's AS_PATH, from any peer: AS 0 anywhere in it (RFC 7607: malformed,
    treat-as-withdraw; ExaBGP passes it on), then `first_as` for an eBGP peer."""
    if 0 in as_path or 0 in as_set:
        return Malformation("as-zero", "AS 0 in AS_PATH")
    return first_as(peer, as_path, as_set)


def withdraws(malformed: Iterable[Malformation]) -> bool:
    """Whether the UPDATE's announcements are treated as withdrawn."""
    return any(action(m.reason) == TREAT_AS_WITHDRAW for m in malformed)


class MalformedReports:
    """Which malformations to report as an event: the first of each reason from each peer, until
    the peer's session ends (bounded: peers times the fixed set of reasons)."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    def first(self, peer: str, reason: str) -> bool:
        key = (peer, reason)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def forget(self, peer: str) -> None:
        self._seen = {k for k in self._seen if k[0] != peer}
