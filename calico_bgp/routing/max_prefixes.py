"""A peer's maxPrefixes limit: whether what it sent breaks the limit, and whether to act on it now.

Pure: the caller counts the peer's paths (accepted and rejected) and does what the verdict says.
A limit is acted on once: a peer still over the same limit with the same action is left alone; a
changed limit or action acts again; a peer back under its limit (or whose session went down) is
forgotten, so the next time over acts again. The action `teardown` sends Cease / Maximum Number of
Prefixes Reached (RFC 4486) and holds the peer idle (backoff.MAX_PREFIXES); `warn` only tells.
"""
from __future__ import annotations

import attrs

TEARDOWN = "teardown"


@attrs.frozen
class Limit:
    prefixes: int
    action: str = "warn"  # warn | teardown


@attrs.frozen
class Verdict:
    acted_on: Limit | None      # what to remember as acted on (None: nothing)
    act: bool = False           # tell (event, counter) and, for teardown, reset and hold the peer
    count: int = 0

    @property
    def teardown(self) -> bool:
        return self.act and self.acted_on is not None and self.acted_on.action == TEARDOWN

    @property
    def detail(self) -> str:
        """The event's words: `received 12 > limit 10: teardown`."""
        assert self.acted_on is not None
        return f"received {self.count} > limit {self.acted_on.prefixes}: {self.acted_on.action}"

    @property
    def hold_why(self) -> str:
        """Why the peer is held idle after a teardown (shown in `status`)."""
        assert self.acted_on is not None
        return f"max prefixes exceeded ({self.count} > {self.acted_on.prefixes})"


def check(count: int, limit: Limit | None, acted_on: Limit | None) -> Verdict:
    """The verdict for a peer that has sent `count` paths. Without a limit nothing changes (what was
    acted on is kept)."""
    if limit is None:
        return Verdict(acted_on, count=count)
    if count <= limit.prefixes:
        return Verdict(None, count=count)
    if acted_on == limit:
        return Verdict(limit, count=count)
    return Verdict(limit, act=True, count=count)
