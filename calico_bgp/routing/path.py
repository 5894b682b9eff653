"""The values the RIB is made of: a peer as the RIB sees it, this node as a speaker, a path (a
prefix, the peer it came from, its attributes) and the selection of a prefix. Pure."""
from __future__ import annotations

from typing import ClassVar

import attrs

from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.nexthop import SessionLink
from calico_bgp.routing.prefix import Prefix


@attrs.frozen(slots=True)
class Peer:
    """One BGP session as the RIB sees it; `address` identifies it."""

    address: str
    asn: int
    router_id: str
    ibgp: bool
    rr_client: bool = False
    allow_own_as: int = 0   # allowas-in: our AS may appear this many times in a path from this peer
    link: SessionLink | None = None  # the interface, when the peer is directly connected (nexthop.session_link)
    origin_validation: str = "Reject"  # an origin-invalid path from this peer: Reject, Deprefer or Disabled


@attrs.frozen(slots=True)
class Path:
    prefix: Prefix
    peer: Peer
    attrs: PathAttributes
    invalid: ClassVar[str | None] = None  # a valid path; see DepreferredPath


@attrs.frozen(slots=True)
class DepreferredPath(Path):
    """A path whose origin is invalid (Rib.origin_check), kept but ranked below every valid path.
    A subclass, so that the 100k valid paths of a burst are built with three fields, not four."""

    invalid: str = ""  # type: ignore[misc]  # why its origin is invalid


_new = object.__new__
_set_prefix, _set_peer, _set_attrs = Path.prefix.__set__, Path.peer.__set__, Path.attrs.__set__  # type: ignore[attr-defined]


_set_invalid = DepreferredPath.invalid.__set__  # type: ignore[attr-defined]


def make_path(prefix: Prefix, peer: Peer, pattrs: PathAttributes, invalid: str | None) -> Path:
    # the slots' own setters: attrs' frozen __init__ sets each field by name, a third slower, and
    # a burst makes a path per prefix
    if invalid is not None:
        path = _new(DepreferredPath)
        _set_invalid(path, invalid)
    else:
        path = _new(Path)
    _set_prefix(path, prefix)
    _set_peer(path, peer)
    _set_attrs(path, pattrs)
    return path


@attrs.frozen(slots=True)
class Selection:
    """The best path of a prefix and the ECMP set it belongs to (best first, distinct next hops)."""

    best: Path
    multipath: tuple[Path, ...]
    reason: str

    @property
    def next_hops(self) -> tuple[str, ...]:
        mp = self.multipath
        if len(mp) == 1:  # the common case, read for every learned route
            return (mp[0].attrs.next_hop,)
        return tuple(p.attrs.next_hop for p in mp)


_set_best, _set_multipath, _set_reason = Selection.best.__set__, Selection.multipath.__set__, Selection.reason.__set__  # type: ignore[attr-defined]


def only_path(path: Path) -> Selection:
    """The selection of a prefix that has one path: `Selection(path, (path,), "only-path")`, made
    with the slots' own setters (the first path of each of 100k prefixes in a burst)."""
    sel = _new(Selection)
    _set_best(sel, path)
    _set_multipath(sel, (path,))
    _set_reason(sel, "only-path")
    return sel


@attrs.frozen(slots=True)
class LocalSpeaker:
    """This node as a BGP speaker: its AS, router id and, for a route reflector, its cluster id."""

    asn: int
    router_id: str
    cluster_id: str | None = None

    @property
    def is_reflector(self) -> bool:
        return self.cluster_id is not None


