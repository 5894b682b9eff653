"""BGPFilter rule conditions and operations with Calico's semantics, as confd renders them into BIRD:
projectcalico/calico confd/pkg/resource/template/template_funcs.go (filterStatement, filterMatchSource,
filterMatchInterface, filterMatchCommunity, filterMatchASPathPrefix, filterMatchPriority,
filterOperationStatements, the is_same_as guard of BGPFilterBIRDFuncs) and the golden configs under
confd/tests/compiled_templates/bgpfilter/ (as_path_and_priority, communities_and_operations,
match_interface, match_source, peer_type)."""
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calico_bgp.resources import model
from calico_bgp.resources.documents import load_documents
from calico_bgp.resources.bgpfilter import (
    AddCommunity,
    BGPFilter,
    BGPFilterRule,
    BGPFilterSpec,
    CommunityMatch,
    Operation,
    PrefixLength,
    PrependASPath,
    SetPriority,
)
from calico_bgp.resources.fields import InvalidResource
from calico_bgp.resources.ippool import IPPool, IPPoolSpec
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.bgpfilter import (
    LOCAL_PREF_TOP,
    OWN_ROUTE_PRIORITY,
    compile_rules,
    conditions_hold,
    export_routes,
    import_policy,
    interface_of,
    matching,
    operated,
    priority,
)
from calico_bgp.routing.nexthop import SessionLink
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import Rib

NET = Prefix.of
ETH0 = SessionLink("eth0", (ipaddress.ip_network("198.18.1.0/24"), ipaddress.ip_network("2001:db8:1::/64")))
TOR = Peer("198.18.1.1", 65001, "198.18.1.1", ibgp=False, link=ETH0)          # eBGP, directly connected
FAR = Peer("198.18.9.1", 65002, "198.18.9.1", ibgp=False)                     # eBGP, multihop
NODE = Peer("198.18.1.2", 64512, "198.18.1.2", ibgp=True, link=ETH0)         # iBGP
POOLS = [IPPool(model.Metadata("v4"), IPPoolSpec(cidr="198.19.0.0/16")),
         IPPool(model.Metadata("v6"), IPPoolSpec(cidr="2001:db8:2::/48"))]
IN_POOL, V6_IN_POOL = NET("198.19.1.0/26"), NET("2001:db8:2::/122")
OWN = [NET("198.19.0.0/26"), NET("2001:db8:2:1::/122")]


def rule(action="Accept", **kw):
    return BGPFilterRule(action=action, **kw)


def ops(*items):
    return tuple(items)


def add(c):
    return Operation(add_community=AddCommunity(c))


def prepend(*asns):
    return Operation(prepend_as_path=PrependASPath(asns))


def set_priority(v):
    return Operation(set_priority=SetPriority(v))


def flt(**spec):
    return BGPFilter(model.Metadata("f"), BGPFilterSpec(**spec))


def policy_with(f):
    return import_policy(POOLS, lambda peer: [f])


def learned(next_hop="198.18.1.1", **kw):
    return PathAttributes(next_hop, **kw)


# --- conditions ---------------------------------------------------------------------------------

def test_source_remote_peers_is_every_learned_route_and_none_we_originate():
    """match_source: `(defined(source))&&(source ~ [ RTS_BGP ])`."""
    r = rule(source="RemotePeers")
    assert conditions_hold(r, False, learned()) and conditions_hold(r, True, learned())
    assert not conditions_hold(r, False, None)
    f = flt(import_v4=(rule("Reject", source="RemotePeers"),), export_v4=(rule("Reject", source="RemotePeers"),))
    assert policy_with(f)(TOR, IN_POOL, learned()).startswith("rejected by filter")
    assert set(export_routes(OWN, [f], ibgp=False, local_as=64512)) == set(OWN)  # ours are not RemotePeers


def test_interface_is_the_sessions_link_for_a_next_hop_on_it_and_none_for_ours():
    """match_interface: `(defined(ifname))&&(ifname ~ "eth*")`, a glob over the outgoing interface."""
    assert interface_of(learned("198.18.1.1"), ETH0) == "eth0"
    assert interface_of(learned("fe80::1%eth1"), ETH0) == "eth1"           # a scoped link-local next hop
    assert interface_of(learned("198.18.7.1"), ETH0) == ""                 # not on the link
    assert interface_of(learned("198.18.1.1"), None) == ""                 # multihop: not known
    assert interface_of(None, ETH0) == ""                                  # ours: a blackhole has none
    assert conditions_hold(rule(interface="eth*"), False, learned(), ETH0)
    assert not conditions_hold(rule(interface="eth1"), False, learned(), ETH0)
    assert conditions_hold(rule(interface="*"), False, None) and not conditions_hold(rule(interface="eth*"), False, None)
    f = flt(import_v4=(rule("Reject", interface="eth*"),))
    assert policy_with(f)(TOR, IN_POOL, learned()).startswith("rejected by filter")
    assert policy_with(f)(FAR, IN_POOL, learned("198.18.9.1")) is None      # no interface known: pool default


def test_peer_type_is_the_sessions():
    """peer_type: rules guarded by `if (is_same_as)` (iBGP) / `if (!is_same_as)` (eBGP)."""
    f = flt(import_v4=(rule("Reject", peer_type="iBGP"),),
            export_v4=(rule("Reject", peer_type="eBGP", cidr="198.19.0.0/16", match_operator="In"),))
    p = policy_with(f)
    assert p(NODE, IN_POOL, learned("198.18.1.2")).startswith("rejected by filter")
    assert p(TOR, IN_POOL, learned()) is None
    assert export_routes(OWN, [f], ibgp=False, local_as=64512).keys() == {OWN[1]}  # v4 block rejected to eBGP
    assert export_routes(OWN, [f], ibgp=True).keys() == set(OWN)


def test_communities_match_what_the_route_carries_standard_or_large():
    """communities_and_operations: `((65000, 100) ~ bgp_community)`; large: `~ bgp_large_community`."""
    std, large = rule(communities=CommunityMatch(["65000:100"])), rule(communities=CommunityMatch(["65000:1:2"]))
    assert conditions_hold(std, False, learned(communities=((65000, 1), (65000, 100))))
    assert not conditions_hold(std, False, learned(communities=((65000, 1),)))
    assert not conditions_hold(std, False, learned(large_communities=((65000, 100, 0),)))
    assert conditions_hold(large, False, learned(large_communities=((65000, 1, 2),)))
    assert not conditions_hold(large, False, learned(communities=((65000, 1),)))
    assert not conditions_hold(std, False, None)  # ours carry none when the rules run


def test_a_communities_match_rule_rejects_an_import():
    f = flt(import_v4=(rule("Reject", communities=CommunityMatch(["65000:666"])),))
    p = policy_with(f)
    assert p(TOR, IN_POOL, learned(communities=((65000, 666),))) == "rejected by filter 'f' importV4[0]"
    assert p(TOR, IN_POOL, learned(communities=((65000, 667),))) is None


def test_as_path_prefix_is_where_the_path_starts():
    """as_path_and_priority: `(bgp_path ~ [= 65000 65001 * =])`."""
    r = rule(as_path_prefix=(65000, 65001))
    assert conditions_hold(r, False, learned(as_path=(65000, 65001)))
    assert conditions_hold(r, False, learned(as_path=(65000, 65001, 65009)))
    assert not conditions_hold(r, False, learned(as_path=(65000,)))
    assert not conditions_hold(r, False, learned(as_path=(65009, 65000, 65001)))
    assert not conditions_hold(r, False, None)


def test_priority_is_carried_as_local_pref_and_ours_is_felixs_normal_priority():
    """as_path_and_priority (bird6.cfg): a priority p matches `bgp_local_pref = 2147483647 - p`; the
    export filter gives a route without a metric `krt_metric = 1024`."""
    assert priority(learned(local_pref=LOCAL_PREF_TOP - 100)) == 100
    assert priority(learned()) == LOCAL_PREF_TOP - 100  # no LOCAL_PREF: BIRD's default 100
    assert priority(None) == OWN_ROUTE_PRIORITY == 1024
    assert conditions_hold(rule(priority=1024), True, None) and not conditions_hold(rule(priority=512), True, None)
    f = flt(import_v4=(rule("Reject", priority=512),))
    assert policy_with(f)(NODE, IN_POOL, learned("198.18.1.2", local_pref=LOCAL_PREF_TOP - 512)).startswith("rejected")
    assert policy_with(f)(NODE, IN_POOL, learned("198.18.1.2", local_pref=100)) is None


def test_all_conditions_of_a_rule_must_hold_and_the_first_matching_rule_decides():
    f = flt(import_v4=(rule("Reject", cidr="198.19.1.0/24", match_operator="In", peer_type="eBGP",
                            communities=CommunityMatch(["65000:1"])),
                       rule("Accept", communities=CommunityMatch(["65000:1"]), operations=ops(add("65000:2"))),
                       rule("Reject")))
    p = policy_with(f)
    tagged = learned(communities=((65000, 1),))
    assert p(TOR, IN_POOL, tagged).startswith("rejected by filter")          # all three conditions hold
    assert p(NODE, IN_POOL, tagged).communities == ((65000, 1), (65000, 2))  # not eBGP: the second rule
    assert p(TOR, NET("198.19.2.0/26"), tagged).communities == ((65000, 1), (65000, 2))  # outside its CIDR
    assert p(TOR, IN_POOL, learned()) == "rejected by filter 'f' importV4[2]"  # the last rule


def test_v6_rules_judge_v6_routes_only():
    f = flt(import_v6=(rule("Reject", communities=CommunityMatch(["65000:1"])),))
    p = policy_with(f)
    tagged = learned("2001:db8:1::1", communities=((65000, 1),))
    assert p(TOR, V6_IN_POOL, tagged).startswith("rejected by filter")
    assert p(TOR, IN_POOL, learned(communities=((65000, 1),))) is None  # no v4 rule


# --- operations ---------------------------------------------------------------------------------

def test_import_operations_change_the_path_and_keep_what_was_sent():
    """communities_and_operations: `bgp_community.add((65001, 200)); bgp_path.prepend(65000);`,
    setPriority 256: `bgp_local_pref = 2147483391`."""
    f = flt(import_v4=(rule(operations=ops(add("65001:200"), add("65000:7:8"), prepend(65000, 65010),
                                           set_priority(256), add("65001:200"))),))
    sent = learned(as_path=(65001,), communities=((65001, 200),))
    got = policy_with(f)(TOR, IN_POOL, sent)
    assert got.communities == ((65001, 200),) and got.large_communities == ((65000, 7, 8),)  # added once
    assert got.as_path == (65000, 65010, 65001)           # starts with the prefix as listed
    assert got.local_pref == 2147483391 and priority(got) == 256
    assert got.received is sent
    assert policy_with(f)(TOR, IN_POOL, got) == got      # judged again from what was sent: not twice


def test_an_external_peers_local_pref_stays_ignored_when_another_operation_runs():
    """RFC 4271 5.1.5: an eBGP peer's LOCAL_PREF is not ours to rank by; an addCommunity on import must
    not make it count (only a setPriority sets one); an iBGP peer's is kept."""
    f = flt(import_v4=(rule(operations=ops(add("65001:200"))),))
    sent = learned(local_pref=1000)
    assert policy_with(f)(TOR, IN_POOL, sent).local_pref is None
    assert policy_with(f)(NODE, IN_POOL, learned("198.18.1.2", local_pref=1000)).local_pref == 1000
    assert policy_with(flt(import_v4=(rule(operations=ops(set_priority(256))),)))(TOR, IN_POOL, sent).local_pref \
        == 2147483391


def test_import_operations_undone_when_the_filter_goes_and_what_was_sent_is_kept():
    f = flt(import_v4=(rule(operations=ops(prepend(65000))),))
    filters = [f]
    rib = Rib(LocalSpeaker(64512, "198.18.1.9"), import_policy(POOLS, lambda peer: filters))
    sent = learned(as_path=(65001,))
    rib.update(TOR, {IN_POOL: sent})
    assert rib.selection(IN_POOL).best.attrs.as_path == (65000, 65001)
    assert dict(rib.received()) == {(TOR.address, IN_POOL): sent}
    rib.reapply_policy([TOR])
    assert rib.selection(IN_POOL).best.attrs.as_path == (65000, 65001)  # not prepended twice
    filters.clear()
    rib.import_policy = import_policy(POOLS, lambda peer: filters)
    rib.reapply_policy([TOR])
    assert rib.selection(IN_POOL).best.attrs == sent


def test_set_priority_on_import_decides_between_ebgp_paths_as_bird_does():
    """peer_type/communities_and_operations: the import filter sets bgp_local_pref, which BIRD ranks
    routes by whatever the session; an eBGP peer's own LOCAL_PREF still counts for nothing."""
    other = Peer("198.18.1.3", 65003, "198.18.1.3", ibgp=False, link=ETH0)
    f = flt(import_v4=(rule(communities=CommunityMatch(["65000:100"]), operations=ops(set_priority(512))),))
    rib = Rib(LocalSpeaker(64512, "198.18.1.9"), policy_with(f))
    rib.update(TOR, {IN_POOL: learned("198.18.1.1", as_path=(65001,))})
    rib.update(other, {IN_POOL: learned("198.18.1.3", as_path=(65003, 65004), communities=((65000, 100),))})
    sel = rib.selection(IN_POOL)
    assert sel.best.peer == other and sel.reason == "local-pref"  # the longer path wins on priority


def test_export_operations_shape_what_is_sent():
    """as_path_and_priority: `bgp_community.add((65000, 100))`, `bgp_path.prepend(65001);
    bgp_path.prepend(65000);`; setPriority as LOCAL_PREF, which only iBGP peers are sent."""
    f = flt(export_v4=(rule(priority=1024, operations=ops(add("65000:100"), prepend(65000, 65001),
                                                          set_priority(100))),),
            export_v6=(rule("Reject"),))
    ebgp = export_routes(OWN, [f], ibgp=False, local_as=64512)
    assert set(ebgp) == {OWN[0]}
    a = ebgp[OWN[0]]
    assert a.communities == ((65000, 100),) and a.as_path == (64512, 65000, 65001) and a.local_pref is None
    b = export_routes(OWN, [f], ibgp=True, local_as=64512)[OWN[0]]
    assert b.as_path == (65000, 65001) and b.local_pref == LOCAL_PREF_TOP - 100


def test_export_operations_follow_the_rules_own_actions():
    f = flt(export_v4=(rule(add_communities=("65000:1",), as_path_prepend=(64512,),
                            operations=ops(add("65000:2"), prepend(65000))),))
    a = export_routes(OWN, [f], ibgp=False, local_as=64512)[OWN[0]]
    assert a.communities == ((65000, 1), (65000, 2)) and a.as_path == (64512, 65000, 64512)


def test_an_export_rule_on_a_condition_ours_never_meet_leaves_the_default():
    """kubevirt_live_migration: export rules on priority 100/200 and communities match none of our
    routes (priority 1024, no communities): the trailing Reject decides."""
    f = flt(export_v4=(rule(priority=100, operations=ops(add("65000:100"))),
                       rule(communities=CommunityMatch(["65000:42"])), rule("Reject")))
    assert export_routes(OWN, [f], ibgp=False, local_as=64512) == {OWN[1]: PathAttributes("self")}


# --- properties ---------------------------------------------------------------------------------

asns = st.integers(1, 4294967295)
communities = st.tuples(st.integers(0, 65535), st.integers(0, 65535))


@given(st.lists(asns, max_size=4).map(tuple), st.lists(asns, min_size=1, max_size=4).map(tuple))
def test_as_path_prefix_matches_exactly_the_paths_that_start_with_it(path, prefix):
    assert conditions_hold(rule(as_path_prefix=prefix), False, learned(as_path=path)) == (path[:len(prefix)] == prefix)
    assert conditions_hold(rule(as_path_prefix=prefix), False, learned(as_path=prefix + path))


@given(st.sets(communities, max_size=4).map(tuple), communities, st.integers(1, 2147483646),
       st.lists(asns, min_size=1, max_size=10).map(tuple))
def test_operations_then_the_conditions_they_set_hold(have, extra, prio, prefix):
    text = f"{extra[0]}:{extra[1]}"
    r = rule(operations=ops(add(text), prepend(*prefix), set_priority(prio)))
    got = operated(r, learned(as_path=(65001,), communities=have))
    assert conditions_hold(rule(communities=CommunityMatch([text])), True, got)
    assert conditions_hold(rule(as_path_prefix=prefix), True, got) and got.as_path[len(prefix):] == (65001,)
    assert conditions_hold(rule(priority=prio), True, got)
    assert len(set(got.communities)) == len(got.communities) and set(have) <= set(got.communities)


@st.composite
def cidr_rules_and_prefixes(draw):
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    base = 0xC6120000 if version == 4 else 0x20010DB8 << 96  # 198.18.0.0 / 2001:db8::

    def net(plen_lo):
        plen = draw(st.integers(plen_lo, bits))
        value = (base | draw(st.integers(0, (1 << (bits - 16)) - 1))) >> (bits - plen) << (bits - plen) if plen else 0
        return Prefix(version, value, plen)

    cidr = net(0)
    lo = draw(st.none() | st.integers(0, bits))
    hi = draw(st.none() | st.integers(lo or 0, bits))
    length = PrefixLength(lo, hi) if lo is not None or hi is not None else None
    r = rule(draw(st.sampled_from(["Accept", "Reject"])), cidr=str(cidr), prefix_length=length,
             match_operator=draw(st.sampled_from(["Equal", "NotEqual", "In", "NotIn"])))
    inside = Prefix(version, cidr.network | (draw(st.integers(0, (1 << (bits - cidr.prefixlen)) - 1))
                                             if cidr.prefixlen < bits else 0), bits)
    prefixes = [net(0), net(cidr.prefixlen), cidr]
    for plen in range(cidr.prefixlen, bits + 1, 7):
        prefixes.append(Prefix(version, inside.network >> (bits - plen) << (bits - plen), plen))
    return version, r, prefixes


@given(cidr_rules_and_prefixes())
def test_compiled_cidr_tests_give_the_verdicts_of_the_rules_own_match(case):
    version, r, prefixes = case
    f = flt(**{f"import_v{version}": (r,)})
    table = compile_rules([f], "import", version)
    for p in prefixes:
        assert (matching(table, p) is r) == r.matches(p.to_ipaddress()), (r, p)


def test_origin_validation_judges_the_path_as_sent_not_as_an_import_prepend_made_it():
    seen = []

    def origin_check(peer, prefix, pattrs):
        seen.append(pattrs.as_path)
        return None

    f = flt(import_v4=(rule(operations=ops(prepend(65000))),))
    rib = Rib(LocalSpeaker(64512, "198.18.1.9"), policy_with(f), origin_check=origin_check)
    rib.update(NODE, {IN_POOL: learned("198.18.1.2")})  # a mesh route: an empty path, ours
    assert seen == [()] and rib.selection(IN_POOL).best.attrs.as_path == (65000,)


# --- bad input: Calico's bounds (api/pkg/apis/projectcalico/v3/bgpfilter.go), the field named -----

@pytest.mark.parametrize("rule_text, fragment", [
    ("{action: Accept, priority: 0}", "importV4[0].priority: out of range 1..2147483646"),
    ("{action: Accept, priority: 2147483647}", "importV4[0].priority: out of range 1..2147483646"),
    ("{action: Accept, operations: [{setPriority: {value: 0}}]}",
     "importV4[0].operations[0].setPriority.value: out of range 1..2147483646"),
    ("{action: Accept, communities: {values: ['65000:1', '65000:2']}}",
     "importV4[0].communities.values: expected exactly 1 community, got 2"),
    ("{action: Accept, communities: {values: ['65536:1']}}", "importV4[0].communities.values[0]: expected a BGP community"),
    ("{action: Accept, operations: [{prependASPath: {prefix: []}}]}",
     "importV4[0].operations[0].prependASPath.prefix: expected 1..10 AS numbers, got 0"),
    ("{action: Accept, operations: [{addCommunity: {value: '1:1'}, setPriority: {value: 5}}]}",
     "an operation is exactly one of addCommunity, prependASPath, setPriority"),
    ("{action: Reject, operations: [{setPriority: {value: 5}}]}",
     "importV4[0].operations: actions are only allowed with action Accept"),
    ("{action: Accept, peerType: external}", "importV4[0].peerType"),
    ("{action: Accept, source: Local}", "importV4[0].source"),
    ("{action: Accept, interface: 'eth 0'}", "importV4[0].interface"),
])
def test_bad_rule_fields_are_refused_naming_the_field(rule_text, fragment):
    with pytest.raises(InvalidResource) as err:
        load_documents(f"apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {{name: f}}\n"
                       f"spec:\n  importV4:\n  - {rule_text}\n")
    assert fragment in str(err.value), str(err.value)


def test_more_than_ten_operations_and_local_pref_beside_set_priority_are_refused():
    eleven = ", ".join(["{addCommunity: {value: '1:1'}}"] * 11)
    for text, fragment in ((f"{{action: Accept, operations: [{eleven}]}}", "exportV4[0].operations: expected 0..10"),
                           ("{action: Accept, localPref: 5, operations: [{setPriority: {value: 5}}]}",
                            "exportV4[0].localPref: both localPref and a setPriority operation set LOCAL_PREF")):
        with pytest.raises(InvalidResource) as err:
            load_documents(f"apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {{name: f}}\n"
                           f"spec:\n  exportV4:\n  - {text}\n")
        assert fragment in str(err.value), str(err.value)


def test_a_path_changed_on_import_is_reflected_as_changed_and_without_what_was_sent():
    from calico_bgp.routing.reflection import reflections
    rr = LocalSpeaker(64512, "198.18.1.9", cluster_id="198.18.1.9")
    client = Peer("198.18.1.2", 64512, "198.18.1.2", ibgp=True, rr_client=True)
    other = Peer("198.18.1.3", 64512, "198.18.1.3", ibgp=True, rr_client=True)
    f = flt(import_v4=(rule(operations=ops(add("65000:7"), set_priority(512))),))
    rib = Rib(rr, policy_with(f))
    rib.update(client, {IN_POOL: learned("198.18.1.2")})
    r = reflections(rr, rib, [client, other])[IN_POOL]
    assert r.targets == {other.address} and r.attributes.communities == ((65000, 7),)
    assert r.attributes.local_pref == LOCAL_PREF_TOP - 512 and r.attributes.received is None


def test_a_filter_that_no_longer_reads_rejects_everything_instead_of_vanishing():
    """A peer's filter stored by another version (or edited behind apply's back) that does not decode
    any more must not let what its Reject rules held back through: it stands as reject-all, both
    ways; a name never stored is skipped as before."""
    from calico_bgp.routing.bgpfilter import filters_for
    kept = flt(export_v4=(rule(),))
    got = filters_for(["gone", "bad", "f"], {"f": kept}, unreadable={"bad"})
    assert [g.name for g in got] == ["bad", "f"]
    policy = import_policy(POOLS, lambda peer: got)
    assert policy(TOR, IN_POOL, learned()) == "rejected by filter 'bad' importV4[0]"
