"""`ipam check` decisions over snapshots built by hand (no etcd)."""
from __future__ import annotations

from ipam import Block, Handle, Pool
from ipam.check import check, plan_repair
from ipam.records import CONFIRMED, PENDING
from ipam.store import AffinityRecord, Snapshot, Stored

POOL = Pool("p", "198.19.0.0/24", 28)


def snap(blocks, handles, affinities, corrupt=None):
    return Snapshot({b.cidr: Stored(b, 1) for b in blocks}, {h.handle_id: Stored(h, 1) for h in handles},
                    [AffinityRecord(n, c, s, 1) for n, c, s in affinities], corrupt or {})


def test_consistent_state_is_clean_and_reports_usage_and_borrowed():
    a, _ = Block.new("198.19.0.0/28", "n1").allocate(3, "h1", "n1")
    a, _ = a.allocate(1, "h2", "n2")
    report = check(snap([a], [Handle("h1", {a.cidr: 3}, "n1"), Handle("h2", {a.cidr: 1}, "n2")],
                        [("n1", a.cidr, CONFIRMED)]), [POOL], {"n1", "n2"})
    assert report.clean and plan_repair(report) == []
    assert [(b.owner, b.node, b.handle) for b in report.borrowed] == [("n1", "n2", "h2")]
    assert (report.pools[0].blocks, report.pools[0].allocated, report.pools[0].size) == (1, 4, 256)


def test_leaked_handle_and_orphaned_affinity_of_a_gone_node():
    a, _ = Block.new("198.19.0.16/28", "gone").allocate(2, "h", "gone")
    report = check(snap([a], [Handle("h", {a.cidr: 2}, "gone")], [("gone", a.cidr, CONFIRMED)]), [POOL], {"n1"})
    assert [h.handle for h in report.leaked_handles] == ["h"]
    assert [(o.node, o.reason) for o in report.orphaned_affinities] == [("gone", "node gone")]
    assert [a.kind for a in plan_repair(report)] == ["release-handle", "release-block"]


def test_disagreements_are_named():
    a, _ = Block.new("198.19.0.32/28", "n1").allocate(2, "h", "n1")
    b = Block.new("198.19.0.48/28", "n1")
    report = check(snap([a, b], [Handle("h", {a.cidr: 5}, "n1"), Handle("ghost", {"198.19.0.64/28": 1}, "n1")],
                        [("n1", a.cidr, PENDING), ("n1", "198.19.0.80/28", CONFIRMED)],
                        {"/x/ipam/blocks/198.19.0.96-28": "not valid JSON"}), [POOL], {"n1"})
    kinds = sorted(i.kind for i in report.inconsistencies)
    assert kinds == ["handle-count", "handle-count", "no-affinity-record"]
    assert sorted(o.reason for o in report.orphaned_affinities) == ["affinity left pending", "block missing"]
    assert report.corrupt and not report.clean
    assert [e.cidr for e in report.empty_blocks] == [b.cidr]
    plan = {(a.kind, a.target) for a in plan_repair(report)}
    assert ("reclaim-empty", b.cidr) in plan
    assert ("confirm-affinity", a.cidr) in plan and ("confirm-affinity", b.cidr) in plan
    assert ("delete-affinity", "198.19.0.80/28") in plan
