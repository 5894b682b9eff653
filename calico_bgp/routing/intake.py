"""Received UPDATEs on their way into the RIB: RFC 7606 checks (calico_bgp/routing/malformed.py: a
malformed UPDATE's announcements are treated as withdrawals), NLRI text to prefixes, ExaBGP's
attributes to the RIB's, flap damping, then the RIB, which says what changed. Pure: no I/O, the
caller passes `now`.

Built for bursts of 100k prefixes: a prefix's text is parsed once (cached while it is in use), the
attributes an UPDATE shares between its prefixes are converted once, and when damping is off the
dampener is skipped (turning it on later seeds it from the RIB, so it penalises exactly as before).
"""
from __future__ import annotations

import ipaddress
import operator
import socket
from itertools import repeat
from typing import Callable, Hashable, Iterable

import attrs

from calico_bgp.routing import malformed as rfc7606
from calico_bgp.routing.damping import Dampener
from calico_bgp.routing.nexthop import SessionLink, resolve
from calico_bgp.routing.rib import PathAttrs, Peer, Prefix, Rib
from calico_bgp.speaker.events import Malformation, PathAttributes, Update

_V4_MASKS = tuple(((1 << 32) - 1) ^ ((1 << (32 - n)) - 1) for n in range(33))


class _PackedIPv4Address(ipaddress.IPv4Address):
    """An IPv4Address whose `packed` is stored, not computed in Python on every read: the kernel key
    of each learned route is built from it. Equal to, hashing and printing like the plain one."""

    __slots__ = ("packed",)

    def __init__(self, address: object) -> None:  # what ipaddress builds from one (`a + 1`, pickling)
        super().__init__(address)
        self.packed = ipaddress.v4_int_to_packed(self._ip)  # type: ignore[misc,attr-defined]

    def __repr__(self) -> str:
        return f"IPv4Address('{self}')"


class _IPv4Prefix(ipaddress.IPv4Network):
    """An IPv4Network built cheaply and hashing once: a learned prefix is a dict/set key some fifteen
    times on its way to the kernel, and IPv4Network parses its argument and recomputes its hash in
    Python every time. Equal to, ordered and hashing like the IPv4Network of the same text (tested)."""

    @classmethod
    def of(cls, value: int, plen: int, packed: bytes) -> "_IPv4Prefix":
        """The network `value`/`plen` (`packed`: its 4 bytes); `value` has no host bits (the caller checked)."""
        p = object.__new__(cls)
        address = object.__new__(_PackedIPv4Address)
        address._ip = value  # type: ignore[attr-defined]
        address.packed = packed  # type: ignore[misc]
        p.network_address = address
        p.netmask, p._prefixlen = cls._make_netmask(plen)  # type: ignore[attr-defined]
        p._hash = hash(value ^ p.netmask._ip)  # _BaseNetwork.__hash__, once
        return p

    def __hash__(self) -> int:
        return self._hash

    def hosts(self):  # type: ignore[no-untyped-def]
        # IPv4Network.__init__ sets these two per instance; `of` does not run it
        if self._prefixlen == 32:
            return [ipaddress.IPv4Address(self.network_address._ip)]
        if self._prefixlen == 31:
            return self.__iter__()
        return super().hosts()

    def __repr__(self) -> str:
        return f"IPv4Network('{self}')"


def parse_prefix(text: str) -> Prefix | None:
    """A network in canonical text ('198.18.64.0/24', '2001:db8::/48'); None when it is not one."""
    addr, _, plen = text.partition("/")
    if plen.isdigit() and ":" not in addr:
        try:
            packed = socket.inet_pton(socket.AF_INET, addr)
        except OSError:
            return None
        n = int(plen)
        value = int.from_bytes(packed, "big")
        if n <= 32 and value & _V4_MASKS[n] == value:
            return _IPv4Prefix.of(value, n, packed)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        return None


def rib_attrs(a: PathAttributes, link: SessionLink | None = None) -> PathAttrs:
    """The RIB's attributes for a path from a peer on `link` (None: not directly connected): the next
    hop to install via is decided here (nexthop.resolve), once per attributes object."""
    assert a.next_hop is not None
    return PathAttrs(next_hop=resolve(a.next_hop, a.link_local, link), as_path=a.as_path, as_set=a.as_set, origin=a.origin or "igp",
                     local_pref=a.local_pref, med=a.med, communities=a.communities,
                     large_communities=a.large_communities, originator_id=a.originator_id,
                     cluster_list=a.cluster_list, link_local=a.link_local)


def _without_internal(announced: dict[Prefix, PathAttrs]) -> dict[Prefix, PathAttrs]:
    """`announced` without LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST, which from an eBGP peer mean
    nothing (RFC 7606 7.5, 7.9, 7.10: attribute discard; BIRD drops them likewise): a fabric peer
    cannot win the router-id tie-break with an ORIGINATOR_ID of its choosing. Each attributes object
    is copied once; only UPDATEs that carry one of those come here."""
    out: dict[Prefix, PathAttrs] = {}
    done: dict[int, PathAttrs] = {}
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

    announced: dict[Prefix, PathAttrs]
    withdrawn: list[Prefix]
    changed: set[Prefix]
    suppressed: list[tuple[str, Hashable]]
    bad: list[tuple[str, str | None]]
    malformed: tuple[Malformation, ...] = ()
    treated_as_withdrawn: int = 0


def _has_none(values: list) -> bool:  # type: ignore[type-arg]
    """`None in values` without calling ipaddress's Python __eq__ on every element (C loops only)."""
    return any(map(operator.is_, values, repeat(None)))


class UpdateIntake:
    """Turns Update events into RIB changes; keeps only caches, no routing state of its own."""

    def __init__(self, max_cached: int = 1 << 18) -> None:
        self.max_cached = max_cached
        self._prefixes: dict[str, Prefix | None] = {}

    def prefix(self, text: str) -> Prefix | None:
        cache = self._prefixes
        try:
            return cache[text]
        except KeyError:
            pass
        if len(cache) >= self.max_cached:
            cache.clear()
        p = cache[text] = parse_prefix(text)
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
        if _has_none(found):  # not cached yet, or cached as unusable
            found = list(map(self.prefix, texts))
        return found

    def apply(self, ev: Update, peer: Peer, rib: Rib, dampener: Dampener[PathAttrs], now: float) -> Intake:
        announced: dict[Prefix, PathAttrs] = {}
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
            if not _has_none(found) and first.next_hop is not None and all(map(operator.is_, values, repeat(first))):
                # one attributes object for the whole UPDATE (one next hop, no path ids): no Python per prefix
                announced = dict.fromkeys(found, rib_attrs(first, peer.link))  # type: ignore[arg-type]
            else:
                last: PathAttributes | None = None
                converted: PathAttrs | None = None
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
        if _has_none(withdrawn):
            withdrawn = [p for p in withdrawn if p is not None]
        suppressed: list[tuple[str, Hashable]] = []
        if dampener.enabled:
            d = dampener.update(ev.peer, announced, withdrawn, now)
            suppressed = d.suppressed
            changed = rib.update(peer, {k[1]: v for k, v in d.announce.items()}, [k[1] for k in d.withdraw])  # type: ignore[misc]
        else:  # not fed while off: `Dampener.reconfigured` takes the RIB's paths when it is turned on
            changed = rib.update(peer, announced, withdrawn)
        return Intake(announced, withdrawn, changed, suppressed, bad, malformed, len(as_withdrawn))
