"""The ingress's Kafka producer against the real broker: every acknowledged record is on the
topic, on the default partitioner's partition for its key, in order per key."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer

from services.common.topics import ensure_topics
from services.ingress.producer import ProduceFailed, partition_for
from services.ingress.producer_confluent import ConfluentRecordProducer

KEYS, PER_KEY = 20, 25


async def test_acknowledged_records_are_on_their_partition_in_order(infra):
    topic = f"ingress-producer-{uuid.uuid4().hex[:10]}"
    await ensure_topics(infra.kafka, {topic: 4})
    producer = ConfluentRecordProducer(infra.kafka, 2, 65536, 100)
    await producer.start(20)
    try:
        async def device(k: int) -> None:
            for seq in range(PER_KEY):  # one device: each postback after the previous was accepted
                await producer.deliver(topic, f"1:dev-{k}".encode(), f"{k}:{seq}".encode(), 2.0)

        await asyncio.gather(*(device(k) for k in range(KEYS)))
        assert await producer.reachable(2.0)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=infra.kafka, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    seen: dict[bytes, list[int]] = {}
    try:
        for _ in range(100):
            for tp, messages in (await consumer.getmany(timeout_ms=200)).items():
                for m in messages:
                    assert tp.partition == partition_for(m.key, 4)
                    seen.setdefault(m.key, []).append(int(m.value.split(b":")[1]))
            if sum(map(len, seen.values())) >= KEYS * PER_KEY:
                break
    finally:
        await consumer.stop()
    assert len(seen) == KEYS
    assert all(seqs == list(range(PER_KEY)) for seqs in seen.values())


async def test_unknown_topic_fails_within_the_bound(infra):
    """A topic that cannot exist must not hang a request or be acknowledged."""
    producer = ConfluentRecordProducer(infra.kafka, 2, 65536, 100)
    await producer.start(20)
    try:
        started = asyncio.get_running_loop().time()
        try:
            await producer.deliver("no such topic?", b"k", b"v", 0.5)  # an invalid name: never created
        except ProduceFailed:
            pass
        else:
            pytest.fail("a record for an impossible topic was acknowledged")
        assert asyncio.get_running_loop().time() - started < 1.5
    finally:
        await producer.stop()
