"""A path's BGP attributes (RFC 4271 5), as one value from the wire to the wire.

The same frozen value travels the whole way: speaker/parse.py builds it from ExaBGP's JSON (one per
next hop of an UPDATE, shared by its prefixes), the intake resolves its next hop, the RIB holds it
(paths with equal attributes share one object), the import and export policies read it, route
reflection derives the reflected one from it, and speaker/commands.py renders it into an ExaBGP
command. Absent attributes are None or empty. When import policy changes a path's attributes (a
BGPFilter operation), the changed value keeps the one the peer sent in `received`, so that policy is
judged again from what was sent, never from its own earlier result; a setPriority also marks the
path's `kernel_metric`.
"""
from __future__ import annotations

import attrs

ORIGINS = ("igp", "egp", "incomplete")


@attrs.frozen(slots=True)
class PathAttributes:
    """`next_hop`: as the peer sent it (None: NLRI without NEXT_HOP); in the RIB, the address the
    route goes via (a link-local one scoped to the session's interface, "fe80::1%eth0",
    nexthop.resolve); to send, "self" or an address. `link_local`: the link-local next hop a peer
    sent beside a global one (RFC 2545: a 32-byte next hop), kept as it came. `origin` is None only
    when the UPDATE had no ORIGIN (routing/malformed.py withdraws such announcements)."""

    next_hop: str | None = None
    as_path: tuple[int, ...] = ()   # the AS_SEQUENCE numbers, in order
    origin: str | None = "igp"      # igp / egp / incomplete
    local_pref: int | None = None
    med: int | None = None
    communities: tuple[tuple[int, int], ...] = ()
    large_communities: tuple[tuple[int, int, int], ...] = ()
    originator_id: str | None = None
    cluster_list: tuple[str, ...] = ()
    as_set: tuple[int, ...] = ()    # AS_SET members (an aggregate's)
    link_local: str | None = None
    received: "PathAttributes | None" = None  # as the peer sent them, when import policy changed them
    # the kernel metric an import setPriority gave the path (BIRD's krt_metric), 0 when none: this
    # router's own, no BGP attribute, never sent nor reflected
    kernel_metric: int = 0
