"""ExaBGP 5 API output (JSON encoder, API version 5.0.0) -> typed events: pure, no I/O.

One line in, a list of values out (an UPDATE carrying two families gives two `Update`s).
A line we cannot decode raises `MalformedMessage`; the caller logs and counts it.
"""
from __future__ import annotations

import ipaddress
import json
from typing import Any, Union

import attrs

from calico_bgp.speaker.errors import MalformedMessage
from calico_bgp.speaker.events import (
    Ack, EndOfRib, Event, ExaBGPShutdown, Ignored, Notification, PathAttributes, PeerOpen, PeerState, Text, Update,
)

Parsed = Union[Event, Ack, Text, Ignored]
_ACKS = {"done": True, "error": False}
_IGNORED_TYPES = {"keepalive", "fsm", "signal", "negotiated", "refresh", "operational"}
GRACEFUL_RESTART = "graceful restart"  # the capability's name in ExaBGP's JSON
FAMILIES = {"ipv4 unicast", "ipv6 unicast"}


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
    return str(ipaddress.ip_address(neighbor["address"]["peer"]))


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
        if gr is None:
            return [PeerOpen(peer=_peer(n))]
        # {"ipv4/unicast": ["restart"]}: ExaBGP names a family's F bit (forwarding state kept) "restart"
        flags = gr.get("address-family-flags") or {}
        return [PeerOpen(peer=_peer(n), graceful_restart=int(gr["time"]),
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
    base = _attributes(update.get("attribute", {}))
    announced: dict[str, dict[str, PathAttributes]] = {}
    for family, by_nexthop in update.get("announce", {}).items():
        out = announced.setdefault(family, {})
        for next_hop, nlris in by_nexthop.items():
            nh, _, ll = next_hop.partition(" ")  # "global link-local": a 32-byte next hop (exabgp_run)
            shared: dict[str | None, PathAttributes] = {}  # one value per path id, not per prefix
            for nlri in nlris:
                prefix, path_id = _nlri(nlri)
                a = shared.get(path_id)
                if a is None:
                    a = shared[path_id] = attrs.evolve(base, next_hop=None if nh == "null" else nh,
                                                       link_local=ll or None, path_id=path_id)
                out[prefix] = a
    withdrawn: dict[str, list[str]] = {}
    for family, nlris in update.get("withdraw", {}).items():
        withdrawn[family] = [_nlri(x)[0] for x in nlris]
    events: list[Parsed] = []
    for family in sorted(set(announced) | set(withdrawn)):
        if family not in FAMILIES:
            events.append(Ignored(f"family {family}"))
            continue
        events.append(Update(peer=peer, family=family, announced=announced.get(family, {}),
                             withdrawn=tuple(withdrawn.get(family, ()))))
    return events


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
