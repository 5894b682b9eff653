"""KernelWriter: RIB selections to a real kernel table in a namespace (root only), in the bounded
batches of a burst, with the changes that arrive while a send is in flight."""
from __future__ import annotations

import ipaddress

import pytest
import trio

from calico_bgp.agent.kernel_writer import KERNEL_BATCH, KernelWriter
from calico_bgp.agent.sampling import kernel_figures
from calico_bgp.agent.snapshot import metrics_sample
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.rib import Rib
from calico_bgp.telemetry.metrics import Metrics
from dataplane.routes.programmer import RouteProgrammer
from lab.net import sh
from tests.integration.test_route_programmer import Lab, lab, routes  # noqa: F401 - the fixture
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.root]

PEER = Peer("198.18.1.2", 65001, "198.18.1.2", ibgp=False)
N = 3 * KERNEL_BATCH + 100  # more than one batch, and a last partial one


def prefixes(first: str, n: int) -> list[Prefix]:
    base = int(ipaddress.IPv4Address(first))
    return [Prefix(4, base + i, 32) for i in range(n)]


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
        attrs_ = PathAttributes("198.18.1.2", as_path=(65001,))
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


async def test_one_route_that_cannot_be_built_or_is_refused_never_blocks_the_others(lab: Lab):  # noqa: F811
    """It used to be: one learned route with next hop 'no-nexthop' (no kernel route can express it) made
    every later batch and full resync fail. Now it and a route the kernel refuses (its gateway is on
    no link) are reported once each, the refused one is sent again after a back-off (not at every
    reconcile), and every other route follows the RIB: after a change, after a full resync, and on
    withdrawal."""
    rib = Rib(LocalSpeaker(64512, "198.18.1.1"))
    metrics = Metrics()
    reports: list[tuple[list, list]] = []
    good = prefixes("198.19.0.0", 300)
    unbuildable, refused = Prefix.of("198.19.64.0/26"), Prefix.of("198.19.65.0/26")
    attrs_ = PathAttributes("198.18.1.2", as_path=(65001,))
    async with RouteProgrammer(netns=lab.host, resync_interval=60.0) as rp, trio.open_nursery() as nursery:
        rp.end_grace()
        await nursery.start(rp.run)
        metrics.watch(lambda: metrics_sample((), **kernel_figures(rp)))  # read at scrape time, as the agent's are
        writer = KernelWriter(rp, metrics, lambda: (rib, "n1", {}, set(), []), lambda: None)
        writer.on_failures = lambda new, recovered: reports.append((new, recovered))
        nursery.start_soon(writer.run)
        writer.mark_full()
        # the bad routes come in the same UPDATE batch as the first good ones
        writer.mark_changed(rib.update(PEER, {unbuildable: PathAttributes("no-nexthop"), refused: PathAttributes("198.18.99.9"),
                                              **dict.fromkeys(good[:100], attrs_)}), trio.current_time())
        await wait_for(lambda: set(routes(lab.host)) == {str(p) for p in good[:100]}, "the good routes of the batch")
        # a later change: more good routes arrive, some leave
        writer.mark_changed(rib.update(PEER, dict.fromkeys(good[100:], attrs_), good[:50]), trio.current_time())
        await wait_for(lambda: set(routes(lab.host)) == {str(p) for p in good[50:]}, "the kernel to follow a change")
        # full resyncs (the agent makes one on every datastore change), one with a withdrawal in it
        t0 = trio.current_time()
        for i in range(25):
            writer.mark_full()
            if i == 5:
                writer.mark_changed(rib.update(PEER, {}, good[50:60]), trio.current_time())
            await trio.sleep(0.1)
        await wait_for(lambda: set(routes(lab.host)) == {str(p) for p in good[60:]}, "the kernel after full resyncs")
        failures = {f.prefix: f for f in rp.failures.values()}
        assert set(failures) == {str(unbuildable), str(refused)}
        assert failures[str(unbuildable)].op == "build" and "no-nexthop" in failures[str(unbuildable)].reason
        assert failures[str(refused)].op == "add" and "unreachable" in failures[str(refused)].reason.lower()
        # sent again after 1 s, then 2 s more: not at each of the 25 reconciles
        assert rp.counts.errors <= 3, rp.counts.errors
        assert failures[str(refused)].attempts == rp.counts.errors and trio.current_time() - t0 >= 2.5
        # reported once per prefix and reason, however often retried
        told = [f.prefix for new, _ in reports for f in new]
        assert sorted(told) == sorted([str(unbuildable), str(refused)])
        assert sample(metrics, "calico_bgp_kernel_route_failures", stage="build") == 1
        assert sample(metrics, "calico_bgp_kernel_route_failures", stage="kernel") == 1
        assert sample(metrics, "calico_bgp_route_failures_total", stage="kernel") == 1
        assert rp.in_kernel_count() == len(good) - 60

        # its gateway becomes reachable: the next retry installs it, and its recovery is reported
        sh("ip", "addr", "add", "198.18.99.1/24", "dev", "v2", ns=lab.host)
        await wait_for(lambda: str(refused) in routes(lab.host), "the refused route, retried", timeout=10.0)
        await wait_for(lambda: any(str(refused) in rec for _, rec in reports), "its recovery reported")
        # the unbuildable one is replaced by a usable path: programmed, recovered
        writer.mark_changed(rib.update(PEER, {unbuildable: attrs_}), trio.current_time())
        await wait_for(lambda: str(unbuildable) in routes(lab.host), "the rebuilt route")
        await wait_for(lambda: not rp.failures, "no failure left")
        assert sample(metrics, "calico_bgp_kernel_route_failures", stage="build") == 0
        # withdrawn, everything leaves
        writer.mark_changed(rib.update(PEER, {}, [unbuildable, refused, *good[60:]]), trio.current_time())
        await wait_for(lambda: routes(lab.host) == {}, "every route gone")
        nursery.cancel_scope.cancel()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise AssertionError(f"no sample {name} {labels}")


async def test_a_priority_set_on_import_is_the_kernel_metric_and_a_change_leaves_one_route(lab: Lab):  # noqa: F811
    """BGPFilter setPriority -> krt_metric (Calico's template_funcs.go filterOperationStatements):
    the route is in the kernel at that metric, and when the priority goes the route at metric 0
    replaces it rather than joining it."""
    from tests.unit.test_kernel_metric import P, TOR, rib

    r = rib()
    tagged = PathAttributes("198.18.1.1", as_path=(65001,), communities=((65000, 100),))
    async with RouteProgrammer(netns=lab.host, resync_interval=60.0) as rp, trio.open_nursery() as nursery:
        rp.end_grace()
        writer = KernelWriter(rp, Metrics(), lambda: (r, "n1", {}, set(), []), lambda: None)
        nursery.start_soon(writer.run)
        writer.mark_full()
        writer.mark_changed(r.update(TOR, {P: tagged}), trio.current_time())
        await wait_for(lambda: [x.get("metric", 0) for x in _routes_to(lab.host, P)] == [512], "the route at metric 512")
        writer.mark_changed(r.update(TOR, {P: PathAttributes("198.18.1.1", as_path=(65001,))}), trio.current_time())
        await wait_for(lambda: [x.get("metric", 0) for x in _routes_to(lab.host, P)] == [0], "one route, at metric 0")
        writer.mark_full()  # a full rebuild agrees
        await trio.sleep(0.3)
        assert [x.get("metric", 0) for x in _routes_to(lab.host, P)] == [0]
        nursery.cancel_scope.cancel()


def _routes_to(ns: str, prefix: Prefix) -> list[dict]:
    from tests.integration.test_route_programmer import ip_json
    return ip_json(ns, "-4", "route", "show", "exact", str(prefix))
