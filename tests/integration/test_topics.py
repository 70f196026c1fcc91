"""Topics are created as topic_plan says, and a postbacks topic that forgets records is refused (services/common/topics.py)."""

import subprocess
import sys

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.common.settings import CommonSettings
from services.common.topics import (TopicMisconfigured, check_postbacks_topic, describe_topic_configs, ensure_topics,
                                    topic_plan)


def plan_settings(infra, unique: str, **values) -> CommonSettings:
    return CommonSettings.model_validate({
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka, "PBSEG_TOPIC_POSTBACKS": f"postbacks-{unique}",
        "PBSEG_TOPIC_REJECTED": f"rejected-{unique}", "PBSEG_TOPIC_DEVICE_EVENTS": f"device-events-{unique}",
        "PBSEG_POSTBACKS_PARTITIONS": 2, **values})


async def broker_count(bootstrap: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return len((await admin.describe_cluster())["brokers"])
    finally:
        await admin.close()


@pytest.mark.parametrize("min_insync", [None, 1])
async def test_created_topics_carry_their_retention_and_min_insync_replicas(infra, unique, delete_own_topics, min_insync):
    """postbacks retention.ms=-1, the feeds 7 days, cleanup.policy=delete, min.insync.replicas as set
    (unset: fitted to the cluster); creating again changes nothing and the start-up check passes."""
    values = {} if min_insync is None else {"PBSEG_MIN_INSYNC_REPLICAS": min_insync}
    settings = plan_settings(infra, unique, **values)
    await ensure_topics(infra.kafka, topic_plan(settings))
    await ensure_topics(infra.kafka, topic_plan(settings))  # idempotent
    expected_isr = min_insync or max(1, min(3, await broker_count(infra.kafka)) - 1)

    postbacks = await describe_topic_configs(infra.kafka, settings.topic_postbacks)
    assert (postbacks["retention.ms"], postbacks["cleanup.policy"]) == ("-1", "delete")
    for topic in (settings.topic_device_events, settings.topic_rejected):
        configs = await describe_topic_configs(infra.kafka, topic)
        assert (configs["retention.ms"], configs["cleanup.policy"]) == (str(7 * 86_400_000), "delete")
    for topic in topic_plan(settings):
        assert (await describe_topic_configs(infra.kafka, topic))["min.insync.replicas"] == str(expected_isr)
    await check_postbacks_topic(infra.kafka, settings)


async def test_a_postbacks_topic_with_finite_retention_is_refused_with_what_to_do(infra, unique, topic_factory):
    """An existing postbacks topic with retention.ms=1000: the check and ensure_topics refuse, saying
    what it is, why it matters and how to fix it; accepting that retention in the settings lets it pass."""
    settings = plan_settings(infra, unique, PBSEG_TOPIC_POSTBACKS=await topic_factory("postbacks", 2,
                                                                                      {"retention.ms": "1000"}))
    with pytest.raises(TopicMisconfigured) as refused:
        await check_postbacks_topic(infra.kafka, settings)
    message = str(refused.value)
    print(message)
    assert "keeps records for only retention.ms=1000 (1 s)" in message
    assert "`pbseg rebuild` and recovery after a lost Redis replay it from offset 0" in message
    assert (f"kafka-configs.sh --bootstrap-server {infra.kafka} --alter --entity-type topics "
            f"--entity-name {settings.topic_postbacks} --add-config retention.ms=-1") in message
    assert "PBSEG_POSTBACKS_RETENTION_MS=1000" in message
    with pytest.raises(TopicMisconfigured, match="retention.ms=1000"):
        await ensure_topics(infra.kafka, topic_plan(settings), timeout_s=20)
    assert await describe_topic_configs(infra.kafka, settings.topic_device_events) is None  # refused: nothing made

    await check_postbacks_topic(infra.kafka, settings.model_copy(update={"postbacks_retention_ms": 1000}))


async def test_a_missing_postbacks_topic_is_refused(infra, unique):
    """The processor must not let the broker auto-create it with its defaults."""
    with pytest.raises(TopicMisconfigured, match=f"topic 'postbacks-{unique}' does not exist on Kafka.*make up"):
        await check_postbacks_topic(infra.kafka, plan_settings(infra, unique))


async def test_the_processor_refuses_to_start_on_a_postbacks_topic_with_finite_retention(service_env, topic_factory,
                                                                                         tmp_path):
    """`python -m services.processor` exits non-zero with the check's message."""
    env = dict(service_env, PBSEG_TOPIC_POSTBACKS=await topic_factory("postbacks", 2, {"retention.ms": "1000"}),
               PROCESSOR_WEB_PORT="0", PROCESSOR_DATADIR=str(tmp_path / "faust"))
    done = subprocess.run([sys.executable, "-m", "services.processor", "-l", "warn"], env=env,
                          capture_output=True, text=True, timeout=90)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "retention.ms=1000" in output and "kafka-configs.sh" in output, output
