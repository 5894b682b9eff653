from calico_bgp.resources import model
from calico_bgp.resources.ippool import IPPool, IPPoolSpec
from calico_bgp.routing import desired
from calico_bgp.routing.prefix import Prefix
from ipam.block import Block


def pool(name, cidr, **kw):
    return IPPool(model.Metadata(name), IPPoolSpec(cidr=cidr, **kw))


def test_announcements_blocks_borrowed_and_no_export_pools():
    mine = Block.new("198.19.0.0/26", "a")
    theirs, got_ips = Block.new("198.19.0.64/26", "b").allocate(2, "h", node="a")
    hidden = Block.new("198.18.128.0/26", "a")
    blocks = {b.cidr: b for b in (mine, theirs, hidden)}
    pools = [pool("p", "198.19.0.0/16"), pool("q", "198.18.128.0/24", disable_bgp_export=True)]
    got = desired.announcements("a", blocks, pools)
    assert Prefix.of("198.19.0.0/26") in got
    assert Prefix.of("198.18.128.0/26") not in got
    assert {str(p) for p in got if p.prefixlen == 32} == {f"{a.ip}/32" for a in got_ips}
    usage, borrowed = desired.pool_usage("a", blocks, pools)
    assert borrowed == 2 and usage["p"] == (2 / 65536, 2)


def test_a_peer_reachable_by_a_gateway_gets_a_host_route_that_learned_routes_never_replace():
    from calico_bgp.routing.attributes import PathAttributes
    from calico_bgp.routing.path import LocalSpeaker, Peer
    from calico_bgp.routing.rib import Rib
    from calico_bgp.routing.topology import Session
    from dataplane.routes.route import Route

    tor = Session(peer_address="198.18.9.1", peer_as=65001, local_as=64512, local_address="198.18.1.10",
                  kind="fabric", reachable_by="198.18.1.1")
    plain = Session(peer_address="198.18.1.2", peer_as=65001, local_as=64512, local_address="198.18.1.10", kind="fabric")
    v6 = Session(peer_address="2001:db8:9::1", peer_as=65001, local_as=64512, local_address="2001:db8:1::10",
                 kind="fabric", reachable_by="2001:db8:1::1")
    static = desired.peer_routes([tor, plain, v6])
    assert static == [Route.via("198.18.9.1/32", "198.18.1.1"), Route.via("2001:db8:9::1/128", "2001:db8:1::1")]
    rib = Rib(LocalSpeaker(64512, "198.18.1.10"))
    rib.update(Peer("198.18.1.2", 65001, "198.18.1.2", ibgp=False),
               {Prefix.of("198.18.9.1/32"): PathAttributes("198.18.1.2", as_path=(65001,)),
                Prefix.of("198.19.7.0/26"): PathAttributes("198.18.1.2", as_path=(65001,))})
    routes, unbuildable = desired.kernel_routes("n1", {}, rib, (), static)
    assert unbuildable == {}
    assert {str(r.prefix): [str(h.gateway) for h in r.nexthops] for r in routes} == {
        "198.18.9.1/32": ["198.18.1.1"], "2001:db8:9::1/128": ["2001:db8:1::1"], "198.19.7.0/26": ["198.18.1.2"]}
    # the incremental pass skips the same: a static route's prefix is never a learned route's
    skip = desired.not_learned("n1", {}, (), static)
    assert skip == {Prefix.of("198.18.9.1/32"), Prefix.of("2001:db8:9::1/128")}
    upserts, removed, _ = desired.kernel_changes([Prefix.of("198.18.9.1/32"), Prefix.of("198.19.7.0/26")], rib, skip)
    assert [str(r.prefix) for r in upserts] == ["198.19.7.0/26"] and removed == []


def test_a_selection_no_kernel_route_can_express_is_set_apart_with_its_reason_and_the_rest_are_built():
    """ExaBGP passes an UPDATE without NEXT_HOP on with next hop 'no-nexthop'; a v4 prefix can come with
    a v6 next hop. Neither may keep the other selections out of the kernel."""
    from calico_bgp.routing.attributes import PathAttributes
    from calico_bgp.routing.path import LocalSpeaker, Peer
    from calico_bgp.routing.rib import Rib
    from dataplane.routes.route import key_of

    rib = Rib(LocalSpeaker(64512, "198.18.1.10"))
    peer = Peer("198.18.1.2", 65001, "198.18.1.2", ibgp=False)
    good = [Prefix.of(f"198.19.7.{i}/32") for i in range(5)]
    bad, other_family = Prefix.of("198.19.8.0/26"), Prefix.of("198.19.9.0/26")
    rib.update(peer, {**dict.fromkeys(good, PathAttributes("198.18.1.2")), bad: PathAttributes("no-nexthop"),
                      other_family: PathAttributes("2001:db8:1::2")})
    routes, unbuildable = desired.kernel_routes("n1", {}, rib)
    assert {r.prefix for r in routes} == set(good)
    assert set(unbuildable) == {key_of(bad), key_of(other_family)}
    prefix, why = unbuildable[key_of(bad)]
    assert prefix == "198.19.8.0/26" and "gateway='no-nexthop'" in why
    assert "not IPv4" in unbuildable[key_of(other_family)][1]

    # the incremental form says the same of the prefixes it is given, and removes withdrawn ones
    rib.update(peer, {}, [good[0]])
    upserts, removed, unbuildable2 = desired.kernel_changes([good[0], good[1], bad], rib, set())
    assert [r.prefix for r in upserts] == [good[1]] and removed == [key_of(good[0])]
    assert unbuildable2 == {key_of(bad): unbuildable[key_of(bad)]}


def test_kernel_changes_builds_what_learned_route_builds_for_every_prefix_sharing_attributes():
    """The incremental pass checks next hops once per attributes object: the routes are those
    learned_route makes one by one, across families and attributes objects, and an attributes object
    no route can use is set apart for each of its prefixes with that prefix's own reason."""
    from calico_bgp.routing.attributes import PathAttributes
    from calico_bgp.routing.path import LocalSpeaker, Peer
    from calico_bgp.routing.rib import Rib
    from dataplane.routes.route import key_of

    rib = Rib(LocalSpeaker(64512, "198.18.1.10"))
    peer = Peer("198.18.1.2", 65001, "198.18.1.2", ibgp=False)
    v4, v4b = PathAttributes("198.18.1.2"), PathAttributes("198.18.1.3")
    v6 = PathAttributes("2001:db8:1::2")
    a = [Prefix.of(f"198.19.7.{i}/32") for i in range(4)]
    b = [Prefix.of(f"198.19.8.{i}/32") for i in range(3)]
    c = [Prefix.of(f"2001:db8:7::{i}/128") for i in range(3)]
    wrong = [Prefix.of(f"198.19.9.{i}/32") for i in range(2)]  # an IPv6 next hop for IPv4 prefixes
    rib.update(peer, {**dict.fromkeys(a, v4), **dict.fromkeys(b, v4b)})
    rib.update(peer, dict.fromkeys(c + wrong, v6))
    order = [a[0], c[0], a[1], b[0], wrong[0], b[1], a[2], c[1], wrong[1], c[2], a[3], b[2]]
    upserts, removed, unbuildable = desired.kernel_changes(order, rib, set())
    want = [desired.learned_route(p, rib.selection(p).next_hops) for p in order if p not in wrong]
    assert upserts == want and removed == []
    assert [r.nexthops for r in upserts] == [r.nexthops for r in want]
    assert set(unbuildable) == {key_of(p) for p in wrong}
    for p in wrong:
        assert unbuildable[key_of(p)][0] == str(p) and f"like {p}" in unbuildable[key_of(p)][1]
