"""Which peers' routes are kept stale, why, and when they go: pure, the caller passes `now`.

Two reasons to keep a peer's routes after its session dropped:
- `speaker_restart`: our own ExaBGP went away. The peer re-sends everything as soon as the session
  is back, so what it has not re-sent by its End-of-RIB, or once UPDATEs went quiet, is gone; at the
  deadline (the agent's grace timeout) its stale routes go whatever the session does (a busy cluster
  may never be quiet).
- `graceful_restart` (RFC 4724, we are the helper): the peer advertised graceful restart and dropped
  without a NOTIFICATION. Its routes stay until its End-of-RIB. Its restart time bounds how long it
  may take to come back; once back, STALE_PATH_TIME bounds how long it may take to re-send its table
  (RFC 4724 4.2's local stale timer; FRR's default): a peer back at 110 s of 120 with a large table
  does not lose what it has not re-sent yet at 120 s.
"""
from __future__ import annotations

from typing import Callable

import attrs

SPEAKER_RESTART = "speaker_restart"
GRACEFUL_RESTART = "graceful_restart"
STALE_PATH_TIME = 360.0  # seconds a restarted peer, back up, has to send its End-of-RIB


def graceful(reason: str) -> bool:
    """Whether a session that went down for `reason` (ExaBGP's words) may be restarting gracefully:
    a NOTIFICATION sent or received ends graceful restart (RFC 4724), a dropped connection does not."""
    return "notification" not in reason.lower()


@attrs.frozen
class Kept:
    since: float
    until: float
    why: str
    back: bool = False  # a restarting peer's session is up again (the stale timer runs, not its restart time)


class StaleRoutes:
    def __init__(self) -> None:
        self._kept: dict[str, Kept] = {}
        # called when a peer's routes start to be kept or are to go now: a sweeper asleep while
        # nothing is kept wakes
        self.on_news: Callable[[], None] | None = None

    def keep(self, peer: str, now: float, keep_for: float, why: str) -> bool:
        """Keep `peer`'s routes for at most `keep_for` seconds; False if they are kept already (the
        first reason and deadline stand: a flapping peer does not extend its own restart time)."""
        if peer in self._kept:
            return False
        self._kept[peer] = Kept(now, now + keep_for, why)
        if self.on_news is not None:
            self.on_news()
        return True

    def why(self, peer: str) -> str | None:
        kept = self._kept.get(peer)
        return kept.why if kept else None

    def end_now(self, peer: str) -> None:
        """The peer came back without graceful restart: its stale routes go at the next `due`."""
        kept = self._kept.get(peer)
        if kept is not None:
            self._kept[peer] = attrs.evolve(kept, until=float("-inf"))
            if self.on_news is not None:
                self.on_news()

    def forget(self, peer: str) -> None:
        self._kept.pop(peer, None)

    def __contains__(self, peer: str) -> bool:
        return peer in self._kept

    def __len__(self) -> int:
        return len(self._kept)

    def due(self, now: float, is_up: Callable[[str], bool], quiet: bool,
            end_of_rib: Callable[[str], bool]) -> list[tuple[str, bool]]:
        """The peers whose stale routes go now, each with whether its session is up (then only what
        it did not re-send goes; otherwise everything), and forgets them."""
        out = []
        for peer, kept in list(self._kept.items()):
            up = is_up(peer)
            if kept.why == GRACEFUL_RESTART and up and not kept.back and now <= kept.until:
                kept = self._kept[peer] = attrs.evolve(kept, until=now + STALE_PATH_TIME, back=True)
            expired = now > kept.until
            if kept.why == GRACEFUL_RESTART:
                done = (up and end_of_rib(peer)) or expired
            else:
                done = (up and (quiet or end_of_rib(peer))) or expired
            if done:
                del self._kept[peer]
                out.append((peer, up))
        return out
