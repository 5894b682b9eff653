"""What a peer's routes become when its session goes down, and when routes kept stale go at once.

Pure: the caller says why the session went down and what the peer's last OPEN offered.
- our own speaker exited (not the peer): the peer's routes are kept stale for the agent's grace
  time (graceful_restart.SPEAKER_RESTART), until the session is back and they were sent again;
- the peer advertised graceful restart for the session's family and dropped without a
  NOTIFICATION (RFC 4724 helper): kept stale for its restart time (GRACEFUL_RESTART);
- otherwise they are withdrawn with the session; so are they when BFD saw the path fail (BFD_DOWN),
  whatever the peer's OPEN offered: the failure is in forwarding, where stale routes lead nowhere
  (RFC 5882 section 4.3; BIRD's `bfd` without `graceful` and FRR's bgpd without
  `check-control-plane-failure` do the same).
A peer whose routes are kept for graceful restart and whose new OPEN no longer lists the family as
forwarding-kept (RFC 4724 4.2: its forwarding state is not what it was) has its stale routes
removed at once.
"""
from __future__ import annotations

from typing import Iterable

import attrs

from calico_bgp.routing.graceful_restart import GRACEFUL_RESTART, SPEAKER_RESTART, graceful

BFD_DOWN = "BFD session down"  # the reason of a session the agent ends because its BFD session failed


@attrs.frozen
class KeepStale:
    why: str           # SPEAKER_RESTART or GRACEFUL_RESTART: also the event's name
    keep_for: float    # seconds at most


def restart_time(family: str, graceful_restart: int | None, graceful_families: Iterable[str]) -> int | None:
    """How long the peer asked us to keep its routes (RFC 4724): its restart time when its OPEN
    listed the session's family, else None (its routes go with the session)."""
    if graceful_restart is None or family not in tuple(graceful_families):
        return None
    return graceful_restart


def on_down(reason: str, speaker_exited: bool, peer_restart_time: int | None,
            speaker_grace: float) -> KeepStale | None:
    """Keep the peer's routes stale (how long, and why), or None: withdraw them now."""
    if speaker_exited:
        return KeepStale(SPEAKER_RESTART, speaker_grace)
    if peer_restart_time and graceful(reason) and reason != BFD_DOWN:
        return KeepStale(GRACEFUL_RESTART, float(peer_restart_time))
    return None


def stale_ends_on_open(kept_why: str | None, family: str | None, forwarding_kept: Iterable[str]) -> bool:
    """Whether a peer's new OPEN ends the graceful-restart stale period at once: back without the
    capability, or without its forwarding state for the session's family (None: no session)."""
    return kept_why == GRACEFUL_RESTART and (family is None or family not in tuple(forwarding_kept))
