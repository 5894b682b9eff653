"""RouteProgrammer against a real kernel, in namespaces the tests create (root only).

Layout: namespace `host` (where routes are programmed) joined to namespace `peer` by two veth pairs:
v1 198.18.1.1/24 + 2001:db8:1::1/64 <-> p1 .2, and v2 198.18.2.1/24 + 2001:db8:2::1/64 <-> p2 .2.
"""
from __future__ import annotations

import json
import sys
import time

import attrs
import pytest
import trio

from dataplane.routes.programmer import RouteProgrammer
from dataplane.routes.route import InvalidRoute, NextHop, Route
from lab.net import netns, sh, veth
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.root]

PROTO = 86
GW1, GW2 = "198.18.1.2", "198.18.2.2"
GW1_6, GW2_6 = "2001:db8:1::2", "2001:db8:2::2"


@attrs.frozen
class Lab:
    host: str
    peer: str


@pytest.fixture
def lab():
    with netns("h") as host, netns("p") as peer:
        veth(host, "v1", peer, "p1", ("198.18.1.1/24", "2001:db8:1::1/64"), ("198.18.1.2/24", "2001:db8:1::2/64"))
        veth(host, "v2", peer, "p2", ("198.18.2.1/24", "2001:db8:2::1/64"), ("198.18.2.2/24", "2001:db8:2::2/64"))
        yield Lab(host, peer)


def ip_json(ns: str, *args: str) -> list[dict]:
    out = sh("ip", "-j", *args, ns=ns).stdout.strip()
    return json.loads(out) if out else []


def routes(ns: str, family: str = "-4", table: str = "main", proto: str | None = str(PROTO)) -> dict[str, dict]:
    """Routes of a table by prefix (host routes get their /32 or /128 back)."""
    args = [family, "route", "show", "table", table] + (["proto", proto] if proto else [])
    out = {}
    for r in ip_json(ns, *args):
        dst = r["dst"]
        if "/" not in dst and dst != "default":
            dst += "/128" if ":" in dst else "/32"
        out[dst] = r
    return out


def gateways(route: dict) -> list[tuple[str, str]]:
    hops = route.get("nexthops") or [route]
    return sorted((h.get("gateway", ""), h.get("dev", "")) for h in hops)


def programmer(lab: Lab, **kw) -> RouteProgrammer:
    kw.setdefault("resync_interval", 60.0)
    return RouteProgrammer(netns=lab.host, **kw)


async def eventually(check, timeout: float = 1.0, step: float = 0.02):
    """Poll `check()` until it is truthy; returns (value, seconds it took)."""
    started = time.monotonic()
    while True:
        value = check()
        if value:
            return value, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout}s: {check.__name__}")
        await trio.sleep(step)


async def test_add_replace_delete(lab):
    async with programmer(lab) as rp:
        a = Route.via("198.18.10.0/24", GW1)
        b = Route.via("198.18.11.1/32", GW1, metric=50)
        rp.set_desired([a, b])
        res = await rp.reconcile()
        assert (res.adds, res.replaces, res.deletes, res.failures) == (2, 0, 0, ())
        got = routes(lab.host)
        assert gateways(got["198.18.10.0/24"]) == [(GW1, "v1")]
        assert got["198.18.11.1/32"]["metric"] == 50

        rp.set_desired([Route.via("198.18.10.0/24", GW2), b])
        res = await rp.reconcile()
        assert (res.adds, res.replaces, res.deletes) == (0, 1, 0)  # a replace, never delete + add
        assert gateways(routes(lab.host)["198.18.10.0/24"]) == [(GW2, "v2")]

        rp.set_desired([Route.via("198.18.10.0/24", GW2)])
        res = await rp.reconcile()
        assert (res.adds, res.replaces, res.deletes) == (0, 0, 1)
        assert set(routes(lab.host)) == {"198.18.10.0/24"}

        res = await rp.reconcile()
        assert res.changes == 0 and res.unchanged == 1
        assert rp.counts.changes == 4 and rp.counts.errors == 0


async def test_ecmp_across_two_veths_and_back_to_one(lab):
    async with programmer(lab) as rp:
        rp.set_desired([Route.via("198.18.20.0/24", GW1, GW2)])
        await rp.reconcile()
        assert gateways(routes(lab.host)["198.18.20.0/24"]) == [(GW1, "v1"), (GW2, "v2")]
        before = rp.counts
        assert (await rp.reconcile()).changes == 0

        rp.set_desired([Route.via("198.18.20.0/24", GW1)])
        res = await rp.reconcile()
        assert (res.replaces, res.adds, res.deletes) == (1, 0, 0)
        assert gateways(routes(lab.host)["198.18.20.0/24"]) == [(GW1, "v1")]

        weighted = Route(prefix="198.18.20.0/24", nexthops=[NextHop(gateway=GW1, weight=3), NextHop(gateway=GW2, device="v2")])
        rp.set_desired([weighted])
        await rp.reconcile()
        hops = {h["gateway"]: h["weight"] for h in routes(lab.host)["198.18.20.0/24"]["nexthops"]}
        assert hops == {GW1: 3, GW2: 1}
        assert (await rp.reconcile()).changes == 0
        assert (rp.counts - before).replaces == 2


async def test_blackhole_block_with_a_more_specific_unicast_inside(lab):
    async with programmer(lab) as rp:
        rp.set_desired([Route.blackhole("198.18.64.0/26"), Route.via("198.18.64.5/32", GW1), Route.unreachable("198.18.65.0/24")])
        res = await rp.reconcile()
        assert res.adds == 3 and not res.failures
        got = routes(lab.host)
        assert got["198.18.64.0/26"]["type"] == "blackhole"
        assert got["198.18.65.0/24"]["type"] == "unreachable"
        assert ip_json(lab.host, "route", "get", "198.18.64.5")[0]["gateway"] == GW1
        assert sh("ip", "route", "get", "198.18.64.6", ns=lab.host, check=False).returncode != 0  # blackholed
        assert (await rp.reconcile()).changes == 0


async def test_ipv6_single_and_ecmp(lab):
    async with programmer(lab) as rp:
        rp.set_desired([
            Route.via("2001:db8:100::/64", GW1_6),
            Route.via("2001:db8:101::/64", GW1_6, GW2_6),
            Route.blackhole("2001:db8:ff00::/40"),
        ])
        res = await rp.reconcile()
        assert res.adds == 3 and not res.failures, res.failures
        got = routes(lab.host, "-6")
        assert gateways(got["2001:db8:100::/64"]) == [(GW1_6, "v1")]
        assert gateways(got["2001:db8:101::/64"]) == [(GW1_6, "v1"), (GW2_6, "v2")]
        assert got["2001:db8:ff00::/40"]["type"] == "blackhole"
        assert (await rp.reconcile()).changes == 0

        rp.set_desired([Route.via("2001:db8:100::/64", GW2_6), Route.via("2001:db8:101::/64", GW2_6)])
        res = await rp.reconcile()
        assert (res.adds, res.replaces, res.deletes) == (0, 2, 1)
        got = routes(lab.host, "-6")
        assert gateways(got["2001:db8:101::/64"]) == [(GW2_6, "v2")]
        assert set(got) == {"2001:db8:100::/64", "2001:db8:101::/64"}
        assert (await rp.reconcile()).changes == 0


async def test_foreign_routes_untouched_through_every_reconcile(lab):
    sh("ip", "route", "add", "198.18.30.0/24", "via", GW1, "proto", "static", ns=lab.host)
    sh("ip", "route", "add", "198.18.31.0/24", "via", GW2, "proto", "87", ns=lab.host)  # one of our keys, not ours
    sh("ip", "-6", "route", "add", "2001:db8:30::/64", "via", GW1_6, "proto", "static", ns=lab.host)
    sh("ip", "route", "add", "198.18.32.0/24", "via", GW1, "proto", str(PROTO), "table", "100", ns=lab.host)  # our proto, other table
    snapshot = lambda: (routes(lab.host, proto=None), routes(lab.host, "-6", proto=None), routes(lab.host, table="100", proto=None))  # noqa: E731
    foreign = {"198.18.30.0/24", "198.18.31.0/24"}

    def foreign_part():
        v4, v6, t100 = snapshot()
        return ({k: v for k, v in v4.items() if k in foreign}, v6.get("2001:db8:30::/64"), t100)

    before = foreign_part()
    async with programmer(lab) as rp:
        assert rp.adopted == 0
        rp.set_desired([Route.via("198.18.31.0/24", GW1), Route.via("198.18.33.0/24", GW1)])
        res = await rp.reconcile()
        # the foreign route on our key is a conflict reported with the kernel's reason, not overwritten
        assert res.adds == 2 and len(res.failures) == 1  # both sent, one refused
        failure = res.failures[0]
        assert failure.prefix == "198.18.31.0/24" and "File exists" in failure.reason
        assert foreign_part() == before
        rp.end_grace()
        rp.set_desired([])
        res = await rp.reconcile()
        assert res.deletes == 1
        assert foreign_part() == before
        assert (await rp.reconcile()).changes == 0
        assert foreign_part() == before


async def test_route_deleted_or_changed_by_hand_comes_back_within_a_second(lab):
    async with programmer(lab) as rp:
        mine = [Route.via(f"198.18.40.{i}/32", GW1) for i in range(20)] + [Route.via("2001:db8:40::/64", GW1_6)]
        rp.set_desired(mine)
        async with trio.open_nursery() as nursery:
            await nursery.start(rp.run)
            assert len(routes(lab.host)) == 20

            sh("ip", "route", "del", "198.18.40.7/32", ns=lab.host)
            _, took = await eventually(lambda: "198.18.40.7/32" in routes(lab.host))
            assert took < 1.0

            sh("ip", "-6", "route", "del", "2001:db8:40::/64", ns=lab.host)
            await eventually(lambda: "2001:db8:40::/64" in routes(lab.host, "-6"))

            sh("ip", "route", "replace", "198.18.40.3/32", "via", GW2, "proto", str(PROTO), ns=lab.host)
            await eventually(lambda: gateways(routes(lab.host)["198.18.40.3/32"]) == [(GW1, "v1")])

            sh("ip", "route", "add", "198.18.41.0/24", "via", GW2, "proto", str(PROTO), ns=lab.host)  # stale, ours
            rp.end_grace()
            await eventually(lambda: "198.18.41.0/24" not in routes(lab.host))
            nursery.cancel_scope.cancel()


async def test_restart_with_same_set_changes_nothing_and_smaller_set_removes_the_difference(lab):
    full = [Route.via(f"198.18.50.{i}/32", GW1) for i in range(50)] + [
        Route.via("198.18.51.0/24", GW1, GW2),
        Route.blackhole("198.18.52.0/26"),
        Route.via("2001:db8:50::/64", GW1_6, GW2_6),
    ]
    async with programmer(lab) as rp:
        rp.set_desired(full)
        assert (await rp.reconcile()).adds == len(full)
    before = routes(lab.host), routes(lab.host, "-6")

    async with programmer(lab) as rp:  # a restart: same desired set
        assert rp.adopted == len(full) and rp.in_grace
        rp.set_desired(full)
        await rp.reconcile()
        rp.end_grace()
        await rp.reconcile()
        assert rp.counts.changes == 0 and rp.counts.errors == 0
    assert (routes(lab.host), routes(lab.host, "-6")) == before

    smaller = full[10:]
    async with programmer(lab) as rp:  # a restart with less wanted
        rp.set_desired([])  # while the desired state is rebuilt, nothing adopted goes
        res = await rp.reconcile()
        assert res.changes == 0 and res.kept == len(full)
        rp.set_desired(smaller)
        assert (await rp.reconcile()).changes == 0
        rp.end_grace()
        res = await rp.reconcile()
        assert (res.adds, res.replaces, res.deletes) == (0, 0, 10)
        assert rp.counts.changes == 10
    gone = {str(r.prefix) for r in full[:10]}
    assert set(before[0]) - set(routes(lab.host)) == gone


async def test_bad_input_reported_with_reason_rest_programmed(lab):
    with pytest.raises(InvalidRoute) as err:
        Route.via("198.18.60.1/24", GW1)
    assert err.value.field == "prefix" and "198.18.60.1/24" in str(err.value)

    async with programmer(lab) as rp:
        good = [Route.via(f"198.18.61.{i}/32", GW1) for i in range(100)]
        off_link = Route.via("198.18.62.0/24", "198.18.99.9")  # no link reaches this gateway
        no_device = Route(prefix="198.18.63.0/24", nexthops=[NextHop(gateway=GW1, device="nosuchdev")])
        bad_v6 = Route.via("2001:db8:60::/64", "2001:db8:99::9")
        rp.set_desired(good[:50] + [off_link, no_device, bad_v6] + good[50:])
        res = await rp.reconcile()
        assert res.adds == 102  # the 100 good ones, plus two the kernel refused (no device: never sent)
        by_prefix = {f.prefix: f for f in res.failures}
        assert set(by_prefix) == {"198.18.62.0/24", "198.18.63.0/24", "2001:db8:60::/64"}
        assert by_prefix["198.18.62.0/24"].route == off_link
        assert "Network is unreachable" in by_prefix["198.18.62.0/24"].reason
        assert "gateway" in by_prefix["198.18.62.0/24"].reason.lower()  # the kernel's extended ack text
        assert "nosuchdev" in by_prefix["198.18.63.0/24"].reason
        assert rp.counts.errors == 2
        assert set(rp.unreachable) == {"198.18.62.0/24", "198.18.63.0/24", "2001:db8:60::/64"}
        assert len([p for p in routes(lab.host) if p.startswith("198.18.61.")]) == 100


async def test_link_down_reports_unreachable_and_link_up_restores(lab):
    async with programmer(lab) as rp:
        rp.set_desired([Route.via("198.18.70.0/24", GW2), Route.via("198.18.71.0/24", GW1)])
        async with trio.open_nursery() as nursery:
            await nursery.start(rp.run)
            sh("ip", "link", "set", "v2", "down", ns=lab.host)
            await eventually(lambda: "198.18.70.0/24" in rp.unreachable, timeout=2.0)
            assert "198.18.71.0/24" in routes(lab.host)
            sh("ip", "link", "set", "v2", "up", ns=lab.host)
            await eventually(lambda: "198.18.70.0/24" in routes(lab.host), timeout=3.0)
            await eventually(lambda: not rp.unreachable, timeout=2.0)
            nursery.cancel_scope.cancel()


async def test_other_table_and_protocol(lab):
    async with programmer(lab, table=1000, protocol=91) as rp:
        rp.set_desired([Route.via("198.18.80.0/24", GW1), Route.via("2001:db8:80::/64", GW1_6)])
        assert (await rp.reconcile()).adds == 2
        assert set(routes(lab.host, table="1000", proto="91")) == {"198.18.80.0/24"}
        assert set(routes(lab.host, "-6", table="1000", proto="91")) == {"2001:db8:80::/64"}
        assert "198.18.80.0/24" not in routes(lab.host, proto=None)
        assert (await rp.reconcile()).changes == 0


async def test_device_routes_and_gateway_pinned_to_a_device(lab):
    async with programmer(lab) as rp:
        rp.set_desired([
            Route.via("198.18.90.0/24", device="v1"),
            Route.via("2001:db8:90::/64", device="v2"),
            Route(prefix="198.18.91.0/24", nexthops=[NextHop(gateway=GW2, device="v2")]),
            Route(prefix="198.18.92.0/24", nexthops=[NextHop(device="v1"), NextHop(device="v2")]),
        ])
        res = await rp.reconcile()
        assert res.adds == 4 and not res.failures, res.failures
        got = routes(lab.host)
        assert got["198.18.90.0/24"]["dev"] == "v1" and got["198.18.90.0/24"].get("scope") == "link"
        assert gateways(got["198.18.91.0/24"]) == [(GW2, "v2")]
        assert gateways(got["198.18.92.0/24"]) == [("", "v1"), ("", "v2")]
        assert routes(lab.host, "-6")["2001:db8:90::/64"]["dev"] == "v2"
        assert (await rp.reconcile()).changes == 0

        rp.set_desired([Route.via("198.18.90.0/24", device="v2")])  # same prefix, other device: a replace
        res = await rp.reconcile()
        assert (res.replaces, res.deletes) == (1, 3)
        assert routes(lab.host)["198.18.90.0/24"]["dev"] == "v2"


def test_runs_under_ip_netns_exec_without_a_netns_argument(lab):
    """The lab's way: one agent process per namespace, started with `ip netns exec`."""
    script = (
        "import trio\n"
        "from dataplane.routes.programmer import RouteProgrammer\nfrom dataplane.routes.route import Route\n"
        "async def main():\n"
        "    async with RouteProgrammer(resync_interval=60) as rp:\n"
        f"        rp.set_desired([Route.via('198.18.95.0/24', '{GW1}')])\n"
        "        r = await rp.reconcile()\n"
        "        assert r.adds == 1 and not r.failures, r\n"
        "trio.run(main)\n"
    )
    done = sh(sys.executable, "-c", script, ns=lab.host, check=False)
    assert done.returncode == 0, done.stderr
    assert gateways(routes(lab.host)["198.18.95.0/24"]) == [(GW1, "v1")]


async def test_watching_and_resyncing_an_unchanged_set_sends_nothing(lab):
    async with programmer(lab, resync_interval=0.1) as rp:
        rp.set_desired([Route.via(f"198.18.96.{i}/32", GW1, GW2) for i in range(30)] + [Route.via("2001:db8:96::/64", GW1_6)])
        async with trio.open_nursery() as nursery:
            await nursery.start(rp.run)
            after_first = rp.counts
            assert after_first.adds == 31
            await eventually(lambda: rp.reconciles >= 4, timeout=5.0)
            assert rp.counts == after_first
            nursery.cancel_scope.cancel()


async def test_incremental_changes_send_only_themselves_and_never_overwrite_a_foreign_route(lab):
    sh("ip", "route", "add", "198.18.41.0/24", "via", GW2, "proto", "87", ns=lab.host)  # a key we will want, not ours
    async with programmer(lab) as rp:
        rp.end_grace()
        rp.set_desired([Route.via("198.18.40.0/24", GW1)])
        await rp.reconcile()
        assert await rp.program() is None  # nothing pending

        assert rp.update_desired([Route.via("198.18.40.0/24", GW2), Route.via("198.18.42.0/24", GW1),
                                  Route.via("198.18.41.0/24", GW1)]) == 3
        assert rp.update_desired([Route.via("198.18.42.0/24", GW1)]) == 0  # already desired so
        res = await rp.program()
        # a replace of ours, an add; the foreign route on 198.18.41.0/24 refuses the exclusive add
        assert (res.adds, res.replaces, res.deletes, res.failures) == (2, 1, 0, ())
        got = routes(lab.host, proto=None)
        assert gateways(got["198.18.40.0/24"]) == [(GW2, "v2")] and gateways(got["198.18.42.0/24"]) == [(GW1, "v1")]
        assert got["198.18.41.0/24"]["protocol"] == "87" and gateways(got["198.18.41.0/24"]) == [(GW2, "v2")]

        # the refused add asked for a full reconcile: it reports the conflict, and still does not overwrite
        res = await rp.reconcile()
        assert [f.prefix for f in res.failures] == ["198.18.41.0/24"]
        assert routes(lab.host, proto=None)["198.18.41.0/24"]["protocol"] == "87"

        assert rp.update_desired(removed=[Route.via("198.18.42.0/24", GW1).key, Route.via("198.18.41.0/24", GW1).key]) == 2
        res = await rp.program()
        assert res.deletes == 1  # ours only: the foreign route was never ours to delete
        got = routes(lab.host, proto=None)
        assert "198.18.42.0/24" not in got and got["198.18.41.0/24"]["protocol"] == "87"
        assert set(routes(lab.host)) == {"198.18.40.0/24"}
        assert (await rp.reconcile()).changes == 0


async def test_a_failed_incremental_send_is_settled_by_a_full_reconcile(lab):
    """program() takes the pending changes before it sends them; when the send itself fails (an ack
    timeout, ENOBUFS) they must not be forgotten until the next periodic resync."""
    from dataplane import netlink

    async with programmer(lab, resync_interval=60.0) as rp:
        rp.end_grace()
        rp.set_desired([Route.via("198.18.50.0/24", GW1)])
        async with trio.open_nursery() as nursery:
            await nursery.start(rp.run)
            rp.update_desired([Route.via("198.18.51.0/24", GW1)], [Route.via("198.18.50.0/24", GW1).key])
            real_send = rp._send

            async def failing_send(*args, **kw):
                raise netlink.NetlinkError("injected: no ack")

            rp._send = failing_send
            with pytest.raises(netlink.NetlinkError):
                await rp.program()
            rp._send = real_send
            assert await rp.program() is None  # nothing is pending any more: the reconcile has it
            await eventually(lambda: set(routes(lab.host)) == {"198.18.51.0/24"}, timeout=2.0)
            nursery.cancel_scope.cancel()


async def test_a_route_whose_replace_failed_is_still_ours_to_delete(lab):
    """The kernel refuses the new next hop (unreachable): our old route stays, and when the prefix is
    withdrawn the incremental path must still delete it, not wait for the next full reconcile."""
    async with programmer(lab) as rp:
        rp.end_grace()
        rp.set_desired([Route.via("198.18.60.0/24", GW1)])
        await rp.reconcile()
        rp.set_desired([Route.via("198.18.60.0/24", "198.18.99.2")])  # on no link of the host
        res = await rp.reconcile()
        assert [(f.prefix, f.op) for f in res.failures] == [("198.18.60.0/24", "replace")]
        assert gateways(routes(lab.host)["198.18.60.0/24"]) == [(GW1, "v1")]  # the old one forwards still
        rp.update_desired(removed=[Route.via("198.18.60.0/24", GW1).key])
        res = await rp.program()
        assert res.deletes == 1 and "198.18.60.0/24" not in routes(lab.host)


async def test_a_weight_on_a_lone_next_hop_is_not_a_change_at_every_reconcile(lab):
    async with programmer(lab) as rp:
        rp.end_grace()
        rp.set_desired([Route("2001:db8:61::/64", nexthops=[NextHop(gateway=GW1_6, weight=5)]),
                        Route("198.18.61.0/24", nexthops=[NextHop(gateway=GW1, weight=5)])])
        assert (await rp.reconcile()).adds == 2
        res = await rp.reconcile()
        assert (res.changes, res.unchanged) == (0, 2)


async def test_a_new_link_alone_does_not_make_a_full_reconcile_but_a_lost_one_does(lab):
    async with programmer(lab) as rp:
        rp.set_desired([Route.via("198.18.62.0/24", GW1)])
        async with trio.open_nursery() as nursery:
            await nursery.start(rp.run)
            before = rp.reconciles
            sh("ip", "link", "add", "wl0", "type", "veth", "peer", "name", "wl1", ns=lab.host)  # a workload's appears
            sh("ip", "link", "set", "wl1", "up", ns=lab.host)
            sh("ip", "link", "set", "wl0", "up", ns=lab.host)
            await trio.sleep(0.5)
            assert rp.reconciles == before
            sh("ip", "link", "del", "wl0", ns=lab.host)  # gone: it might have carried routes of ours
            await eventually(lambda: rp.reconciles > before, timeout=2.0)
            nursery.cancel_scope.cancel()
