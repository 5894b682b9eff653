"""The API process ExaBGP runs: relays its output to the agent over a unix socket, and back.

    python -m calico_bgp.speaker.bridge --socket PATH

ExaBGP writes JSON messages and command acks to our stdin; we write commands to our stdout.
Stdin is read by its own thread from start to EOF, whatever happens to the agent: ExaBGP blocks
(all sessions with it) once ~64 KiB of unread acks fill the pipe. While the agent is away, lines
are kept up to a bound and the oldest dropped (counted). Standard library only: it starts fast.
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
import socket
import sys
import threading
import time

log = logging.getLogger("calico_bgp.speaker.bridge")

MAX_BUFFERED_LINES = 500_000
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
        delay = 0.05
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="the agent's unix socket")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="bridge %(message)s")
    return Relay(args.socket).run(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
