"""ExaBGP's API send path made linear in its neighbours (patched into ExaBGP by exabgp_run, as
its other mends are; each to be offered upstream, see the README's "ExaBGP patches").

A command for many neighbours (`neighbor A , neighbor B , ... announce attributes ... nlri ...`)
cost ExaBGP O(neighbours^2) before any route moved, and a deep copy per route per neighbour:

- `match_neighbors` (reactor/api/command/limit.py) compiled and ran a regular expression for every
  (configured peer, named neighbour) pair: 200 x 199 searches per line at 200 clients. A description
  that is just `neighbor ADDRESS` (all the agent writes) now matches by the peer name's address,
  which is where ExaBGP's regular expression finds it (`Neighbor.name()` starts with it); any other
  description is matched as before.
- `Configuration.inject_change` tested each configured neighbour's membership in a list of the
  matched ones: a set now.
- `Neighbor.remove_self` deep-copied the route for every neighbour, to replace `next-hop self` by
  the neighbour's own address. A route with an explicit next hop (every reflected route) is now
  shared by the neighbours' outgoing RIBs: ExaBGP never changes a stored route in place (the
  outgoing RIB copies one before marking it withdrawn; the watchdog, which does, is not used here).
  `next-hop self` is copied and replaced as before.
- `Protocol.new_update` wrote each UPDATE on its own: a poll() and a send() per message, 199 of
  them per client when 200 clients each bring one route. The UPDATEs of one pass over the outgoing
  RIB now go out in writes of up to 64 KiB (same messages, same order, the same per-message
  statistics; a neighbour whose API wants the sent packets keeps the message-by-message path).

Measured with bench/rr.py (K clients x 4 blocks, this module on and off): see the README.
"""
from __future__ import annotations

from typing import Iterable, Sequence


def neighbor_address(description: Sequence[str]) -> str | None:
    """The address a neighbour description names when it is exactly `neighbor ADDRESS`, else None
    (`neighbor *`, or one narrowed by local-ip, peer-as, ...: those go to ExaBGP's own matcher)."""
    if len(description) != 1:
        return None
    words = description[0].split()
    if len(words) != 2 or words[0] != "neighbor" or words[1] == "*":
        return None
    return words[1]


def match_neighbors(peers: Iterable[str], descriptions: Sequence[Sequence[str]], match_one) -> list[str]:  # type: ignore[no-untyped-def]
    """The peer names (ExaBGP's `Neighbor.name()`: "neighbor ADDRESS local-ip ...") that any
    description matches, in the peers' order, each once. `match_one(description, name)` is ExaBGP's
    matcher, used for the descriptions that are not a bare address."""
    peers = list(peers)
    if not descriptions:
        return peers
    by_address: set[str] = set()
    general = []
    for d in descriptions:
        address = neighbor_address(d)
        if address is None:
            general.append(d)
        else:
            by_address.add(address)
    out = []
    for name in peers:
        words = name.split(" ", 2)
        if (len(words) > 1 and words[0] == "neighbor" and words[1] in by_address) or \
                any(match_one(d, name) for d in general):
            out.append(name)
    return out


def patch() -> None:
    from copy import deepcopy

    from exabgp.bgp.message.update.attribute import Attribute, NextHop
    from exabgp.bgp.neighbor import Neighbor
    from exabgp.configuration.configuration import _Configuration
    from exabgp.logger import log
    from exabgp.reactor.api.command import announce, limit, rib

    original_match = limit.match_neighbor

    def fast_match_neighbors(peers, descriptions):  # type: ignore[no-untyped-def]
        return match_neighbors(peers, descriptions, original_match)

    limit.match_neighbors = fast_match_neighbors
    announce.match_neighbors = rib.match_neighbors = fast_match_neighbors  # they bound the name on import

    def remove_self(self, change):  # type: ignore[no-untyped-def]
        if not change.nlri.nexthop.SELF:
            return change
        change = deepcopy(change)
        neighbor_self = self.ip_self(change.nlri.afi)
        change.nlri.nexthop = neighbor_self
        if Attribute.CODE.NEXT_HOP in change.attributes:
            change.attributes[Attribute.CODE.NEXT_HOP] = NextHop(str(neighbor_self), neighbor_self.pack())
        return change

    Neighbor.remove_self = remove_self

    def inject_change(self, peers, change):  # type: ignore[no-untyped-def]
        wanted = set(peers)
        family = change.nlri.family().afi_safi()
        result = False
        for name, neighbor in self.neighbors.items():
            if name not in wanted:
                continue
            if family in neighbor.families():
                neighbor.rib.outgoing.add_to_rib(neighbor.remove_self(change))
                result = True
            else:
                log.error(lambda name=name: f"the route family ({change.nlri.short()}) is not configured on neighbor {name}",
                          "configuration")
        return result

    _Configuration.inject_change = inject_change
    _coalesced_writes()


WRITE_CHUNK = 64 * 1024


def _coalesced_writes() -> None:
    from exabgp.reactor.protocol import _NOP, _UPDATE, Protocol

    original = Protocol.new_update

    def new_update(self, include_withdraw):  # type: ignore[no-untyped-def]
        if self.neighbor.api.get("send-update", False):
            yield from original(self, include_withdraw)
            return
        stats = self.peer.stats
        pending: list[bytes] = []
        size = 0
        for update in self.neighbor.rib.outgoing.updates(self.neighbor["group-updates"]):
            for message in update.messages(self.negotiated, include_withdraw):
                stats["send-update"] += 1
                pending.append(message)
                size += len(message)
                if size >= WRITE_CHUNK:
                    data, pending, size = b"".join(pending), [], 0
                    for _ in self.connection.writer(data):
                        yield _NOP
        if pending:
            for _ in self.connection.writer(b"".join(pending)):
                yield _NOP
        yield _UPDATE

    Protocol.new_update = new_update

