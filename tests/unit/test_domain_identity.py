"""The state-identity rule (services/domain/identity.py)."""

from services.domain.identity import LogIdentity, PartitionState, judge

LOG = LogIdentity("abc", 2, 2)


def test_fresh_state_is_claimed_for_the_log():
    j = judge("pb", LOG, {0: PartitionState(None, -1), 1: PartitionState(LOG, 5)}, {0: 0, 1: 10})
    assert j.ok and j.claim == (0,)


def test_a_recreated_topic_is_refused_with_what_to_do():
    j = judge("pb", LOG, {0: PartitionState(LogIdentity("old", 2, 2), 99)}, {0: 3})
    assert not j.ok and "recreated" in j.problem and "pbseg rebuild --yes" in j.problem


def test_a_changed_partition_count_and_layout_are_refused():
    assert "count twice" in judge("pb", LOG, {0: PartitionState(LogIdentity("abc", 1, 2), 1)}, {0: 5}).problem
    assert "key layout 1" in judge("pb", LOG, {0: PartitionState(LogIdentity("abc", 2, 1), 1)}, {0: 5}).problem


def test_a_watermark_beyond_the_log_end_is_refused_even_without_an_identity():
    j = judge("pb", LOG, {0: PartitionState(None, 100)}, {0: 100})
    assert not j.ok and "ends before offset 100" in j.problem
    assert judge("pb", LOG, {0: PartitionState(None, 99)}, {0: 100}).ok
