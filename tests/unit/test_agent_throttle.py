"""Events rate-limited with a summary of the rest (agent/throttle.py): a bulk `ip route flush` is at
most 10 repair events a second and one summary, said as the second ends."""
from calico_bgp.agent import throttle


def test_repairs_are_ten_a_second_then_one_summary_when_the_second_ends():
    t = throttle.repairs()
    out = [e for i in range(25) for e in t.admit("repair", 100.0 + i * 0.01, prefix=f"198.19.{i}.0/24", detail="gone")]
    assert [e.prefix for e in out] == [f"198.19.{i}.0/24" for i in range(10)]
    assert t.due(100.5) == []
    (summary,) = t.due(101.0)
    assert summary.kind == "repair" and summary.detail.startswith("15 more repairs within a second")
    assert t.due(102.0) == []


def test_a_repair_in_the_next_second_brings_the_summary_of_the_last_one_first():
    t = throttle.repairs()
    for i in range(12):
        t.admit("repair", 100.0, detail="x")
    out = t.admit("repair", 101.5, prefix="198.19.0.0/24", detail="gone")
    assert [(e.prefix, e.detail.split(" ")[0]) for e in out] == [("", "2"), ("198.19.0.0/24", "gone")]


def test_route_events_are_limited_per_kind_and_summarised_with_where_to_look():
    t = throttle.route_events()
    failed = [e for i in range(t.limiter.burst + 3) for e in t.admit("route_failed", 0.0, prefix=str(i))]
    recovered = t.admit("route_recovered", 0.0, prefix="x")
    assert len(failed) == t.limiter.burst and len(recovered) == 1
    (summary,) = t.due(t.window)
    assert summary.kind == "route_failed" and "3 more within" in summary.detail and "routes --failed" in summary.detail
