"""The RIB: the paths each peer sent (Adj-RIB-In, accepted and rejected) and the selection per prefix.

Pure: no I/O, no clocks. The agent feeds it parsed UPDATEs and reads back what changed; the
speaker and the route programmer act on that. Best path and ECMP set come from decision.py;
reflection.py says what a route reflector sends on.
"""
from __future__ import annotations

import itertools
from typing import Callable, Collection, Iterable, Iterator, Mapping

import attrs

from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.decision import loop_check, select
from calico_bgp.routing.nexthop import unusable
from calico_bgp.routing.path import LocalSpeaker, Path, Peer, Selection, make_path, only_path
from calico_bgp.routing.prefix import Prefix

# An import policy returns None to accept a route, a short reason to reject it, or the attributes to
# accept it with when it changed them (keeping the ones sent in `received`: policy judges those again).
ImportPolicy = Callable[[Peer, Prefix, PathAttributes], "str | PathAttributes | None"]
# An origin check returns None for a path that may be used as it is, or why its origin is invalid
# (calico_bgp.routing.origin); the peer's origin_validation says whether that rejects or de-prefers it.
OriginCheck = Callable[[Peer, Prefix, PathAttributes], "str | None"]


# Rejected paths kept per peer (for `routes --rejected` and so a policy change can accept them later
# without the peer sending them again). Beyond this a peer's rejected paths are counted, not kept:
# 10k paths with their attributes are a few MB; 200k rejected /128s were 140 MB that stayed.
MAX_REJECTED_PER_PEER = 10_000


def _of(entry: "Path | dict[str, Path] | None", address: str) -> Path | None:
    """The path `address` sent, in a prefix's entry."""
    if entry is None:
        return None
    if type(entry) is dict:
        return entry.get(address)
    return entry if entry.peer.address == address else None  # type: ignore[union-attr]


def _all(entry: "Path | dict[str, Path] | None") -> list[Path]:
    if entry is None:
        return []
    return list(entry.values()) if type(entry) is dict else [entry]  # type: ignore[list-item,union-attr]


@attrs.frozen(slots=True)
class Rejected:
    peer: str
    prefix: Prefix
    reason: str


class Rib:
    """Adj-RIB-In per peer plus the selection per prefix. No I/O: every method returns what changed."""

    def __init__(self, local: LocalSpeaker, import_policy: ImportPolicy | None = None, multipath: bool = True,
                 max_rejected: int = MAX_REJECTED_PER_PEER, origin_check: OriginCheck | None = None):
        self.local = local
        self.import_policy = import_policy
        self.origin_check = origin_check
        self.multipath = multipath
        self.max_rejected = max_rejected
        # a prefix's accepted paths: the one Path when one peer sent it (a table from one ToR: no dict
        # per prefix), else {peer address: Path} for two peers or more (never fewer)
        self._paths: dict[Prefix, Path | dict[str, Path]] = {}
        self._selected: dict[Prefix, Selection] = {}
        self._rejected: dict[str, dict[Prefix, tuple[str, PathAttributes]]] = {}
        # per peer: rejected paths beyond max_rejected, counted, not kept (a withdrawal of a prefix the
        # RIB holds nothing of for the peer counts one down: an estimate, as a re-announcement of one
        # counts again)
        self._not_kept: dict[str, int] = {}
        self._stale: dict[str, set[Prefix]] = {}
        # per peer: its accepted paths, and of those the de-preferred ones (kept as paths change: the
        # status and the maxPrefixes check read them after UPDATEs, a walk of the RIB each time)
        self._accepted: dict[str, int] = {}
        self._depreferred: dict[str, int] = {}

    def rebuilt(self, local: LocalSpeaker) -> "Rib":
        """A RIB for a changed local speaker (AS, router id, cluster id) that still holds every path
        peers sent (they send increments only, never the table again). The paths wait, as rejected,
        until `reapply_policy` runs them through the loop checks and import policy of the new
        speaker; stale marks carry over."""
        new = Rib(local, self.import_policy, self.multipath, max_rejected=self.max_rejected,
                  origin_check=self.origin_check)
        for (address, prefix), pattrs in self.received():
            new._rejected.setdefault(address, {})[prefix] = ("re-evaluating", pattrs)
        new._stale = {address: set(stale) for address, stale in self._stale.items()}
        new._not_kept = dict(self._not_kept)
        return new

    # --- input -------------------------------------------------------------------------------
    def update(self, peer: Peer, announced: Mapping[Prefix, PathAttributes], withdrawn: Iterable[Prefix] = ()) -> set[Prefix]:
        """Apply one UPDATE from `peer`; returns the prefixes whose selection changed.

        The common cases of a table arriving or leaving skip the decision process: a withdraw that
        leaves no path, and the first path of a prefix, change the selection without ranking."""
        touched: set[Prefix] = set()  # prefixes whose paths changed among others: ranked below
        changed: set[Prefix] = set()
        rejected = self._rejected.setdefault(peer.address, {})
        stale = self._stale.get(peer.address)
        if stale:
            stale.difference_update(announced)
            stale.difference_update(withdrawn)
        local, policy, paths, address, selected = self.local, self.import_policy, self._paths, peer.address, self._selected
        not_kept = self._not_kept.get(address, 0)
        mode = peer.origin_validation
        origin = self.origin_check if mode != "Disabled" else None
        reject_invalid = mode == "Reject"
        invalid: str | None = None
        accepted = depreferred = 0  # this peer's paths added minus removed here (_drop counts its own)
        for prefix in withdrawn:
            was_rejected = rejected.pop(prefix, None) if rejected else None
            entry = paths.get(prefix)
            if entry is None:
                pass
            elif type(entry) is not dict:
                if entry.peer.address == address:  # type: ignore[union-attr]  # its last path: no selection left
                    del paths[prefix]
                    accepted -= 1
                    if entry.invalid is not None:  # type: ignore[union-attr]
                        depreferred -= 1
                    if selected.pop(prefix, None) is not None:
                        changed.add(prefix)
                    continue
            elif self._drop(prefix, entry, address):  # type: ignore[arg-type]
                touched.add(prefix)
                continue
            if not_kept and was_rejected is None:
                not_kept -= 1  # most likely one of the rejected paths not kept
        last: PathAttributes | None = None
        loop: str | None = None
        for prefix, pattrs in announced.items():
            if pattrs is not last:  # the prefixes of one UPDATE share one attributes object
                last, loop = pattrs, loop_check(local, peer, pattrs) or unusable(pattrs.next_hop)
            reason = loop
            if reason is None and policy is not None:
                reason = policy(peer, prefix, pattrs)  # type: ignore[assignment]
                if reason is not None and reason.__class__ is not str:  # accepted, attributes changed
                    pattrs, reason = reason, None  # type: ignore[assignment]
            if reason is None and origin is not None:
                invalid = origin(peer, prefix, pattrs.received or pattrs)  # who originated it, as sent
                if invalid is not None and reject_invalid:
                    reason, invalid = invalid, None
            entry = paths.get(prefix)
            if reason is not None:
                if len(rejected) < self.max_rejected or prefix in rejected:
                    rejected[prefix] = (reason, pattrs)  # kept, so a policy change can accept it later
                else:
                    not_kept += 1
                if entry is not None and self._drop(prefix, entry, address):  # implicit withdraw of the old path
                    touched.add(prefix)
                continue
            if rejected:
                rejected.pop(prefix, None)
            if entry is None:
                path = make_path(prefix, peer, pattrs, invalid)
                paths[prefix] = path
                accepted += 1
                if invalid is not None:
                    depreferred += 1
                if prefix not in selected:  # the first path of a prefix: it is the selection
                    selected[prefix] = only_path(path)
                    changed.add(prefix)
                else:
                    touched.add(prefix)
                continue
            old = entry.get(address) if type(entry) is dict else entry if entry.peer.address == address else None  # type: ignore[union-attr]
            if (old is None or (old.attrs is not pattrs and old.attrs != pattrs) or (old.peer is not peer and old.peer != peer)
                    or old.invalid != invalid):
                path = make_path(prefix, peer, pattrs, invalid)
                if type(entry) is dict:
                    entry[address] = path  # type: ignore[index]
                elif old is not None:
                    paths[prefix] = path
                else:  # a second peer's path
                    paths[prefix] = {entry.peer.address: entry, address: path}  # type: ignore[union-attr,dict-item]
                if old is None:
                    accepted += 1
                elif old.invalid is not None:
                    depreferred -= 1
                if invalid is not None:
                    depreferred += 1
                touched.add(prefix)
        if accepted:
            self._accepted[address] = self._accepted.get(address, 0) + accepted
        if depreferred:
            self._depreferred[address] = self._depreferred.get(address, 0) + depreferred
        if not_kept or address in self._not_kept:
            self._not_kept[address] = not_kept
        if touched:
            changed |= self._reselect(touched)
        return changed

    def _drop(self, prefix: Prefix, entry: "Path | dict[str, Path]", address: str) -> bool:
        """Remove `address`'s path from `prefix`'s entry; whether there was one. The last path leaves
        no entry (the caller reselects: no selection then), a dict left with one path becomes it."""
        if type(entry) is dict:
            path = entry.pop(address, None)  # type: ignore[union-attr]
            if path is None:
                return False
            if len(entry) == 1:  # type: ignore[arg-type]
                self._paths[prefix] = next(iter(entry.values()))  # type: ignore[union-attr]
        else:
            path = entry  # type: ignore[assignment]
            if path.peer.address != address:
                return False
            del self._paths[prefix]
        self._accepted[address] -= 1
        if path.invalid is not None:
            self._depreferred[address] -= 1
        return True

    def mark_stale(self, peer_address: str) -> None:
        """Keep a peer's paths but remember them as stale (its session dropped for a reason of ours,
        e.g. our speaker restarted): whatever it does not re-announce is removed by sweep_stale."""
        self._stale[peer_address] = {p for p, entry in self._paths.items() if _of(entry, peer_address) is not None}

    def stale_count(self, peer_address: str) -> int:
        return len(self._stale.get(peer_address, ()))

    def sweep_stale(self, peer_address: str) -> set[Prefix]:
        stale = self._stale.pop(peer_address, set())
        paths = self._paths
        touched = {p for p in stale if (entry := paths.get(p)) is not None and self._drop(p, entry, peer_address)}
        return self._reselect(touched)

    def peer_down(self, peer_address: str) -> set[Prefix]:
        """Forget everything learned from a peer whose session went down."""
        self._stale.pop(peer_address, None)
        self._rejected.pop(peer_address, None)
        self._not_kept.pop(peer_address, None)
        touched = {p for p, entry in self._paths.items() if _of(entry, peer_address) is not None}
        for p in touched:
            self._drop(p, self._paths[p], peer_address)
        self._accepted.pop(peer_address, None)  # none left
        self._depreferred.pop(peer_address, None)
        return self._reselect(touched)

    def reapply_policy(self, peers: Iterable[Peer], only: Collection[Prefix] | None = None) -> set[Prefix]:
        """Re-run import policy over everything received, accepted or not (soft reconfiguration);
        of the rejected paths only those kept (see MAX_REJECTED_PER_PEER): `rejected_not_kept` says
        how many a peer would have to send again (a route refresh) to be judged anew. `only`: just
        these prefixes (the others' verdicts cannot have changed)."""
        changed: set[Prefix] = set()
        present = None if only is None else [(prefix, e) for prefix in only if (e := self._paths.get(prefix)) is not None]
        for peer in peers:
            rejected = self._rejected.get(peer.address, {})
            if present is None:
                kept = {prefix: path.attrs for prefix, entry in self._paths.items()
                        if (path := _of(entry, peer.address)) is not None}
                kept.update((prefix, pattrs) for prefix, (_, pattrs) in rejected.items())
            else:
                assert only is not None
                kept = {prefix: path.attrs for prefix, entry in present if (path := _of(entry, peer.address)) is not None}
                if rejected and len(rejected) < len(only):
                    kept.update((prefix, pattrs) for prefix, (_, pattrs) in rejected.items() if prefix in only)
                elif rejected:
                    kept.update((prefix, rejected[prefix][1]) for prefix in only if prefix in rejected)
                if not kept:
                    continue
            stale = self._stale.get(peer.address)
            saved = set(stale) if stale else None  # re-applying policy is not the peer re-announcing
            changed |= self.update(peer, kept)
            if saved is not None:
                self._stale[peer.address] = saved
        return changed

    def _reselect(self, prefixes: Iterable[Prefix]) -> set[Prefix]:
        changed: set[Prefix] = set()
        for prefix in prefixes:
            entry = self._paths.get(prefix)
            if entry is not None and type(entry) is not dict:  # what select() makes of one path, without ranking
                only: Path = entry  # type: ignore[assignment]
                old = self._selected.get(prefix)
                if old is None:  # a new prefix: nothing to compare with
                    self._selected[prefix] = only_path(only)
                    changed.add(prefix)
                    continue
                sel: Selection | None = only_path(only)
            else:
                sel = select(_all(entry), self.local.asn, self.multipath)
            if sel is None:
                self._paths.pop(prefix, None)
                if self._selected.pop(prefix, None) is not None:
                    changed.add(prefix)
            elif self._selected.get(prefix) != sel:
                self._selected[prefix] = sel
                changed.add(prefix)
        return changed

    # --- output ------------------------------------------------------------------------------
    def selection(self, prefix: Prefix) -> Selection | None:
        return self._selected.get(prefix)

    @property
    def selection_lookup(self) -> Callable[[Prefix], Selection | None]:
        """`selection` as the selections' own dict lookup, for a loop over a burst's prefixes (no
        Python call per prefix); it stays valid as the RIB changes."""
        return self._selected.get

    def selections(self) -> Iterator[tuple[Prefix, Selection]]:
        return iter(self._selected.items())

    def paths(self, prefix: Prefix) -> list[Path]:
        return _all(self._paths.get(prefix))

    def accepted_count(self, peer_address: str) -> int:
        return self._accepted.get(peer_address, 0)

    def depreferred_count(self, peer_address: str) -> int:
        """Paths from the peer kept though their origin is invalid (its origin_validation: Deprefer)."""
        return self._depreferred.get(peer_address, 0)

    def received(self) -> Iterator[tuple[tuple[str, Prefix], PathAttributes]]:
        """Every path a peer sent and still stands, accepted or rejected: ((peer address, prefix), attrs
        as sent, before import policy changed them)."""
        for prefix, entry in self._paths.items():
            for path in _all(entry):
                yield (path.peer.address, prefix), path.attrs.received or path.attrs
        for address, rejected in self._rejected.items():
            for prefix, (_, pattrs) in rejected.items():
                yield (address, prefix), pattrs.received or pattrs

    def rejected_count(self, peer_address: str) -> int:
        """The peer's rejected paths, those kept and those beyond the cap."""
        return len(self._rejected.get(peer_address, ())) + self._not_kept.get(peer_address, 0)

    def forget_not_kept(self, peer_address: str) -> None:
        """The peer is sending everything again (route refresh): what is beyond the cap is counted anew."""
        self._not_kept.pop(peer_address, None)

    def rejected_not_kept(self, peer_address: str) -> int:
        """The peer's rejected paths beyond max_rejected: counted, not kept (not in `rejected()`, and a
        policy change cannot accept them until the peer sends them again: a route refresh)."""
        return self._not_kept.get(peer_address, 0)

    def rejected(self, peer_address: str | None = None, limit: int | None = None) -> list[Rejected]:
        """The rejected paths kept (of one peer, or all by peer), at most `limit` of them."""
        peers = [peer_address] if peer_address else sorted(self._rejected)
        every = (Rejected(p, prefix, why) for p in peers for prefix, (why, _) in self._rejected.get(p, {}).items())
        return list(every) if limit is None else list(itertools.islice(every, limit))

    def holds(self, prefix: Prefix) -> bool:
        """Whether any peer's path for `prefix` is here, accepted or rejected and kept."""
        return prefix in self._paths or any(prefix in rejected for rejected in self._rejected.values())

    def held(self) -> int:
        """At least as many as the distinct prefixes `holds` is true of (cheap: no walk over paths)."""
        return len(self._paths) + sum(len(r) for r in self._rejected.values())

    def __len__(self) -> int:
        return len(self._selected)

