"""The agent's end of the API bridge: one unix-socket connection at a time, lines both ways,
and the window of commands awaiting ExaBGP's ack (`done`/`error`, in command order)."""
from __future__ import annotations

import collections
import logging
import math

import attrs
import trio

log = logging.getLogger("calico_bgp.speaker.channel")


@attrs.define
class Pending:
    command: str
    sent_at: float
    done: trio.Event = attrs.field(factory=trio.Event)
    ok: bool | None = None


class CommandWindow:
    """At most `limit` commands in flight; each ack completes the oldest one.

    Acks come back in command order, so a FIFO matches them. When the bridge goes away every
    pending command is failed (ok=None): the replay on reconnect/`up` puts the routes back.
    """

    def __init__(self, limit: int = 32) -> None:
        self.limit = limit
        self.in_flight: collections.deque[Pending] = collections.deque()
        self._room = trio.Condition()
        self.sent = 0
        self.acked = 0
        self.errors = 0
        self.unmatched_acks = 0

    async def reserve(self) -> None:
        async with self._room:
            while len(self.in_flight) >= self.limit:
                await self._room.wait()

    def add(self, command: str) -> Pending:
        p = Pending(command, trio.current_time())
        self.in_flight.append(p)
        self.sent += 1
        return p

    def forget(self, p: Pending) -> None:
        """A command that never reached the bridge (its send failed): no answer will come for it."""
        try:
            self.in_flight.remove(p)
        except ValueError:
            return  # already failed with the rest of its bridge
        p.done.set()

    async def ack(self, ok: bool) -> Pending | None:
        if not self.in_flight:
            self.unmatched_acks += 1
            log.warning("exabgp_ack_unmatched ok=%s", ok)
            return None
        p = self.in_flight.popleft()
        p.ok = ok
        self.acked += 1
        if not ok:
            self.errors += 1
            log.warning("exabgp_command_error command=%r", p.command[:300])
        p.done.set()
        async with self._room:
            self._room.notify_all()
        return p

    async def fail_all(self) -> list[str]:
        """Fail every command in flight (its bridge is gone); returns them, oldest first."""
        failed = []
        while self.in_flight:
            p = self.in_flight.popleft()
            p.done.set()
            failed.append(p.command)
        async with self._room:
            self._room.notify_all()
        return failed

    async def drained(self) -> None:
        """Until every command sent so far has its answer."""
        if self.in_flight:
            await self.in_flight[-1].done.wait()


class LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream, max_line: int = 16 * 1024 * 1024) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.max_line = max_line

    async def lines(self):
        while True:
            data = await self.stream.receive_some(1 << 18)
            if not data:
                return
            self.buf += data
            if b"\n" not in data:
                if len(self.buf) > self.max_line:
                    log.error("bridge_line_too_long bytes=%d", len(self.buf))
                    self.buf.clear()
                continue
            *whole, rest = self.buf.split(b"\n")
            self.buf = bytearray(rest)
            for raw in whole:
                yield raw.decode("utf-8", errors="replace")


INF = math.inf
