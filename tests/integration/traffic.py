"""Tiny traffic tools the filter tests run inside namespaces (`ip netns exec NS python -m ...`).

    sink PORT               count UDP datagrams per source until SIGTERM; print JSON
                            {counts: {src: n}, seqs: {src: [first sequence numbers]}}
    send SRC DST PORT PPS   send numbered UDP datagrams from SRC until SIGTERM; print JSON {"sent": n}
    listen PORT             accept TCP connections on every address (v4 and v6) until killed
    connect SRC DST PORT T  connect from SRC within T seconds: exit 0 if it did, 1 if not
"""
from __future__ import annotations

import json
import signal
import socket
import sys
import time


def _seq(data: bytes) -> int:
    return int.from_bytes(data[:8], "big") if len(data) >= 8 else -1


def sink(port: int) -> None:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("::", port))
    counts: dict[str, int] = {}
    seqs: dict[str, list[int]] = {}   # the first few sequence numbers per source, to tell when
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    s.settimeout(0.05)
    print("ready", flush=True)
    while True:
        try:
            data, addr = s.recvfrom(2048)
        except (socket.timeout, InterruptedError):
            if stop:
                break
            continue
        src = addr[0].removeprefix("::ffff:")
        counts[src] = counts.get(src, 0) + 1
        if len(seqs.setdefault(src, [])) < 20:
            seqs[src].append(_seq(data))
    print(json.dumps({"counts": counts, "seqs": seqs}), flush=True)


def send(src: str, dst: str, port: int, pps: int) -> None:
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((src, 0))
    n = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))   # a flag: the count stays exact
    interval = 1.0 / pps
    start = time.monotonic()
    print("ready", flush=True)
    while not stop:
        s.sendto(n.to_bytes(8, "big") + b"x" * 24, (dst, port))
        n += 1
        delay = start + n * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(json.dumps({"sent": n, "start": start}), flush=True)


def listen(port: int) -> None:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(64)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        c.close()


def connect(src: str, dst: str, port: int, timeout: float) -> int:
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(timeout)
    try:
        s.connect((dst, port))
    except OSError:
        return 1
    s.close()
    return 0


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "sink":
        sink(int(args[0]))
    elif cmd == "send":
        send(args[0], args[1], int(args[2]), int(args[3]))
    elif cmd == "listen":
        listen(int(args[0]))
    elif cmd == "connect":
        return connect(args[0], args[1], int(args[2]), float(args[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
