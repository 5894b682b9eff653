"""The one namespace helper leaves nothing behind: a namespace goes with what runs in it even when
the body fails, and a veth that cannot be placed is removed from the host."""
from __future__ import annotations

import os

import pytest

from lab.net import LabError, Process, netns, sh, veth, wait_for
from tests.marks import needs_root

pytestmark = [needs_root]


def _namespaces() -> set[str]:
    return {line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line.strip()}


def _host_links(prefix: str) -> list[str]:
    return [line.split(":")[1].strip().split("@")[0] for line in sh("ip", "-o", "link").stdout.splitlines()
            if line.split(":")[1].strip().startswith(prefix)]


def test_a_namespace_and_its_processes_go_even_when_the_body_fails(tmp_path):
    with pytest.raises(RuntimeError, match="the body failed"), netns("t") as ns:
        proc = Process(None, ns, ["sleep", "300"], tmp_path / "sleep.log")
        wait_for("sleep running in the namespace", lambda: str(proc.pid) in sh("ip", "netns", "pids", ns).stdout,
                 timeout=5, interval=0.05)
        raise RuntimeError("the body failed")
    assert ns not in _namespaces()
    wait_for("sleep gone", lambda: proc.proc.poll() is not None, timeout=5, interval=0.05)


def test_a_veth_with_addresses_joins_two_namespaces():
    with netns("a") as a, netns("b") as b:
        veth(a, "e0", b, "e1", ("198.18.77.1/24", "2001:db8:77::1/64"), ("198.18.77.2/24",))
        assert "198.18.77.1/24" in sh("ip", "-o", "addr", "show", "dev", "e0", ns=a).stdout
        assert sh("ping", "-c", "1", "-W", "2", "198.18.77.2", ns=a, check=False).returncode == 0


def test_a_veth_that_cannot_be_placed_leaves_nothing_on_the_host():
    prefix = f"cb{os.getpid() % 10000}"
    before = set(_host_links(prefix))
    with netns("a") as a:
        with pytest.raises(LabError):
            veth(a, "e0", "cb-no-such-namespace", "e1")
    assert set(_host_links(prefix)) == before


def test_an_address_outside_the_test_ranges_is_refused():
    with netns("a") as a, netns("b") as b:
        with pytest.raises(LabError, match="outside 198.18.0.0/15"):
            veth(a, "e0", b, "e1", ("10.1.1.1/24",))  # refused on purpose
