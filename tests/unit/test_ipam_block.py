"""The pure block logic: allocation array, release by IP/handle/sequence number, borrowing, codec."""
from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from calico_bgp.resources import codec
from ipam import Block, BlockConflict, Handle, InvalidAddress, Pool, StaleRelease


def test_new_block_is_empty_and_free_in_order():
    b = Block.new("198.19.0.0/30", "n1", sequence_number=10)
    assert b.is_empty() and b.free_count == 4 and b.host == "n1"
    b, got = b.allocate(3, "h1", "n1")
    assert [a.ip for a in got] == ["198.19.0.0", "198.19.0.1", "198.19.0.2"]
    assert [a.seq for a in got] == [10, 11, 12] and b.sequence_numbers == {"0": 0, "1": 1, "2": 2}
    assert not any(a.borrowed for a in got)
    assert b.count_for("h1") == 3 and b.free_count == 1


def test_allocate_more_than_free_returns_what_there_is():
    b, got = Block.new("2001:db8:1::/126", "n1").allocate(9, "h", "n1")
    assert len(got) == 4 and b.free_count == 0
    assert b.allocate(1, "h2", "n1")[1] == []


def test_released_address_goes_to_the_back_and_gets_a_new_sequence_number():
    b, (a,) = Block.new("198.19.0.0/30", "n1", sequence_number=0).allocate(1, "h", "n1")
    b, rel = b.release([(a.ip, a.seq)])
    assert rel.by_handle == {"h": 1}
    assert b.unallocated == (1, 2, 3, 0) and b.attributes == ()
    b, got = b.allocate(4, "h2", "n1")
    again = [g for g in got if g.ip == a.ip][0]
    assert again.seq != a.seq
    with pytest.raises(StaleRelease) as err:
        b.release([(a.ip, a.seq)])
    assert a.ip in str(err.value)
    assert b.count_for("h2") == 4  # the stale release freed nothing


def test_release_is_idempotent_and_reports_free_addresses():
    b, (a,) = Block.new("198.19.0.0/30", "n1").allocate(1, "h", "n1")
    b, _ = b.release([a.ip])
    b2, rel = b.release([a.ip])
    assert b2 == b and rel.not_allocated == (a.ip,) and rel.count == 0


def test_release_with_the_wrong_handle_is_refused():
    b, (a,) = Block.new("198.19.0.0/30", "n1").allocate(1, "h", "n1")
    with pytest.raises(BlockConflict):
        b.release([a.ip], handle="other")


def test_release_handle_frees_only_that_handle_and_compacts_attributes():
    b = Block.new("198.19.0.0/29", "n1")
    b, _ = b.allocate(2, "a", "n1", {"pod": "a"})
    b, _ = b.allocate(3, "b", "n1")
    b, _ = b.allocate(1, "c", "n1")
    b, rel = b.release_handle("b")
    assert rel.by_handle == {"b": 3}
    assert b.handle_counts() == {"a": 2, "c": 1}
    assert [x.handle_id for x in b.attributes] == ["a", "c"]
    assert b.release_handle("b")[1].count == 0


def test_borrowed_addresses_name_the_borrowing_node():
    b, got = Block.new("198.19.0.0/30", "n1").allocate(2, "h", "n2")
    assert all(a.borrowed for a in got)
    assert [(u.ip, u.node) for u in b.borrowed()] == [("198.19.0.0", "n2"), ("198.19.0.1", "n2")]


def test_seen_empty_counts_only_while_empty():
    b = Block.new("198.19.0.0/30", "n1").observe_empty().observe_empty()
    assert b.seen_empty == 2
    b, _ = b.allocate(1, "h", "n1")
    assert b.seen_empty == 0 and b.observe_empty().seen_empty == 0


def test_address_outside_block_is_invalid():
    b = Block.new("198.19.0.0/30", "n1")
    with pytest.raises(InvalidAddress):
        b.release(["198.19.0.4"])
    with pytest.raises(InvalidAddress):
        b.release(["nonsense"])


def test_codec_round_trip_v4_and_v6():
    for cidr in ("198.19.0.0/26", "2001:db8:1::/122"):
        b, _ = Block.new(cidr, "n1").allocate(5, "h", "n2", {"pod": "p"})
        assert codec.decode(Block, codec.encode(b)) == b
    h = Handle("h", {"198.19.0.0/26": 5}, "n2")
    assert codec.decode(Handle, codec.encode(h)) == h


def test_fast_block_encoding_matches_the_generic_codec():
    generic = codec._make_converter()
    b = Block.new("198.19.0.0/28", "n1", sequence_number=7)
    samples = [b, Block.new("2001:db8:1::/126"), b.observe_empty()]
    b, _ = b.allocate(3, "h", "n1", {"pod": "p"})
    b, _ = b.allocate(2, None, "n2")
    samples += [b, b.release_handle("h")[0]]
    for blk in samples:
        assert codec.to_dict(blk) == generic.unstructure(blk)


def test_pool_blocks_cover_the_pool_once_and_validate_size():
    p = Pool("p", "198.19.0.0/24", 26)
    assert sorted(p.block_cidrs("n1")) == sorted(p.block_cidrs())
    assert len(set(p.block_cidrs("x"))) == 4
    with pytest.raises(ValueError, match="blockSize 19"):
        Pool("p", "198.19.0.0/16", 19)
    with pytest.raises(ValueError, match="blockSize 115"):
        Pool("p", "2001:db8::/64", 115)


# ---- the state machine ------------------------------------------------------------------------
GENERIC = codec._make_converter()
POOLS = [Pool("v4", "198.19.0.0/28", 30), Pool("v6", "2001:db8:1::/124", 126)]
NODES = ["n1", "n2", "n3"]
HANDLES = ["h1", "h2", "h3", "h4"]


class BlockMachine(RuleBasedStateMachine):
    """Claim/allocate/release/release_handle in any order, against a model of who holds what."""

    @initialize()
    def setup(self):
        self.blocks: dict[str, Block] = {}
        self.model: dict[str, tuple[str, int]] = {}  # ip -> (handle, seq)

    @rule(pool=st.sampled_from(POOLS), node=st.sampled_from(NODES), i=st.integers(0, 3))
    def claim(self, pool, node, i):
        cidr = list(pool.block_cidrs())[i]
        if cidr not in self.blocks:
            self.blocks[cidr] = Block.new(cidr, node)

    @precondition(lambda self: self.blocks)
    @rule(data=st.data(), node=st.sampled_from(NODES), handle=st.sampled_from(HANDLES), n=st.integers(0, 5))
    def allocate(self, data, node, handle, n):
        cidr = data.draw(st.sampled_from(sorted(self.blocks)))
        before = self.blocks[cidr]
        after, got = before.allocate(n, handle, node)
        assert len(got) == min(n, before.free_count)
        for a in got:
            assert a.ip not in self.model, f"duplicate {a.ip}"
            assert before.contains(a.ip)
            assert a.borrowed == (node != before.host)
            self.model[a.ip] = (handle, a.seq)
        self.blocks[cidr] = after

    @precondition(lambda self: self.model)
    @rule(data=st.data(), stale=st.booleans())
    def release_ip(self, data, stale):
        ip = data.draw(st.sampled_from(sorted(self.model)))
        handle, seq = self.model[ip]
        cidr = next(c for c, b in self.blocks.items() if b.contains(ip))
        if stale:
            with pytest.raises(StaleRelease):
                self.blocks[cidr].release([(ip, seq - 1)])
            return
        self.blocks[cidr], rel = self.blocks[cidr].release([(ip, seq)])
        assert rel.by_handle == {handle: 1}
        del self.model[ip]

    @rule(handle=st.sampled_from(HANDLES))
    def release_handle(self, handle):
        freed = 0
        for cidr, b in list(self.blocks.items()):
            self.blocks[cidr], rel = b.release_handle(handle)
            freed += rel.count
        expected = [ip for ip, (h, _) in self.model.items() if h == handle]
        assert freed == len(expected)
        for ip in expected:
            del self.model[ip]

    @precondition(lambda self: self.blocks)
    @rule(data=st.data())
    def round_trip(self, data):
        cidr = data.draw(st.sampled_from(sorted(self.blocks)))
        assert codec.decode(Block, codec.encode(self.blocks[cidr])) == self.blocks[cidr]
        assert codec.to_dict(self.blocks[cidr]) == GENERIC.unstructure(self.blocks[cidr])

    @invariant()
    def nothing_duplicated_lost_or_outside(self):
        if not hasattr(self, "blocks"):
            return
        seen: dict[str, tuple[str | None, int | None]] = {}
        for cidr, b in self.blocks.items():
            pool = next(p for p in POOLS if p.contains(cidr))
            assert sorted(b.unallocated) == [o for o, i in enumerate(b.allocations) if i is None]
            assert len(set(b.unallocated)) == len(b.unallocated)
            assert {i for i in b.allocations if i is not None} == set(range(len(b.attributes)))
            for u in b.in_use():
                assert u.ip not in seen
                assert ipaddress.ip_address(u.ip) in pool.network
                seen[u.ip] = (u.handle, u.seq)
        assert seen == self.model


TestBlockMachine = BlockMachine.TestCase
TestBlockMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize("change, reason", [
    ({"allocations": [0, None, None, None], "unallocated": [0, 1, 1, 2]}, "lists an ordinal twice"),
    ({"allocations": [0, None, None, None], "unallocated": [0, 1, 2, 3]}, "does not match the free allocations"),
    ({"allocations": [0, None, None, None], "unallocated": [1, 2]}, "does not match the free allocations"),
    ({"unallocated": [0, 1, 2, 7]}, "not an ordinal 0..3"),
    ({"unallocated": [0, 1, 2, True]}, "lists an ordinal twice"),  # the codec reads true as 1
    ({"allocations": [5, None, None, None], "unallocated": [1, 2, 3]}, "points at attribute 5"),
    ({"cidr": "198.19.0.1/30"}, "has host bits set"),
])
def test_a_stored_block_that_contradicts_itself_is_corrupt_not_allocated_from(change, reason):
    from ipam.errors import CorruptBlock
    from ipam.store import decode_block

    key = "/p/ipam/blocks/198.19.0.0-30"
    good = json.loads(codec.encode(Block.new("198.19.0.0/30", "n1", sequence_number=1)))
    assert decode_block(key, json.dumps(good).encode()).free_count == 4
    bad_key = "/p/ipam/blocks/198.19.0.1-30" if "cidr" in change else key
    with pytest.raises(CorruptBlock) as err:
        decode_block(bad_key, json.dumps({**good, **change}).encode())
    assert reason in str(err.value) and bad_key in str(err.value)
