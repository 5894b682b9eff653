import pytest

from calico_bgp.telemetry.stability import ChurnTracker, PeerStability


def test_flaps_count_only_established_going_down():
    s = PeerStability("198.18.1.1")
    assert not s.transition("connect", 0)
    assert not s.transition("established", 1)
    assert s.transition("idle", 11, "hold timer expired")
    assert not s.transition("connect", 12)       # not established: no flap
    assert not s.transition("idle", 13, "connection refused")
    s.transition("established", 20)
    assert s.transition("idle", 50, "cease")
    assert (s.flaps, s.transitions) == (2, 7)
    assert [(h.duration, h.reason) for h in s.history] == [(10, "hold timer expired"), (30, "cease")]
    assert s.last_error == "cease" and s.uptime(60) == 0


def test_flap_windows_and_score():
    s = PeerStability("p")
    for t in (0, 100, 3000):
        s.transition("established", t)
        s.transition("idle", t + 1, "x")
    assert s.flaps_within(60, 3001) == 1
    assert s.flaps_within(3600, 3001) == 3
    assert s.flap_score(3001) == pytest.approx(0.5 ** (3000 / 900) + 0.5 ** (2900 / 900) + 1)


def test_churn_rate_decays():
    s = PeerStability("p")
    s.count_updates(100, 0, 0.0)
    assert s.churn_rate(0.0) == pytest.approx(10.0)
    assert s.churn_rate(10.0) == pytest.approx(10.0 / 2.718281828, rel=1e-3)
    assert s.updates_in == 100


def test_churn_tracker_counts_and_caps():
    c = ChurnTracker(max_prefixes=2)
    c.record(["a", "b"], [], 1)
    c.record(["a"], ["a"], 2)
    c.record(["c"], [], 3)
    assert c.get("a").announces == 2 and c.get("a").withdraws == 1
    assert len(c.top(10)) == 2 and c.top(1)[0][0] == "a"


def test_a_prefix_flapping_beyond_the_limit_is_reported_once_per_window():
    from calico_bgp.telemetry.stability import ChurnTracker

    t = ChurnTracker(window=10.0, limit=10)
    reported = []
    for i in range(100):  # 100 changes in 5 s, announce and withdraw in turn
        now = i * 0.05
        reported += [(now, p) for p in t.record(["a"] if i % 2 == 0 else [], [] if i % 2 == 0 else ["a"], now)]
        reported += [(now, p) for p in t.record(["quiet"] if i == 0 else [], [], now)]
    assert reported == [(0.5, "a")]  # the 11th change, once
    assert t.record(["a"], [], 10.0) == []  # a new window starts: its 1st change
    assert [t.record([], ["a"], 10.0 + i * 0.01) for i in range(1, 11)][-1] == ["a"]  # its 11th
    assert t.get("a").announces + t.get("a").withdraws == 111 and t.get("quiet").announces == 1


def test_churn_tracker_forgets_prefixes_that_went_quiet_but_the_busiest():
    """It used to be: an entry per prefix ever seen kept 100k withdrawn prefixes (and their memory). Two
    peers announcing and withdrawing one table count 4 changes a prefix: no flap, forgotten too."""
    c = ChurnTracker()
    table = [f"198.18.64.{i}/32" for i in range(100)]
    for peer in range(2):
        c.record(table, [], 0.0)
        c.record([], table, 1.0)
    for t in range(5):
        c.record(["flappy"], ["flappy"], float(t))
    c.record(["recent"], [], 55.0)
    assert c.forget_settled(now=60.0, quiet_for=10.0, keep=1) == 100
    assert len(c) == 2 and c.get("flappy").announces == 5 and c.get("recent") is not None
    assert c.top(1)[0][0] == "flappy"
    assert c.forget_settled(now=60.0, quiet_for=10.0, keep=1) == 0


def test_churn_top_ranks_as_a_full_sort_would_through_records_caps_and_forgetting():
    """top(n) comes from the busiest prefixes kept aside as they change; it must name the same counts
    as ranking every entry, whatever was recorded, capped or forgotten in between."""
    import random

    from calico_bgp.telemetry.stability import TOP_KEPT

    rnd = random.Random(7)
    c = ChurnTracker(max_prefixes=3000)

    def brute(n: int) -> list[int]:
        return sorted((e.announces + e.withdraws for _, e in c._prefixes.items()), reverse=True)[:n]

    for step in range(400):
        now = float(step)
        hot = [f"h{rnd.randrange(100)}" for _ in range(rnd.randrange(5))]  # a few prefixes flap often
        cold = [f"c{rnd.randrange(5000)}" for _ in range(rnd.randrange(30))]
        c.record(hot + cold[::2], cold[1::2], now)
        if step % 97 == 0:
            c.forget_settled(now, quiet_for=50.0, keep=40)
        for n in (1, 20, TOP_KEPT):
            top = c.top(n)
            assert [e.announces + e.withdraws for _, e in top] == brute(n), (step, n)
            assert all(c.get(p) is e for p, e in top)
    assert len(c.top(TOP_KEPT + 10)) == TOP_KEPT + 10  # beyond the kept ones: a full ranking
