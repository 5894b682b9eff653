"""ExaBGP 5 API output (JSON encoder, API version 5.0.0) -> typed events: pure, no I/O.

One line in, a list of values out (an UPDATE carrying two families gives two `Update`s).
A line we cannot decode raises `MalformedMessage`; the caller logs and counts it.
"""
from __future__ import annotations

import functools
import ipaddress
import json
from typing import Any, Callable, Union

import attrs

from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.malformed import Malformation
from calico_bgp.speaker.errors import MalformedMessage
from calico_bgp.speaker.events import (
    Ack,
    EndOfRib,
    Event,
    ExaBGPShutdown,
    Ignored,
    Notification,
    PeerOpen,
    PeerState,
    Text,
    Update,
)
from calico_bgp.speaker.exabgp_run import MALFORMED_KEY

Parsed = Union[Event, Ack, Text, Ignored]
_ACKS = {"done": True, "error": False}
_IGNORED_TYPES = {"keepalive", "fsm", "signal", "negotiated", "refresh", "operational"}
GRACEFUL_RESTART = "graceful restart"  # the capability's name in ExaBGP's JSON
ROUTE_REFRESH = "route-refresh"  # likewise (RFC 2918, and Cisco's pre-standard code 128)
FAMILIES = {"ipv4 unicast", "ipv6 unicast"}
NO_NEXT_HOP = {"null", "no-nexthop"}  # ExaBGP's next-hop key for NLRI that came without a NEXT_HOP
_ORIGIN, _AS_PATH = 1, 2
ATTRIBUTE_NAMES = {1: "ORIGIN", 2: "AS_PATH", 3: "NEXT_HOP", 4: "MULTI_EXIT_DISC", 5: "LOCAL_PREF",
                   6: "ATOMIC_AGGREGATE", 7: "AGGREGATOR", 8: "COMMUNITIES", 9: "ORIGINATOR_ID",
                   10: "CLUSTER_LIST", 16: "EXTENDED_COMMUNITIES", 17: "AS4_PATH", 18: "AS4_AGGREGATOR",
                   32: "LARGE_COMMUNITY"}


def parse_line(line: str) -> list[Parsed]:
    text = line.strip()
    if not text:
        return []
    if text in _ACKS:
        return [Ack(_ACKS[text])]
    if not text.startswith(("{", "[")):
        return [Text(text)]
    try:
        msg = json.loads(text)
    except ValueError as e:
        raise MalformedMessage(f"invalid JSON ({e.msg})", text) from None
    if not isinstance(msg, dict):
        raise MalformedMessage("JSON is not an object", text)
    if "answer" in msg:  # acks in JSON form (`ack json` in newer ExaBGP)
        return [Ack(msg.get("answer") == "done")]
    try:
        return _message(msg)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise MalformedMessage(f"unexpected message shape ({type(e).__name__}: {e})", text) from None


def _peer(neighbor: dict[str, Any]) -> str:
    return _address(neighbor["address"]["peer"])


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> str:
    """An address as ipaddress prints it; the few a node has are parsed once, not per UPDATE."""
    return str(ipaddress.ip_address(text))


def _message(msg: dict[str, Any]) -> list[Parsed]:
    kind = msg.get("type")
    if kind == "state":
        n = msg["neighbor"]
        state = n["state"]
        if not isinstance(state, str):
            raise ValueError("state is not a string")
        return [PeerState(peer=_peer(n), state=state, reason=str(n.get("reason", "")),
                          local_address=str(n["address"].get("local", "")),
                          local_as=int(n.get("asn", {}).get("local", 0)), peer_as=int(n.get("asn", {}).get("peer", 0)),
                          at=float(msg.get("time", 0.0)))]
    if kind == "notification":
        if msg.get("notification") == "shutdown":
            return [ExaBGPShutdown()]
        n = msg["neighbor"]
        note = n["notification"]
        return [Notification(peer=_peer(n), direction=str(n.get("direction", "")), code=int(note["code"]),
                             subcode=int(note["subcode"]), data=str(note.get("data", "")))]
    if kind == "open":
        n = msg["neighbor"]
        if n.get("direction", "receive") != "receive":
            return [Ignored("open-send")]
        caps = n["open"].get("capabilities", {})
        gr = next((c for c in caps.values() if isinstance(c, dict) and c.get("name") == GRACEFUL_RESTART), None)
        refresh = any(isinstance(c, dict) and c.get("name") == ROUTE_REFRESH for c in caps.values())
        if gr is None:
            return [PeerOpen(peer=_peer(n), route_refresh=refresh)]
        # {"ipv4/unicast": ["restart"]}: ExaBGP names a family's F bit (forwarding state kept) "restart"
        flags = gr.get("address-family-flags") or {}
        return [PeerOpen(peer=_peer(n), graceful_restart=int(gr["time"]), route_refresh=refresh,
                         graceful_families=tuple(sorted(f.replace("/", " ") for f in flags)),
                         forwarding_kept=tuple(sorted(f.replace("/", " ") for f, bits in flags.items()
                                                      if "restart" in (bits or ()))))]
    if kind == "update":
        n = msg["neighbor"]
        if n.get("direction", "receive") != "receive":
            return [Ignored("update-send")]
        return _update(_peer(n), n["message"])
    if kind in _IGNORED_TYPES:
        return [Ignored(str(kind))]
    raise ValueError(f"unknown message type {kind!r}")


def _update(peer: str, message: dict[str, Any]) -> list[Parsed]:
    if "eor" in message:
        eor = message["eor"]
        return [EndOfRib(peer=peer, family=f"{eor['afi']} {eor['safi']}")]
    update = message["update"]
    malformed = _malformations(update)
    announced: dict[str, dict[str, PathAttributes]] = {}
    path_ids: dict[str, dict[str, str]] = {}
    announce = update.get("announce", {})
    section = update.get("attribute", {})
    # a section that cannot be read refuses the whole line, withdrawals too; an empty one is not parsed
    of_next_hop = _LAST_ATTRIBUTES.of(section) if announce or section else None
    for family, by_nexthop in announce.items():
        out = announced.setdefault(family, {})
        for next_hop, nlris in by_nexthop.items():
            a = of_next_hop(next_hop)  # type: ignore[misc]
            if all(map(_is_text, nlris)):  # the compact encoding: bare prefixes, in C loops
                out.update(dict.fromkeys(nlris, a))
                continue
            for nlri in nlris:  # one value for the prefixes of one next hop
                prefix, path_id = _nlri(nlri)
                out[prefix] = a
                if path_id is not None:
                    path_ids.setdefault(family, {})[prefix] = path_id
    withdrawn: dict[str, list[str]] = {}
    for family, nlris in update.get("withdraw", {}).items():
        withdrawn[family] = list(nlris) if all(map(_is_text, nlris)) else [_nlri(x)[0] for x in nlris]
    events: list[Parsed] = []
    for family in sorted(set(announced) | set(withdrawn)):
        if family not in FAMILIES:
            events.append(Ignored(f"family {family}"))
            continue
        events.append(Update(peer=peer, family=family, announced=announced.get(family, {}),
                             withdrawn=tuple(withdrawn.get(family, ())), malformed=malformed,
                             path_ids=path_ids.get(family, {})))
    return events


class _LastAttributes:
    """The PathAttributes of the last UPDATE's attribute section, per next hop: a peer sends the
    same section UPDATE after UPDATE (a table in UPDATEs of a few hundred prefixes, a churn's ticks),
    and each is then one value, not a parse and a copy per UPDATE (values are frozen: shared safely;
    the RIB compares a path's attributes by identity first). Holds one section, the agent's thread's."""

    def __init__(self) -> None:
        self.section: dict[str, Any] | None = None
        self.by_next_hop: dict[str, PathAttributes] = {}
        self.base: PathAttributes | None = None

    def of(self, section: dict[str, Any]) -> Callable[[str], PathAttributes]:
        if section != self.section or self.base is None:
            base = _attributes(section)  # raises before anything is kept for a section it cannot read
            self.section, self.base, self.by_next_hop = section, base, {}
        return self.next_hop

    def next_hop(self, next_hop: str) -> PathAttributes:
        a = self.by_next_hop.get(next_hop)
        if a is None:
            nh, _, ll = next_hop.partition(" ")  # "global link-local": a 32-byte next hop (exabgp_run)
            a = attrs.evolve(self.base, next_hop=None if nh in NO_NEXT_HOP else nh, link_local=ll or None)
            if len(self.by_next_hop) < 64:
                self.by_next_hop[next_hop] = a
        return a


_LAST_ATTRIBUTES = _LastAttributes()


def _name(code: Any) -> str:
    return f"{code} ({ATTRIBUTE_NAMES[code]})" if code in ATTRIBUTE_NAMES else str(code)


def _unknown_well_known(key: str) -> int | None:
    """The code of an attribute ExaBGP shows as "attribute-0xCC-0xFF" when its flags lack the Optional bit."""
    if not key.startswith("attribute-0x"):
        return None
    try:
        _, code, flags = key.split("-")
        return None if int(flags, 16) & 0x80 else int(code, 16)
    except ValueError:
        return None


def _malformations(update: dict[str, Any]) -> tuple[Malformation, ...]:
    """What was wrong with an UPDATE's attributes, from ExaBGP's JSON: its own treat-as-withdraw or
    attribute discard (an "error" attribute), what our patch of it reports (exabgp_run: duplicates,
    unrecognized well-known attributes, a missing AS_PATH, an ORIGIN of the wrong length shown as
    "invalid"), and, when it announces anything, mandatory attributes it lacks (RFC 4271 5.1 / RFC
    7606 3(d): ORIGIN, AS_PATH, and NEXT_HOP for NLRI outside MP_REACH_NLRI)."""
    a = update.get("attribute") or {}
    out: list[Malformation] = []
    error = a.get("error")
    if error is not None:
        text = str(error)
        out.append(Malformation("attribute-discarded" if text.startswith("discard") else "malformed-attribute", text))
    marker = a.get(MALFORMED_KEY) or {}
    for code in marker.get("duplicate", ()):
        out.append(Malformation("duplicate-attribute", f"attribute {_name(code)} more than once"))
    well_known = list(marker.get("unrecognized-well-known", ()))
    for key in a:  # ExaBGP passes an unknown transitive one on as "attribute-0x63-0x60" (code, flags)
        code = _unknown_well_known(key)
        if code is not None and code not in well_known:
            well_known.append(code)
    for code in well_known:
        out.append(Malformation("unrecognized-well-known", f"attribute {code} without the Optional bit"))
    announce = update.get("announce")
    if announce:
        origin = a.get("origin")
        if origin is None:
            out.append(Malformation("missing-origin", "no ORIGIN"))
        elif origin not in ("igp", "egp", "incomplete"):
            out.append(Malformation("invalid-origin", f"ORIGIN {origin}"))
        if _AS_PATH in marker.get("missing", ()):
            out.append(Malformation("missing-as-path", "no AS_PATH"))
        if any(nh in NO_NEXT_HOP for by_nexthop in announce.values() for nh in by_nexthop):
            out.append(Malformation("missing-next-hop", "NLRI without NEXT_HOP"))
    return tuple(out)


_is_text = str.__instancecheck__  # isinstance(x, str), as a C function map() can call


def _nlri(nlri: Any) -> tuple[str, str | None]:
    """The NLRI's text as ExaBGP wrote it (the intake parses it, once per distinct text) and its path id."""
    if isinstance(nlri, str):  # the compact encoding
        return nlri, None
    path = nlri.get("path-information")
    return str(nlri["nlri"]), (str(path) if path is not None else None)


def _attributes(a: dict[str, Any]) -> PathAttributes:
    seq: list[int] = []
    aset: list[int] = []
    for _, seg in sorted(a.get("as-path", {}).items(), key=lambda kv: int(kv[0])):
        values = [int(x) for x in seg["value"]]
        (aset if "set" in seg["element"] else seq).extend(values)
    return PathAttributes(
        origin=a.get("origin"),
        as_path=tuple(seq),
        as_set=tuple(aset),
        local_pref=_int_or_none(a.get("local-preference")),
        med=_int_or_none(a.get("med")),
        communities=tuple((int(c[0]), int(c[1])) for c in a.get("community", ())),
        large_communities=tuple((int(c[0]), int(c[1]), int(c[2])) for c in a.get("large-community", ())),
        originator_id=a.get("originator-id"),
        cluster_list=tuple(str(c) for c in a.get("cluster-list", ())),
    )


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)
