"""The bridge's connection to the agent: accepted on the API socket, one at a time.

A bridge says who it is first (`bridge hello pid=P exabgp=E dropped=N`); a client that does not is
closed on. A newer bridge replaces the current one (ExaBGP restarted it, or ExaBGP itself
restarted). Every line after the hello goes to `on_line`; a bridge that goes away (EOF, or a
reset with commands unread because ExaBGP died under it) is a lost bridge, never a reason to take
the speaker down.
"""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

import attrs
import trio

from calico_bgp.speaker.channel import CommandSender, LineReader
from calico_bgp.speaker.errors import BadHello
from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.speaker")


@attrs.frozen
class Hello:
    """A bridge's first line: its ExaBGP's pid, and how many lines it dropped while nobody listened."""

    exabgp_pid: int
    dropped: int
    line: str

    @classmethod
    def parse(cls, line: str) -> "Hello":
        if not line.startswith("bridge hello"):
            raise BadHello(line)
        fields = dict(f.split("=", 1) for f in line.split()[2:] if "=" in f)
        try:
            return cls(int(fields.get("exabgp", "0") or 0), int(fields.get("dropped", "0") or 0), line)
        except ValueError:
            raise BadHello(line) from None


class BridgeServer:
    """Serves bridges on a listener. `on_connected(hello, same_exabgp)` is called once a bridge is
    the current one (`same_exabgp`: an earlier bridge served that ExaBGP, whose sessions live on),
    `on_line` for each line it sends, `on_lost()` when the current bridge goes."""

    def __init__(self, sender: CommandSender, stats: dict[str, int],
                 on_connected: Callable[[Hello, bool], None], on_line: Callable[[str], Awaitable[None]],
                 on_lost: Callable[[], None]) -> None:
        self.sender = sender
        self.stats = stats
        self._on_connected = on_connected
        self._on_line = on_line
        self._on_lost = on_lost
        self.exabgp_pid = 0  # the pid of the ExaBGP the current bridge serves
        self._exabgp_pids: set[int] = set()  # every ExaBGP a bridge has served
        self._scope: trio.CancelScope | None = None
        self.connected = trio.Event()  # set while a bridge is connected; a new one when it goes

    def serves(self, exabgp_pid: int) -> bool:
        """Whether the current bridge is that of ExaBGP `exabgp_pid`."""
        return self.sender.connected and self.exabgp_pid == exabgp_pid

    async def accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            stream = await listener.accept()
            nursery.start_soon(self.serve, stream)

    async def serve(self, stream: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            lines = LineReader(stream).lines()
            try:
                hello = Hello.parse(await lines.__anext__())
            except (StopAsyncIteration, trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.aclose()
                return
            except BadHello as e:
                event(log, "bridge_bad_hello", logging.WARNING, line=e.line[:200])
                await stream.aclose()
                return
            previous, self._scope = self._scope, scope
            if previous is not None:
                previous.cancel()  # a newer bridge replaces the old one
            await self.sender.attach(stream)
            self.exabgp_pid = hello.exabgp_pid
            self.stats["bridge_connections"] += 1
            event(log, "bridge_connected", hello=hello.line)
            if hello.dropped:
                event(log, "bridge_dropped_lines", logging.WARNING, count=hello.dropped)
            same_exabgp = hello.exabgp_pid in self._exabgp_pids
            self._exabgp_pids.add(hello.exabgp_pid)
            self._on_connected(hello, same_exabgp)
            self.connected.set()
            try:
                async for line in lines:
                    await self._on_line(line)
                event(log, "bridge_eof", logging.DEBUG)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                event(log, "bridge_reset", error=repr(e))
            except BaseException as e:
                event(log, "bridge_ended", logging.DEBUG, error=repr(e))
                raise
            finally:
                with trio.CancelScope(shield=True):
                    if self.sender.stream is stream:
                        self.connected = trio.Event()
                        await self.sender.detach(stream)
                        self._on_lost()
                        event(log, "bridge_lost", logging.WARNING)
                    await stream.aclose()
