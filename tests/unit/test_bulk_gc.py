"""agent/bulk_gc.py: the cyclic collector off while a bulk is applied, and what was made meanwhile
handed to the oldest generation (never walked young)."""
from __future__ import annotations

import gc

import pytest

from calico_bgp.agent.bulk_gc import BULK_MIN, bulks_since_full, collect_full, held_off


class Node:
    """A container object the collector tracks."""

    def __init__(self) -> None:
        self.links: list[object] = []


@pytest.fixture(autouse=True)
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def in_generation(obj: object, generation: int) -> bool:
    return any(o is obj for o in gc.get_objects(generation=generation))


def test_a_bulk_runs_with_the_collector_off_and_its_objects_end_in_the_oldest_generation():
    with held_off(BULK_MIN):
        assert not gc.isenabled()
        made = Node()
        assert in_generation(made, 0)
    assert gc.isenabled()
    assert in_generation(made, 2) and not in_generation(made, 0)
    assert gc.get_freeze_count() == 0  # nothing left frozen


def test_a_small_update_changes_nothing():
    with held_off(BULK_MIN - 1):
        assert gc.isenabled()
        made = Node()
    assert in_generation(made, 0) or in_generation(made, 1)


def test_nested_and_already_off_leave_the_collector_as_they_found_it():
    with held_off(BULK_MIN):
        with held_off(BULK_MIN):
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner one did not turn it back on under the outer
    assert gc.isenabled()
    gc.disable()
    with held_off(BULK_MIN):
        pass
    assert not gc.isenabled()  # off before: still off


def test_the_collector_comes_back_when_the_body_raises():
    with pytest.raises(RuntimeError):
        with held_off(BULK_MIN):
            raise RuntimeError("bad UPDATE")
    assert gc.isenabled()


def test_a_cycle_made_during_a_bulk_is_collected_by_a_full_collection():
    with held_off(BULK_MIN):
        a, b = Node(), Node()
        a.links.append(b)
        b.links.append(a)
        ids = {id(a), id(b)}
        del a, b
    gc.collect()
    assert not any(id(o) in ids and isinstance(o, Node) for o in gc.get_objects())


def test_each_bulk_is_counted_until_a_full_collection():
    collect_full()
    assert bulks_since_full() == 0
    with held_off(BULK_MIN):
        pass
    with held_off(BULK_MIN - 1):  # not a bulk
        pass
    assert bulks_since_full() == 1
    collect_full()
    assert bulks_since_full() == 0
