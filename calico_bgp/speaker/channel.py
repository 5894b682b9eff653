"""The agent's end of the API bridge: one unix-socket connection at a time, lines both ways,
the window of commands awaiting ExaBGP's ack (`done`/`error`, in command order), and the sender
that puts command lines on whichever bridge is current.
"""
from __future__ import annotations

import collections
import logging
import math
from typing import Iterable

import attrs
import trio

from calico_bgp.speaker import commands as cmds
from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.speaker.channel")

LOST_WITHDRAWALS = 100_000  # command lines kept for a resend at most (each up to MAX_NLRI prefixes)


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
            event(log, "exabgp_ack_unmatched", logging.WARNING, ok=ok)
            return None
        p = self.in_flight.popleft()
        p.ok = ok
        self.acked += 1
        if not ok:
            self.errors += 1
            event(log, "exabgp_command_error", logging.WARNING, command=p.command[:300])
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
                    event(log, "bridge_line_too_long", logging.ERROR, bytes=len(self.buf))
                    self.buf.clear()
                continue
            *whole, rest = self.buf.split(b"\n")
            self.buf = bytearray(rest)
            for raw in whole:
                yield raw.decode("utf-8", errors="replace")


class CommandSender:
    """Command lines to ExaBGP through the current bridge, at most `window.limit` awaiting an answer.

    `lock` is held by whoever sends a batch that must go out whole and in the order its intent
    changed (announce, withdraw, a replay): hold it and call `send_locked`, or call `send`.
    With no bridge, a line is dropped (counted in `stats["dropped_commands"]`). Withdrawals that
    may not have reached ExaBGP (dropped, or in flight when a bridge went) are kept in `lost`: a
    new bridge to the same ExaBGP sends them again; a new ExaBGP starts empty and they are cleared.
    """

    def __init__(self, window: CommandWindow, stats: dict[str, int], lost_max: int = LOST_WITHDRAWALS) -> None:
        self.window = window
        self.stats = stats
        self.stream: trio.abc.SendStream | None = None
        self.lock = trio.Lock()
        self.lost: collections.deque[str] = collections.deque(maxlen=lost_max)

    @property
    def connected(self) -> bool:
        return self.stream is not None

    async def attach(self, stream: trio.abc.SendStream) -> None:
        """`stream` is the bridge from now on; the answers to commands sent on an older one never come."""
        self.note_lost(await self.window.fail_all())
        self.stream = stream

    async def detach(self, stream: trio.abc.SendStream) -> bool:
        """`stream` went away; False (and nothing done) when a newer bridge had replaced it already."""
        if self.stream is not stream:
            return False
        self.stream = None
        self.note_lost(await self.window.fail_all())
        return True

    async def send(self, lines: Iterable[str]) -> int:
        """Send command lines within the in-flight window; returns how many went out."""
        async with self.lock:
            return await self.send_locked(lines)

    async def send_locked(self, lines: Iterable[str]) -> int:
        """`send` for a caller that holds `lock`."""
        sent = 0
        window = self.window
        for line in lines:
            if "\n" in line:
                raise ValueError("a command is one line")
            await window.reserve()
            stream = self.stream
            if stream is None:
                self.stats["dropped_commands"] += 1
                self.note_lost([line])
                continue
            pending = window.add(line)
            try:
                await stream.send_all(line.encode() + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                window.forget(pending)  # else the next bridge's first ack would answer it
                self.stats["dropped_commands"] += 1
                self.note_lost([line])
                continue
            sent += 1
        return sent

    def note_lost(self, lines: Iterable[str]) -> None:
        self.lost.extend(line for line in lines if cmds.is_withdrawal(line))

    def take_lost(self) -> list[str]:
        """The withdrawals kept for a resend, forgotten here."""
        lines = list(self.lost)
        self.lost.clear()
        return lines


INF = math.inf
