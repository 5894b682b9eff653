"""When the agent gives memory back (agent/memory.py): only once UPDATEs went quiet, and only what a
large table that left behind."""
from calico_bgp.agent.bulk_gc import FULL_EVERY
from calico_bgp.agent.memory import CHURN_KEEP, TRIM_AT, GiveBack, give_back


def test_nothing_is_dropped_while_updates_stream():
    assert give_back(4.9, 10 * TRIM_AT, 0, 10 * CHURN_KEEP) == GiveBack()


def test_the_intake_cache_is_trimmed_once_it_holds_far_more_than_the_rib():
    assert give_back(5.0, TRIM_AT + 100, 100, 0).trim_intake
    assert not give_back(5.0, TRIM_AT + 99, 100, 0).trim_intake


def test_churn_entries_beyond_the_busiest_go_after_a_longer_quiet():
    assert not give_back(9.9, 0, 100, 100 + CHURN_KEEP + 1).settle_churn
    assert give_back(10.0, 0, 100, 100 + CHURN_KEEP + 1).settle_churn
    assert not give_back(10.0, 0, 100, 100 + CHURN_KEEP).settle_churn


def test_a_full_collection_is_owed_after_bulks_once_quiet_or_after_many_without_a_pause():
    """Bulks applied with the collector held off move every young object, garbage too, to the oldest
    generation unwalked (agent/bulk_gc.py): a full collection sweeps them once UPDATEs went quiet,
    or after FULL_EVERY bulks in a stream that never pauses."""
    assert give_back(5.0, 0, 0, 0, bulks=1).collect
    assert not give_back(5.0, 0, 0, 0, bulks=0).collect
    assert not give_back(4.9, 0, 0, 0, bulks=FULL_EVERY - 1).collect
    assert give_back(0.0, 0, 0, 0, bulks=FULL_EVERY).collect
