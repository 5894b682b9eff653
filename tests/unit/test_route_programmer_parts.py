"""The route programmer's pure parts: which events are drift, the operations of a change and what
they leave installed, and the failure book (attempts, back-off, unbuildable routes)."""
from __future__ import annotations

import errno
import ipaddress

from dataplane import rtnl_codec as codec
from dataplane.netlink import RequestFailure
from dataplane.routes.changes import (
    DELETE,
    encoder,
    installed_after_program,
    installed_after_reconcile,
    op_counts,
    pending_ops,
    plan_ops,
)
from dataplane.routes.desired_index import DesiredIndex
from dataplane.routes.dump import Link
from dataplane.routes.failures import (
    UNBUILDABLE,
    FailureBook,
    RouteFailure,
    program_refusals,
    reconcile_refusals,
    retry_delay,
)
from dataplane.routes.route import KernelRoute, NextHop, Route
from dataplane.routes.watcher import link_drift, route_drift

OURS, TABLE = 86, 254
UP = codec.IFF_UP | codec.IFF_LOWER_UP
A = Route.via("198.18.1.0/24", "198.18.0.2")
B = Route.via("198.18.2.0/24", "198.18.0.2")
C = Route.via("198.18.3.0/24", "198.18.0.3")


def kernel(route: Route, protocol: int = OURS, gateway: str | None = None) -> KernelRoute:
    fwd = route.forwarding()
    hops = tuple((g if gateway is None else bytes(map(int, gateway.split("."))), 0, w) for g, _d, w in fwd.hops)
    return KernelRoute(route.key, fwd.rtype, hops, 0, protocol, TABLE)


def test_what_a_route_event_says_about_drift():
    want = A.forwarding()
    assert route_drift(kernel(A), False, OURS, want, (), {}) is None  # ours, as desired
    assert route_drift(kernel(A), True, OURS, want, (), {}) == "route_deleted"
    assert route_drift(kernel(A, gateway="198.18.0.9"), False, OURS, want, (), {}) == "route_changed"
    assert route_drift(kernel(A, protocol=3), False, OURS, want, (), {}) == "foreign_route"
    assert route_drift(kernel(A, protocol=3), False, OURS, None, (), {}) is None  # not our key
    assert route_drift(kernel(A), False, OURS, None, (), {}) == "stale_route"
    assert route_drift(kernel(A), False, OURS, None, {A.key}, {}) is None  # kept for the restart grace
    assert route_drift(kernel(A), True, OURS, None, (), {}) is None


def test_what_a_link_event_says_about_drift():
    up, down = Link(3, "veth0", UP), Link(3, "veth0", 0)
    assert link_drift(up, down, False, ()) == (True, False)
    assert link_drift(down, up, False, ()) == (False, True)
    assert link_drift(None, up, False, ()) == (False, True)  # new: a way out, nothing lost
    assert link_drift(up, up, True, ()) == (True, False)
    assert link_drift(up, Link(3, "veth1", UP), False, {"veth0"}) == (True, True)  # renamed away
    assert link_drift(up, up, False, {"veth0"}) == (False, False)


def test_pending_keys_become_adds_replaces_and_deletes_of_ours_only():
    desired = DesiredIndex.of([A, B], TABLE, OURS)
    ops, routes, forwarding = pending_ops([A.key, B.key, C.key], desired, installed={B.key, C.key}, keep=())
    assert list(ops) == [(codec.NEW_FLAGS, A.key), (codec.REPLACE_FLAGS, B.key), (DELETE, C.key)]
    assert set(routes) == set(forwarding) == {A.key, B.key}
    assert op_counts(ops) == (1, 1, 1)
    ops, _, _ = pending_ops([C.key], desired, installed={C.key}, keep={C.key})
    assert list(ops) == []  # kept for the grace: not deleted
    assert list(pending_ops([C.key], desired, installed=set(), keep=())[0]) == []  # nothing of ours there
    ops, _, _ = pending_ops([C.key, B.key, A.key], desired, installed={B.key, C.key}, keep=())
    assert list(ops) == [(codec.NEW_FLAGS, A.key), (codec.REPLACE_FLAGS, B.key), (DELETE, C.key)]  # deletes last


def test_a_reconcile_sends_adds_and_replaces_before_deletes():
    ops = plan_ops([A.key], [B.key], [C.key])
    want = [(codec.NEW_FLAGS, A.key), (codec.REPLACE_FLAGS, B.key), (DELETE, C.key)]
    assert list(ops) == want and [ops[i] for i in range(len(ops))] == want


def test_planned_ops_encode_as_their_pairs_would():
    ops = plan_ops([A.key], [B.key], [C.key])
    forwarding = {A.key: A.forwarding(), B.key: B.forwarding()}
    planned, pairs = encoder(ops, TABLE, OURS, forwarding, {}), encoder(list(ops), TABLE, OURS, forwarding, {})
    assert [planned(i, 7 + i) for i in range(3)] == [pairs(i, 7 + i) for i in range(3)]
    assert planned(0, 7) == codec.encode_newroute(7, codec.NEW_FLAGS, TABLE, OURS, A.key, *forwarding[A.key], {}.__getitem__)
    assert planned(1, 8) == codec.encode_newroute(8, codec.REPLACE_FLAGS, TABLE, OURS, B.key, *forwarding[B.key], {}.__getitem__)
    assert planned(2, 9) == codec.encode_delroute(9, TABLE, OURS, C.key)


def test_what_is_installed_after_a_change():
    installed = {B.key, C.key}
    ops = [(codec.NEW_FLAGS, A.key), (codec.REPLACE_FLAGS, B.key), (DELETE, C.key)]
    installed_after_program(installed, ops, refused={A.key})
    assert installed == {B.key}
    installed = {B.key, C.key}
    installed_after_program(installed, plan_ops([A.key], [B.key], [C.key]), refused={A.key})
    assert installed == {B.key}
    installed_after_program(installed, plan_ops([A.key], [], [B.key]), refused=set())
    assert installed == {A.key}
    failed_add = RouteFailure(A, str(A.prefix), "add", errno.EINVAL, "Invalid argument")
    failed_replace = RouteFailure(B, str(B.prefix), "replace", errno.EINVAL, "Invalid argument")
    assert installed_after_reconcile([A.key, B.key], [failed_add, failed_replace], {}, kept=[C.key]) == {B.key, C.key}
    assert installed_after_reconcile([A.key, B.key], [], {A.key: failed_add}, kept=[]) == {B.key}


def test_refusals_name_the_route_and_a_gone_route_is_no_failure():
    ops = [(codec.NEW_FLAGS, A.key), (codec.REPLACE_FLAGS, B.key), (DELETE, C.key)]
    routes = {A.key: A, B.key: B}
    refused = [RequestFailure(0, errno.EEXIST, "File exists"), RequestFailure(1, errno.ENETUNREACH, "unreachable"),
               RequestFailure(2, errno.ESRCH, "No such process")]
    full = reconcile_refusals(refused, ops, routes)
    assert [(f.op, f.prefix, f.errno) for f in full] == [("add", "198.18.1.0/24", errno.EEXIST),
                                                         ("replace", "198.18.2.0/24", errno.ENETUNREACH)]
    failures, conflicts, bad = program_refusals(refused, ops, routes)
    assert conflicts == 1 and bad == {A.key, B.key, C.key}  # an exclusive add met a route: a conflict
    assert [(f.op, f.unreachable) for f in failures] == [("replace", True)]


def test_the_same_route_refused_again_counts_attempts_and_backs_off():
    book = FailureBook()
    refused = RouteFailure(A, str(A.prefix), "add", errno.EINVAL, "Invalid argument")
    first = book.stamp([refused], now=100.0)
    assert first[0].attempts == 1 and first[0].retry_at == 100.0 + retry_delay(1)
    book.record(first, {}, {A.key: A}, {})
    assert book.held_back([A.key], [], {A.key: A}, now=100.5) == {A.key: first[0]}
    assert book.held_back([A.key], [], {A.key: Route.via("198.18.1.0/24", "198.18.0.7")}, now=100.5) == {}
    assert book.next_retry() == 101.0
    second = book.stamp([refused], now=101.0)
    assert second[0].attempts == 2 and second[0].retry_at == 101.0 + retry_delay(2)
    book.retry_now()
    assert book.next_retry() == 0.0


def test_unbuildable_routes_are_reported_until_desired_or_removed():
    book = FailureBook()
    book.set_unbuildable({A.key: ("198.18.1.0/24", "no next hop")})
    changes = book.changes
    assert book.all()[A.key].op == UNBUILDABLE and book.count() == 1
    book.set_unbuildable({A.key: ("198.18.1.0/24", "no next hop")})  # the same again: same record
    book.forget_unbuildable([B.key])
    assert book.changes == changes + 1
    book.forget_unbuildable([A.key])
    assert book.all() == {} and book.changes == changes + 2


def test_a_link_coming_up_retries_refused_routes_and_a_new_veth_alone_wakes_nothing():
    from dataplane.routes.events import LinkEvent
    from dataplane.routes.watcher import DriftWatcher, LinkTable

    book, links = FailureBook(), LinkTable()
    desired = DesiredIndex.of([A], TABLE, OURS)
    watcher = DriftWatcher(TABLE, OURS, lambda: desired, lambda: (), links, book)
    watcher.on_link(LinkEvent(False, Link(7, "cali1234", UP)))  # a workload's veth: not ours to care about
    assert not watcher.dirty.is_set() and links.ifindex == {"cali1234": 7}
    refused = book.stamp([RouteFailure(A, str(A.prefix), "add", errno.ENETUNREACH, "unreachable")], now=100.0)
    book.record(refused, {}, {A.key: A}, {})
    watcher.on_link(LinkEvent(False, Link(8, "eth1", UP)))  # a way out for what was refused
    assert watcher.dirty.is_set() and book.next_retry() == 0.0
    watcher.dirty = type(watcher.dirty)()
    watcher.on_link(LinkEvent(True, Link(7, "cali1234", UP)))  # a link that goes may have carried routes
    assert watcher.dirty.is_set() and links.ifindex == {"eth1": 8}
    assert watcher.repairs == {}  # link changes are not someone else's repair


def test_a_repair_is_counted_and_told_to_the_owner():
    from dataplane.routes.events import RouteEvent
    from dataplane.routes.watcher import DriftWatcher, LinkTable

    desired = DesiredIndex.of([A], TABLE, OURS)
    watcher = DriftWatcher(TABLE, OURS, lambda: desired, lambda: (), LinkTable(), FailureBook())
    told = []
    watcher.on_repair = lambda why, key: told.append((why, key))
    watcher.on_route(RouteEvent(True, kernel(A)))
    watcher.on_route(RouteEvent(True, kernel(A)._replace(table=100)))  # another table: not ours
    assert told == [("route_deleted", A.key)] and watcher.repairs == {"route_deleted": 1}
    assert watcher.dirty.is_set()


def test_keys_of_numbered_are_key_of_each_prefix():
    import ipaddress

    from dataplane.routes.route import key_of, keys_of_numbered

    nets = [ipaddress.ip_network(t) for t in ("198.18.1.0/24", "0.0.0.0/0", "198.18.0.1/32", "2001:db8::/48", "::/0",
                                              "2001:db8::1/128")]
    keys = keys_of_numbered((n.version, int(n.network_address), n.prefixlen) for n in nets)
    assert keys == [key_of(n) for n in nets]
    assert keys[3].metric == 1024  # the kernel's IPv6 default, as key_of has it


def test_drop_all_counts_the_special_routes_it_drops_and_skips_keys_not_desired():
    hops = (NextHop(gateway=ipaddress.ip_address("198.18.0.1")),)
    learned, hole = Route.trusted(ipaddress.ip_network("198.18.7.0/24"), hops), Route.blackhole("198.18.8.0/26")
    index = DesiredIndex.of([learned, hole], 254, 86)
    assert index.special == 1
    stranger = Route.blackhole("198.18.9.0/26").key
    assert index.drop_all(iter([stranger, hole.key, hole.key])) == [hole.key]  # any iterable; a key once
    assert index.special == 0 and set(index.forwarding) == {learned.key}
    assert index.drop_all([learned.key]) == [learned.key] and not index.routes and not index.forwarding


def test_the_periodic_resync_waits_for_a_burst_being_programmed_but_drift_does_not():
    """The resync (a dump and diff of the whole table) in the middle of a burst held its sends back:
    it waits while the programmer is busy, one more interval at most; drift is reconciled at once."""
    import trio
    import trio.testing

    from dataplane.routes.watcher import BUSY_POLL, DriftWatcher, LinkTable

    clock = trio.testing.MockClock(autojump_threshold=0)
    desired = DesiredIndex.of([A], TABLE, OURS)
    watcher = DriftWatcher(TABLE, OURS, lambda: desired, lambda: (), LinkTable(), FailureBook())
    runs: list[float] = []
    busy_until = [35.0]

    async def reconcile() -> None:
        runs.append(trio.current_time())

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher.reconcile_when_due, reconcile, 30.0, 0.0, lambda: trio.current_time() < busy_until[0])
            await trio.sleep(36.0)
            assert runs and 35.0 <= runs[0] <= 35.0 + BUSY_POLL  # due at 30, busy until 35
            busy_until[0] = float("inf")  # busy for good: one more interval at most
            await trio.sleep(62.0)  # to 98: due at ~65, put off to ~95
            assert len(runs) == 2 and runs[0] + 60.0 <= runs[1] <= runs[0] + 60.0 + BUSY_POLL
            watcher.dirty.set()  # drift while busy: reconciled at once
            await trio.sleep(1.0)
            assert len(runs) == 3 and runs[2] == 98.0
            nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)
