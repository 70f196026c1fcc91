"""What the topics are created with (topic_plan, new_topic) and when an existing postbacks topic is refused (services/common/topics.py)."""

import pytest
from pydantic import ValidationError

from services.common.settings import CommonSettings
from services.common.topics import (TopicMisconfigured, TopicSpec, as_spec, fitted_min_insync, fitted_replication,
                                    new_topic, topic_plan, whole_log_problem)
from services.processor.rebuild import missing_offsets, truncated_log_message

SEVEN_DAYS_MS = 7 * 86_400_000


def settings(**values) -> CommonSettings:
    return CommonSettings.model_validate(values)


def test_the_postbacks_log_is_kept_forever_and_the_feeds_for_seven_days():
    """Defaults: postbacks.v1 retention.ms=-1, the feeds 7 days, all cleanup.policy=delete, partitions as set."""
    plan = topic_plan(settings(PBSEG_POSTBACKS_PARTITIONS=6))
    assert plan["postbacks.v1"] == TopicSpec(6, {"retention.ms": "-1", "cleanup.policy": "delete"}, whole_log=True)
    assert plan["device-events.v1"] == TopicSpec(6, {"retention.ms": str(SEVEN_DAYS_MS), "cleanup.policy": "delete"})
    assert plan["task-triggers.v1"] == TopicSpec(6, {"retention.ms": str(SEVEN_DAYS_MS), "cleanup.policy": "delete"})
    assert plan["postbacks-rejected.v1"] == TopicSpec(4, {"retention.ms": str(SEVEN_DAYS_MS),
                                                          "cleanup.policy": "delete"})


def test_the_catalog_id_log_has_a_partition_per_kind_and_is_kept_forever():
    """catalog-ids.v1: accounts, custom events, saved segments and triggers (services/domain/catalog_ids.py), retention.ms=-1, checked
    like the postbacks log, with a refusal that names what its records are for."""
    spec = topic_plan(settings())["catalog-ids.v1"]
    assert (spec.partitions, spec.configs, spec.whole_log) == (4, {"retention.ms": "-1", "cleanup.policy": "delete"}, True)
    problem = whole_log_problem("catalog-ids.v1", {"retention.ms": "604800000"}, -1, "k:9092", spec.why)
    assert "catalog check --restore" in problem and "retention.ms=-1" in problem


def test_retention_and_replication_settings_reach_the_plan():
    """PBSEG_*_RETENTION_MS, PBSEG_REPLICATION_FACTOR and PBSEG_MIN_INSYNC_REPLICAS are what each topic gets."""
    plan = topic_plan(settings(PBSEG_POSTBACKS_RETENTION_MS=90 * 86_400_000, PBSEG_DEVICE_EVENTS_RETENTION_MS=-1,
                               PBSEG_REJECTED_RETENTION_MS=3_600_000, PBSEG_REPLICATION_FACTOR=3,
                               PBSEG_MIN_INSYNC_REPLICAS=2, PBSEG_TASK_TRIGGERS_RETENTION_MS=7_200_000))
    assert [spec.configs["retention.ms"] for spec in plan.values()] == [str(90 * 86_400_000), "3600000", "-1",
                                                                        "7200000", "-1"]
    assert {(spec.replication_factor, spec.min_insync_replicas) for spec in plan.values()} == {(3, 2)}


@pytest.mark.parametrize("brokers, replication, min_insync", [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_unset_replication_is_fitted_to_the_broker_count(brokers, replication, min_insync):
    """min(3, brokers) replicas, min.insync.replicas one less, at least 1."""
    assert fitted_replication(None, brokers) == replication
    assert fitted_min_insync(None, replication) == min_insync
    topic = new_topic("postbacks.v1", topic_plan(settings())["postbacks.v1"], brokers)
    assert (topic.num_partitions, topic.replication_factor) == (8, replication)
    assert topic.topic_configs == {"retention.ms": "-1", "cleanup.policy": "delete",
                                   "min.insync.replicas": str(min_insync)}


def test_settings_win_over_the_fitted_values():
    """An explicit replication factor and min.insync.replicas are used as given."""
    spec = topic_plan(settings(PBSEG_REPLICATION_FACTOR=2, PBSEG_MIN_INSYNC_REPLICAS=2))["device-events.v1"]
    topic = new_topic("device-events.v1", spec, brokers=5)
    assert topic.replication_factor == 2 and topic.topic_configs["min.insync.replicas"] == "2"


def test_a_bare_partition_count_is_a_topic_kept_forever():
    """ensure_topics(bootstrap, {name: n}) keeps working: n partitions, fitted replication, retention.ms=-1
    (it may be a processor's postbacks topic); a spec without configs gets the broker's defaults."""
    topic = new_topic("t", as_spec(3), brokers=1)
    assert (topic.num_partitions, topic.replication_factor) == (3, 1)
    assert topic.topic_configs == {"retention.ms": "-1", "min.insync.replicas": "1"}
    assert new_topic("t", TopicSpec(3), brokers=1).topic_configs == {"min.insync.replicas": "1"}


def test_settings_the_cluster_cannot_meet_are_refused_naming_the_setting():
    """More replicas than brokers, or min.insync.replicas above the replication factor: refused before Kafka is asked."""
    with pytest.raises(TopicMisconfigured, match="PBSEG_REPLICATION_FACTOR.*reports 1 broker"):
        new_topic("postbacks.v1", TopicSpec(8, replication_factor=3), brokers=1)
    with pytest.raises(TopicMisconfigured, match="min.insync.replicas=2.*PBSEG_MIN_INSYNC_REPLICAS"):
        new_topic("postbacks.v1", TopicSpec(8, min_insync_replicas=2), brokers=1)
    with pytest.raises(ValidationError, match="PBSEG_MIN_INSYNC_REPLICAS=3 exceeds PBSEG_REPLICATION_FACTOR=2"):
        settings(PBSEG_REPLICATION_FACTOR=2, PBSEG_MIN_INSYNC_REPLICAS=3)
    with pytest.raises(ValidationError, match="-1 \\(forever\\) or a positive"):
        settings(PBSEG_POSTBACKS_RETENTION_MS=0)


def test_a_finite_retention_is_refused_with_what_why_and_how():
    """7 days on the topic, -1 in the settings: the message names the value, the rebuild, the fix and the setting."""
    problem = whole_log_problem("postbacks.v1", {"retention.ms": str(SEVEN_DAYS_MS), "cleanup.policy": "delete"},
                                -1, "k:9092")
    assert f"retention.ms={SEVEN_DAYS_MS} (7 day(s))" in problem
    assert "`pbseg rebuild`" in problem and "replay it from offset 0" in problem
    assert ("kafka-configs.sh --bootstrap-server k:9092 --alter --entity-type topics --entity-name postbacks.v1 "
            "--add-config retention.ms=-1") in problem
    assert f"PBSEG_POSTBACKS_RETENTION_MS={SEVEN_DAYS_MS}" in problem


@pytest.mark.parametrize("configs, accepted", [
    ({"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}, -1),
    ({"retention.ms": "-1"}, 1000),                     # forever is always enough
    ({"retention.ms": "1000", "retention.bytes": "10"}, 1000),  # accepted: the history lives elsewhere
])
def test_a_topic_that_keeps_what_the_settings_ask_passes(configs, accepted):
    """Infinite retention, or exactly the finite retention the settings accept."""
    assert whole_log_problem("postbacks.v1", configs, accepted, "k:9092") is None


def test_a_size_limit_or_compaction_is_refused_too():
    """retention.bytes and cleanup.policy=compact also delete records a rebuild needs."""
    by_size = whole_log_problem("pb", {"retention.ms": "-1", "retention.bytes": "1073741824"}, -1, "k:9092")
    assert "retention.bytes=1073741824" in by_size and "--add-config retention.bytes=-1" in by_size
    compacted = whole_log_problem("pb", {"retention.ms": "-1", "cleanup.policy": "compact,delete"}, -1, "k:9092")
    assert "cleanup.policy=compact,delete" in compacted and "--add-config cleanup.policy=delete" in compacted


def test_the_truncated_log_message_names_partitions_starts_and_what_redis_holds():
    """Only partitions whose log starts after 0; what Redis holds for each; both ways out."""
    missing = missing_offsets({0: 0, 1: 40, 2: 0, 3: 12})
    assert missing == {1: 40, 3: 12}
    message = truncated_log_message("pb", missing, {0: 99, 1: 199, 2: 5, 3: -1})
    assert "partition 1 starts at offset 40 (offsets 0-39 are gone; Redis holds its state up to offset 199" in message
    assert "partition 3 starts at offset 12 (offsets 0-11 are gone; no state for it in Redis)" in message
    assert "partition 0" not in message and "Nothing was deleted" in message
    assert "Restore the log" in message and "--accept-truncated-log" in message
