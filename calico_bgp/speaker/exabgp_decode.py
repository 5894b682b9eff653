"""ExaBGP's decoding of received prefixes made cheaper per prefix (patched in by exabgp_receive.patch;
each to be offered upstream, see the README's "ExaBGP patches"). The objects made are ExaBGP's own,
field for field (tests/unit/test_exabgp_receive.py compares them, and the exceptions, with ExaBGP's
decoder over random well formed and malformed fields).

- `NLRI.unpack_nlri` (bgp/message/update/nlri/nlri.py) made an AFI and a SAFI object, formatted an
  "ipv4/unicast" key from them and then ran INET's generic decoder (labels, route distinguishers,
  families' sizes) for every prefix. IPv4 and IPv6 unicast prefixes without ADD-PATH are now decoded
  directly into the same INET object; anything else (ADD-PATH, other families, a prefix that does
  not decode) goes to ExaBGP's own code, which raises its own NOTIFICATION for a bad one.
- `AFI.create` and `SAFI.create` (protocol/family.py) built a new object on every call, even for a
  value in their cache (`cache.get(value, _AFI(value))` evaluates the default first).
- `Update.unpack_message` called the decoder, sliced off the rest of the field (quadratic in its
  length) and made a debug closure for each classic IPv4 prefix: each field is now walked once
  (`_update_prefixes_in_one_walk`, with debug logging off).
"""
from __future__ import annotations

import os
from typing import Any, Callable


def patch() -> None:
    _family_create()
    _nlri_decode()
    _update_prefixes_in_one_walk()


def _family_create() -> None:
    from exabgp.protocol.family import AFI, SAFI, _AFI, _SAFI

    def afi_create(cls, value):  # type: ignore[no-untyped-def]
        try:
            return cls.cache[value]
        except KeyError:
            return _AFI(value)

    def safi_create(cls, value):  # type: ignore[no-untyped-def]
        try:
            return cls.cache[value]
        except KeyError:
            return _SAFI(value)

    AFI.create = classmethod(afi_create)  # type: ignore[method-assign,assignment]
    SAFI.create = classmethod(safi_create)  # type: ignore[method-assign,assignment]


def inet_decoder(inet: type, afi: Any, safi: Any, pathinfo_none: Any, no_next_hop: Any, cidr: type,
                 mask_bytes: dict[int, int]) -> Callable[[bytes, Any], Any]:
    """A decoder of one unicast prefix of family (afi, safi) without ADD-PATH: (data, action) ->
    (INET, rest of data), the same object ExaBGP's INET.unpack_nlri makes, or None when the data is
    not a well-formed prefix of the family (the caller hands it to ExaBGP's own decoder, which says
    what is wrong)."""
    length = 4 if int(afi) == 1 else 16  # AFI 1: IPv4, 2: IPv6
    bits = length * 8
    pads = [bytes(length - n) for n in range(length + 1)]
    new = object.__new__

    def decode(data: bytes, action: Any) -> Any:
        if not data:
            return None
        mask = data[0]
        if mask > bits:
            return None
        size = mask_bytes.get(mask, 0)
        if len(data) < size + 1 or (mask and size == 0):
            return None
        nlri = new(inet)
        nlri.afi = afi
        nlri.safi = safi
        nlri.action = action
        nlri.path_info = pathinfo_none
        nlri.nexthop = no_next_hop
        nlri.cidr = cidr(data[1:size + 1] + pads[size], mask)
        return nlri, data[size + 1:]

    return decode


def inet_walker(inet: type, afi: Any, safi: Any, pathinfo_none: Any, cidr: type,
                mask_bytes: dict[int, int]) -> Callable[[bytes, Any, Any], Any]:
    """`inet_decoder` over a whole field of prefixes at once: (data, action, next hop) -> the list of
    INET objects ExaBGP's loop of INET.unpack_nlri makes of it, or None when any prefix of it is not
    well formed (the caller then hands the message to ExaBGP's own decoder). One index walks the
    bytes: ExaBGP sliced off the rest of the field after each prefix (quadratic in its length)."""
    length = 4 if int(afi) == 1 else 16
    bits = length * 8
    pads = [bytes(length - n) for n in range(length + 1)]
    sizes = [mask_bytes.get(mask, 0) for mask in range(bits + 1)]
    new = object.__new__

    def walk(data: bytes, action: Any, nexthop: Any) -> Any:
        out = []
        append = out.append
        at, end = 0, len(data)
        while at < end:
            mask = data[at]
            if mask > bits:
                return None
            size = sizes[mask]
            start, at = at + 1, at + 1 + size
            if at > end or (mask and size == 0):
                return None
            nlri = new(inet)
            nlri.afi = afi
            nlri.safi = safi
            nlri.action = action
            nlri.path_info = pathinfo_none
            nlri.nexthop = nexthop
            nlri.cidr = cidr(data[start:at] + pads[size], mask)
            append(nlri)
        return out

    return walk


def _update_prefixes_in_one_walk() -> None:
    """`Update.unpack_message` (bgp/message/update/__init__.py) with the classic IPv4 fields
    (withdrawn routes, NLRI) decoded by `inet_walker`: ExaBGP called the NLRI decoder, sliced the
    rest of the field and made a debug closure per prefix. Only when debug logging is off (those
    closures are what it would print), IPv4 unicast is ExaBGP's INET and ADD-PATH is not in use for
    it; an end-of-RIB, and a field that does not decode, go to ExaBGP's own code whole (which then
    raises what it raised). Attributes are parsed as before, between the two fields' decoding
    (ExaBGP's own order, so what raises first raises first)."""
    from exabgp.bgp.message import Action
    from exabgp.bgp.message.direction import Direction
    from exabgp.bgp.message.update import EOR_IPV4_UNICAST_LENGTH, EOR_WITH_PREFIX_LENGTH, EOR, Update
    from exabgp.bgp.message.update.attribute import Attribute, Attributes, MPRNLRI, MPURNLRI
    from exabgp.bgp.message.update.nlri.cidr import CIDR
    from exabgp.bgp.message.update.nlri.inet import INET
    from exabgp.bgp.message.update.nlri.nlri import NLRI
    from exabgp.bgp.message.update.nlri.qualifier import PathInfo
    from exabgp.protocol.family import AFI, SAFI
    from exabgp.protocol.ip import NoNextHop

    if os.environ.get("exabgp_log_level", "INFO").upper() == "DEBUG":
        return
    if NLRI.registered_nlri.get(f"{AFI.ipv4}/{SAFI.unicast}") is not INET:
        return
    walk = inet_walker(INET, AFI.ipv4, SAFI.unicast, PathInfo.NOPATH, CIDR, CIDR._mask_to_bytes)
    original = Update.unpack_message.__func__  # type: ignore[attr-defined]
    ipv4, unicast, inbound = AFI.ipv4, SAFI.unicast, Direction.IN
    announce, withdraw = Action.ANNOUNCE, Action.WITHDRAW
    next_hop, reach_id, unreach_id = Attribute.CODE.NEXT_HOP, MPRNLRI.ID, MPURNLRI.ID
    split, unpack_attributes = Update.split, Attributes.unpack

    def unpack_message(cls, data, direction, negotiated):  # type: ignore[no-untyped-def]
        length = len(data)
        if length == EOR_IPV4_UNICAST_LENGTH or (length == EOR_WITH_PREFIX_LENGTH and data.startswith(EOR.NLRI.PREFIX)):
            return original(cls, data, direction, negotiated)
        withdrawn, _attributes, announced = split(data)
        if direction == inbound:
            addpath = negotiated.addpath.receive(ipv4, unicast)
        else:
            addpath = negotiated.addpath.send(ipv4, unicast)
        if addpath:
            return original(cls, data, direction, negotiated)
        nlris = walk(withdrawn, withdraw, NoNextHop) if withdrawn else []
        if nlris is None:
            return original(cls, data, direction, negotiated)
        attributes = unpack_attributes(_attributes, direction, negotiated)
        if announced:
            added = walk(announced, announce, attributes.get(next_hop, NoNextHop))
            if added is None:
                return original(cls, data, direction, negotiated)
            nlris += added
        unreach = attributes.pop(unreach_id, None)
        reach = attributes.pop(reach_id, None)
        if unreach is not None:
            nlris.extend(unreach.nlris)
        if reach is not None:
            nlris.extend(reach.nlris)
        if not attributes and not nlris:
            if unreach is None and reach is None:
                return EOR(ipv4, unicast)
            if unreach is not None:
                return EOR(unreach.afi, unreach.safi)
            return EOR(reach.afi, reach.safi)
        return Update(nlris, attributes)

    Update.unpack_message = classmethod(unpack_message)  # type: ignore[method-assign,assignment]


def _nlri_decode() -> None:
    from exabgp.bgp.message.update.nlri.cidr import CIDR
    from exabgp.bgp.message.update.nlri.inet import INET
    from exabgp.bgp.message.update.nlri.nlri import NLRI
    from exabgp.bgp.message.update.nlri.qualifier import PathInfo
    from exabgp.protocol.family import AFI, SAFI
    from exabgp.protocol.ip import NoNextHop

    fast = {}
    for afi in (AFI.ipv4, AFI.ipv6):
        if NLRI.registered_nlri.get(f"{afi}/{SAFI.unicast}") is INET:  # not replaced by another class
            fast[(int(afi), int(SAFI.unicast))] = inet_decoder(INET, afi, SAFI.unicast, PathInfo.NOPATH, NoNextHop,
                                                               CIDR, CIDR._mask_to_bytes)
    original = NLRI.unpack_nlri.__func__  # type: ignore[attr-defined]

    def unpack_nlri(cls, afi, safi, data, action, addpath):  # type: ignore[no-untyped-def]
        if not addpath:
            decode = fast.get((afi, safi))
            if decode is not None:
                got = decode(data, action)
                if got is not None:
                    return got
        return original(cls, afi, safi, data, action, addpath)

    NLRI.unpack_nlri = classmethod(unpack_nlri)  # type: ignore[method-assign,assignment]
