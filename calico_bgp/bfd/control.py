"""BIRD's control socket: the line protocol birdc speaks, under trio.

Each reply line starts with a four-digit code and a '-' (more follows) or ' ' (the last line); a line
starting with a space continues the previous code. 0xxx ends a reply that succeeded, 1xxx/2xxx are
table rows and headers, 8xxx/9xxx are run-time and syntax errors (BIRD's doc/reply_codes, and
client/client.c, which reads them the same way). The greeting is "0001 BIRD <version> ready.".
"""
from __future__ import annotations

from pathlib import Path

import attrs
import trio

GREETING = 1
RECONFIGURED = (3, 4, 19)  # Reconfigured, Reconfiguration in progress, Reconfiguration not needed (...)


class BirdError(RuntimeError):
    """BIRD refused a command (an 8xxx/9xxx reply) or answered what this client cannot read."""

    def __init__(self, command: str, code: int, text: str) -> None:
        super().__init__(f"bird: {command!r} -> {code:04d} {text}")
        self.code, self.text = code, text


@attrs.frozen
class Reply:
    code: int           # the code of the last line: 0xxx on success
    text: str           # every line's text, codes removed, joined with newlines

    @property
    def ok(self) -> bool:
        return self.code < 8000


class ReplyReader:
    """Bytes from the socket -> whole replies (pure: feed bytes, take what is complete)."""

    def __init__(self) -> None:
        self._buf = b""
        self._lines: list[str] = []

    def feed(self, data: bytes) -> list[Reply]:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        done = []
        for raw in lines:
            line = raw.decode(errors="replace")
            if line.startswith(" "):
                self._lines.append(line[1:])
                continue
            if len(line) < 5 or not line[:4].isdigit() or line[4] not in "- ":
                raise BirdError("", 0, f"unreadable reply line {line!r}")
            self._lines.append(line[5:])
            if line[4] == " ":
                done.append(Reply(int(line[:4]), "\n".join(self._lines)))
                self._lines = []
        return done


class BirdControl:
    """One connection to BIRD's control socket; one command at a time (`command` holds a lock)."""

    def __init__(self, stream: trio.SocketStream, version: str) -> None:
        self.stream, self.version = stream, version
        self._reader = ReplyReader()
        self._pending: list[Reply] = []
        self._lock = trio.Lock()

    @classmethod
    async def connect(cls, path: Path, timeout: float = 2.0) -> "BirdControl":
        with trio.fail_after(timeout):
            stream = await trio.open_unix_socket(str(path))
            try:
                conn = cls(stream, "")
                hello = await conn._reply()
            except BaseException:
                await stream.aclose()
                raise
        if hello.code != GREETING:
            await stream.aclose()
            raise BirdError("(greeting)", hello.code, hello.text)
        conn.version = hello.text.removesuffix(" ready.")
        return conn

    async def _reply(self) -> Reply:
        while not self._pending:
            data = await self.stream.receive_some(65536)
            if not data:
                raise BirdError("", 0, "control socket closed")
            self._pending += self._reader.feed(data)
        return self._pending.pop(0)

    async def command(self, line: str, timeout: float = 5.0) -> Reply:
        """Send one command, return its reply; BirdError if BIRD refused it."""
        if "\n" in line:
            raise ValueError(f"one command per line: {line!r}")
        async with self._lock:
            with trio.fail_after(timeout):
                await self.stream.send_all(line.encode() + b"\n")
                reply = await self._reply()
        if not reply.ok:
            raise BirdError(line, reply.code, reply.text)
        return reply

    async def aclose(self) -> None:
        await self.stream.aclose()
