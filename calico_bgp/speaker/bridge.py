"""The API process ExaBGP runs: relays its output to the agent over a unix socket, and back.

    python -I -S .../calico_bgp/speaker/bridge.py --socket PATH     (what ExaBGP runs: `command()`)
    python -m calico_bgp.speaker.bridge --socket PATH               (the same, by module name)

ExaBGP writes JSON messages and command acks to our stdin; we write commands to our stdout.
Stdin is read by its own thread from start to EOF, whatever happens to the agent: ExaBGP blocks
(all sessions with it) once ~64 KiB of unread acks fill the pipe. While the agent is away, lines
are kept up to a bound and the oldest dropped (counted).

It imports a handful of standard library modules and nothing else (not argparse, not logging), and
ExaBGP runs it as a script in an isolated interpreter without the site module (`-I -S`: no
site-packages, no .pth files, no editable-install finder): it is up about 30 ms of CPU sooner and
holds about 5 MB less than as `-m` of the installed package. A bridge starts on every ExaBGP start,
and the first session of a node waits for it.
"""
from __future__ import annotations

import collections
import os
import socket
import sys
import threading
import time

MAX_BUFFERED_LINES = 500_000
POLL, FAST_FOR = 0.02, 2.0  # connection attempts to the agent: every 20 ms for 2 s, then backing off
ACKS = (b"done", b"error")


class Relay:
    def __init__(self, path: str, max_buffered: int = MAX_BUFFERED_LINES) -> None:
        self.path = path
        self.pending: collections.deque[bytes] = collections.deque()
        self.max_buffered = max_buffered
        self.dropped = 0
        self.cond = threading.Condition()
        self.eof = False
        self.connection_closed = False
        # acks are matched to commands by order; those owed for commands a previous agent
        # connection sent must not reach the next one, where they would answer its commands
        self.outstanding = 0
        self.owed_old = 0
        self.stale_acks = 0
        self.connections = 0

    # ExaBGP -> agent ----------------------------------------------------------------------
    def read_stdin(self, stream) -> None:
        for line in stream:
            with self.cond:
                if line.rstrip(b"\n") in ACKS:
                    if self.owed_old:
                        self.owed_old -= 1
                        self.stale_acks += 1
                        continue
                    if self.outstanding:
                        self.outstanding -= 1
                if len(self.pending) >= self.max_buffered:
                    self.pending.popleft()
                    self.dropped += 1
                self.pending.append(line if line.endswith(b"\n") else line + b"\n")
                self.cond.notify()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def forward(self, sock: socket.socket) -> None:
        """Send pending lines on `sock` until it fails or stdin ends (then flush and return)."""
        while True:
            with self.cond:
                while not self.pending and not self.eof and not self.connection_closed:
                    self.cond.wait()
                if self.connection_closed:
                    return
                batch = list(self.pending)
                self.pending.clear()
                done = self.eof
            if batch:
                try:
                    sock.sendall(b"".join(batch))
                except OSError:
                    with self.cond:  # keep them for the next connection
                        self.pending.extendleft(reversed(batch))
                    return
            if done:
                return

    # agent -> ExaBGP ----------------------------------------------------------------------
    def commands(self, sock: socket.socket, out) -> None:
        reader = sock.makefile("rb")
        for line in reader:
            with self.cond:
                self.outstanding += 1
            out.write(line if line.endswith(b"\n") else line + b"\n")
            out.flush()
        with self.cond:
            self.connection_closed = True
            self.cond.notify_all()

    def connect(self) -> socket.socket:
        """The agent's socket, tried every POLL seconds for the first FAST_FOR seconds (an agent that
        started ExaBGP early listens a moment after the bridge is up), then backing off to 1 s."""
        delay, fast_until = POLL, time.monotonic() + FAST_FOR
        while True:
            with self.cond:
                if self.eof:
                    raise EOFError
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.path)
                return s
            except OSError:
                s.close()
                time.sleep(delay)
                if time.monotonic() >= fast_until:
                    delay = min(delay * 2, 1.0)

    def run(self, stdin, stdout) -> int:
        threading.Thread(target=self.read_stdin, args=(stdin,), daemon=True, name="stdin").start()
        while True:
            try:
                sock = self.connect()
            except EOFError:
                return 0
            with self.cond:
                dropped, self.dropped = self.dropped, 0
                self.connection_closed = False
                if self.connections:
                    # answers to the previous connection's commands, read or still to come, are not for this one
                    kept = [x for x in self.pending if x.rstrip(b"\n") not in ACKS]
                    self.stale_acks += len(self.pending) - len(kept)
                    self.pending = collections.deque(kept)
                    self.owed_old += self.outstanding
                    self.outstanding = 0
                self.connections += 1
            hello = f"bridge hello pid={os.getpid()} exabgp={os.getppid()} dropped={dropped}\n".encode()
            try:
                sock.sendall(hello)
            except OSError:
                sock.close()
                continue
            t = threading.Thread(target=self.commands, args=(sock, stdout), daemon=True, name="commands")
            t.start()
            self.forward(sock)
            with self.cond:
                finished = self.eof and not self.pending
            sock.close()
            if finished:
                return 0
            t.join(timeout=1)


USAGE = "usage: bridge.py --socket PATH"


def command(socket_path: str | os.PathLike[str]) -> list[str]:
    """The command line ExaBGP runs for the bridge: this file as a script, under this interpreter,
    isolated (-I) and without site (-S), relaying to the agent's `socket_path`."""
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), "--socket", os.fspath(socket_path)]


def socket_argument(argv: list[str]) -> str:
    """The --socket PATH (or --socket=PATH) of a bridge command line; ValueError naming what is wrong."""
    if len(argv) == 1 and argv[0].startswith("--socket="):
        path = argv[0].partition("=")[2]
    elif len(argv) == 2 and argv[0] == "--socket":
        path = argv[1]
    else:
        raise ValueError(f"expected --socket PATH, got {' '.join(argv) or 'nothing'}")
    if not path:
        raise ValueError("--socket: an empty path")
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["-h"], ["--help"]):
        print(f"{USAGE}\n{__doc__.splitlines()[0]}")
        return 0
    try:
        path = socket_argument(args)
    except ValueError as exc:
        print(f"{USAGE}\nbridge: error: {exc}", file=sys.stderr)
        return 2
    return Relay(path).run(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
