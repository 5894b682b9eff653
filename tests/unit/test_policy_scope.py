"""What a cluster change makes import policy judge again (routing/policy_scope.py), and that judging
only that gives the RIB a full re-run would."""
from __future__ import annotations

import ipaddress

from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.origin import Origin, OriginIndex
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.policy_scope import MAX_CANDIDATES, PolicyInputs, rejudge
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import Rib
from ipam.block import Block

POOL = ("pods", ipaddress.ip_network("198.19.0.0/16"))
N1, N2, N3 = Origin(64512, "198.18.0.1"), Origin(64512, "198.18.0.2"), Origin(64512, "198.18.0.3")
B1 = Block.new("198.19.1.0/26", "n1", 0)
B2 = Block.new("198.19.2.0/26", "n2", 0)
B3 = Block.new("198.19.3.0/26", "n3", 0)


def inputs(blocks: list[Block], origins: dict[str, Origin] | None = None, **kw) -> PolicyInputs:
    base = dict(pools=(("pods", "spec"),), filters=(("198.18.0.2", ()),), own=frozenset({"198.18.0.1"}),
                fabric_as=frozenset(), origins={"n1": N1, "n2": N2} if origins is None else origins,
                blocks={b.cidr: b for b in blocks})
    base.update(kw)
    return PolicyInputs(**base)


def p(text: str) -> Prefix:
    return Prefix.of(text)


def test_the_first_judgement_and_any_change_of_pools_filters_or_own_addresses_judge_everything():
    before = inputs([B1, B2])
    assert rejudge(None, before) is None
    assert rejudge(before, inputs([B1, B2], pools=(("pods", "other spec"),))) is None
    assert rejudge(before, inputs([B1, B2], filters=(("198.18.0.2", ("f",)),))) is None
    assert rejudge(before, inputs([B1, B2], own=frozenset({"198.18.0.9"}))) is None
    assert rejudge(before, inputs([B1, B2], fabric_as=frozenset({65000}))) is None


def test_nothing_changed_judges_nothing():
    assert rejudge(inputs([B1, B2]), inputs([B1, B2])) == frozenset()


def test_a_block_added_judges_the_prefixes_inside_it_and_nothing_else():
    got = rejudge(inputs([B1, B2]), inputs([B1, B2, B3]))
    assert got is not None and len(got) == 127  # a /26 and everything longer inside it
    assert {p("198.19.3.0/26"), p("198.19.3.63/32"), p("198.19.3.32/27")} <= got
    assert p("198.19.2.0/26") not in got and p("198.19.0.0/16") not in got and p("198.19.3.64/32") not in got
    assert rejudge(inputs([B1, B2, B3]), inputs([B1, B2])) == got  # and removed


def test_an_address_allocated_in_a_block_judges_that_block():
    b2, _ = B2.allocate(1, "w", "n3")
    got = rejudge(inputs([B1, B2]), inputs([B1, b2]))
    assert got is not None and p("198.19.2.0/32") in got and p("198.19.1.0/26") not in got


def test_a_node_origin_that_appears_or_changes_judges_its_blocks_and_the_addresses_it_holds():
    b1, _ = B1.allocate(1, "borrowed", "n3")  # n3 holds an address in n1's block
    blocks = [b1, B2, B3]
    before = inputs(blocks, {"n1": N1, "n2": N2})
    got = rejudge(before, inputs(blocks, {"n1": N1, "n2": N2, "n3": N3}))  # n3 joins
    assert got is not None and p("198.19.3.0/26") in got and p("198.19.1.0/32") in got
    assert p("198.19.2.0/26") not in got
    moved = rejudge(before, inputs(blocks, {"n1": N1, "n2": Origin(64512, "198.18.0.22")}))
    assert moved is not None and p("198.19.2.5/32") in moved and p("198.19.3.0/26") not in moved


def test_blocks_too_large_to_enumerate_judge_everything():
    big = Block.new("2001:db8:100::/112", "n2", 0)
    assert (1 << (128 - 112 + 1)) - 1 > MAX_CANDIDATES
    assert rejudge(inputs([B1]), inputs([B1, big])) is None


LOCAL = LocalSpeaker(64512, "198.18.0.1")
NH = PathAttributes("198.18.0.9")


def rib_of(blocks: list[Block], origins: dict[str, Origin]) -> tuple[Rib, list[Peer]]:
    rib = Rib(LOCAL, origin_check=OriginIndex("n1", [POOL], blocks, origins).check)
    peers = [Peer("198.18.0.2", 64512, "198.18.0.2", ibgp=True), Peer("198.18.0.3", 64512, "198.18.0.3", ibgp=True)]
    for peer, prefixes in zip(peers, (["198.19.2.0/26", "198.19.3.0/26", "198.19.3.7/32"],
                                      ["198.19.3.0/26", "198.19.2.0/26", "198.19.9.0/26"])):
        rib.update(peer, {p(x): NH for x in prefixes})
    return rib, peers


def state(rib: Rib) -> tuple[dict, dict]:
    return dict(rib.selections()), {x: rib.rejected_count(x) for x in ("198.18.0.2", "198.18.0.3")}


def test_judging_only_the_scope_leaves_the_rib_as_a_full_rerun_would():
    origins = {"n1": N1, "n2": N2}
    before_blocks, after_blocks = [B1, B2], [B1, B2, B3]
    after_origins = {"n1": N1, "n2": N2, "n3": N3}
    scoped, peers = rib_of(before_blocks, origins)
    full, _ = rib_of(before_blocks, origins)
    # from n3: n2's block, and two prefixes of the pool in no block yet: origin invalid, rejected
    assert scoped.rejected_count("198.18.0.3") == 3 and scoped.selection(p("198.19.3.0/26")) is None
    for rib in (scoped, full):
        rib.origin_check = OriginIndex("n1", [POOL], after_blocks, after_origins).check
    scope = rejudge(inputs(before_blocks, origins), inputs(after_blocks, after_origins))
    assert scope is not None and p("198.19.3.0/26") in scope
    changed_scoped = scoped.reapply_policy(peers, scope)
    changed_full = full.reapply_policy(peers)
    assert changed_scoped == changed_full and p("198.19.3.0/26") in changed_full
    assert state(scoped) == state(full)
    assert scoped.selection(p("198.19.3.0/26")).best.peer == peers[1]  # n3's block, now valid from n3
    assert scoped.rejected_count("198.18.0.3") == 2
    assert scoped.reapply_policy(peers, frozenset()) == set()
