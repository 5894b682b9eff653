from calico_bgp.resources import model
from calico_bgp.resources.bgpconfig import BGPConfigurationSpec, Community, PrefixAdvertisement
from calico_bgp.resources.bgpfilter import BGPFilter, BGPFilterRule, BGPFilterSpec, PrefixLength
from calico_bgp.resources.ippool import IPPool, IPPoolSpec
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.bgpfilter import export_routes, import_policy
from calico_bgp.routing.path import Peer
from calico_bgp.routing.prefix import Prefix

NET = Prefix.of


def sent(communities=(), large_communities=(), local_pref=None, as_path=()):
    """What an originated route goes out with: next hop self, origin IGP, and the filters' actions."""
    return PathAttributes("self", communities=communities, large_communities=large_communities,
                          local_pref=local_pref, as_path=as_path)
TOR = Peer("198.18.1.1", 65001, "198.18.1.1", ibgp=False)
A = PathAttributes("198.18.1.1", as_path=(65001,))


def pool(name, cidr):
    return IPPool(model.Metadata(name), IPPoolSpec(cidr=cidr))


def bgpfilter(name, **spec):
    return BGPFilter(model.Metadata(name), BGPFilterSpec(**spec))


def rule(action, cidr="", op="", **kw):
    return BGPFilterRule(action=action, cidr=cidr, match_operator=op, **kw)


POOLS = [pool("v4", "198.19.0.0/16"), pool("v6", "2001:db8:1::/48")]


def test_default_imports_only_pool_prefixes_and_never_a_default_route():
    policy = import_policy(POOLS, lambda peer: [])
    assert policy(TOR, NET("198.19.1.0/26"), A) is None
    assert policy(TOR, NET("2001:db8:1::/122"), A) is None
    assert policy(TOR, NET("198.18.50.0/24"), A) == "outside every IP pool"
    assert policy(TOR, NET("0.0.0.0/0"), A) == "outside every IP pool"


def test_filter_accepts_a_default_route_explicitly_and_rejects_inside_a_pool():
    f = bgpfilter("edge", import_v4=(rule("Accept", "0.0.0.0/0", "Equal"),
                                     rule("Reject", "198.19.9.0/24", "In")))
    policy = import_policy(POOLS, lambda peer: [f] if peer == TOR.address else [])
    assert policy(TOR, NET("0.0.0.0/0"), A) is None
    assert policy(TOR, NET("198.19.9.64/26"), A) == "rejected by filter 'edge' importV4[1] (In 198.19.9.0/24)"
    assert policy(TOR, NET("198.19.8.0/26"), A) is None        # no rule matched: pool default
    other = Peer("198.18.2.1", 65002, "198.18.2.1", ibgp=False)
    assert policy(other, NET("0.0.0.0/0"), A) == "outside every IP pool"  # filter not attached there


def test_prefix_length_ranges():
    f = bgpfilter("len", import_v4=(rule("Accept", "198.18.64.0/18", "In", prefix_length=PrefixLength(24, 26)),))
    policy = import_policy(POOLS, lambda peer: [f])
    assert policy(TOR, NET("198.18.65.0/24"), A) is None
    assert policy(TOR, NET("198.18.65.0/27"), A) == "outside every IP pool"


def test_export_actions_and_rejects():
    own = [NET("198.19.0.0/26"), NET("198.19.0.64/26"), NET("198.19.5.7/32")]
    f = bgpfilter("out", export_v4=(rule("Reject", "198.19.0.64/26", "Equal"),
                                    rule("Accept", "198.19.0.0/16", "In", add_communities=("65000:100",),
                                         add_large_communities=("65000:1:2",), local_pref=200,
                                         as_path_prepend=(64512, 64512))))
    ebgp = export_routes(own, [f], ibgp=False, local_as=64512)
    assert set(ebgp) == {NET("198.19.0.0/26"), NET("198.19.5.7/32")}
    assert ebgp[NET("198.19.0.0/26")] == sent(((65000, 100),), ((65000, 1, 2),), None, (64512, 64512, 64512))
    ibgp = export_routes(own, [f], ibgp=True, local_as=64512)[NET("198.19.0.0/26")]
    assert ibgp.local_pref == 200 and ibgp.as_path == (64512, 64512)
    assert export_routes(own, [], ibgp=False) == {p: sent() for p in own}


def test_plan_exports_sends_only_differences_grouped_by_neighbours_and_attributes():
    from calico_bgp.routing.bgpfilter import plan_exports

    a, b, c = NET("198.19.0.0/26"), NET("198.19.0.64/26"), NET("198.19.0.128/26")
    plain, tagged = sent(), sent(communities=((65000, 1),))
    have = {"198.18.0.2": {a: plain, b: plain}, "198.18.0.3": {a: plain}}
    want = {"198.18.0.2": {a: plain, c: plain}, "198.18.0.3": {a: tagged, c: plain}, "198.18.0.4": {a: plain}}
    got = {(x.attrs, x.neighbors, x.prefixes) for x in plan_exports(have, want)}
    assert got == {(None, ("198.18.0.2",), (b,)),
                   (plain, ("198.18.0.2", "198.18.0.3"), (c,)),
                   (tagged, ("198.18.0.3",), (a,)),
                   (plain, ("198.18.0.4",), (a,))}
    assert plan_exports(want, want) == []


def test_prefix_advertisements_tag_what_lies_inside_their_cidr_before_the_filters_own():
    from calico_bgp.routing.bgpfilter import advertised_communities
    spec = BGPConfigurationSpec(
        communities=(Community("rack", "65000:10"),),
        prefix_advertisements=(PrefixAdvertisement("198.19.0.0/24", ("rack", "65000:20")),
                               PrefixAdvertisement("198.19.0.0/26", ("65000:1:1",))))
    own = [NET("198.19.0.0/26"), NET("198.19.0.64/26"), NET("198.19.9.0/26"), NET("2001:db8:1::/122")]
    tagged = advertised_communities(spec, own)
    assert tagged == {NET("198.19.0.0/26"): ("65000:10", "65000:20", "65000:1:1"),
                      NET("198.19.0.64/26"): ("65000:10", "65000:20")}
    f = bgpfilter("out", export_v4=(rule("Accept", "198.19.0.0/16", "In", add_communities=("65000:10", "65000:99")),))
    out = export_routes(own, [f], ibgp=True, tagged=tagged)
    assert out[NET("198.19.0.0/26")] == sent(((65000, 10), (65000, 20), (65000, 99)), ((65000, 1, 1),))
    assert out[NET("198.19.9.0/26")] == sent(((65000, 10), (65000, 99)))
    assert export_routes(own, [], ibgp=False, tagged=tagged)[NET("198.19.0.64/26")] == sent(((65000, 10), (65000, 20)))
