"""A BGPFilter setPriority on import becomes the learned route's kernel metric, as Calico renders it
(projectcalico/calico confd/pkg/resource/template/template_funcs.go filterOperationStatements:
setPriority -> `krt_metric = <value>;`, which BIRD's kernel protocol programs as the metric); any
other learned route keeps metric 0. A metric change is a new kernel key: the old one is removed."""
from __future__ import annotations

from calico_bgp.resources import model
from calico_bgp.resources.bgpfilter import BGPFilter, BGPFilterRule, BGPFilterSpec, CommunityMatch, Operation, SetPriority
from calico_bgp.resources.ippool import IPPool, IPPoolSpec
from calico_bgp.routing import desired
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.bgpfilter import import_policy
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import Rib
from dataplane.routes.route import key_of

TOR = Peer("198.18.1.1", 65001, "198.18.1.1", ibgp=False)
NODE = Peer("198.18.1.2", 64512, "198.18.1.2", ibgp=True)
P = Prefix.of("198.19.1.0/26")
POOLS = [IPPool(model.Metadata("pods"), IPPoolSpec(cidr="198.19.0.0/16"))]
# the live-migration example of Calico's docs: a community restores priority 512
PRIORITY = BGPFilter(model.Metadata("lm"), BGPFilterSpec(import_v4=(
    BGPFilterRule(action="Accept", communities=CommunityMatch(("65000:100",)),
                  operations=(Operation(set_priority=SetPriority(512)),)),)))


def rib() -> Rib:
    return Rib(LocalSpeaker(64512, "198.18.1.10"), import_policy(POOLS, lambda peer: [PRIORITY]))


def test_the_metric_is_the_priority_set_on_import_and_0_otherwise():
    r = rib()
    r.update(TOR, {P: PathAttributes("198.18.1.1", as_path=(65001,), communities=((65000, 100),))})
    assert desired.kernel_metric(r.selection(P).best.attrs) == 512
    r.update(NODE, {Prefix.of("198.19.2.0/26"): PathAttributes("198.18.1.2", local_pref=100)})
    assert desired.kernel_metric(r.selection(Prefix.of("198.19.2.0/26")).best.attrs) == 0  # LOCAL_PREF as sent
    assert desired.kernel_metric(PathAttributes("198.18.1.1")) == 0


def test_full_and_incremental_builds_carry_the_metric_and_replace_the_old_key():
    r = rib()
    metrics: dict[Prefix, int] = {}
    r.update(TOR, {P: PathAttributes("198.18.1.1", as_path=(65001,))})
    routes, _ = desired.kernel_routes("n1", {}, r, metrics=metrics)
    assert [(str(x.prefix), x.metric) for x in routes] == [("198.19.1.0/26", 0)] and metrics == {}
    # the peer tags it: priority 512, the route at metric 0 goes
    changed = r.update(TOR, {P: PathAttributes("198.18.1.1", as_path=(65001,), communities=((65000, 100),))})
    upserts, removed, _ = desired.kernel_changes(changed, r, set(), (), metrics)
    assert [(str(x.prefix), x.metric) for x in upserts] == [("198.19.1.0/26", 512)]
    assert removed == [key_of(P, 0)] and metrics == {P: 512}
    routes, _ = desired.kernel_routes("n1", {}, r, metrics=metrics)
    assert [x.metric for x in routes] == [512] and metrics == {P: 512}
    # the tag goes: back to 0, the 512 one removed
    changed = r.update(TOR, {P: PathAttributes("198.18.1.1", as_path=(65001,))})
    upserts, removed, _ = desired.kernel_changes(changed, r, set(), (), metrics)
    assert [x.metric for x in upserts] == [0] and removed == [key_of(P, 512)] and metrics == {}
    # withdrawn while at 512: that key is the one removed
    desired.kernel_changes(r.update(TOR, {P: PathAttributes("198.18.1.1", as_path=(65001,), communities=((65000, 100),))}),
                           r, set(), (), metrics)
    upserts, removed, _ = desired.kernel_changes(r.update(TOR, {}, [P]), r, set(), (), metrics)
    assert upserts == [] and removed == [key_of(P, 512)] and metrics == {}


def test_normal_route_priority_is_stored_given_back_and_named_as_not_done():
    """Calico's BGPConfiguration ipv4/ipv6NormalRoutePriority (libcalico-go api v3, 1..2147483646;
    confd's mesh filters `krt_metric = 2147483647 - bgp_local_pref` / `bgp_local_pref = 2147483647 -
    krt_metric`) applies and comes back; the mesh's LOCAL_PREF and metric are not changed by it."""
    import pytest

    from calico_bgp.resources.bgpconfig import BGPConfiguration
    from calico_bgp.resources.codec import to_dict
    from calico_bgp.resources.fields import InvalidResource
    from calico_bgp.resources.pending import warning

    c = model.from_dict(BGPConfiguration, {"metadata": {"name": "default"},
                                           "spec": {"ipv4NormalRoutePriority": 5000, "ipv6NormalRoutePriority": 1024}},
                        where="c")
    assert to_dict(c)["spec"] == {"ipv4NormalRoutePriority": 5000, "ipv6NormalRoutePriority": 1024}
    assert "ipv4/ipv6NormalRoutePriority (mesh routes keep LOCAL_PREF as sent and kernel metric 0" in warning(c)
    with pytest.raises(InvalidResource, match="spec.ipv4NormalRoutePriority: out of range 1..2147483646"):
        model.from_dict(BGPConfiguration, {"metadata": {"name": "default"}, "spec": {"ipv4NormalRoutePriority": 0}},
                        where="c")


def test_the_metric_is_the_priority_set_even_when_the_peer_sent_that_local_pref_already():
    """Calico's import setPriority is `krt_metric = <value>;` whatever LOCAL_PREF came: a Calico mesh
    peer already sends 2147483647 - metric (confd's `bgp_local_pref = 2147483647 - krt_metric`)."""
    r = rib()
    r.update(NODE, {P: PathAttributes("198.18.1.2", local_pref=2147483647 - 512, communities=((65000, 100),))})
    assert desired.kernel_metric(r.selection(P).best.attrs) == 512
    routes, _ = desired.kernel_routes("n1", {}, r, metrics={})
    assert [(str(x.prefix), x.metric) for x in routes] == [("198.19.1.0/26", 512)]


def test_the_metric_is_not_reflected():
    """krt_metric is this router's kernel's, no BGP attribute: a reflector drops it as it drops
    `received`."""
    from calico_bgp.routing.reflection import reflected_attributes

    client = Peer("198.18.1.3", 64512, "198.18.1.3", ibgp=True, rr_client=True)
    r = Rib(LocalSpeaker(64512, "198.18.1.10", cluster_id="198.18.1.10"), import_policy(POOLS, lambda peer: [PRIORITY]))
    r.update(client, {P: PathAttributes("198.18.1.3", communities=((65000, 100),))})
    assert desired.kernel_metric(r.selection(P).best.attrs) == 512
    out = reflected_attributes(r.local, r.selection(P))
    assert out is not None and desired.kernel_metric(out) == 0 and out.received is None


def test_a_new_metric_with_a_next_hop_no_route_can_have_removes_the_route_at_the_old_metric():
    """The route at 512 goes when the re-announced path (now at metric 0) is unbuildable: the
    unbuildable key is the new one, the old key is removed, not left in the kernel."""
    r = rib()
    metrics: dict[Prefix, int] = {}
    r.update(TOR, {P: PathAttributes("198.18.1.1", as_path=(65001,), communities=((65000, 100),))})
    routes, _ = desired.kernel_routes("n1", {}, r, metrics=metrics)
    assert [x.metric for x in routes] == [512] and metrics == {P: 512}
    changed = r.update(TOR, {P: PathAttributes("2001:db8::1", as_path=(65001,))})
    upserts, removed, unbuildable = desired.kernel_changes(changed, r, set(), (), metrics)
    assert upserts == [] and removed == [key_of(P, 512)] and set(unbuildable) == {key_of(P, 0)}
    assert metrics == {}


def test_metrics_change_only_when_kernel_changes_returns():
    """A kernel_changes that raises half-way leaves `metrics` as it was: the retry removes the key
    the kernel holds (at 512), not the one it never got."""
    import pytest

    r = rib()
    q = Prefix.of("198.19.2.0/26")
    metrics: dict[Prefix, int] = {}
    r.update(TOR, {P: PathAttributes("198.18.1.1", as_path=(65001,), communities=((65000, 100),))})
    desired.kernel_routes("n1", {}, r, metrics=metrics)
    changed = r.update(TOR, {P: PathAttributes("198.18.1.1", as_path=(65001,))})

    class Boom(Exception):
        pass

    def prefixes():
        yield from changed
        raise Boom

    with pytest.raises(Boom):
        desired.kernel_changes(prefixes(), r, set(), (), metrics)
    assert metrics == {P: 512}
    upserts, removed, _ = desired.kernel_changes(changed | {q}, r, set(), (), metrics)
    assert [x.metric for x in upserts] == [0] and key_of(P, 512) in removed and metrics == {}
