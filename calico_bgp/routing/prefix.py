"""An IP prefix as the routing core holds it: family, network as an int, length. Pure.

A learned prefix is a dict or set key some fifteen times on its way to the kernel (RIB, damping,
selections, changed sets), and a burst brings 100k of them. `Prefix` is a named tuple, so hashing,
equality and ordering run in C (a Python `__hash__` returning the network's int keeps neighbours in
neighbouring dict slots, but measured slower overall: it costs more per lookup than it saves).
Parsing the canonical text ExaBGP prints and printing it back are table lookups and integer
arithmetic, not `ipaddress`'s Python parser. Values from the cluster (pools, blocks, filter CIDRs: `ipaddress` networks) are converted
once with `Prefix.of`; `to_ipaddress()` gives one back where a library wants it.

Ordering is (version, network, length), as the CLI and the speaker's commands sort prefixes.
"""
from __future__ import annotations

import ipaddress
from typing import NamedTuple, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_BITS = {4: 32, 6: 128}
_OCTETS = {str(i): i for i in range(256)}  # the canonical text of each octet: no sign, no leading zero
_LENGTHS = {4: {str(i): i for i in range(33)}, 6: {str(i): i for i in range(129)}}
_HEX = "0123456789abcdefABCDEF"
_new = tuple.__new__


class Prefix(NamedTuple):
    """An IP network: equal, hashed and ordered by (version, network, prefixlen); printed as
    `ipaddress` prints it ('198.18.64.0/24', '2001:db8::/48'). Build one with `parse`, `Prefix.of`
    or `Prefix.host`; the fields are not checked (no host bits is the caller's promise)."""

    version: int     # 4 or 6
    network: int     # the network address as an integer, no host bits set
    prefixlen: int

    @classmethod
    def of(cls, value: str | Network | Prefix) -> Prefix:
        """The prefix of an `ipaddress` network, another Prefix or strict text; ValueError names a bad one."""
        if isinstance(value, Prefix):
            return value
        if isinstance(value, str):
            p = parse(value)
            if p is None:
                raise ValueError(f"{value!r} is not a network (host bits set, or not an address/length)")
            return p
        return cls(value.version, int(value.network_address), value.prefixlen)

    @classmethod
    def host(cls, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Prefix:
        """The host route (/32, /128) of `address`."""
        return cls(address.version, int(address), _BITS[address.version])

    @property
    def max_prefixlen(self) -> int:
        return 32 if self.version == 4 else 128

    @property
    def packed(self) -> bytes:
        """The network address's bytes (4 or 16), as the kernel takes a destination."""
        return self.network.to_bytes(4 if self.version == 4 else 16, "big")

    def contains(self, other: Prefix) -> bool:
        """Whether `other` is this prefix or a more specific one inside it."""
        shift = (32 if self.version == 4 else 128) - self.prefixlen
        return (other.version == self.version and other.prefixlen >= self.prefixlen
                and other.network >> shift == self.network >> shift)

    def overlaps(self, other: Prefix) -> bool:
        return self.contains(other) or other.contains(self)

    def to_ipaddress(self) -> Network:
        """The same prefix as an `ipaddress` network (for a library that wants one)."""
        if self.version == 4:
            return ipaddress.IPv4Network((self.network, self.prefixlen))
        return ipaddress.IPv6Network((self.network, self.prefixlen))

    def __str__(self) -> str:
        v = self.network
        if self.version == 4:
            return f"{v >> 24}.{v >> 16 & 255}.{v >> 8 & 255}.{v & 255}/{self.prefixlen}"
        return f"{_v6_text(v)}/{self.prefixlen}"

    def __repr__(self) -> str:
        return f"Prefix('{self}')"


def parse(text: str) -> Prefix | None:
    """The prefix of a network in text ('198.18.64.0/24', '2001:db8::/48'); None when it is not one
    (host bits set, a bad address or length). Canonical text takes the fast path; anything else
    `ipaddress` accepts strictly (a netmask, no length) is parsed by it."""
    addr, _, length = text.partition("/")
    if ":" in addr:
        version, value = 6, _v6_value(addr)
    else:
        version, value = 4, _v4_value(addr)
    plen = _LENGTHS[version].get(length)
    if value is None or plen is None:
        return _slow(text)
    if value & ((1 << (_BITS[version] - plen)) - 1):
        return None  # host bits set
    return _new(Prefix, (version, value, plen))  # the named tuple's own __new__ is a Python call more


def _slow(text: str) -> Prefix | None:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        return None
    return Prefix(net.version, int(net.network_address), net.prefixlen)


def _v4_value(addr: str) -> int | None:
    octets = _OCTETS
    try:
        a, b, c, d = addr.split(".")
        return octets[a] << 24 | octets[b] << 16 | octets[c] << 8 | octets[d]
    except (ValueError, KeyError):
        return None


def _hextets(part: str) -> list[int] | None:
    if not part:
        return []
    out = []
    for g in part.split(":"):
        if not 0 < len(g) <= 4 or g.strip(_HEX):
            return None
        out.append(int(g, 16))
    return out


def _v6_value(addr: str) -> int | None:
    """The address of IPv6 text with hex groups and at most one '::'; None for anything else
    (an embedded IPv4 address or a scope go the slow way)."""
    head, gap, tail = addr.partition("::")
    first = _hextets(head)
    last = _hextets(tail) if gap else []
    if first is None or last is None or "::" in tail:
        return None
    n = len(first) + len(last)
    if (gap and n > 7) or (not gap and n != 8):
        return None
    value = 0
    for g in first:
        value = value << 16 | g
    value <<= 16 * (8 - n)
    for g in last:
        value = value << 16 | g
    return value


def _v6_text(value: int) -> str:
    """RFC 5952 text, as `ipaddress` prints it: lower-case hex, the longest run of two or more zero
    groups (the first of equal runs) as '::'."""
    groups = [f"{value >> shift & 0xFFFF:x}" for shift in range(112, -16, -16)]
    best = length = 0
    run = -1
    for i, g in enumerate(groups):
        if g == "0":
            if run < 0:
                run = i
            if i - run + 1 > length:
                best, length = run, i - run + 1
        else:
            run = -1
    if length < 2:
        return ":".join(groups)
    return ":".join(groups[:best]) + "::" + ":".join(groups[best + length:])
