"""The routes the agent wants each neighbor to have: in-memory state, no I/O.

Routes for "every neighbor" and routes for particular neighbors are kept apart; what a neighbor
should have is the first overlaid with the second, restricted to the families its session
carries. Every change returns the exact RouteChanges to send, and `replay(n)` gives everything
a neighbor should have: ExaBGP does not replay API routes to a neighbor added by a reload.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.speaker.commands import RouteChange, batch, normalize_prefix, resolve_self
from calico_bgp.speaker.neighbor import Neighbor, family_of

ALL = None  # target: every neighbor, present and future


class RouteIntent:
    def __init__(self) -> None:
        self._everyone: dict[str, PathAttributes] = {}
        self._specific: dict[str, dict[str, PathAttributes]] = {}
        self._neighbors: dict[str, Neighbor] = {}

    # -- neighbors ---------------------------------------------------------------------------
    def set_neighbors(self, neighbors: Iterable[Neighbor]) -> None:
        """The configured neighbors. One that leaves takes its own routes along: when it comes back
        it starts from nothing, and the agent sends it everything it should have again (a replay of
        what it had would re-announce prefixes withdrawn while it was gone)."""
        new = {n.key: n for n in neighbors}
        for key in self._neighbors.keys() - new.keys():
            self._specific.pop(key, None)
        self._neighbors = new

    @property
    def neighbors(self) -> Mapping[str, Neighbor]:
        return self._neighbors

    # -- queries -----------------------------------------------------------------------------
    def wanted(self, neighbor: str, prefix: str) -> PathAttributes | None:
        n = self._neighbors.get(neighbor)
        if n is None or not n.carries(family_of(prefix)):
            return None
        spec = self._specific.get(neighbor, {}).get(prefix)
        return spec if spec is not None else self._everyone.get(prefix)

    def routes_for(self, neighbor: str) -> dict[str, PathAttributes]:
        n = self._neighbors.get(neighbor)
        if n is None:
            return {}
        merged = {**self._everyone, **self._specific.get(neighbor, {})}
        return {p: s for p, s in merged.items() if n.carries(family_of(p))}

    def replay(self, neighbor: str) -> list[RouteChange]:
        return [RouteChange(neighbor, p, s, True) for p, s in self.routes_for(neighbor).items()]

    def command_lines(self, changes: list[RouteChange], max_nlri: int) -> list[str]:
        """The command lines that send `changes`: "next hop self" made each neighbour's own address,
        changes for a neighbour no longer configured left out, batched `max_nlri` prefixes a line."""
        configured = self._neighbors
        ready = [resolve_self(c, configured[c.neighbor].self_next_hop(family_of(c.prefix)))
                 for c in changes if c.neighbor in configured]
        return batch(ready, max_nlri)

    def count(self) -> int:
        return len(self._everyone) + sum(len(v) for v in self._specific.values())

    # -- changes -----------------------------------------------------------------------------
    def announce(self, targets: Iterable[str] | None, prefixes: Iterable[str], spec: PathAttributes) -> list[RouteChange]:
        return self._change(targets, [normalize_prefix(p) for p in prefixes], spec)

    def withdraw(self, targets: Iterable[str] | None, prefixes: Iterable[str]) -> list[RouteChange]:
        return self._change(targets, [normalize_prefix(p) for p in prefixes], None)

    def _change(self, targets: Iterable[str] | None, prefixes: list[str], spec: PathAttributes | None) -> list[RouteChange]:
        keys = list(self._neighbors) if targets is ALL else list(dict.fromkeys(targets))
        before = {(n, p): self.wanted(n, p) for n in keys for p in prefixes}
        if targets is ALL:
            for p in prefixes:
                if spec is None:
                    self._everyone.pop(p, None)
                else:
                    self._everyone[p] = spec
        else:
            for n in keys:
                table = self._specific.setdefault(n, {})
                for p in prefixes:
                    if spec is None:
                        table.pop(p, None)
                    else:
                        table[p] = spec
                if not table:
                    del self._specific[n]
        out: list[RouteChange] = []
        for (n, p), old in before.items():
            new = self.wanted(n, p)
            if new == old:
                continue
            if new is None:
                assert old is not None
                out.append(RouteChange(n, p, old, False))
            else:
                out.append(RouteChange(n, p, new, True))
        return out
