"""BFD control packets a misbehaving peer sends (RFC 5880 section 4.1), from a raw UDP socket to port
3784 (RFC 5881): run inside the peer's namespace as

    python -m tests.e2e.bfd_packets DST --ttl 64 [--version 1] [--your-disc 0] [--count 50] [--interval 0.02]

Each packet says "Down" with the given TTL, version and Your Discriminator: a receiver that checked
none of them would take the session down (a Down from the peer ends an Up session, RFC 5880 6.8.6).
"""
from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
import time

BFD_PORT = 3784
STATE_DOWN = 1


def control_packet(version: int, my_disc: int, your_disc: int, state: int = STATE_DOWN, detect_mult: int = 3,
                   min_tx_us: int = 100_000, min_rx_us: int = 100_000) -> bytes:
    """One BFD control packet without authentication (24 bytes)."""
    return struct.pack("!BBBBIIIII", (version & 0x7) << 5, (state & 0x3) << 6, detect_mult, 24,
                       my_disc, your_disc, min_tx_us, min_rx_us, 0)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("dst")
    p.add_argument("--ttl", type=int, default=255)
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--your-disc", type=lambda x: int(x, 0), default=0)
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--interval", type=float, default=0.02)
    a = p.parse_args(argv)
    six = ":" in a.dst
    s = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6 if six else socket.IPPROTO_IP,
                 socket.IPV6_UNICAST_HOPS if six else socket.IP_TTL, a.ttl)
    s.bind(("::" if six else "0.0.0.0", random.randint(49152, 65535)))  # RFC 5881 4: source port 49152..65535
    pkt = control_packet(a.version, random.randint(1, 2**32 - 1), a.your_disc)
    for _ in range(a.count):
        s.sendto(pkt, (a.dst, BFD_PORT))
        time.sleep(a.interval)
    print(f"sent {a.count} packets to {a.dst}:{BFD_PORT} ttl {a.ttl} version {a.version} your-disc {a.your_disc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
