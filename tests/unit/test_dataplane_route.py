"""The Route value and the pure desired-vs-actual planner."""
from __future__ import annotations

import ipaddress

import pytest

from dataplane.routes.route import (
    RTN_BLACKHOLE,
    RTN_UNICAST,
    DuplicateRoute,
    InvalidRoute,
    KernelRoute,
    NextHop,
    Route,
    RouteKey,
    RouteKind,
    index_routes,
    plan_changes,
)

IFINDEX = {"veth0": 7, "veth1": 9}


def kernel(route: Route, oif: int = 7, protocol: int = 86) -> KernelRoute:
    """What the kernel would report for `route` once programmed (devices resolved)."""
    hops = tuple((h.gateway.packed if h.gateway else None, IFINDEX.get(h.device or "", oif), h.weight) for h in route.nexthops)
    return KernelRoute(route.key, route.kind.rtn, hops, 0, protocol, 254)


def plan(desired: list[Route], actual: list[KernelRoute], keep=frozenset()):
    return plan_changes({r.key: r.forwarding() for r in desired}, actual, IFINDEX, keep)


# -- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"prefix": "198.18.0.1/24", "nexthops": ["198.18.0.2"]}, "prefix"),  # host bits set
        ({"prefix": "198.18.0.0/33", "nexthops": ["198.18.0.2"]}, "prefix"),
        ({"prefix": "not-a-prefix", "nexthops": ["198.18.0.2"]}, "prefix"),
        ({"prefix": "198.18.0.0/24", "nexthops": ["2001:db8::1"]}, "gateway"),  # family mismatch
        ({"prefix": "198.18.0.0/24", "nexthops": ["198.18.0.300"]}, "gateway"),
        ({"prefix": "198.18.0.0/24"}, "nexthops"),  # unicast without a next hop
        ({"prefix": "198.18.0.0/24", "kind": RouteKind.BLACKHOLE, "nexthops": ["198.18.0.2"]}, "nexthops"),
        ({"prefix": "198.18.0.0/24", "nexthops": ["198.18.0.2", "198.18.0.2"]}, "nexthops"),
        ({"prefix": "198.18.0.0/24", "nexthops": ["198.18.0.2"], "metric": -1}, "metric"),
    ],
)
def test_invalid_routes_name_the_field(kwargs, field):
    with pytest.raises(InvalidRoute) as err:
        Route(**kwargs)
    assert err.value.field == field


def test_nexthop_needs_gateway_or_device_and_sane_weight():
    with pytest.raises(InvalidRoute):
        NextHop()
    with pytest.raises(InvalidRoute) as err:
        NextHop(gateway="198.18.0.2", weight=0)
    assert err.value.field == "weight"
    with pytest.raises(InvalidRoute):
        NextHop(device="a-name-far-too-long-for-linux")


def test_key_family_and_ipv6_default_metric():
    assert Route.via("198.18.1.0/24", "198.18.0.2").key == RouteKey(24, bytes([198, 18, 1, 0]), 0)
    v6 = Route.via("2001:db8:1::/64", "2001:db8::2")
    assert v6.key.metric == 1024 and v6.key.family_v6
    assert v6.key.prefix() == ipaddress.ip_network("2001:db8:1::/64")


def test_nexthop_order_does_not_matter():
    a = Route.via("198.18.1.0/24", "198.18.0.3", "198.18.0.2")
    b = Route.via("198.18.1.0/24", "198.18.0.2", "198.18.0.3")
    assert a == b and hash(a) == hash(b) and a.forwarding() == b.forwarding()


def test_duplicate_keys_are_refused():
    with pytest.raises(DuplicateRoute):
        index_routes([Route.via("198.18.1.0/24", "198.18.0.2"), Route.blackhole("198.18.1.0/24")])
    # a different metric is a different kernel route
    unique, index = index_routes([Route.via("198.18.1.0/24", "198.18.0.2"), Route.blackhole("198.18.1.0/24", metric=5)])
    assert len(unique) == len(index) == 2
    # the same route twice is one route
    assert len(index_routes([Route.blackhole("198.18.1.0/24")] * 2)[0]) == 1


# -- planning -------------------------------------------------------------------------------


def test_empty_kernel_means_all_adds():
    routes = [Route.via("198.18.1.0/24", "198.18.0.2"), Route.blackhole("198.18.64.0/26")]
    p = plan(routes, [])
    assert set(p.adds) == {r.key for r in routes} and not p.replaces and not p.deletes


def test_unchanged_set_plans_nothing():
    routes = [
        Route.via("198.18.1.0/24", "198.18.0.2"),
        Route.via("198.18.2.0/24", "198.18.0.2", "198.18.0.3"),
        Route(prefix="198.18.3.0/24", nexthops=[NextHop(gateway="198.18.0.2", device="veth1")]),
        Route.blackhole("198.18.64.0/26"),
        Route.via("2001:db8:1::/64", "2001:db8::2"),
    ]
    p = plan(routes, [kernel(r) for r in routes])
    assert p.empty and p.unchanged == len(routes)


def test_nexthop_change_is_a_replace_never_delete_add():
    old = Route.via("198.18.1.0/24", "198.18.0.2")
    new = Route.via("198.18.1.0/24", "198.18.0.3")
    ecmp = Route.via("198.18.1.0/24", "198.18.0.2", "198.18.0.3")
    for want in (new, ecmp, Route.blackhole("198.18.1.0/24")):
        p = plan([want], [kernel(old)])
        assert p.replaces == (want.key,) and not p.adds and not p.deletes


def test_device_mismatch_is_a_replace_but_no_device_means_any():
    pinned = Route(prefix="198.18.1.0/24", nexthops=[NextHop(gateway="198.18.0.2", device="veth1")])
    loose = Route.via("198.18.1.0/24", "198.18.0.2")
    assert plan([pinned], [kernel(loose, oif=7)]).replaces == (pinned.key,)
    assert plan([loose], [kernel(loose, oif=123)]).empty


def test_weight_change_is_a_replace():
    a = Route(prefix="198.18.1.0/24", nexthops=[NextHop(gateway="198.18.0.2"), NextHop(gateway="198.18.0.3")])
    b = Route(prefix="198.18.1.0/24", nexthops=[NextHop(gateway="198.18.0.2", weight=2), NextHop(gateway="198.18.0.3")])
    assert plan([b], [kernel(a)]).replaces == (b.key,)


def test_stale_routes_deleted_unless_kept():
    keep_me = Route.via("198.18.1.0/24", "198.18.0.2")
    stale = Route.via("198.18.2.0/24", "198.18.0.2")
    p = plan([keep_me], [kernel(keep_me), kernel(stale)])
    assert list(p.deletes) == [stale.key] and p.unchanged == 1
    p = plan([keep_me], [kernel(keep_me), kernel(stale)], keep=frozenset({stale.key}))
    assert p.empty and p.kept == 1


def test_metric_change_adds_new_then_deletes_old():
    old = Route.via("198.18.1.0/24", "198.18.0.2", metric=10)
    new = Route.via("198.18.1.0/24", "198.18.0.2", metric=20)
    p = plan([new], [kernel(old)])
    assert p.adds == (new.key,) and list(p.deletes) == [old.key]


def test_route_seen_twice_is_decided_once():
    r = Route.via("198.18.1.0/24", "198.18.0.2")
    changed = kernel(Route.via("198.18.1.0/24", "198.18.0.9"))
    p = plan([r], [changed, changed])
    assert p.replaces == (r.key,) and p.unchanged == 0
    p = plan([r], [kernel(r), kernel(r)])
    assert p.empty and p.unchanged == 1


def test_kind_codes():
    assert Route.blackhole("198.18.64.0/26").forwarding().rtype == RTN_BLACKHOLE
    assert Route.via("198.18.1.0/24", "198.18.0.2").forwarding().rtype == RTN_UNICAST
