"""Network namespaces and veth pairs for tests: unique names, removed on exit even when a test fails.

Only 198.18.0.0/15 and 2001:db8::/32 are used on these links, never anything else.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from typing import Iterator

import pytest

_ids = itertools.count()

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")


def sh(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def unique(tag: str) -> str:
    # short: interface names are at most 15 characters
    return f"cb{os.getpid() % 10000}{tag}{next(_ids)}"


@contextlib.contextmanager
def netns(tag: str = "n") -> Iterator[str]:
    """A new namespace with lo up; deleted (with everything in it) on exit."""
    name = unique(tag)
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "link", "set", "lo", "up", ns=name)
        yield name
    finally:
        # processes started inside must be gone first or the netns file lingers
        pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        sh("ip", "netns", "del", name, check=False)


def veth(ns_a: str, if_a: str, ns_b: str, if_b: str, addrs_a: tuple[str, ...] = (), addrs_b: tuple[str, ...] = ()) -> None:
    """Connect two namespaces with a veth pair; both ends up, with the given addresses (CIDR form)."""
    tmp_a, tmp_b = unique("a"), unique("b")
    sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
    sh("ip", "link", "set", tmp_a, "netns", ns_a, "name", if_a)
    sh("ip", "link", "set", tmp_b, "netns", ns_b, "name", if_b)
    for ns, ifname, addrs in ((ns_a, if_a, addrs_a), (ns_b, if_b, addrs_b)):
        for addr in addrs:
            extra = ["nodad"] if ":" in addr else []
            sh("ip", "addr", "add", addr, "dev", ifname, *extra, ns=ns)
        sh("ip", "link", "set", ifname, "up", ns=ns)
