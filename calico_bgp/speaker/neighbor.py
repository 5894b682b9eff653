"""One BGP session as ExaBGP must be told about it: a frozen value, validated when built."""
from __future__ import annotations

import ipaddress
import re

import attrs

from calico_bgp.speaker.errors import InvalidNeighbor

IPV4_UNICAST = "ipv4 unicast"
IPV6_UNICAST = "ipv6 unicast"
FAMILIES = (IPV4_UNICAST, IPV6_UNICAST)

# characters that would end or escape a token in ExaBGP's configuration grammar
_UNSAFE = re.compile(r'[;{}\[\]"\'\\\n\r]')


def _ip(field: str):
    def check(_inst: object, _attr: object, value: str) -> None:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise InvalidNeighbor(field, value, "not an IP address") from None

    return check


def _asn(field: str):
    def check(_inst: object, _attr: object, value: int) -> None:
        if not isinstance(value, int) or not 0 < value < 2**32:
            raise InvalidNeighbor(field, value, "not an AS number in 1..4294967295")

    return check


def _port(field: str):
    def check(_inst: object, _attr: object, value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or not 0 < value < 65536):
            raise InvalidNeighbor(field, value, "not a TCP port")

    return check


def _safe_text(field: str):
    def check(_inst: object, _attr: object, value: str | None) -> None:
        if value is not None and _UNSAFE.search(value):
            raise InvalidNeighbor(field, value, "contains a quote, brace, semicolon, backslash or newline")

    return check


def _families(_inst: object, _attr: object, value: tuple[str, ...]) -> None:
    if not value:
        raise InvalidNeighbor("families", value, "at least one family is needed")
    for fam in value:
        if fam not in FAMILIES:
            raise InvalidNeighbor("families", value, f"unknown family {fam!r} (known: {', '.join(FAMILIES)})")


def _sorted_families(value: object) -> tuple[str, ...]:
    fams = (value,) if isinstance(value, str) else tuple(value)  # type: ignore[arg-type]
    return tuple(sorted(set(fams), key=lambda f: FAMILIES.index(f) if f in FAMILIES else 99))


@attrs.frozen(slots=True)
class Neighbor:
    """A session ExaBGP keeps; `peer_address` identifies it (one session per peer address)."""

    peer_address: str = attrs.field(validator=_ip("peer_address"))
    peer_as: int = attrs.field(validator=_asn("peer_as"))
    local_as: int = attrs.field(validator=_asn("local_as"))
    local_address: str = attrs.field(validator=_ip("local_address"))
    router_id: str = attrs.field(validator=_ip("router_id"))
    peer_port: int = attrs.field(default=179, validator=_port("peer_port"))
    # where ExaBGP accepts this peer's connection (on local_address); None: we only dial
    listen_port: int | None = attrs.field(default=None, validator=_port("listen_port"))
    passive: bool = False
    hold_time: int = attrs.field(default=90)
    md5_password: str | None = attrs.field(default=None, validator=_safe_text("md5_password"))
    # default: the session's own family
    families: tuple[str, ...] = attrs.field(
        default=attrs.Factory(lambda self: (IPV6_UNICAST,) if ":" in self.local_address else (IPV4_UNICAST,),
                              takes_self=True),
        converter=_sorted_families, validator=_families)
    add_path: bool = False
    graceful_restart: int | None = attrs.field(default=None)  # restart time in seconds; None: capability not sent
    description: str | None = attrs.field(default=None, validator=_safe_text("description"))
    # what "next-hop self" means for the family that is not the session's own (IPv6 routes on an
    # IPv4 session and the reverse): ExaBGP cannot derive it and answers `error`
    next_hop_v4: str | None = attrs.field(default=None)
    next_hop_v6: str | None = attrs.field(default=None)
    # GTSM (RFC 5082): the peer is at most this many hops away; 0: off (the BGPPeer's ttlSecurity)
    ttl_security: int = attrs.field(default=0)
    # routes we pass on (reflect) carry our own address as next hop, as BIRD's `next hop self`
    # (BGPPeer nextHopMode Self); False: their next hop is kept. Our own routes are always `self`.
    next_hop_self: bool = False

    @hold_time.validator
    def _check_hold(self, _attr: object, value: int) -> None:
        if not isinstance(value, int) or not (value == 0 or 3 <= value <= 65535):
            raise InvalidNeighbor("hold_time", value, "must be 0 or 3..65535 seconds")

    @ttl_security.validator
    def _check_ttl(self, _attr: object, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
            raise InvalidNeighbor("ttl_security", value, "GTSM hop count must be 0 (off) or 1..255")

    @graceful_restart.validator
    def _check_gr(self, _attr: object, value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or not 0 <= value <= 4095):
            raise InvalidNeighbor("graceful_restart", value, "restart time must be 0..4095 seconds")

    def __attrs_post_init__(self) -> None:
        if ipaddress.ip_address(self.peer_address).version != ipaddress.ip_address(self.local_address).version:
            raise InvalidNeighbor("local_address", self.local_address,
                                  f"not the same IP version as peer_address {self.peer_address}")
        if ipaddress.ip_address(self.router_id).version != 4:
            raise InvalidNeighbor("router_id", self.router_id, "a router id is an IPv4 address")
        session = ipaddress.ip_address(self.local_address).version
        for fam, field, version in ((IPV4_UNICAST, "next_hop_v4", 4), (IPV6_UNICAST, "next_hop_v6", 6)):
            value = getattr(self, field)
            if value is not None:
                try:
                    ok = ipaddress.ip_address(value).version == version
                except ValueError:
                    ok = False
                if not ok:
                    raise InvalidNeighbor(field, value, f"not an IPv{version} address")
            elif fam in self.families and version != session:
                raise InvalidNeighbor(field, value, f"{fam} on an IPv{session} session needs the IPv{version} "
                                                    "address that next-hop self stands for")

    @property
    def key(self) -> str:
        """The address as ExaBGP prints it (compressed), which is how events name the peer."""
        return str(ipaddress.ip_address(self.peer_address))

    @property
    def ibgp(self) -> bool:
        return self.peer_as == self.local_as

    @property
    def minimum_ttl(self) -> int | None:
        """The lowest TTL accepted from the peer under GTSM: 256 - hops (BIRD's `ttl security on;
        multihop N`, bgp.c: sk->min_ttl = 256 - hops; one hop: 255 only); None when off."""
        return 256 - self.ttl_security if self.ttl_security else None

    def carries(self, family: str) -> bool:
        return family in self.families

    def self_next_hop(self, family: str) -> str | None:
        """The address to send instead of `self` for `family`; None when ExaBGP's own `self` works."""
        if (family == IPV6_UNICAST) == (":" in self.local_address):
            return None
        return self.next_hop_v6 if family == IPV6_UNICAST else self.next_hop_v4


def family_of(prefix: str) -> str:
    return IPV6_UNICAST if ":" in prefix else IPV4_UNICAST
