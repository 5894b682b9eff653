"""The routes the agent wants each neighbor to have: in-memory state, no I/O.

Three layers, each overlaying the one before: routes for "every neighbor", reflected routes (one
value per prefix: its attributes and the neighbours that get them), and routes for particular
neighbors; restricted to the families a neighbor's session carries. A reflected route goes to a
neighbour with `next_hop_self` with our address as next hop instead of the one it came with. Every
change returns exactly what to send, and `replay_groups(ns)` gives everything neighbors should have:
ExaBGP does not replay API routes to a neighbor added by a reload.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping

import attrs

from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.reflection import Reflected
from calico_bgp.speaker.commands import Groups, RouteChange, batch, normalize_prefix, resolve_self
from calico_bgp.speaker.neighbor import IPV4_UNICAST, IPV6_UNICAST, Neighbor, family_of

NOBODY: frozenset[str] = frozenset()

ALL = None  # target: every neighbor, present and future


class RouteIntent:
    def __init__(self) -> None:
        self._everyone: dict[str, PathAttributes] = {}
        self._reflected: dict[str, Reflected] = {}
        self._varied: set[str] = set()  # reflected prefixes whose `others` give some neighbours other attributes
        self._specific: dict[str, dict[str, PathAttributes]] = {}
        self._neighbors: dict[str, Neighbor] = {}
        self._carrying: dict[str, frozenset[str]] = {IPV4_UNICAST: NOBODY, IPV6_UNICAST: NOBODY}
        self._next_hop_self: frozenset[str] = NOBODY  # neighbours that get reflected routes via us

    # -- neighbors ---------------------------------------------------------------------------
    def set_neighbors(self, neighbors: Iterable[Neighbor]) -> list[RouteChange]:
        """The configured neighbors. One that leaves takes its own routes along: when it comes back
        it starts from nothing, and the agent sends it everything it should have again (a replay of
        what it had would re-announce prefixes withdrawn while it was gone). Returns the routes to
        send again to neighbours that stay while their `next_hop_self` changed (ExaBGP keeps such a
        session up: the next hop is ours to change, per route)."""
        new = {n.key: n for n in neighbors}
        for key in self._neighbors.keys() - new.keys():
            self._specific.pop(key, None)
        old = self._neighbors
        flipped = [k for k, n in new.items() if k in old and old[k].next_hop_self != n.next_hop_self]
        before = {k: self.routes_for(k) for k in flipped}
        self._neighbors = new
        self._carrying = {f: frozenset(k for k, n in new.items() if n.carries(f)) for f in (IPV4_UNICAST, IPV6_UNICAST)}
        self._next_hop_self = frozenset(k for k, n in new.items() if n.next_hop_self)
        return [RouteChange(k, p, a, True) for k in flipped for p, a in self.routes_for(k).items()
                if before[k].get(p) != a]

    @property
    def neighbors(self) -> Mapping[str, Neighbor]:
        return self._neighbors

    # -- queries -----------------------------------------------------------------------------
    def wanted(self, neighbor: str, prefix: str) -> PathAttributes | None:
        n = self._neighbors.get(neighbor)
        if n is None or not n.carries(family_of(prefix)):
            return None
        spec = self._specific.get(neighbor, {}).get(prefix)
        if spec is not None:
            return spec
        r = self._reflected.get(prefix)
        if r is not None:
            if neighbor in r.targets:
                return self._passed_on(neighbor, r.attributes)
            for o in r.others:
                if neighbor in o.targets:
                    return self._passed_on(neighbor, o.attributes)
        return self._everyone.get(prefix)

    def routes_for(self, neighbor: str) -> dict[str, PathAttributes]:
        n = self._neighbors.get(neighbor)
        if n is None:
            return {}
        reflected = {p: r.attributes for p, r in self._reflected.items() if neighbor in r.targets}
        for p in self._varied:
            for o in self._reflected[p].others:
                if neighbor in o.targets:
                    reflected[p] = o.attributes
        if neighbor in self._next_hop_self:
            reflected = {p: self._passed_on(neighbor, a) for p, a in reflected.items()}
        merged = {**self._everyone, **reflected, **self._specific.get(neighbor, {})}
        return {p: s for p, s in merged.items() if n.carries(family_of(p))}

    def replay_groups(self, neighbors: Iterable[str]) -> tuple[Groups, dict[str, int]]:
        """Everything `neighbors` should have, as Groups (a route several of them get is one entry:
        one command line for all of them), and how many routes each gets. "next hop self" is made
        each neighbour's own address where it needs one."""
        groups: Groups = defaultdict(dict)
        counts: dict[str, int] = {}
        for key in neighbors:
            n = self._neighbors.get(key)
            if n is None:
                continue
            routes = self.routes_for(key)
            counts[key] = len(routes)
            for p, a in routes.items():
                version = 6 if ":" in p else 4
                if a.next_hop == "self":
                    a = resolve_self(RouteChange(key, p, a, True), n.self_next_hop(family_of(p))).attributes
                targets = groups[(True, version, a)].setdefault(p, set())
                targets.add(key)  # type: ignore[union-attr]
        return groups, counts

    def command_lines(self, changes: list[RouteChange], max_nlri: int) -> list[str]:
        """The command lines that send `changes`: "next hop self" made each neighbour's own address,
        changes for a neighbour no longer configured left out, batched `max_nlri` prefixes a line."""
        configured = self._neighbors
        ready = [resolve_self(c, configured[c.neighbor].self_next_hop(family_of(c.prefix)))
                 for c in changes if c.neighbor in configured]
        return batch(ready, max_nlri)

    def count(self) -> int:
        return len(self._everyone) + len(self._reflected) + sum(len(v) for v in self._specific.values())

    # -- reflected routes --------------------------------------------------------------------
    def reflect(self, updates: Mapping[str, Reflected | None], complete: bool = False) -> tuple[Groups, list[RouteChange]]:
        """Set how prefixes are reflected (None: not at all); with `complete`, `updates` is all that
        is reflected and any other prefix stops being so. Prefixes in canonical text (`Prefix` str).
        Returns what to send: Groups (a route for many neighbours is one entry, and one line), and the
        rare changes that fall back to an "every neighbor" route of ours (one per neighbour)."""
        if complete:
            updates = {**{p: None for p in self._reflected if p not in updates}, **updates}
        groups: Groups = defaultdict(dict)
        fallback: list[RouteChange] = []
        for p, new in updates.items():
            old = self._reflected.get(p)
            if new == old:
                continue
            v6 = ":" in p
            ok = self._carrying[IPV6_UNICAST if v6 else IPV4_UNICAST]
            overridden = [n for n, table in self._specific.items() if p in table]
            if overridden:
                ok = ok - frozenset(overridden)
            if (new is not None and new.others) or (old is not None and old.others):
                self._reflect_variants(groups, fallback, p, old, new, ok)
                continue
            new_t = NOBODY if new is None else (new.targets if new.targets <= ok else new.targets & ok)
            old_t = NOBODY if old is None else (old.targets if old.targets <= ok else old.targets & ok)
            if new is None:
                del self._reflected[p]
            else:
                self._reflected[p] = new
                send = new_t if old is None or old.attributes != new.attributes else new_t - old_t
                if send:
                    if self._next_hop_self and not send.isdisjoint(self._next_hop_self):
                        self._group(groups, True, 6 if v6 else 4, p, new.attributes, send)
                    else:
                        groups[(True, 6 if v6 else 4, new.attributes)][p] = send
            gone = old_t - new_t
            if gone:
                assert old is not None
                ours = self._everyone.get(p)
                if ours is None:
                    if self._next_hop_self and not gone.isdisjoint(self._next_hop_self):
                        self._group(groups, False, 6 if v6 else 4, p, old.attributes, gone)
                    else:
                        groups[(False, 6 if v6 else 4, old.attributes)][p] = gone
                else:
                    fallback.extend(RouteChange(n, p, ours, True) for n in sorted(gone))
        return groups, fallback

    def _reflect_variants(self, groups: Groups, fallback: list[RouteChange], p: str, old: Reflected | None,
                          new: Reflected | None, ok: frozenset[str]) -> None:
        """`reflect` for a prefix whose neighbours' export filters give some of them other attributes
        (Reflected.others): what each neighbour gets, compared one by one."""
        before = {n: a for n, a in (old.per_neighbor() if old is not None else {}).items() if n in ok}
        after = {n: a for n, a in (new.per_neighbor() if new is not None else {}).items() if n in ok}
        if new is None:
            del self._reflected[p]
        else:
            self._reflected[p] = new
        if new is not None and new.others:
            self._varied.add(p)
        else:
            self._varied.discard(p)
        version = 6 if ":" in p else 4
        sends: dict[PathAttributes, set[str]] = {}
        for n, a in after.items():
            if before.get(n) != a:
                sends.setdefault(a, set()).add(n)
        for a, ns in sends.items():
            self._group(groups, True, version, p, a, frozenset(ns))
        gone = before.keys() - after.keys()
        if gone:
            ours = self._everyone.get(p)
            if ours is not None:
                fallback.extend(RouteChange(n, p, ours, True) for n in sorted(gone))
                return
            olds: dict[PathAttributes, set[str]] = {}
            for n in gone:
                olds.setdefault(before[n], set()).add(n)
            for a, ns in olds.items():
                self._group(groups, False, version, p, a, frozenset(ns))

    def _passed_on(self, neighbor: str, a: PathAttributes) -> PathAttributes:
        """A reflected route's attributes as `neighbor` gets them: our address as next hop for a
        neighbour with next_hop_self."""
        return attrs.evolve(a, next_hop="self") if neighbor in self._next_hop_self else a

    def _group(self, groups: Groups, announce: bool, version: int, p: str, a: PathAttributes,
               targets: frozenset[str]) -> None:
        """Reflected route `p` to `targets` into `groups`; the next_hop_self ones apart, next hop self
        (made each one's own address where its session is of the other family)."""
        mine = targets & self._next_hop_self
        rest = targets - mine
        if rest:
            groups[(announce, version, a)][p] = rest
        for n in sorted(mine):
            c = resolve_self(RouteChange(n, p, attrs.evolve(a, next_hop="self"), announce),
                             self._neighbors[n].self_next_hop(family_of(p)))
            targets_of = groups[(announce, version, c.attributes)].setdefault(p, set())
            targets_of.add(n)  # type: ignore[union-attr]

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
