"""Service CIDR advertisement (routing/advertise_services.py), as Calico's confd does it
(client.go updateGlobalRoutes; bird_aggr.cfg.template /staticroutes; bird_ipam.cfg.template
calico_export_to_bgp_peers and calico_kernel_programming)."""
from __future__ import annotations

from calico_bgp.resources import model
from calico_bgp.resources.bgpconfig import BGPConfiguration
from calico_bgp.resources.ippool import IPPool
from calico_bgp.routing import bgpfilter, desired
from calico_bgp.routing.advertise_services import EXCLUDE_LABEL, kept_out_of_kernel, service_cidrs, service_prefixes
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import Rib
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.attributes import PathAttributes


def config(**spec) -> BGPConfiguration:
    return model.from_dict(BGPConfiguration, {"metadata": {"name": "default"}, "spec": spec}, where="c")


SPEC = config(serviceClusterIPs=[{"cidr": "198.18.200.0/24"}, {}],
              serviceExternalIPs=[{"cidr": "198.18.201.0/24"}, {"cidr": "2001:db8:201::/112"}],
              serviceLoadBalancerIPs=[{"cidr": "198.18.202.0/24"}, {"cidr": "198.18.200.0/24"}],
              prefixAdvertisements=[{"cidr": "198.18.200.0/22", "communities": ["65000:200"]}]).spec


def test_every_cidr_of_the_three_lists_from_every_node():
    assert service_cidrs(SPEC) == ["198.18.200.0/24", "198.18.201.0/24", "2001:db8:201::/112", "198.18.202.0/24"]
    assert service_prefixes(SPEC, {"rack": "r1"}) == {Prefix.of(c) for c in service_cidrs(SPEC)}
    assert service_prefixes(config().spec, {}) == set()


def test_a_node_excluded_from_load_balancers_announces_none():
    assert service_prefixes(SPEC, {EXCLUDE_LABEL: "true"}) == set()
    assert service_prefixes(SPEC, {EXCLUDE_LABEL: "false"}) != set()


def test_not_inside_a_pool_with_bgp_export_disabled():
    quiet = model.from_dict(IPPool, {"metadata": {"name": "q"}, "spec": {"cidr": "198.18.200.0/23",
                                                                          "disableBGPExport": True}}, where="q")
    assert Prefix.of("198.18.201.0/24") not in service_prefixes(SPEC, {}, [quiet])
    assert Prefix.of("198.18.202.0/24") in service_prefixes(SPEC, {}, [quiet])


def test_announced_with_prefix_advertisement_communities_and_never_in_the_kernel():
    own = service_prefixes(SPEC, {})
    tagged = bgpfilter.advertised_communities(SPEC, own)
    out = bgpfilter.export_routes(own, [], ibgp=True, tagged=tagged)
    assert out[Prefix.of("198.18.201.0/24")].communities == ((65000, 200),)
    assert out[Prefix.of("198.18.202.0/24")].communities == ((65000, 200),)
    routes, _ = desired.kernel_routes("n1", {}, Rib(LocalSpeaker(64512, "198.18.0.1")), own)
    assert routes == []                                     # no blackhole, no learned route for them
    assert own <= desired.not_learned("n1", {}, own, [])     # a peer's copy never takes the kernel either


def test_routes_learned_inside_a_service_cidr_stay_out_of_the_kernel_on_every_node():
    """client.go updateGlobalRoutes puts every service CIDR under /rejectcidrs, on an excluded node
    too; bird_ipam.cfg.template calico_kernel_programming: `if ( net ~ <cidr> ) then { reject; }`,
    which takes the CIDR and what lies inside it, and nothing around it."""
    keep_out = kept_out_of_kernel(SPEC)
    assert set(keep_out) == {Prefix.of(c) for c in service_cidrs(SPEC)}
    assert kept_out_of_kernel(config().spec) == ()
    rib = Rib(LocalSpeaker(64512, "198.18.0.1"))
    inside = [Prefix.of("198.18.200.0/24"), Prefix.of("198.18.200.7/32"), Prefix.of("2001:db8:201::5/128")]
    outside = [Prefix.of("198.18.200.0/23"), Prefix.of("198.18.203.0/24"), Prefix.of("198.19.0.0/26")]
    rib.update(Peer("198.18.0.9", 65001, "198.18.0.9", ibgp=False),
               {p: PathAttributes("198.18.0.9" if p.version == 4 else "2001:db8::9", as_path=(65001,))
                for p in inside + outside})
    assert len(list(rib.selections())) == 6                        # kept in the RIB: reflected, shown by `routes`
    routes, _ = desired.kernel_routes("n1", {}, rib, (), (), keep_out)
    assert sorted(str(r.prefix) for r in routes) == sorted(str(p) for p in outside)
    upserts, removed, _ = desired.kernel_changes(inside + outside, rib, set(), keep_out)
    assert sorted(str(r.prefix) for r in upserts) == sorted(str(p) for p in outside) and removed == []
    # without service CIDRs every one of them goes in
    assert len(desired.kernel_routes("n1", {}, rib)[0]) == 6


def test_inside_and_outside_agree_with_containment():
    """desired.outside / inside, the integer form of BIRD's `net ~ cidr` over several CIDRs of both
    families and lengths, against Prefix.contains: the CIDR itself, what lies inside, nothing around."""
    import random

    covering = (Prefix.of("198.18.200.0/24"), Prefix.of("198.18.202.0/26"), Prefix.of("198.19.0.0/16"),
                Prefix.of("2001:db8:201::/112"))
    rng = random.Random(7)
    prefixes = list(covering) + [Prefix.of("198.18.200.0/23"), Prefix.of("198.18.202.64/26"), Prefix.of("0.0.0.0/0")]
    for _ in range(3000):
        if rng.random() < 0.5:
            length = rng.randint(14, 32)
            net = ((198 << 24 | 18 << 16) + rng.randrange(1 << 17)) >> (32 - length) << (32 - length)
            prefixes.append(Prefix(4, net, length))
        else:
            length = rng.randint(100, 128)
            net = (0x20010db8_0201 << 80 | rng.randrange(1 << 18)) >> (128 - length) << (128 - length)
            prefixes.append(Prefix(6, net, length))
    truth = {p for p in prefixes if any(c.contains(p) for c in covering)}
    assert 100 < len(truth) < len(prefixes) - 100
    assert desired.inside(prefixes, covering) == truth
    assert desired.outside(prefixes, covering) == [p for p in prefixes if p not in truth]
    assert desired.outside(prefixes, covering[:3]) == [p for p in prefixes if not any(c.contains(p) for c in covering[:3])]


def python_calls(fn) -> int:
    """How many Python functions `fn()` calls (sys.setprofile 'call' events): a count, not a timing."""
    import sys

    calls = 0

    def count(frame, what, arg):
        nonlocal calls
        calls += what == "call"

    sys.setprofile(count)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def test_service_cidrs_cost_no_python_call_per_prefix_on_the_kernel_path():
    """The service-CIDR check is integer compares inline (one set lookup per prefix), not a call:
    with three CIDRs, the calls kernel_changes and kernel_routes make grow with the prefixes only as
    they do without any, and the prefixes inside one still stay out."""
    keep_out = kept_out_of_kernel(SPEC)
    assert len(keep_out) >= 3
    rib = Rib(LocalSpeaker(64512, "198.18.0.1"))
    tor = Peer("198.18.0.9", 65001, "198.18.0.9", ibgp=False)
    hop = PathAttributes("198.18.0.9", as_path=(65001,))
    learned = [Prefix(4, (198 << 24 | 19 << 16) + (i << 8), 24) for i in range(200)]
    inside = [Prefix.of("198.18.200.0/25"), Prefix.of("198.18.202.9/32")]
    rib.update(tor, dict.fromkeys(learned + inside, hop))

    def extra(fn) -> int:  # the calls three service CIDRs add to fn(keep_out)
        return python_calls(lambda: fn(keep_out)) - python_calls(lambda: fn(()))

    assert len(desired.kernel_changes(learned + inside, rib, set(), keep_out)[0]) == len(learned)
    assert len(desired.kernel_routes("n1", {}, rib, (), (), keep_out)[0]) == len(learned)
    few = extra(lambda k: desired.kernel_changes(learned[:20] + inside, rib, set(), k))
    many = extra(lambda k: desired.kernel_changes(learned + inside, rib, set(), k))
    assert many - few < 10, (few, many)
    assert extra(lambda k: desired.kernel_routes("n1", {}, rib, (), (), k)) < 10 + 2 * len(inside)


def test_apply_says_exactly_what_is_not_done():
    from calico_bgp.resources.pending import warning

    assert warning(config(serviceClusterIPs=[{"cidr": "198.18.200.0/24"}], serviceLoadBalancerIPs=[{}])) == (
        "BGPConfiguration 'default': stored, not acted on yet: serviceClusterIPs, serviceLoadBalancerIPs: the "
        "routes to single Kubernetes Services (a bare-metal node has none; the CIDRs themselves are announced "
        "from every node)")
    # programClusterRoutes: only the values that hand no-encap pools' routes to Felix ask for something
    for value in ("Enabled", "EnabledNoEncapOnly"):
        assert warning(config(programClusterRoutes=value)) is None
    assert warning(config(programClusterRoutes="Disabled")) == (
        "BGPConfiguration 'default': stored, not acted on yet: programClusterRoutes Disabled (no Felix here: "
        "calico-bgp programs the routes to every pool's blocks itself)")
    assert "programClusterRoutes EnabledIPIPOnly" in warning(config(programClusterRoutes="EnabledIPIPOnly"))
