"""The link and address messages a workload's wiring sends, built by hand like rtnl_codec's routes.

Layouts follow linux/rtnetlink.h, linux/if_link.h and linux/veth.h: nlmsghdr, then ifinfomsg or
ifaddrmsg, then 4-byte aligned attributes (nested ones for the veth's peer). Every change asks for
an ack, so a refusal comes back as the errno of that one request.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from dataplane.rtnl_codec import (
    AF_INET,
    AF_INET6,
    IFF_UP,
    IFINFO,
    IFLA_IFNAME,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    RTM_DELLINK,
    RTM_GETLINK,
    RTM_NEWLINK,
    attributes,
)
from dataplane.rtnl_codec import attr as _attr
from dataplane.rtnl_codec import message as _message

RTM_NEWADDR = 20
RTM_GETADDR = 22

IFLA_ADDRESS = 1
IFLA_MTU = 4
IFLA_LINK = 5
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1

IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8
IFA_F_NODAD = 0x02
IFA_F_TENTATIVE = 0x40

AF_UNSPEC = 0

CHANGE = NLM_F_REQUEST | NLM_F_ACK
CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL

IFADDR = struct.Struct("=BBBBI")
U32 = struct.Struct("=I")


def _name(name: str) -> bytes:
    return _attr(IFLA_IFNAME, name.encode() + b"\0")


def mac_bytes(mac: str) -> bytes:
    """'ee:ee:ee:ee:ee:ee' -> its six bytes."""
    return bytes(int(part, 16) for part in mac.split(":"))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def encode_veth_pair(seq: int, name: str, peer: str, peer_netns_fd: int, mtu: int = 0, mac: bytes = b"") -> bytes:
    """RTM_NEWLINK: a veth `name` here whose peer `peer` is created inside the namespace open as
    `peer_netns_fd`; both with `mtu` (0: the kernel's default), `name` with `mac` when given."""
    peer_attrs = _name(peer) + _attr(IFLA_NET_NS_FD, U32.pack(peer_netns_fd))
    own = _name(name)
    if mtu:
        peer_attrs += _attr(IFLA_MTU, U32.pack(mtu))
        own += _attr(IFLA_MTU, U32.pack(mtu))
    if mac:
        own += _attr(IFLA_ADDRESS, mac)
    info = _attr(IFLA_INFO_KIND, b"veth\0") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0) + peer_attrs))
    return _message(RTM_NEWLINK, CREATE, seq, IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0) + own + _attr(IFLA_LINKINFO, info))


def encode_link_up(seq: int, name: str) -> bytes:
    """RTM_NEWLINK setting IFF_UP on the link called `name`."""
    return _message(RTM_NEWLINK, CHANGE, seq, IFINFO.pack(AF_UNSPEC, 0, 0, IFF_UP, IFF_UP) + _name(name))


def encode_link_delete(seq: int, name: str) -> bytes:
    """RTM_DELLINK of the link called `name` (a veth takes its peer with it)."""
    return _message(RTM_DELLINK, CHANGE, seq, IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0) + _name(name))


def encode_link_get(seq: int, name: str) -> bytes:
    """RTM_GETLINK of one link by name: one RTM_NEWLINK back, or ENODEV."""
    return _message(RTM_GETLINK, NLM_F_REQUEST, seq, IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0) + _name(name))


def encode_address_add(seq: int, ifindex: int, packed: bytes, prefixlen: int) -> bytes:
    """RTM_NEWADDR: `packed` (4 or 16 bytes) / prefixlen on link `ifindex`; IPv6 without duplicate
    address detection (a point-to-point veth has no one to collide with)."""
    family = AF_INET6 if len(packed) == 16 else AF_INET
    flags = IFA_F_NODAD if family == AF_INET6 else 0
    body = IFADDR.pack(family, prefixlen, flags, 0, ifindex) + _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
    return _message(RTM_NEWADDR, CREATE, seq, body)


def encode_address_dump(seq: int, family: int, ifindex: int) -> bytes:
    """RTM_GETADDR dump of one family on one link (the kernel filters by index under strict checking)."""
    return _message(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, IFADDR.pack(family, 0, 0, 0, ifindex))


class LinkInfo(NamedTuple):
    index: int
    name: str
    flags: int
    mtu: int
    mac: str
    peer_index: int  # IFLA_LINK: a veth's peer (its index in the peer's namespace); 0 when absent


def decode_link(buf: bytes, off: int, length: int) -> LinkInfo:
    """RTM_NEWLINK at `off` -> LinkInfo."""
    _family, _type, index, flags, _change = IFINFO.unpack_from(buf, off + 16)
    a = attributes(buf, off + 32, off + length)
    return LinkInfo(index, a.get(IFLA_IFNAME, b"").rstrip(b"\0").decode("utf-8", "replace"), flags,
                    _u32(a.get(IFLA_MTU)), mac_text(a.get(IFLA_ADDRESS, b"")), _u32(a.get(IFLA_LINK)))


def _u32(value: bytes | None) -> int:
    return U32.unpack_from(value)[0] if value and len(value) >= 4 else 0


class AddressInfo(NamedTuple):
    index: int
    family: int
    prefixlen: int
    scope: int
    flags: int
    address: bytes  # packed


def decode_address(buf: bytes, off: int, length: int) -> AddressInfo:
    """RTM_NEWADDR at `off` -> AddressInfo (IFA_LOCAL where present, else IFA_ADDRESS; IFA_FLAGS
    over the header's 8-bit flags)."""
    family, prefixlen, flags, scope, index = IFADDR.unpack_from(buf, off + 16)
    a = attributes(buf, off + 24, off + length)
    if IFA_FLAGS in a:
        flags = _u32(a[IFA_FLAGS])
    return AddressInfo(index, family, prefixlen, scope, flags, a.get(IFA_LOCAL) or a.get(IFA_ADDRESS, b""))
