"""BGP-4 messages as bytes (RFC 4271 section 4), for tests that must send what a real speaker never
would: attributes are (flags, type, value) triples written as given, so an UPDATE may lack ORIGIN,
carry it twice, say ORIGIN=5 or hold an unknown well-known type.

    update(attributes=[origin(0), as_path([(AS_SEQUENCE, [65001])]), next_hop("198.18.0.9")],
           nlri=["198.19.5.0/24"])

Layouts: header 4.1, OPEN 4.2, UPDATE 4.3, NOTIFICATION 4.4, KEEPALIVE 4.4; capabilities RFC 5492
(multiprotocol RFC 4760, 4-octet AS RFC 6793, graceful restart RFC 4724); MP_REACH_NLRI RFC 4760
(IPv6 next hop: global, or global + link-local, RFC 2545 section 3).
"""
from __future__ import annotations

import ipaddress
import struct
from typing import Iterable, NamedTuple, Sequence

MARKER = b"\xff" * 16
HEADER_LEN = 19
OPEN, UPDATE, NOTIFICATION, KEEPALIVE = 1, 2, 3, 4
AS_TRANS = 23456  # RFC 6793: the 2-octet stand-in for a 4-octet AS in the OPEN's My AS

# attribute flags (RFC 4271 4.3) and types
OPTIONAL, TRANSITIVE, PARTIAL, EXTENDED = 0x80, 0x40, 0x20, 0x10
ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF = 1, 2, 3, 4, 5
MP_REACH, MP_UNREACH = 14, 15
AS_SET, AS_SEQUENCE = 1, 2
AFI_IPV4, AFI_IPV6, SAFI_UNICAST = 1, 2, 1


class Attr(NamedTuple):
    """One path attribute as sent: `flags` as given (EXTENDED is added when the value needs it)."""

    flags: int
    type: int
    value: bytes


class Message(NamedTuple):
    type: int
    body: bytes


class Notification(NamedTuple):
    code: int
    subcode: int
    data: bytes


class WireError(ValueError):
    """Bytes that are not a BGP message where one was expected."""


# ------------------------------------------------------------------ framing
def message(kind: int, body: bytes = b"") -> bytes:
    """Header (marker, length, type) + body."""
    length = HEADER_LEN + len(body)
    if length > 65535:
        raise WireError(f"message of {length} bytes does not fit the 2-octet length field")
    return MARKER + struct.pack("!HB", length, kind) + body


def raw_header(length: int, kind: int, marker: bytes = MARKER) -> bytes:
    """A header with any marker and length, for the message-header-error cases."""
    return marker + struct.pack("!HB", length, kind)


def keepalive() -> bytes:
    return message(KEEPALIVE)


def notification(code: int, subcode: int, data: bytes = b"") -> bytes:
    return message(NOTIFICATION, struct.pack("!BB", code, subcode) + data)


# ------------------------------------------------------------------ OPEN
def capability(code: int, value: bytes) -> bytes:
    return struct.pack("!BB", code, len(value)) + value


def cap_multiprotocol(afi: int, safi: int = SAFI_UNICAST) -> bytes:
    return capability(1, struct.pack("!HBB", afi, 0, safi))


def cap_route_refresh() -> bytes:
    return capability(2, b"")


def cap_four_octet_as(asn: int) -> bytes:
    return capability(65, struct.pack("!I", asn))


def cap_graceful_restart(restart_time: int, families: Sequence[tuple[int, int]] = (), forwarding: bool = False) -> bytes:
    if not 0 <= restart_time < 4096:
        raise WireError(f"graceful restart time {restart_time} does not fit 12 bits")
    body = struct.pack("!H", restart_time)
    for afi, safi in families:
        body += struct.pack("!HBB", afi, safi, 0x80 if forwarding else 0)
    return capability(64, body)


def open_message(asn: int, router_id: str, hold_time: int = 90, capabilities: Iterable[bytes] | None = None) -> bytes:
    """OPEN version 4; `capabilities` default to IPv4 unicast + 4-octet AS, one Capabilities parameter."""
    caps = list(capabilities) if capabilities is not None else [cap_multiprotocol(AFI_IPV4), cap_four_octet_as(asn)]
    params = b"".join(struct.pack("!BB", 2, len(c)) + c for c in caps)
    my_as = asn if asn <= 0xFFFF else AS_TRANS
    body = struct.pack("!BHH4sB", 4, my_as, hold_time, ipaddress.IPv4Address(router_id).packed, len(params)) + params
    return message(OPEN, body)


# ------------------------------------------------------------------ UPDATE
def attr(flags: int, kind: int, value: bytes) -> Attr:
    return Attr(flags, kind, value)


def encode_attr(a: Attr) -> bytes:
    flags = a.flags | (EXTENDED if len(a.value) > 255 else 0)
    if flags & EXTENDED:
        return struct.pack("!BBH", flags, a.type, len(a.value)) + a.value
    return struct.pack("!BBB", flags, a.type, len(a.value)) + a.value


def origin(value: int = 0) -> Attr:
    """0 IGP, 1 EGP, 2 INCOMPLETE; anything else is what a malformed-ORIGIN test sends."""
    return Attr(TRANSITIVE, ORIGIN, bytes([value]))


def as_path(segments: Sequence[tuple[int, Sequence[int]]] = ()) -> Attr:
    """Segments of (AS_SET or AS_SEQUENCE, ASNs), 4-octet ASNs (the 4-octet AS capability is negotiated)."""
    value = b"".join(struct.pack("!BB", kind, len(asns)) + b"".join(struct.pack("!I", a) for a in asns)
                     for kind, asns in segments)
    return Attr(TRANSITIVE, AS_PATH, value)


def next_hop(address: str) -> Attr:
    return Attr(TRANSITIVE, NEXT_HOP, ipaddress.IPv4Address(address).packed)


def med(value: int) -> Attr:
    return Attr(OPTIONAL, MED, struct.pack("!I", value))


def local_pref(value: int) -> Attr:
    return Attr(TRANSITIVE, LOCAL_PREF, struct.pack("!I", value))


def prefix(text: str) -> bytes:
    """Length octet + the fewest octets holding the network bits (RFC 4271 4.3, RFC 4760 5)."""
    net = ipaddress.ip_network(text)
    return bytes([net.prefixlen]) + net.network_address.packed[: (net.prefixlen + 7) // 8]


def mp_reach_ipv6(next_hops: Sequence[str], prefixes: Sequence[str]) -> Attr:
    """MP_REACH_NLRI for IPv6 unicast: one next hop (16 octets) or global + link-local (32)."""
    if len(next_hops) not in (1, 2):
        raise WireError(f"an IPv6 next hop is one or two addresses, got {len(next_hops)}")
    nh = b"".join(ipaddress.IPv6Address(a).packed for a in next_hops)
    value = struct.pack("!HBB", AFI_IPV6, SAFI_UNICAST, len(nh)) + nh + b"\x00" + b"".join(prefix(p) for p in prefixes)
    return Attr(OPTIONAL, MP_REACH, value)


def mp_unreach_ipv6(prefixes: Sequence[str]) -> Attr:
    return Attr(OPTIONAL, MP_UNREACH, struct.pack("!HB", AFI_IPV6, SAFI_UNICAST) + b"".join(prefix(p) for p in prefixes))


def update(withdrawn: Sequence[str] = (), attributes: Sequence[Attr] = (), nlri: Sequence[str] = ()) -> bytes:
    """An UPDATE with the attributes exactly in the order given (duplicates and all)."""
    w = b"".join(prefix(p) for p in withdrawn)
    a = b"".join(encode_attr(x) for x in attributes)
    return message(UPDATE, struct.pack("!H", len(w)) + w + struct.pack("!H", len(a)) + a
                   + b"".join(prefix(p) for p in nlri))


def updates(attributes: Sequence[Attr], nlri: Sequence[str], max_size: int = 4096) -> list[bytes]:
    """As many UPDATEs as it takes to carry `nlri` with the same attributes, each within `max_size`
    (4,096: RFC 4271 4.1's largest message without RFC 8654)."""
    fixed = HEADER_LEN + 4 + sum(len(encode_attr(a)) for a in attributes)
    out, batch, size = [], [], fixed
    for p in nlri:
        n = len(prefix(p))
        if batch and size + n > max_size:
            out.append(update(attributes=attributes, nlri=batch))
            batch, size = [], fixed
        batch.append(p)
        size += n
    if batch:
        out.append(update(attributes=attributes, nlri=batch))
    return out


def well_formed(next_hop_address: str, path: Sequence[int], nlri: Sequence[str], origin_value: int = 0) -> bytes:
    """The ordinary eBGP UPDATE: ORIGIN, AS_PATH (one AS_SEQUENCE), NEXT_HOP."""
    return update(attributes=[origin(origin_value), as_path([(AS_SEQUENCE, path)]), next_hop(next_hop_address)],
                  nlri=nlri)


# ------------------------------------------------------------------ reading
def split(buffer: bytes) -> tuple[list[Message], bytes]:
    """The whole messages at the start of `buffer`, and what is left of an incomplete one."""
    out = []
    while len(buffer) >= HEADER_LEN:
        if buffer[:16] != MARKER:
            raise WireError(f"no BGP marker in {buffer[:19].hex()}")
        length, kind = struct.unpack("!HB", buffer[16:19])
        if length < HEADER_LEN:
            raise WireError(f"message length {length} is shorter than a header")
        if len(buffer) < length:
            break
        out.append(Message(kind, buffer[HEADER_LEN:length]))
        buffer = buffer[length:]
    return out, buffer


def parse_notification(body: bytes) -> Notification:
    if len(body) < 2:
        raise WireError(f"NOTIFICATION body of {len(body)} bytes (at least 2: code, subcode)")
    return Notification(body[0], body[1], body[2:])


class OpenInfo(NamedTuple):
    version: int
    asn: int           # the 4-octet AS when the capability is there, else My AS
    hold_time: int
    router_id: str
    capabilities: tuple[tuple[int, bytes], ...]


def parse_open(body: bytes) -> OpenInfo:
    if len(body) < 10:
        raise WireError(f"OPEN body of {len(body)} bytes (at least 10)")
    version, my_as, hold, rid, plen = struct.unpack("!BHH4sB", body[:10])
    params, caps, asn = body[10:10 + plen], [], my_as
    while len(params) >= 2:
        ptype, pl = params[0], params[1]
        value, params = params[2:2 + pl], params[2 + pl:]
        while ptype == 2 and len(value) >= 2:
            code, cl = value[0], value[1]
            caps.append((code, value[2:2 + cl]))
            if code == 65 and cl == 4:
                asn = struct.unpack("!I", value[2:6])[0]
            value = value[2 + cl:]
    return OpenInfo(version, asn, hold, str(ipaddress.IPv4Address(rid)), tuple(caps))
