
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.decision import compare, loop_check, select
from calico_bgp.routing.path import LocalSpeaker, Path, Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.reflection import reflect_to, reflections
from calico_bgp.routing.rib import Rib

NET = Prefix.of
LOCAL = LocalSpeaker(asn=64512, router_id="198.18.0.1")
TOR1 = Peer("198.18.1.1", 65001, "198.18.1.1", ibgp=False)
TOR2 = Peer("198.18.2.1", 65002, "198.18.2.1", ibgp=False)
NODE_B = Peer("198.18.0.2", 64512, "198.18.0.2", ibgp=True)
NODE_C = Peer("198.18.0.3", 64512, "198.18.0.3", ibgp=True)
P = NET("198.19.1.0/26")


def path(peer, **kw):
    kw.setdefault("next_hop", peer.address)
    return Path(P, peer, PathAttributes(**kw))


@pytest.mark.parametrize("better, worse, step", [
    (path(NODE_B, local_pref=200), path(NODE_C), "local-pref"),
    (path(TOR1, as_path=(65001,)), path(TOR2, as_path=(65002, 65003)), "as-path"),
    (path(TOR1, as_path=(65001,), origin="igp"), path(TOR2, as_path=(65002,), origin="incomplete"), "origin"),
    (path(TOR1, as_path=(65001,), med=5), path(Peer("198.18.3.1", 65001, "198.18.3.1", False), as_path=(65001,), med=10), "med"),
    (path(TOR1, as_path=()), path(NODE_B), "ebgp-over-ibgp"),
    (path(NODE_B), path(NODE_C), "router-id"),
    (path(NODE_C, originator_id="198.18.0.9"), path(NODE_B, originator_id="198.18.0.10"), "router-id"),
    (path(NODE_B, originator_id="198.18.0.9", cluster_list=("198.18.0.100",)),
     path(NODE_C, originator_id="198.18.0.9", cluster_list=("198.18.0.100", "198.18.0.101")), "cluster-list"),
])
def test_decision_steps(better, worse, step):
    assert compare(better, worse, LOCAL.asn) == (-1, step)
    assert compare(worse, better, LOCAL.asn) == (1, step)
    sel = select([worse, better], LOCAL.asn, multipath=False)
    assert sel.best == better and sel.reason == step


def test_med_ignored_between_different_neighbor_as():
    a = path(TOR1, as_path=(65001,), med=50)
    b = path(TOR2, as_path=(65002,), med=1)
    assert compare(a, b, LOCAL.asn)[1] == "router-id"


def test_ecmp_over_two_tors_and_back_to_one():
    rib = Rib(LOCAL)
    assert rib.update(TOR1, {P: PathAttributes("198.18.1.1", as_path=(65001,))}) == {P}
    assert rib.update(TOR2, {P: PathAttributes("198.18.2.1", as_path=(65002,))}) == {P}
    assert set(rib.selection(P).next_hops) == {"198.18.1.1", "198.18.2.1"}
    assert rib.peer_down(TOR1.address) == {P}
    assert rib.selection(P).next_hops == ("198.18.2.1",)
    assert rib.update(TOR2, {}, [P]) == {P}
    assert rib.selection(P) is None and len(rib) == 0


def test_longer_path_is_not_in_the_ecmp_set():
    rib = Rib(LOCAL)
    rib.update(TOR1, {P: PathAttributes("198.18.1.1", as_path=(65001,))})
    rib.update(TOR2, {P: PathAttributes("198.18.2.1", as_path=(65002, 65009))})
    assert rib.selection(P).next_hops == ("198.18.1.1",)


def test_same_next_hop_twice_is_one_member():
    rib = Rib(LOCAL)
    rib.update(NODE_B, {P: PathAttributes("198.18.0.9")})
    rib.update(NODE_C, {P: PathAttributes("198.18.0.9")})
    assert rib.selection(P).next_hops == ("198.18.0.9",)


def test_unchanged_update_reports_nothing():
    rib = Rib(LOCAL)
    rib.update(NODE_B, {P: PathAttributes("198.18.0.2")})
    assert rib.update(NODE_B, {P: PathAttributes("198.18.0.2")}) == set()


def test_loops_are_rejected_and_counted():
    rr = LocalSpeaker(64512, "198.18.0.1", cluster_id="198.18.0.100")
    assert loop_check(rr, TOR1, PathAttributes("198.18.1.1", as_path=(65001, 64512))) == "as-path loop"
    assert loop_check(rr, NODE_B, PathAttributes("198.18.0.2", originator_id="198.18.0.1")) == "originator-id is ours"
    assert loop_check(rr, NODE_B, PathAttributes("198.18.0.2", cluster_list=("198.18.0.100",))) == "cluster-list loop"
    rib = Rib(rr)
    rib.update(NODE_B, {P: PathAttributes("198.18.0.2", cluster_list=("198.18.0.100",))})
    assert rib.selection(P) is None
    assert [(r.peer, r.reason) for r in rib.rejected()] == [("198.18.0.2", "cluster-list loop")]


def test_import_policy_rejection_withdraws_an_earlier_path():
    deny = {"on": False}
    rib = Rib(LOCAL, import_policy=lambda peer, prefix, a: "filtered" if deny["on"] else None)
    rib.update(TOR1, {P: PathAttributes("198.18.1.1", as_path=(65001,))})
    deny["on"] = True
    assert rib.reapply_policy([TOR1]) == {P}
    assert rib.selection(P) is None and rib.rejected(TOR1.address)[0].reason == "filtered"


RR = LocalSpeaker(64512, "198.18.0.1", cluster_id="198.18.0.100")
CLIENT_B = Peer("198.18.0.2", 64512, "198.18.0.2", ibgp=True, rr_client=True)
CLIENT_C = Peer("198.18.0.3", 64512, "198.18.0.3", ibgp=True, rr_client=True)
RR2 = Peer("198.18.0.4", 64512, "198.18.0.4", ibgp=True)  # another reflector: a non-client


def test_client_route_reflected_to_clients_and_non_clients_with_rfc4456_attributes():
    rib = Rib(RR)
    rib.update(CLIENT_B, {P: PathAttributes("198.18.0.2")})
    sel = rib.selection(P)
    to_c = reflect_to(RR, sel, CLIENT_C)
    assert to_c.next_hop == "198.18.0.2"
    assert to_c.originator_id == "198.18.0.2" and to_c.cluster_list == ("198.18.0.100",)
    assert reflect_to(RR, sel, RR2) is not None
    assert reflect_to(RR, sel, CLIENT_B) is None  # never back to the sender


def test_non_client_route_goes_to_clients_only():
    rib = Rib(RR)
    rib.update(RR2, {P: PathAttributes("198.18.0.7", originator_id="198.18.0.7", cluster_list=("198.18.0.200",))})
    sel = rib.selection(P)
    assert reflect_to(RR, sel, CLIENT_B).cluster_list == ("198.18.0.100", "198.18.0.200")
    assert reflect_to(RR, sel, Peer("198.18.0.5", 64512, "198.18.0.5", ibgp=True)) is None


def test_not_reflected_to_the_originator_nor_from_ebgp():
    rib = Rib(RR)
    rib.update(CLIENT_B, {P: PathAttributes("198.18.0.3", originator_id="198.18.0.3")})
    assert reflect_to(RR, rib.selection(P), CLIENT_C) is None
    rib2 = Rib(RR)
    rib2.update(TOR1, {P: PathAttributes("198.18.1.1", as_path=(65001,))})
    assert reflect_to(RR, rib2.selection(P), CLIENT_B) is None


def test_incremental_reflections_report_withdrawals():
    rib = Rib(RR)
    changed = rib.update(CLIENT_B, {P: PathAttributes("198.18.0.2")})
    out = reflections(RR, rib, [CLIENT_B, CLIENT_C], changed)
    assert out[P].attributes.originator_id == "198.18.0.2" and out[P].targets == {"198.18.0.3"}
    changed = rib.peer_down(CLIENT_B.address)
    assert reflections(RR, rib, [CLIENT_C], changed) == {P: None}
    assert reflections(RR, rib, [CLIENT_C]) == {}


PEERS = [TOR1, TOR2, NODE_B, NODE_C]
attrs_st = st.builds(PathAttributes, next_hop=st.sampled_from(["198.18.9.1", "198.18.9.2", "198.18.9.3"]),
                     as_path=st.lists(st.sampled_from([65001, 65002, 65003]), max_size=3).map(tuple),
                     local_pref=st.sampled_from([None, 100, 200]), med=st.sampled_from([None, 0, 10]))
ops_st = st.lists(st.tuples(st.sampled_from(range(len(PEERS))), st.sampled_from(["198.19.0.0/26", "198.19.0.64/26"]),
                            st.one_of(st.none(), attrs_st)), max_size=30)


@settings(max_examples=200)
@given(ops_st)
def test_selection_depends_only_on_the_final_adj_rib_in(ops):
    rib = Rib(LOCAL)
    final: dict = {}
    for i, prefix, a in ops:
        prefix = NET(prefix)
        before = rib.selection(prefix)
        if a is None:
            changed = rib.update(PEERS[i], {}, [prefix])
            final.pop((i, prefix), None)
        else:
            changed = rib.update(PEERS[i], {prefix: a})
            final[(i, prefix)] = a
        assert changed == ({prefix} if rib.selection(prefix) != before else set())  # exactly what changed
    fresh = Rib(LOCAL)
    for (i, prefix), a in sorted(final.items(), key=lambda kv: (-kv[0][0], str(kv[0][1]))):
        fresh.update(PEERS[i], {prefix: a})
    assert dict(rib.selections()) == dict(fresh.selections())
    for prefix, sel in rib.selections():
        assert sel.best in sel.multipath and len(set(sel.next_hops)) == len(sel.next_hops)


def test_policy_change_accepts_what_was_rejected_before():
    allow = {"on": False}
    rib = Rib(LOCAL, import_policy=lambda peer, prefix, a: None if allow["on"] else "filtered")
    rib.update(TOR1, {P: PathAttributes("198.18.1.1", as_path=(65001,))})
    assert rib.selection(P) is None and rib.rejected_count(TOR1.address) == 1
    allow["on"] = True
    assert rib.reapply_policy([TOR1]) == {P}
    assert rib.selection(P).next_hops == ("198.18.1.1",) and rib.rejected_count(TOR1.address) == 0
    assert rib.accepted_count(TOR1.address) == 1


def test_allowas_in_accepts_our_as_that_many_times():
    rack = LocalSpeaker(asn=65101, router_id="198.18.1.11")
    strict = Peer("198.18.1.1", 65001, "198.18.1.1", ibgp=False)
    relaxed = Peer("198.18.1.1", 65001, "198.18.1.1", ibgp=False, allow_own_as=1)
    via_tor = PathAttributes("198.18.1.12", as_path=(65001, 65101))
    assert loop_check(rack, strict, via_tor) == "as-path loop"
    assert loop_check(rack, relaxed, via_tor) is None
    assert loop_check(rack, relaxed, PathAttributes("198.18.1.12", as_path=(65001, 65101, 65101))) == "as-path loop"


def test_stale_paths_survive_until_swept_and_refreshed_ones_stay():
    q = NET("198.19.2.0/26")
    rib = Rib(LOCAL)
    rib.update(NODE_B, {P: PathAttributes("198.18.0.2"), q: PathAttributes("198.18.0.2")})
    rib.mark_stale(NODE_B.address)
    assert rib.selection(P) is not None and rib.stale_count(NODE_B.address) == 2
    rib.update(NODE_B, {P: PathAttributes("198.18.0.2")})  # re-announced after the session came back
    assert rib.sweep_stale(NODE_B.address) == {q}
    assert rib.selection(P) is not None and rib.selection(q) is None


def test_reapplying_import_policy_keeps_stale_marks():
    """A datastore change re-runs import policy while a peer is stale: that is not the peer
    re-announcing, so what it withdrew meanwhile must still go at the sweep."""
    q = NET("198.19.2.0/26")
    rib = Rib(LOCAL)
    rib.update(NODE_B, {P: PathAttributes("198.18.0.2"), q: PathAttributes("198.18.0.2")})
    rib.mark_stale(NODE_B.address)
    rib.reapply_policy([NODE_B])
    assert rib.stale_count(NODE_B.address) == 2
    rib.update(NODE_B, {P: PathAttributes("198.18.0.2")})
    assert rib.sweep_stale(NODE_B.address) == {q}


def test_multipath_stops_at_the_kernels_next_hop_limit():
    from calico_bgp.routing.decision import MAX_MULTIPATH
    from dataplane.routes.route import MAX_NEXTHOPS
    assert MAX_MULTIPATH == MAX_NEXTHOPS
    peers = [Peer(f"198.18.{i // 200}.{i % 200 + 1}", 64512, f"198.18.{i // 200}.{i % 200 + 1}", ibgp=True)
             for i in range(70)]
    sel = select([path(p) for p in reversed(peers)], LOCAL.asn)
    assert len(sel.multipath) == MAX_MULTIPATH
    assert [m.peer for m in sel.multipath][1:] == peers[1:MAX_MULTIPATH]  # the same ones every time


def test_local_pref_from_an_external_peer_is_ignored():
    ebgp = path(TOR1, as_path=(65001,), local_pref=500)
    ibgp = path(NODE_B, as_path=(65001,))
    assert compare(ibgp, ebgp, LOCAL.asn) == (1, "ebgp-over-ibgp")  # not decided by local-pref


def test_med_removes_paths_within_each_neighbouring_as_before_anything_else():
    """RFC 4271 9.1.2.2 (d): A loses to C on MED (both from AS 65001) before eBGP-over-iBGP is looked
    at; then B and C tie down to the router id. Pair by pair, A beat B and C beat A: C won."""
    a = path(TOR1, as_path=(65001,), med=10)
    b = path(NODE_B, as_path=(65002,))
    c = path(NODE_C, as_path=(65001,), med=0)
    for order in ([a, b, c], [c, b, a], [b, a, c]):
        sel = select(order, LOCAL.asn, multipath=False)
        assert sel.best == b and sel.reason == "router-id"
    sel = select([a, b, c], LOCAL.asn)
    assert {m.peer for m in sel.multipath} == {NODE_B, NODE_C}  # A lost on MED: not a member


_PEERS = [Peer(f"198.18.3.{i}", 65010 + i, f"198.18.3.{i}", ibgp=False, origin_validation=ov)
          for i, ov in enumerate(("Reject", "Deprefer", "Disabled"), start=1)]
_PREFIXES = [NET(f"198.19.{i}.0/24") for i in range(6)]
_OPS = st.lists(st.tuples(st.sampled_from(["update", "down", "stale", "sweep", "reapply"]), st.integers(0, 2),
                          st.dictionaries(st.integers(0, 5), st.integers(0, 2), max_size=4),
                          st.lists(st.integers(0, 5), max_size=3)), max_size=25)


@settings(max_examples=150, deadline=None)
@given(_OPS)
def test_the_counts_and_selections_follow_every_change_of_paths(ops):
    """One path per prefix is kept without a dict, two or more in one: whatever the sequence, each
    peer's accepted and de-preferred counts are those of its paths, and each selection is what the
    decision process makes of the prefix's paths."""
    def origin(peer, prefix, attrs):  # a third of the prefixes are origin-invalid
        return "invalid origin" if (prefix[1] >> 8) % 3 == 0 else None

    rib = Rib(LOCAL, origin_check=origin)
    for op, who, announced, withdrawn in ops:
        peer = _PEERS[who]
        if op == "update":
            rib.update(peer, {_PREFIXES[p]: PathAttributes(next_hop=peer.address, as_path=(peer.asn,) * (1 + a), med=a)
                              for p, a in announced.items()}, [_PREFIXES[p] for p in withdrawn])
        elif op == "down":
            rib.peer_down(peer.address)
        elif op == "stale":
            rib.mark_stale(peer.address)
        elif op == "sweep":
            rib.sweep_stale(peer.address)
        else:
            rib.reapply_policy(_PEERS)
        for p in _PEERS:
            mine = [x for prefix in _PREFIXES for x in rib.paths(prefix) if x.peer.address == p.address]
            assert rib.accepted_count(p.address) == len(mine)
            assert rib.depreferred_count(p.address) == sum(1 for x in mine if x.invalid is not None)
        for prefix in _PREFIXES:
            paths = rib.paths(prefix)
            assert len({x.peer.address for x in paths}) == len(paths)
            sel = rib.selection(prefix)
            if not paths:
                assert sel is None
            elif len(paths) == 1:
                assert (sel.best, sel.multipath, sel.reason) == (paths[0], (paths[0],), "only-path")
            else:
                assert sel == select(paths, LOCAL.asn, True)
