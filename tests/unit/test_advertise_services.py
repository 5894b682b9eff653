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
