"""The few rtnetlink messages we send, built by hand, and a lean decoder for the ones we read.

pyroute2's generic encoder costs ~140 us a route (PLATFORM.md: ~7k/s); here each common shape is one
precompiled `struct.Struct` packed in one call, so encoding is ~1 us and the kernel is the limit.
Layouts follow linux/rtnetlink.h: nlmsghdr, rtmsg, then 4-byte aligned attributes.
"""
from __future__ import annotations

import functools
import struct
from typing import Callable

from dataplane.routes.kernel import RTN_UNICAST, DesiredHop, KernelHop, KernelRoute, RouteKey

AF_INET = 2
AF_INET6 = 10

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100  # in NLMSG_ERROR: only the request's header is echoed
NLM_F_ACK_TLVS = 0x200  # in NLMSG_ERROR: extended ack attributes follow
NLMSGERR_ATTR_MSG = 1

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26

RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_MULTIPATH = 9
RTA_TABLE = 15

RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
RTM_F_CLONED = 0x200
RTNH_F_DEAD = 1
RTNH_F_LINKDOWN = 16
_DOWN = RTNH_F_DEAD | RTNH_F_LINKDOWN

IFLA_IFNAME = 3
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000

NEW_FLAGS = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL
REPLACE_FLAGS = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE
DEL_FLAGS = NLM_F_REQUEST

HDR = struct.Struct("=IHHII")
HDR_ERR = struct.Struct("=IHHIIi")
RTMSG = struct.Struct("=BBBBBBBBI")
NLA = struct.Struct("=HH")
U32 = struct.Struct("=I")
RTNH = struct.Struct("=HBBi")
IFINFO = struct.Struct("=BxHiII")

_HDR_LEN = 16
_RTMSG_LEN = 12


def _shape(addr_len: int, gateway: bool, oif: bool) -> struct.Struct:
    """One whole message: header, rtmsg, TABLE, DST, PRIORITY [, GATEWAY] [, OIF]."""
    fmt = "=IHHII" + "BBBBBBBBI" + "HHI" + f"HH{addr_len}s" + "HHI"
    if gateway:
        fmt += f"HH{addr_len}s"
    if oif:
        fmt += "HHi"
    return struct.Struct(fmt)


_SHAPES: dict[tuple[int, bool, bool], struct.Struct] = {
    (alen, gw, oif): _shape(alen, gw, oif) for alen in (4, 16) for gw in (False, True) for oif in (False, True)
}

_GW_SHAPES = {alen: _SHAPES[(alen, True, False)] for alen in (4, 16)}  # via a gateway, no device

IfIndexOf = Callable[[str], int]


def _family(dst: bytes) -> int:
    return AF_INET6 if len(dst) == 16 else AF_INET


def encode_newroute(
    seq: int,
    flags: int,
    table: int,
    protocol: int,
    key: RouteKey,
    rtype: int,
    hops: tuple[DesiredHop, ...],
    ifindex_of: IfIndexOf,
) -> bytes:
    """RTM_NEWROUTE for one route: `flags` is NEW_FLAGS (add) or REPLACE_FLAGS; devices resolved by `ifindex_of`."""
    dst = key.dst
    alen = len(dst)
    family = AF_INET6 if alen == 16 else AF_INET
    rtm_table = table if table < 256 else 0
    if rtype != RTN_UNICAST:
        shape = _SHAPES[(alen, False, False)]
        return shape.pack(
            shape.size, RTM_NEWROUTE, flags, seq, 0,
            family, key.dst_len, 0, 0, rtm_table, protocol, RT_SCOPE_UNIVERSE, rtype, 0,
            8, RTA_TABLE, table, 4 + alen, RTA_DST, dst, 8, RTA_PRIORITY, key.metric,
        )
    if len(hops) == 1:
        gw, dev, _weight = hops[0]
        if dev is None and gw is not None:  # a learned route's shape: one pack, no argument list
            shape = _GW_SHAPES[alen]
            return shape.pack(
                shape.size, RTM_NEWROUTE, flags, seq, 0,
                family, key.dst_len, 0, 0, rtm_table, protocol, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0,
                8, RTA_TABLE, table, 4 + alen, RTA_DST, dst, 8, RTA_PRIORITY, key.metric, 4 + alen, RTA_GATEWAY, gw,
            )
        scope = RT_SCOPE_UNIVERSE if gw is not None else RT_SCOPE_LINK
        shape = _SHAPES[(alen, gw is not None, dev is not None)]
        args = [
            shape.size, RTM_NEWROUTE, flags, seq, 0,
            family, key.dst_len, 0, 0, rtm_table, protocol, scope, RTN_UNICAST, 0,
            8, RTA_TABLE, table, 4 + alen, RTA_DST, dst, 8, RTA_PRIORITY, key.metric,
        ]
        if gw is not None:
            args += (4 + alen, RTA_GATEWAY, gw)
        if dev is not None:
            args += (8, RTA_OIF, ifindex_of(dev))
        return shape.pack(*args)
    return _encode_multipath(seq, flags, table, protocol, key, hops, ifindex_of)


def _encode_multipath(
    seq: int, flags: int, table: int, protocol: int, key: RouteKey, hops: tuple[DesiredHop, ...], ifindex_of: IfIndexOf
) -> bytes:
    dst = key.dst
    alen = len(dst)
    nested = bytearray()
    any_gateway = False
    for gw, dev, weight in hops:
        ifindex = ifindex_of(dev) if dev is not None else 0
        if gw is not None:
            any_gateway = True
            nested += RTNH.pack(8 + 4 + alen, 0, weight - 1, ifindex) + NLA.pack(4 + alen, RTA_GATEWAY) + gw
        else:
            nested += RTNH.pack(8, 0, weight - 1, ifindex)
    scope = RT_SCOPE_UNIVERSE if any_gateway else RT_SCOPE_LINK
    body = (
        RTMSG.pack(_family(dst), key.dst_len, 0, 0, table if table < 256 else 0, protocol, scope, RTN_UNICAST, 0)
        + NLA.pack(8, RTA_TABLE) + U32.pack(table)
        + NLA.pack(4 + alen, RTA_DST) + dst
        + NLA.pack(8, RTA_PRIORITY) + U32.pack(key.metric)
        + NLA.pack(4 + len(nested), RTA_MULTIPATH) + bytes(nested)
    )
    return HDR.pack(_HDR_LEN + len(body), RTM_NEWROUTE, flags, seq, 0) + body


_DEL_SHAPES = {alen: struct.Struct("=IHHII" + "BBBBBBBBI" + "HHI" + f"HH{alen}s" + "HHI") for alen in (4, 16)}


def encode_delroute(seq: int, table: int, protocol: int, key: RouteKey) -> bytes:
    """RTM_DELROUTE that matches only our protocol; scope NOWHERE, or the kernel answers ESRCH."""
    dst = key.dst
    alen = len(dst)
    shape = _DEL_SHAPES[alen]
    return shape.pack(
        shape.size, RTM_DELROUTE, DEL_FLAGS, seq, 0,
        AF_INET6 if alen == 16 else AF_INET, key.dst_len, 0, 0, table if table < 256 else 0, protocol, RT_SCOPE_NOWHERE, 0, 0,
        8, RTA_TABLE, table, 4 + alen, RTA_DST, dst, 8, RTA_PRIORITY, key.metric,
    )


@functools.lru_cache(maxsize=8)
def delroute_encoder(table: int, protocol: int) -> Callable[[int, RouteKey], bytes]:
    """(seq, key) -> `encode_delroute(seq, table, protocol, key)`, the same bytes for less work per
    route: what does not change between the routes of one table (the header's length and type,
    the rtmsg for each family and length, the attribute headers) is packed once, so a delete packs
    its sequence number, destination and metric. Kept per (table, protocol): the 162 headers cost
    ~1,100 packs, more than the deletes of a small batch (steady churn sends one every 100 ms)."""
    shapes: dict[int, tuple[Callable[..., bytes], dict[int, bytes], bytes]] = {}
    for alen, family in ((4, AF_INET), (16, AF_INET6)):
        size = _DEL_SHAPES[alen].size
        head = HDR.pack(size, RTM_DELROUTE, DEL_FLAGS, 0, 0)[:8]
        middles = {
            dst_len: U32.pack(0)  # nlmsg_pid
            + RTMSG.pack(family, dst_len, 0, 0, table if table < 256 else 0, protocol, RT_SCOPE_NOWHERE, 0, 0)
            + NLA.pack(8, RTA_TABLE) + U32.pack(table) + NLA.pack(4 + alen, RTA_DST)
            for dst_len in range(alen * 8 + 1)
        }
        shape = struct.Struct(f"=8sI{len(middles[0])}s{alen}s4sI")
        assert shape.size == size
        prio = NLA.pack(8, RTA_PRIORITY)
        shapes[alen] = (functools.partial(shape.pack, head), middles, prio)

    def encode(seq: int, key: RouteKey) -> bytes:
        dst_len, dst, metric = key
        pack, middles, prio = shapes[len(dst)]
        return pack(seq, middles[dst_len], dst, prio, metric)

    return encode


def encode_route_dump(seq: int, family: int, table: int, protocol: int) -> bytes:
    """RTM_GETROUTE dump filtered by the kernel to one table and protocol (needs NETLINK_GET_STRICT_CHK)."""
    body = RTMSG.pack(family, 0, 0, 0, table if table < 256 else 0, protocol, 0, 0, 0) + NLA.pack(8, RTA_TABLE) + U32.pack(table)
    return HDR.pack(_HDR_LEN + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def encode_link_dump(seq: int) -> bytes:
    body = IFINFO.pack(0, 0, 0, 0, 0)
    return HDR.pack(_HDR_LEN + len(body), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def message(mtype: int, flags: int, seq: int, body: bytes) -> bytes:
    """One message: the header, then `body` (the family header and its attributes)."""
    return HDR.pack(_HDR_LEN + len(body), mtype, flags, seq, 0) + body


def attr(atype: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes (a nested one's payload is its attributes)."""
    return NLA.pack(4 + len(payload), atype) + payload + b"\0" * (-len(payload) & 3)


def attributes(buf: bytes, p: int, end: int) -> dict[int, bytes]:
    """The attributes from `p` to `end` by type (the nested and byte-order bits cleared; a repeated type:
    the last), each its payload; a malformed length ends the walk."""
    out = {}
    while p + 4 <= end:
        alen, atype = NLA.unpack_from(buf, p)
        if alen < 4:
            break
        out[atype & 0x3FFF] = buf[p + 4 : p + alen]
        p += (alen + 3) & ~3
    return out


def with_ack(message: bytes) -> bytes:
    """The same message asking for an ack (errors are acked anyway; this is a barrier)."""
    flags = struct.unpack_from("=H", message, 6)[0]
    return message[:6] + struct.pack("=H", flags | NLM_F_ACK) + message[8:]


def decode_error(buf: bytes, off: int, length: int) -> tuple[int, int, str]:
    """NLMSG_ERROR at `off` -> (request seq, positive errno or 0, extended ack text or '')."""
    _len, _type, flags, _seq, _pid, error = HDR_ERR.unpack_from(buf, off)
    req_len, _t, _f, req_seq, _p = HDR.unpack_from(buf, off + 20)
    text = ""
    if flags & NLM_F_ACK_TLVS:
        p = off + 20 + (_HDR_LEN if flags & NLM_F_CAPPED else req_len)
        end = off + length
        while p + 4 <= end:
            alen, atype = NLA.unpack_from(buf, p)
            if alen < 4:
                break
            if atype == NLMSGERR_ATTR_MSG:
                text = buf[p + 4 : p + alen].rstrip(b"\0").decode("utf-8", "replace")
            p += (alen + 3) & ~3
    return req_seq, -error, text


_new = tuple.__new__


def _nla_header(alen: int, atype: int) -> int:
    return U32.unpack(NLA.pack(alen, atype))[0]


# The shape the kernel dumps for an IPv4 route via one gateway: rtmsg, TABLE, DST, GATEWAY, OIF
# (attribute headers read as u32 and compared whole): one unpack instead of an attribute walk.
_V4_GW = struct.Struct("=BBBBBBBBI" + "II" + "I4s" + "I4s" + "Ii")
_V4_GW_LEN = 16 + _V4_GW.size
_V4_GW_HEADERS = (_nla_header(8, RTA_TABLE), _nla_header(8, RTA_DST), _nla_header(8, RTA_GATEWAY), _nla_header(8, RTA_OIF))


def dump_signature(table: int, protocol: int, key: RouteKey, rtype: int, hops: tuple[DesiredHop, ...]) -> bytes | None:
    """The bytes the kernel dumps for this route, after the header and before the OIF value.

    Only for the common shape (IPv4, one gateway, no device asked for); None otherwise. A dumped
    message whose bytes equal this is the desired route, whatever device the kernel chose, so a
    no-op reconcile can skip decoding it.
    """
    if len(key.dst) != 4:
        return None
    parts = signature_parts(table, protocol, key.dst_len, key.metric, rtype, hops)
    return None if parts is None else parts[0] + key.dst + parts[1]


def signature_parts(table: int, protocol: int, dst_len: int, metric: int, rtype: int,
                    hops: tuple[DesiredHop, ...]) -> tuple[bytes, bytes] | None:
    """What a dump signature of an IPv4 route holds before and after its destination; None when the
    route is not of the common shape."""
    if rtype != RTN_UNICAST or len(hops) != 1:
        return None
    gw, dev, _weight = hops[0]
    if gw is None or dev is not None:
        return None
    return _signature_parts(table, protocol, dst_len, metric, gw)


@functools.lru_cache(maxsize=1024)
def _signature_parts(table: int, protocol: int, dst_len: int, metric: int, gw: bytes) -> tuple[bytes, bytes]:
    """What a dump signature holds before and after the destination: the same for every route of a
    prefix length via one gateway (100k learned routes share a handful)."""
    head = RTMSG.pack(AF_INET, dst_len, 0, 0, table if table < 256 else 252, protocol, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    head += NLA.pack(8, RTA_TABLE) + U32.pack(table) + NLA.pack(8, RTA_DST)
    tail = NLA.pack(8, RTA_PRIORITY) + U32.pack(metric) if metric else b""
    return head, tail + NLA.pack(8, RTA_GATEWAY) + gw + NLA.pack(8, RTA_OIF)


def decode_route(buf: bytes, off: int, length: int) -> KernelRoute | None:
    """RTM_NEWROUTE/RTM_DELROUTE at `off` -> KernelRoute; None for cloned (cache) entries."""
    if length == _V4_GW_LEN:
        v = _V4_GW.unpack_from(buf, off + 16)
        if (v[9], v[11], v[13], v[15]) == _V4_GW_HEADERS and v[0] == AF_INET and not v[8] & RTM_F_CLONED:
            return _new(KernelRoute, (_new(RouteKey, (v[1], v[12], 0)), v[7], ((v[14], v[16], 1),), 1 if v[8] & _DOWN else 0, v[5], v[10]))
    return _decode_route_walk(buf, off, length)


def _decode_route_walk(buf: bytes, off: int, length: int) -> KernelRoute | None:
    family, dst_len, _src_len, _tos, table, protocol, _scope, rtype, rflags = RTMSG.unpack_from(buf, off + 16)
    if rflags & RTM_F_CLONED:
        return None
    dst = None
    gateway = None
    oif = 0
    metric = 0
    multipath = None
    p = off + 28
    end = off + length
    unpack_nla = NLA.unpack_from
    while p + 4 <= end:
        alen, atype = unpack_nla(buf, p)
        if alen < 4:
            break
        atype &= 0x3FFF
        if atype == RTA_DST:
            dst = buf[p + 4 : p + alen]
        elif atype == RTA_GATEWAY:
            gateway = buf[p + 4 : p + alen]
        elif atype == RTA_OIF:
            oif = U32.unpack_from(buf, p + 4)[0]
        elif atype == RTA_PRIORITY:
            metric = U32.unpack_from(buf, p + 4)[0]
        elif atype == RTA_TABLE:
            table = U32.unpack_from(buf, p + 4)[0]
        elif atype == RTA_MULTIPATH:
            multipath = (p + 4, p + alen)
        p += (alen + 3) & ~3
    if dst is None:
        dst = bytes(16 if family == AF_INET6 else 4)
    # tuple.__new__ skips NamedTuple's Python-level __new__: this runs 100k times a reconcile
    key = _new(RouteKey, (dst_len, dst, metric))
    if multipath is not None:
        hops, down = _decode_multipath(buf, *multipath)
    elif rtype == RTN_UNICAST:
        hops = ((gateway, oif, 1),)
        down = 1 if rflags & _DOWN else 0
    else:
        hops, down = (), 0
    return _new(KernelRoute, (key, rtype, hops, down, protocol, table))


def _decode_multipath(buf: bytes, p: int, end: int) -> tuple[tuple[KernelHop, ...], int]:
    hops: list[KernelHop] = []
    down = 0
    while p + 8 <= end:
        rlen, rflags, rhops, ifindex = RTNH.unpack_from(buf, p)
        if rlen < 8:
            break
        gateway = None
        q, qend = p + 8, p + rlen
        while q + 4 <= qend:
            alen, atype = NLA.unpack_from(buf, q)
            if alen < 4:
                break
            if atype & 0x3FFF == RTA_GATEWAY:
                gateway = buf[q + 4 : q + alen]
            q += (alen + 3) & ~3
        if rflags & _DOWN:
            down += 1
        hops.append((gateway, ifindex, rhops + 1))
        p += (rlen + 3) & ~3
    hops.sort(key=lambda h: h[0] or b"")
    return tuple(hops), down


def decode_link(buf: bytes, off: int, length: int) -> tuple[int, str, int]:
    """RTM_NEWLINK/RTM_DELLINK -> (ifindex, name, flags)."""
    _family, _type, index, flags, _change = IFINFO.unpack_from(buf, off + 16)
    name = ""
    p = off + 32
    end = off + length
    while p + 4 <= end:
        alen, atype = NLA.unpack_from(buf, p)
        if alen < 4:
            break
        if atype & 0x3FFF == IFLA_IFNAME:
            name = buf[p + 4 : p + alen].rstrip(b"\0").decode("utf-8", "replace")
            break
        p += (alen + 3) & ~3
    return index, name, flags
