"""BFD toward BGP peers: the sessions this node's BFD engine must run, as values. Pure.

A `BfdSession` is what the engine is told about one peer: the peer's address, the interface of the
node's directly connected link it is reached on, and the timers of the BFDConfiguration interface
entry that matched that interface (RFC 5880 section 6.8.1 names: desired min TX, required min RX,
detect multiplier; `idle_tx_ms` is the slower rate used while the session is not up).

`plan_bfd` decides them from this node, the BFDConfigurations, the node's BGP sessions and its links.
BFD runs toward a peer when all of these hold (Calico Enterprise's `BFDIfDirectlyConnected`):
- the session's `failure_detection_mode` is `BFDIfDirectlyConnected` (its BGPPeer asked for it);
- the peer's address is inside the subnet of an address on one of the node's links (directly
  connected: not the link's own address, and not a /32 or /128, which hold only the node itself);
- the BFDConfiguration in force on this node has an interface entry whose matchPattern matches that
  link's name.

Precedence, where several could apply:
- Several BFDConfigurations select the node: the one with the lowest name is in force and the others
  are ignored (listed in `BfdPlan.ignored`, for a warning). Calico Enterprise's published reference
  and API type do not say how several would combine; chosen here: they do not merge.
- Several entries of that configuration match one interface: the most specific wins, whatever their
  order: the exact name, then the longest prefix (`ens1f*` over `ens*`), then `*`. Calico Enterprise
  hands the list to BIRD, whose first matching pattern wins; the two agree whenever no entry is
  shadowed by an earlier, wider one, and where one is, the specific entry is the one that was meant.
- The peer is inside subnets of several links: the longest prefix wins (as the kernel's route to it
  would); several links tying at that length (an IPv6 link-local peer, fe80::/64 on every link) is
  ambiguous and the peer gets no BFD, with the reason.

Peers that asked for BFD and do not get it are listed in `BfdPlan.skipped` with the reason, so the
agent can say why in status and events. The timers come from one entry per interface, so every
session on an interface has the same ones (BIRD's `protocol bfd` keeps timers per interface).
"""
from __future__ import annotations

import ipaddress
from typing import Iterable, Protocol

import attrs

from calico_bgp.resources.bfdconfig import BFDConfiguration
from calico_bgp.resources.node import Node

BFD_IF_DIRECTLY_CONNECTED = "BFDIfDirectlyConnected"


@attrs.frozen(order=True)
class BfdSession:
    peer: str
    interface: str
    min_rx_ms: int
    min_tx_ms: int
    idle_tx_ms: int
    multiplier: int

    @property
    def detect_ms(self) -> int:
        """How long without a packet before the session is down, by our own timers (the negotiated
        figure is the peer's transmit interval times its multiplier, RFC 5880 section 6.8.4)."""
        return self.min_rx_ms * self.multiplier


class PeerSession(Protocol):
    """What the plan reads of a BGP session (routing/topology.py's Session has both)."""
    peer_address: str
    failure_detection_mode: str


def _interfaces(addresses: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(ipaddress.ip_interface(a)) for a in addresses)


@attrs.frozen
class Link:
    """One of the node's interfaces: its name and its addresses with prefix lengths
    ("198.18.1.11/24", "2001:db8:1::11/64"), as the kernel reports them."""
    name: str
    addresses: tuple[str, ...] = attrs.field(default=(), converter=_interfaces)


@attrs.frozen
class Skipped:
    """A peer that asked for BFD and does not get it, and why."""
    peer: str
    reason: str


@attrs.frozen
class BfdPlan:
    sessions: tuple[BfdSession, ...] = ()   # sorted by peer address
    configuration: str = ""                 # the BFDConfiguration in force on this node; "": none selects it
    ignored: tuple[str, ...] = ()           # other BFDConfigurations selecting this node, not applied
    skipped: tuple[Skipped, ...] = ()       # sorted by peer address


def _addr_key(text: str) -> tuple[int, int]:
    a = ipaddress.ip_address(text)
    return (a.version, int(a))


def connected_link(peer: str, links: Iterable[Link]) -> tuple[str | None, str]:
    """(the link `peer` is directly connected on, "") or (None, why not)."""
    ip = ipaddress.ip_address(peer)
    best: dict[str, int] = {}   # link name -> longest prefix containing the peer
    for link in links:
        for text in link.addresses:
            iface = ipaddress.ip_interface(text)
            net = iface.network
            if iface.version != ip.version or ip not in net or iface.ip == ip:
                continue
            if net.prefixlen == net.max_prefixlen:
                continue
            best[link.name] = max(best.get(link.name, -1), net.prefixlen)
    if not best:
        return None, "not directly connected: on no subnet of the node's links"
    longest = max(best.values())
    names = sorted(name for name, plen in best.items() if plen == longest)
    if len(names) > 1:
        return None, f"on a /{longest} of several links ({', '.join(names)}): which one is ambiguous"
    return names[0], ""


def configuration_for(node: Node, configurations: Iterable[BFDConfiguration]
                      ) -> tuple[BFDConfiguration | None, tuple[str, ...]]:
    """(the BFDConfiguration in force on `node`, the names of the others that select it too)."""
    selecting = sorted((c for c in configurations if c.spec.selects(node.labels)), key=lambda c: c.name)
    if not selecting:
        return None, ()
    return selecting[0], tuple(c.name for c in selecting[1:])


def plan_bfd(node: Node, configurations: Iterable[BFDConfiguration], sessions: Iterable[PeerSession],
             links: Iterable[Link]) -> BfdPlan:
    """The BFD sessions `node` runs toward its BGP peers (see the module docstring for the rules)."""
    links = list(links)
    config, ignored = configuration_for(node, configurations)
    planned: dict[str, BfdSession] = {}
    skipped: dict[str, str] = {}
    for s in sessions:
        if s.failure_detection_mode != BFD_IF_DIRECTLY_CONNECTED or s.peer_address in planned:
            continue
        if config is None:
            skipped[s.peer_address] = "no BFDConfiguration selects this node"
            continue
        link, why = connected_link(s.peer_address, links)
        if link is None:
            skipped[s.peer_address] = why
            continue
        entry = config.spec.entry_for(link)
        if entry is None:
            skipped[s.peer_address] = f"BFDConfiguration {config.name!r} has no interface entry matching {link}"
            continue
        skipped.pop(s.peer_address, None)
        planned[s.peer_address] = BfdSession(
            peer=str(ipaddress.ip_address(s.peer_address)), interface=link, min_rx_ms=entry.min_rx_ms,
            min_tx_ms=entry.min_tx_ms, idle_tx_ms=entry.idle_tx_ms, multiplier=entry.detect_multiplier)
    return BfdPlan(
        sessions=tuple(planned[p] for p in sorted(planned, key=_addr_key)),
        configuration=config.name if config is not None else "",
        ignored=ignored,
        skipped=tuple(Skipped(p, skipped[p]) for p in sorted(skipped, key=_addr_key)))
