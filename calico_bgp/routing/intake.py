"""Received UPDATEs on their way into the RIB: RFC 7606 checks (calico_bgp/routing/malformed.py: a
malformed UPDATE's announcements are treated as withdrawals), NLRI text to prefixes (prefix.py), the
next hop each path is installed via, flap damping, then the RIB, which says what changed. Pure: no I/O, the
caller passes `now`.

Built for bursts of 100k prefixes: a prefix's text is parsed once (cached while it is in use), the
attributes an UPDATE shares between its prefixes are resolved once, and when damping is off the
dampener is skipped (turning it on later seeds it from the RIB, so it penalises exactly as before).
"""
from __future__ import annotations

import operator
from itertools import repeat
from typing import TYPE_CHECKING, Callable, Hashable, Iterable

import attrs

from calico_bgp.routing import malformed as rfc7606
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.damping import Dampener
from calico_bgp.routing.malformed import Malformation
from calico_bgp.routing.nexthop import SessionLink, resolve
from calico_bgp.routing.path import Peer
from calico_bgp.routing.prefix import Prefix, parse
from calico_bgp.routing.rib import Rib

if TYPE_CHECKING:
    from calico_bgp.speaker.events import Update

_MISSING = object()


def rib_attrs(a: PathAttributes, link: SessionLink | None = None) -> PathAttributes:
    """The attributes the RIB keeps of a path from a peer on `link` (None: not directly connected):
    the next hop to install via is decided here (nexthop.resolve), once per attributes object. The
    received value itself when that changes nothing (an IPv4 next hop: the common case)."""
    assert a.next_hop is not None
    next_hop = resolve(a.next_hop, a.link_local, link)
    if next_hop == a.next_hop and a.origin is not None:
        return a
    return attrs.evolve(a, next_hop=next_hop, origin=a.origin or "igp")


def _without_internal(announced: dict[Prefix, PathAttributes]) -> dict[Prefix, PathAttributes]:
    """`announced` without LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST, which from an eBGP peer mean
    nothing (RFC 7606 7.5, 7.9, 7.10: attribute discard; BIRD drops them likewise): a fabric peer
    cannot win the router-id tie-break with an ORIGINATOR_ID of its choosing. Each attributes object
    is copied once; only UPDATEs that carry one of those come here."""
    out: dict[Prefix, PathAttributes] = {}
    done: dict[int, PathAttributes] = {}
    for p, a in announced.items():
        b = done.get(id(a))
        if b is None:
            b = done[id(a)] = attrs.evolve(a, local_pref=None, originator_id=None, cluster_list=())
        out[p] = b
    return out


def _internal_only(a: PathAttributes) -> Malformation | None:
    """The attributes an eBGP peer sent that belong to iBGP (RFC 7606 7.5, 7.9, 7.10), if any."""
    names = [n for n, present in (("LOCAL_PREF", a.local_pref is not None), ("ORIGINATOR_ID", a.originator_id is not None),
                                  ("CLUSTER_LIST", bool(a.cluster_list))) if present]
    return Malformation("attribute-discarded", f"{', '.join(names)} from an eBGP peer") if names else None


@attrs.frozen(slots=True)
class Intake:
    """What one UPDATE did: the prefixes it carried (valid ones), those whose selection changed, the
    paths damping suppressed because of it, the NLRIs that could not be used (text, next hop), what
    was malformed in it and how many announcements that turned into withdrawals."""

    announced: dict[Prefix, PathAttributes]
    withdrawn: list[Prefix]
    changed: set[Prefix]
    suppressed: list[tuple[str, Hashable]]
    bad: list[tuple[str, str | None]]
    malformed: tuple[Malformation, ...] = ()
    treated_as_withdrawn: int = 0


class UpdateIntake:
    """Turns Update events into RIB changes; keeps only caches, no routing state of its own."""

    def __init__(self, max_cached: int = 1 << 18) -> None:
        self.max_cached = max_cached
        self._prefixes: dict[str, Prefix | None] = {}

    def prefix(self, text: str) -> Prefix | None:
        cache = self._prefixes
        p = cache.get(text, _MISSING)
        if p is not _MISSING:
            return p  # type: ignore[return-value]
        if len(cache) >= self.max_cached:
            cache.clear()
        p = cache[text] = parse(text)
        return p

    @property
    def cached(self) -> int:
        return len(self._prefixes)

    def trim(self, in_use: Callable[[Prefix], bool]) -> int:
        """Forget the parsed prefixes nothing uses any more (a table withdrawn, paths rejected and not
        kept); returns how many. For a quiet moment: it walks the whole cache, which a burst refills."""
        cache = self._prefixes
        keep = {text: p for text, p in cache.items() if p is not None and in_use(p)}
        dropped = len(cache) - len(keep)
        if dropped:
            self._prefixes = keep  # a new dict: the old one's table is freed whole
        return dropped

    def prefixes(self, texts: Iterable[str]) -> list[Prefix | None]:
        """`prefix` of each text; a C loop over the cache when every text is in it (the usual case)."""
        texts = list(texts)
        found = list(map(self._prefixes.get, texts))
        if None in found:  # not cached yet, or cached as unusable: a table's first UPDATEs
            cache = self._prefixes
            if len(cache) + len(texts) > self.max_cached:
                return list(map(self.prefix, texts))
            for i, p in enumerate(found):
                if p is None:
                    text = texts[i]
                    p = cache.get(text, _MISSING)
                    if p is _MISSING:
                        p = cache[text] = parse(text)
                    found[i] = p  # type: ignore[call-overload]
        return found

    def apply(self, ev: Update, peer: Peer, rib: Rib, dampener: Dampener[PathAttributes], now: float) -> Intake:
        announced: dict[Prefix, PathAttributes] = {}
        bad: list[tuple[str, str | None]] = []
        malformed = ev.malformed
        as_withdrawn: list[Prefix | None] = []
        internal_only: Malformation | None = None
        if ev.announced:  # once per UPDATE: its prefixes share the attributes checked here
            if malformed and rfc7606.withdraws(malformed):
                as_withdrawn = self.prefixes(ev.announced)
            else:
                first = next(iter(ev.announced.values()))
                wrong = rfc7606.as_path_error(peer, first.as_path, first.as_set)
                if wrong is not None:
                    malformed += (wrong,)
                    as_withdrawn = self.prefixes(ev.announced)
                elif not peer.ibgp and (internal_only := _internal_only(first)) is not None:
                    malformed += (internal_only,)
        if ev.announced and not as_withdrawn:
            texts = list(ev.announced)
            values = list(ev.announced.values())
            found = self.prefixes(texts)
            first = values[0]
            if None not in found and first.next_hop is not None and all(map(operator.is_, values, repeat(first))):
                # one attributes object for the whole UPDATE (one next hop): no Python per prefix
                announced = dict.fromkeys(found, rib_attrs(first, peer.link))  # type: ignore[arg-type]
            else:
                last: PathAttributes | None = None
                converted: PathAttributes | None = None
                for text, p, a in zip(texts, found, values):
                    if p is None or a.next_hop is None:
                        bad.append((text, a.next_hop))
                        continue
                    if a is not last:  # prefixes of one UPDATE share their attributes object
                        last, converted = a, rib_attrs(a, peer.link)
                    announced[p] = converted  # type: ignore[assignment]
            if internal_only is not None:
                announced = _without_internal(announced)
        withdrawn: list[Prefix] = self.prefixes(ev.withdrawn)  # type: ignore[assignment]
        if as_withdrawn:  # RFC 7606 treat-as-withdraw: as if listed in WITHDRAWN ROUTES
            withdrawn += as_withdrawn  # type: ignore[arg-type]
        if None in withdrawn:
            withdrawn = [p for p in withdrawn if p is not None]
        suppressed: list[tuple[str, Hashable]] = []
        if dampener.enabled:
            d = dampener.update(ev.peer, announced, withdrawn, now)
            suppressed = d.suppressed
            changed = rib.update(peer, {k[1]: v for k, v in d.announce.items()}, [k[1] for k in d.withdraw])  # type: ignore[misc]
        else:  # not fed while off: `Dampener.reconfigured` takes the RIB's paths when it is turned on
            changed = rib.update(peer, announced, withdrawn)
        return Intake(announced, withdrawn, changed, suppressed, bad, malformed, len(as_withdrawn))
