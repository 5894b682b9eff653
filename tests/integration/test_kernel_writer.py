"""KernelWriter: RIB selections to a real kernel table in a namespace (root only), in the bounded
batches of a burst, with the changes that arrive while a send is in flight."""
from __future__ import annotations

import ipaddress

import pytest
import trio

from calico_bgp.kernel_writer import KERNEL_BATCH, KernelWriter
from calico_bgp.rib import LocalSpeaker, PathAttrs, Peer, Rib
from calico_bgp.telemetry import Metrics
from dataplane.programmer import RouteProgrammer
from tests.integration.test_route_programmer import Lab, lab, routes  # noqa: F401 - the fixture
from tests.netns import needs_root

pytestmark = [needs_root, pytest.mark.root]

PEER = Peer("198.18.1.2", 65001, "198.18.1.2", ibgp=False)
N = 3 * KERNEL_BATCH + 100  # more than one batch, and a last partial one


def prefixes(first: str, n: int) -> list[ipaddress.IPv4Network]:
    base = int(ipaddress.IPv4Address(first))
    return [ipaddress.IPv4Network((base + i, 32)) for i in range(n)]


async def wait_for(check, what: str, timeout: float = 20.0) -> None:
    with trio.move_on_after(timeout):
        while not check():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_burst_reaches_the_kernel_and_leaves_it(lab: Lab):  # noqa: F811 - the fixture
    rib = Rib(LocalSpeaker(64512, "198.18.1.1"))
    metrics = Metrics()
    done: list[int] = []
    async with RouteProgrammer(netns=lab.host, resync_interval=60.0) as rp, trio.open_nursery() as nursery:
        rp.end_grace()
        writer = KernelWriter(rp, metrics, lambda: (rib, "n1", {}, set(), []), lambda: done.append(1))
        nursery.start_soon(writer.run)
        writer.mark_full()
        a, b = prefixes("198.19.0.0", N), prefixes("198.19.128.0", 50)
        attrs_ = PathAttrs("198.18.1.2", as_path=(65001,))
        # a burst in UPDATE-sized pieces, the writer running between them, as under the agent
        for i in range(0, N, 800):
            writer.mark_changed(rib.update(PEER, dict.fromkeys(a[i:i + 800], attrs_)), trio.current_time())
            await trio.sleep(0)
        await wait_for(lambda: len(routes(lab.host)) == N, f"{N} routes in the kernel")
        # changes that land while sends are in flight: b added, the first half of a withdrawn
        writer.mark_changed(rib.update(PEER, dict.fromkeys(b, attrs_), a[:N // 2]), trio.current_time())
        want = {str(p) for p in a[N // 2:] + b}
        await wait_for(lambda: set(routes(lab.host)) == want, "the kernel to follow the RIB")
        assert {r["gateway"] for r in routes(lab.host).values()} == {"198.18.1.2"}  # routes() has only ours
        writer.mark_changed(rib.update(PEER, {}, a[N // 2:] + b), trio.current_time())
        await wait_for(lambda: routes(lab.host) == {}, "every route gone")
        assert done and rp.pending == 0
        # the programming latency is observed (bursts that meet in one send are one observation)
        latency = {s.name: s.value for s in metrics.programming_latency.collect()[0].samples if s.name.endswith(("_count", "_sum"))}
        assert latency["calico_bgp_route_programming_seconds_count"] >= 1
        assert latency["calico_bgp_route_programming_seconds_sum"] > 0
        nursery.cancel_scope.cancel()
