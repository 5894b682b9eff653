"""Origin validation from IPAM (calico_bgp/routing/origin.py): who may originate a prefix in a pool, and what
the RIB does with an invalid path (reject, de-prefer, off)."""
from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from calico_bgp.resources import model
from calico_bgp.resources.bgpconfig import BGPConfiguration, BGPConfigurationSpec
from calico_bgp.resources.ippool import IPPool
from calico_bgp.resources.node import Node
from calico_bgp.routing.origin import Origin, OriginIndex
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import Rib
from ipam.block import Block

POOL = ("pods", ipaddress.ip_network("198.19.0.0/16"))
POOL6 = ("pods6", ipaddress.ip_network("2001:db8:100::/48"))
N1, N2, N3 = Origin(64512, "198.18.0.1"), Origin(64512, "198.18.0.2"), Origin(65003, "198.18.0.3")
ORIGINS = {"n1": N1, "n2": N2, "n3": N3}

# n1 (this node) has 198.19.0.0/26, n2 has 198.19.59.0/26 and n3 198.19.60.0/26; n3 borrowed
# 198.19.59.10 from n2's block; n2 holds 198.19.59.0-1 itself; 198.19.61.0/26 has no affine node
# but one address held by n3
_b2, _ = Block.new("198.19.59.0/26", "n2", 0).allocate(2, "w-n2", "n2")
_b2, _ = _b2.allocate(8, "pad", "n2")
_b2, _ = _b2.allocate(1, "w-n3", "n3")  # ordinal 10: 198.19.59.10 borrowed by n3
_b61, _ = Block.new("198.19.61.0/26", None, 0).allocate(1, "w-n3b", "n3")
BLOCKS = [Block.new("198.19.0.0/26", "n1", 0).allocate(1, "w-n1", "n1")[0], _b2,
          Block.new("198.19.60.0/26", "n3", 0), _b61,
          Block.new("2001:db8:100::/122", "n2", 0).allocate(1, "w6", "n2")[0]]


def index(fabric: tuple[int, ...] = ()) -> OriginIndex:
    return OriginIndex("n1", [POOL, POOL6], BLOCKS, ORIGINS, fabric)


def net(text: str) -> Prefix:
    return Prefix.of(text)


MESH_N2 = Peer("198.18.0.2", 64512, "198.18.0.2", ibgp=True)
MESH_N3 = Peer("198.18.0.30", 64512, "198.18.0.30", ibgp=True)   # an iBGP peer that is no node
RR = Peer("198.18.0.100", 64512, "198.18.0.100", ibgp=True)
EBGP_N3 = Peer("198.18.0.3", 65003, "198.18.0.3", ibgp=False)
HOSTILE = Peer("198.18.0.99", 64999, "198.18.0.99", ibgp=False)
TOR = Peer("198.18.1.1", 65101, "198.18.1.1", ibgp=False)
NH = "198.18.0.9"


def test_a_block_is_valid_from_its_affine_node_and_invalid_from_anyone_else():
    ix = index()
    assert ix.check(MESH_N2, net("198.19.59.0/26"), PathAttributes(NH)) is None
    assert ix.check(MESH_N3, net("198.19.59.0/26"), PathAttributes(NH)) == \
        "origin invalid: 198.19.59.0/26 is n2's block, path originates at router 198.18.0.30"
    assert ix.check(HOSTILE, net("198.19.59.0/26"), PathAttributes(NH)) == \
        "origin invalid: 198.19.59.0/26 is n2's block, path originates at AS 64999"
    assert ix.check(HOSTILE, net("198.19.59.0/26"), PathAttributes(NH, as_path=(64999, 64512))) is None  # origin AS n2's


def test_a_more_specific_inside_a_block_belongs_to_the_block():
    ix = index()
    assert ix.check(MESH_N2, net("198.19.59.32/27"), PathAttributes(NH)) is None
    assert ix.check(HOSTILE, net("198.19.59.32/27"), PathAttributes(NH, as_path=(64999,))) == \
        "origin invalid: 198.19.59.0/26 is n2's block, path originates at AS 64999"


def test_reflected_paths_are_judged_by_originator_id():
    ix = index()
    assert ix.check(RR, net("198.19.59.0/26"), PathAttributes(NH, originator_id="198.18.0.2", cluster_list=("1.1.1.1",))) is None
    assert ix.check(RR, net("198.19.59.0/26"), PathAttributes(NH, originator_id="198.18.0.3")) == \
        "origin invalid: 198.19.59.0/26 is n2's block, path originates at router 198.18.0.3"
    # without ORIGINATOR_ID the reflector itself is the origin
    assert ix.check(RR, net("198.19.59.0/26"), PathAttributes(NH)) is not None


def test_over_ebgp_the_origin_as_is_the_last_of_the_path_or_the_peer_as():
    ix = index()
    assert ix.check(EBGP_N3, net("198.19.60.0/26"), PathAttributes(NH, as_path=(65003,))) is None
    assert ix.check(EBGP_N3, net("198.19.60.0/26"), PathAttributes(NH)) is None  # empty: the peer originated it
    assert ix.check(HOSTILE, net("198.19.60.0/26"), PathAttributes(NH, as_path=(64999, 65003))) is None
    assert ix.check(HOSTILE, net("198.19.60.0/26"), PathAttributes(NH, as_path=(65003, 64999))) == \
        "origin invalid: 198.19.60.0/26 is n3's block, path originates at AS 64999"


def test_a_host_route_is_valid_only_from_the_node_holding_the_address():
    ix = index()
    # borrowed: n3 holds 198.19.59.10 in n2's block; n2 (the block's node) may not announce it
    assert ix.check(EBGP_N3, net("198.19.59.10/32"), PathAttributes(NH, as_path=(65003,))) is None
    assert ix.check(MESH_N2, net("198.19.59.10/32"), PathAttributes(NH)) == \
        "origin invalid: held by n3 (block 198.19.59.0/26), path originates at router 198.18.0.2"
    assert ix.check(MESH_N2, net("198.19.59.1/32"), PathAttributes(NH)) is None  # n2's own workload
    assert ix.check(MESH_N2, net("198.19.59.40/32"), PathAttributes(NH)) == \
        "origin invalid: an unassigned address of block 198.19.59.0/26"
    # a block with no affine node: its held address is its holder's, the block is nobody's
    assert ix.check(EBGP_N3, net("198.19.61.0/32"), PathAttributes(NH, as_path=(65003,))) is None
    assert ix.check(EBGP_N3, net("198.19.61.0/26"), PathAttributes(NH, as_path=(65003,))) == \
        "origin invalid: 198.19.61.0/26 is a block with no affine node"


def test_this_nodes_own_blocks_and_addresses_are_never_valid_from_anyone_else():
    ix = index()
    for prefix in ("198.19.0.0/26", "198.19.0.0/27", "198.19.0.0/32", "198.19.0.33/32"):
        why = ix.check(MESH_N2, net(prefix), PathAttributes(NH))
        assert why is not None and why.startswith("origin invalid: "), prefix
    assert ix.check(MESH_N2, net("198.19.0.0/26"), PathAttributes(NH)) == \
        "origin invalid: 198.19.0.0/26 is n1's block, this node's own, path from 198.18.0.2"
    assert ix.check(HOSTILE, net("198.19.0.33/32"), PathAttributes(NH)) == \
        "origin invalid: an unassigned address of block 198.19.0.0/26"


def test_in_a_pool_but_in_no_block_is_nobodys_and_outside_every_pool_is_not_judged():
    ix = index()
    assert ix.check(MESH_N2, net("198.19.200.0/24"), PathAttributes(NH)) == \
        "origin invalid: in pool pods but in no block"
    assert ix.check(MESH_N2, net("198.19.59.0/24"), PathAttributes(NH)) == \
        "origin invalid: in pool pods but in no block"  # an aggregate over blocks
    assert ix.check(HOSTILE, net("198.18.99.0/24"), PathAttributes(NH)) is None
    assert ix.check(HOSTILE, net("0.0.0.0/0"), PathAttributes(NH)) is None


def test_a_block_of_a_node_without_bgp_is_invalid_from_anyone():
    ix = OriginIndex("n1", [POOL], [Block.new("198.19.70.0/26", "gone", 0)], ORIGINS)
    assert ix.check(MESH_N2, net("198.19.70.0/26"), PathAttributes(NH)) == \
        "origin invalid: 198.19.70.0/26 is gone's block, gone is not a BGP node"


def test_ipv6_blocks_and_host_routes():
    ix = index()
    assert ix.check(MESH_N2, net("2001:db8:100::/122"), PathAttributes("2001:db8::2")) is None
    assert ix.check(MESH_N2, net("2001:db8:100::/128"), PathAttributes("2001:db8::2")) is None
    assert ix.check(HOSTILE, net("2001:db8:100::/122"), PathAttributes("2001:db8::99")) == \
        "origin invalid: 2001:db8:100::/122 is n2's block, path originates at AS 64999"
    assert ix.check(MESH_N2, net("2001:db8:100::5/128"), PathAttributes("2001:db8::2")) == \
        "origin invalid: an unassigned address of block 2001:db8:100::/122"


# --- the fabric standing in for a node's AS (as-override at the ToRs) ----------------------------

def test_a_fabric_as_stands_in_only_for_a_path_that_never_left_the_fabric():
    ix = index(fabric=(65000, 65101, 65102))
    block = net("198.19.60.0/26")
    assert ix.check(TOR, block, PathAttributes(NH, as_path=(65101, 65101))) is None           # FRR as-override
    assert ix.check(TOR, block, PathAttributes(NH, as_path=(65101, 65000, 65102, 65101))) is None  # through the spine
    assert ix.check(TOR, block, PathAttributes(NH, as_path=(65101, 65003))) is None           # no override: n3's AS
    assert ix.check(TOR, block, PathAttributes(NH, as_path=(65101, 64999, 65101))) == \
        "origin invalid: 198.19.60.0/26 is n3's block, path originates at fabric AS 65101 but passed AS 64999, not a fabric AS"
    assert ix.check(HOSTILE, block, PathAttributes(NH, as_path=(64999, 65101))) is not None
    assert ix.check(HOSTILE, block, PathAttributes(NH)) == \
        "origin invalid: 198.19.60.0/26 is n3's block, path originates at AS 64999"
    # never for inside this node's own block, nor without the setting
    assert ix.check(TOR, net("198.19.0.32/27"), PathAttributes(NH, as_path=(65101, 65101))) is not None
    assert index().check(TOR, block, PathAttributes(NH, as_path=(65101, 65101))) == \
        "origin invalid: 198.19.60.0/26 is n3's block, path originates at AS 65101"


def test_of_cluster_takes_each_nodes_as_and_router_id():
    cfg = BGPConfiguration(spec=BGPConfigurationSpec(as_number=64512, fabric_as_numbers=(65101,)))
    nodes = [model.from_dict(Node, {"metadata": {"name": n}, "spec": {"bgp": bgp}}, where=n) for n, bgp in (
        ("n1", {"ipv4Address": "198.18.0.1/24"}), ("n2", {"ipv4Address": "198.18.0.2/24", "asNumber": 65010}),
        ("nobgp", None))]
    pool = model.from_dict(IPPool, {"metadata": {"name": "pods"}, "spec": {"cidr": "198.19.0.0/16"}}, where="p")
    ix = OriginIndex.of_cluster("n1", nodes, [pool], BLOCKS, cfg)
    assert ix.origins == {"n1": Origin(64512, "198.18.0.1"), "n2": Origin(65010, "198.18.0.2")}
    assert ix.fabric_as == {65101}
    assert ix.check(HOSTILE, net("198.19.59.0/26"), PathAttributes(NH, as_path=(64999, 65010))) is None


# --- against a brute-force reference --------------------------------------------------------------

@st.composite
def layouts(draw):  # noqa: ANN001, ANN201
    """Non-overlapping blocks of /26 and /28 inside 198.19.0.0/20, each affine to a node or none."""
    blocks, taken = [], set()
    for _ in range(draw(st.integers(0, 12))):
        plen = draw(st.sampled_from((26, 28)))
        base = draw(st.integers(0, (1 << (32 - 20 - (32 - plen))) - 1)) << (32 - plen)
        b = ipaddress.ip_network((int(ipaddress.ip_address("198.19.0.0")) + base, plen))
        if any(b.overlaps(t) for t in taken):
            continue
        taken.add(b)
        host = draw(st.sampled_from(("n1", "n2", "n3", None)))
        block = Block.new(str(b), host, 0)
        block, _ = block.allocate(draw(st.integers(0, 3)), "h", draw(st.sampled_from(("n2", "n3", None))))
        blocks.append(block)
    return blocks


def _reference_owner(blocks: list[Block], prefix) -> tuple[str | None, bool]:  # noqa: ANN001
    """(owner, judged) by linear search: the block containing the prefix, the holder for a host route."""
    if not prefix.subnet_of(ipaddress.ip_network("198.19.0.0/16")):
        return None, False
    for b in blocks:
        if prefix.subnet_of(b.network):
            if prefix.prefixlen == 32:
                use = next((u for u in b.in_use() if u.ip == str(prefix.network_address)), None)
                return ((use.node or b.host) if use else None), True
            return b.host, True
    return None, True


@settings(max_examples=200, deadline=None)
@given(layouts(), st.integers(0, (1 << 13) - 1), st.sampled_from((20, 24, 26, 27, 28, 30, 32)),
       st.sampled_from(sorted(ORIGINS)))
def test_check_agrees_with_a_linear_search(blocks, offset, plen, speaker):
    value = int(ipaddress.ip_address("198.18.240.0")) + offset  # spans the pool's edge
    network = ipaddress.ip_network((value >> (32 - plen) << (32 - plen), plen))
    prefix = Prefix.of(network)
    ix = OriginIndex("n1", [POOL], blocks, ORIGINS)
    origin = ORIGINS[speaker]
    peer = Peer(origin.router_id, origin.asn, origin.router_id, ibgp=True)
    owner, judged = _reference_owner(blocks, network)
    valid = not judged or (owner is not None and owner == speaker and owner != "n1")
    assert (ix.check(peer, prefix, PathAttributes(NH)) is None) == valid


# --- what the RIB does with an invalid path ------------------------------------------------------

LOCAL = LocalSpeaker(64512, "198.18.0.1")
VALID = PathAttributes("198.18.0.2")
HIJACK = PathAttributes("198.18.0.99", as_path=(64999,))
BLOCK = net("198.19.59.0/26")


def _rib(mode: str) -> tuple[Rib, Peer, Peer]:
    rib = Rib(LOCAL, origin_check=index().check)
    return rib, Peer("198.18.0.2", 64512, "198.18.0.2", ibgp=True, origin_validation=mode), \
        Peer("198.18.0.99", 64999, "198.18.0.99", ibgp=False, origin_validation=mode)


def test_reject_keeps_the_hijack_out_and_says_why():
    rib, mesh, hostile = _rib("Reject")
    rib.update(mesh, {BLOCK: VALID})
    assert rib.update(hostile, {BLOCK: HIJACK, net("198.19.59.32/27"): HIJACK}) == set()
    assert rib.selection(BLOCK).best.peer == mesh  # eBGP over iBGP would have chosen the hijacker
    assert net("198.19.59.32/27") not in dict(rib.selections())
    assert {(r.prefix, r.reason) for r in rib.rejected("198.18.0.99")} == {
        (BLOCK, "origin invalid: 198.19.59.0/26 is n2's block, path originates at AS 64999"),
        (net("198.19.59.32/27"), "origin invalid: 198.19.59.0/26 is n2's block, path originates at AS 64999")}


def test_deprefer_keeps_the_hijack_but_any_valid_path_wins():
    rib, mesh, hostile = _rib("Deprefer")
    rib.update(hostile, {BLOCK: HIJACK})
    assert rib.selection(BLOCK).best.peer == hostile  # the only path is used, as an RPKI-invalid one would be
    assert rib.depreferred_count("198.18.0.99") == 1 and rib.rejected("198.18.0.99") == []
    assert rib.update(mesh, {BLOCK: VALID}) == {BLOCK}
    sel = rib.selection(BLOCK)
    assert sel.best.peer == mesh and sel.reason == "origin-validation" and len(sel.multipath) == 1
    assert sel.best.invalid is None
    assert rib.paths(BLOCK)[0].invalid == "origin invalid: 198.19.59.0/26 is n2's block, path originates at AS 64999"


def test_disabled_skips_the_check_and_a_cluster_change_re_evaluates():
    rib, mesh, hostile = _rib("Disabled")
    rib.update(hostile, {BLOCK: HIJACK})
    assert rib.selection(BLOCK).best.peer == hostile and rib.depreferred_count("198.18.0.99") == 0
    rib, mesh, hostile = _rib("Reject")
    stray = net("198.19.62.0/26")
    rib.update(mesh, {stray: VALID})
    assert rib.selection(stray) is None  # n2 announced a block IPAM has not shown us yet
    rib.origin_check = OriginIndex("n1", [POOL], [*BLOCKS, Block.new("198.19.62.0/26", "n2", 0)], ORIGINS).check
    assert rib.reapply_policy([mesh]) == {stray}
    assert rib.selection(stray).best.peer == mesh


# --- the lab's topologies: what their fabric routers send is valid ---------------------------------

def _lab(name: str):  # noqa: ANN202
    from pathlib import Path

    from calico_bgp.resources.documents import load_documents
    docs = load_documents((Path(__file__).parents[2] / "containerlab" / f"{name}.resources.yaml").read_text())
    config = next((d for d in docs if isinstance(d, BGPConfiguration)), BGPConfiguration())
    return ([d for d in docs if isinstance(d, Node)], [d for d in docs if isinstance(d, IPPool)], config)


def test_rack_tor_paths_with_as_override_are_valid_and_a_hijack_through_them_is_not():
    nodes, pools, config = _lab("rack")
    n2_block = Block.new("198.19.59.0/26", "n2", 0)
    ix = OriginIndex.of_cluster("n1", nodes, pools, [n2_block], config)
    tor1 = Peer("198.18.1.1", 65101, "198.18.1.1", ibgp=False)
    tor2 = Peer("198.18.2.1", 65102, "198.18.2.1", ibgp=False)
    block = net("198.19.59.0/26")
    assert ix.check(tor1, block, PathAttributes("198.18.1.1", as_path=(65101, 65101))) is None  # FRR as-override
    assert ix.check(tor2, block, PathAttributes("198.18.2.1", as_path=(65102, 65102))) is None  # BIRD's rewrite
    assert ix.check(tor1, block, PathAttributes("198.18.1.1", as_path=(65101, 65000, 65102, 65102))) is None
    assert ix.check(tor1, block, PathAttributes("198.18.1.1", as_path=(65101, 64999))) is not None
    assert ix.check(tor1, block, PathAttributes("198.18.1.1", as_path=(65101, 64999, 65101))) is not None


def test_rr_reflected_client_blocks_are_valid():
    nodes, pools, config = _lab("rr")
    ix = OriginIndex.of_cluster("c1", nodes, pools, [Block.new("198.19.59.0/26", "c2", 0)], config)
    rr1 = Peer("198.18.1.11", 64512, "198.18.1.11", ibgp=True)
    block = net("198.19.59.0/26")
    assert ix.check(rr1, block, PathAttributes("198.18.1.22", originator_id="198.18.1.22")) is None
    assert ix.check(rr1, block, PathAttributes("198.18.1.22", originator_id="198.18.1.23")) is not None


def test_our_own_route_echoed_back_through_the_fabric_is_not_a_claim():
    """FRR's as-override sends a node its own block back (65101 65101): our own route, not a hijack;
    a more-specific, or the same path without the fabric ASes named, still is invalid."""
    ix = index(fabric=(65101,))
    assert ix.check(TOR, net("198.19.0.0/26"), PathAttributes(NH, as_path=(65101, 65101))) is None
    assert ix.check(TOR, net("198.19.0.0/27"), PathAttributes(NH, as_path=(65101, 65101))) is not None
    assert ix.check(TOR, net("198.19.0.0/32"), PathAttributes(NH, as_path=(65101, 65101))) is None  # held by n1
    assert ix.check(TOR, net("198.19.0.5/32"), PathAttributes(NH, as_path=(65101, 65101))) is not None  # unassigned
    assert ix.check(TOR, net("198.19.0.0/26"), PathAttributes(NH, as_path=(65101, 64999))) is not None
    assert ix.check(TOR, net("198.19.0.0/26"), PathAttributes(NH)) is not None
    assert index().check(TOR, net("198.19.0.0/26"), PathAttributes(NH, as_path=(65101, 65101))) == \
        "origin invalid: 198.19.0.0/26 is n1's block, this node's own, path from 198.18.1.1"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.sampled_from((None, 50, 100, 200)), st.booleans()),
                min_size=1, max_size=6))
def test_deprefer_ranks_validity_before_everything_else(specs):
    """Whatever their local-pref, AS path and session kind, a valid path beats every invalid one, and
    an ECMP set never mixes the two (RIB selection as RPKI-invalid de-preference would have it)."""
    from calico_bgp.routing.decision import select
    from calico_bgp.routing.path import DepreferredPath, Path
    paths = []
    for i, (invalid, hops, lp, ibgp) in enumerate(specs):
        peer = Peer(f"198.18.0.{i + 10}", 64512 if ibgp else 65000 + i, f"198.18.0.{i + 10}", ibgp=ibgp)
        a = PathAttributes(f"198.18.0.{i + 10}", as_path=tuple(range(65100, 65100 + hops)), local_pref=lp)
        paths.append(DepreferredPath(BLOCK, peer, a, "origin invalid: x") if invalid else Path(BLOCK, peer, a))
    sel = select(paths, 64512)
    assert (sel.best.invalid is None) == any(p.invalid is None for p in paths)
    assert len({p.invalid is None for p in sel.multipath}) == 1
