"""Outgoing NAT as one value: which sources are masqueraded, and which destinations never are.

Calico's felix (felix/dataplane/linux/masq_mgr.go, felix/rules/nat.go) keeps two sets per IP family,
all-ipam-pools and masq-ipam-pools, and one rule: a packet from a masq pool to an address in no pool
leaves with the node's address (MASQUERADE, the address of the interface it leaves by). `NatSet` is
those two sets for both families; the nft and iptables backends render the same value.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable, Union

import attrs

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class NatError(RuntimeError):
    """A netfilter tool refused a change or is missing; what was programmed is as it was."""


class InvalidNat(ValueError):
    """A CIDR that is not one; the message names it."""


def _networks(cidrs: Iterable[str], what: str) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for c in cidrs:
        try:
            out.append(ipaddress.ip_network(str(c), strict=False))
        except ValueError as exc:
            raise InvalidNat(f"{what} {c!r}: {exc}") from None
    return tuple(out)


def collapsed(nets: Iterable[IPNetwork], version: int) -> tuple[IPNetwork, ...]:
    """The networks of one family merged where they overlap or touch, in order (nft interval sets
    refuse overlapping elements, and two renderings compare equal only in one form)."""
    return tuple(ipaddress.collapse_addresses(n for n in nets if n.version == version))  # type: ignore[misc]


@attrs.frozen
class NatSet:
    """`masquerade`: the natOutgoing pools' CIDRs; `pools`: every pool's CIDR (a masquerade CIDR is
    always among them: traffic between two pools is never NATed). Both collapsed, per family."""

    masquerade: tuple[IPNetwork, ...] = ()
    pools: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, masquerade: Iterable[str], pools: Iterable[str]) -> "NatSet":
        masq = _networks(masquerade, "natOutgoing CIDR")
        every = _networks(pools, "pool CIDR") + masq
        return cls(collapsed(masq, 4) + collapsed(masq, 6), collapsed(every, 4) + collapsed(every, 6))

    def family(self, version: int) -> tuple[tuple[IPNetwork, ...], tuple[IPNetwork, ...]]:
        """(masquerade, pools) of one family; nothing when no pool of it masquerades."""
        masq = tuple(n for n in self.masquerade if n.version == version)
        return (masq, tuple(n for n in self.pools if n.version == version)) if masq else ((), ())

    @property
    def versions(self) -> tuple[int, ...]:
        """The families with a rule: those with a natOutgoing pool."""
        return tuple(v for v in (4, 6) if any(n.version == v for n in self.masquerade))

    @property
    def empty(self) -> bool:
        return not self.masquerade
