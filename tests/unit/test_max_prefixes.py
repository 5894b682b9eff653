"""A peer's maxPrefixes limit (routing/max_prefixes.py): acted on once per limit, again when the
limit or action changes or after the peer went back under it."""
from calico_bgp.routing.max_prefixes import Limit, check


def test_a_peer_under_or_at_its_limit_is_left_alone_and_forgotten():
    v = check(10, Limit(10, "teardown"), Limit(10, "teardown"))
    assert not v.act and v.acted_on is None


def test_a_peer_over_its_limit_is_acted_on_once():
    first = check(11, Limit(10, "warn"), None)
    assert first.act and not first.teardown and first.acted_on == Limit(10, "warn")
    assert first.detail == "received 11 > limit 10: warn"
    again = check(50, Limit(10, "warn"), first.acted_on)
    assert not again.act and again.acted_on == Limit(10, "warn")


def test_a_changed_limit_or_action_acts_again_and_teardown_says_why_the_peer_is_held():
    lowered = check(11, Limit(5, "warn"), Limit(10, "warn"))
    assert lowered.act
    teardown = check(11, Limit(5, "teardown"), Limit(5, "warn"))
    assert teardown.act and teardown.teardown and teardown.hold_why == "max prefixes exceeded (11 > 5)"


def test_back_under_the_limit_then_over_again_acts_again():
    v = check(3, Limit(5, "teardown"), Limit(5, "teardown"))
    assert v.acted_on is None
    assert check(6, Limit(5, "teardown"), v.acted_on).act


def test_without_a_limit_nothing_changes():
    v = check(10_000, None, Limit(5, "warn"))
    assert not v.act and v.acted_on == Limit(5, "warn")
