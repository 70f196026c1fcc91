"""Start-up check: the state in Redis belongs to the log the worker is about to continue
(services/domain/identity.py has the rule). Kafka's topic id comes from confluent-kafka's admin
client: aiokafka's metadata requests predate topic ids."""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.common.keys import LAYOUT_VERSION
from services.domain.identity import LogIdentity, PartitionState, judge
from services.processor.store import DeviceStateStore

log = structlog.get_logger("processor")


class StateMismatch(RuntimeError):
    """Redis holds state that does not belong to this log; the message says what to do."""


def _describe(bootstrap: str, topic: str, timeout_s: float) -> tuple[str, int]:
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout_s)[topic].result(timeout_s)
    return str(description.topic_id), len(description.partitions)


async def log_identity(bootstrap: str, topic: str, timeout_s: float = 10.0) -> LogIdentity:
    """The topic's id and partition count, as Kafka knows them now (blocking admin call, in a thread)."""
    topic_id, partitions = await asyncio.to_thread(_describe, bootstrap, topic, timeout_s)
    return LogIdentity(topic_id, partitions, LAYOUT_VERSION)


async def check_state_identity(store: DeviceStateStore, consumer: AIOKafkaConsumer, bootstrap: str, topic: str) -> LogIdentity:
    """Refuse (StateMismatch) to continue state built from another log; record the identity of
    partitions that have none yet. Changes nothing when it refuses."""
    actual = await log_identity(bootstrap, topic)
    partitions = list(range(actual.partitions))
    identities, marks = await store.identities(partitions), await store.watermarks(partitions)
    ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    verdict = judge(topic, actual, {p: PartitionState(identities[p], marks[p]) for p in partitions},
                    {tp.partition: offset for tp, offset in ends.items()})
    if not verdict.ok:
        raise StateMismatch(verdict.problem)
    if verdict.claim:
        await store.record_identity(verdict.claim, actual)
        log.info("state_identity_recorded", topic=topic, topic_id=actual.topic_id, partitions=list(verdict.claim))
    return actual
