import pytest

from calico_bgp.routing.damping import Dampener, DampingParams

PARAMS = DampingParams(half_life=10.0, reuse=750, suppress=2000, max_suppress=40.0)
K = ("198.18.1.1", "198.19.0.0/26")


def flap(d, t):
    d.update(K[0], {}, [K[1]], t)
    return d.update(K[0], {K[1]: "a"}, [], t)


def test_two_flaps_pass_the_third_suppresses():
    d = Dampener(PARAMS)
    assert d.update(K[0], {K[1]: "a"}, [], 0.0).announce == {K: "a"}
    assert flap(d, 0.0).announce == {K: "a"}          # penalty 1000
    assert flap(d, 0.0).announce == {K: "a"}          # 2000, not above suppress
    w = d.update(K[0], {}, [K[1]], 0.0)               # 3000 -> suppressed
    assert w.suppressed == [K] and K in w.withdraw
    assert d.update(K[0], {K[1]: "b"}, [], 0.0).announce == {}  # hidden while suppressed
    st = d.state(K, 0.0)
    assert st.suppressed and st.flaps == 3 and st.penalty == pytest.approx(3000)


def test_reuse_after_decay_hands_back_the_latest_path():
    d = Dampener(PARAMS)
    d.update(K[0], {K[1]: "a"}, [], 0.0)
    for _ in range(3):
        flap(d, 0.0)
    wait = d.next_release(0.0)
    assert wait == pytest.approx(10.0 * __import__("math").log2(3000 / 750))  # two half-lives: 20 s
    assert d.release(wait - 0.1).reused == []
    out = d.release(wait + 0.1)
    assert out.reused == [K] and out.announce == {K: "a"}
    assert not d.state(K, wait + 0.1).suppressed


def test_penalty_is_capped_by_max_suppress():
    d = Dampener(PARAMS)
    d.update(K[0], {K[1]: "a"}, [], 0.0)
    for _ in range(50):
        flap(d, 0.0)
    assert d.state(K, 0.0).penalty == pytest.approx(PARAMS.ceiling)
    assert d.next_release(0.0) == pytest.approx(PARAMS.max_suppress)


def test_attribute_change_costs_half_a_flap_and_same_attrs_nothing():
    d = Dampener(PARAMS)
    d.update(K[0], {K[1]: "a"}, [], 0.0)
    d.update(K[0], {K[1]: "a"}, [], 0.0)
    assert d.state(K, 0.0) is None
    d.update(K[0], {K[1]: "b"}, [], 0.0)
    assert d.state(K, 0.0).penalty == pytest.approx(500)


def test_disabled_passes_everything_through():
    d = Dampener(PARAMS, enabled=False)
    for i in range(10):
        assert d.update(K[0], {K[1]: "a"}, [], i).announce == {K: "a"}
        assert d.update(K[0], {}, [K[1]], i).withdraw == [K]
    assert d.next_release(0) is None


def test_bad_params_are_named():
    with pytest.raises(ValueError, match="reuse"):
        DampingParams(reuse=3000, suppress=2000)


def test_a_session_that_flaps_suppresses_its_routes_like_withdrawals_do():
    d = Dampener(PARAMS)
    other = (K[0], "198.19.1.0/26")
    for t in (0.0, 1.0):
        d.update(K[0], {K[1]: "a", other[1]: "a"}, [], t)
        assert d.peer_down(K[0], t) == []              # penalties 1000, then ~1933
    d.update(K[0], {K[1]: "a", other[1]: "a"}, [], 2.0)
    assert sorted(d.peer_down(K[0], 2.0)) == sorted([K, other])  # third drop: above suppress
    assert d.update(K[0], {K[1]: "a"}, [], 3.0).announce == {}    # back, but suppressed
    assert d.state(K, 3.0).flaps == 3
    off = Dampener(PARAMS, enabled=False)
    off.update(K[0], {K[1]: "a"}, [], 0.0)
    assert off.peer_down(K[0], 0.0) == [] and off.state(K, 0.0) is None


def test_news_tells_of_the_first_path_tracked_and_of_each_suppression_and_outlives_a_reconfiguration():
    """The damping timer sleeps while `idle` and wakes on `on_news`: told when the first path is
    tracked and when one is suppressed, not for every flap in between."""
    d, news = Dampener(PARAMS), []
    d.on_news = lambda: news.append(1)
    assert d.idle()
    d.update(K[0], {K[1]: "a"}, [], 0.0)
    assert d.idle() and news == []                       # an announcement alone tracks nothing
    flap(d, 0.0)
    assert not d.idle() and len(news) == 1               # first path tracked
    flap(d, 0.0)
    assert len(news) == 1                                # another flap, still not suppressed
    d.update(K[0], {}, [K[1]], 0.0)
    assert len(news) == 2 and d.next_release(0.0) is not None  # suppressed: a release to wait for
    d.update(K[0], {K[1]: "b"}, [], 0.0)
    assert len(news) == 2                                # already suppressed
    new, _ = d.reconfigured(PARAMS, True, 1.0)
    assert new.on_news is d.on_news and len(news) == 3  # the new dampener tracks paths: the timer looks again
    assert new.release(1000.0).reused == [K] and not new.idle()  # reused, still tracked
    new.release(1001.0)
    assert new.idle()                                    # decayed: forgotten
