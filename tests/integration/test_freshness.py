"""Freshness (services/processor/freshness.py): a partition's as-of is an instant before which
every record of its log is applied; it trails while the worker is behind and advances while idle."""

from __future__ import annotations

import random

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.common.clock import SystemClock
from services.processor.freshness import Freshness
from services.processor.pipeline import PostbackPipeline
from services.processor.store import DeviceStateStore
from services.query.segments import SegmentIndex
from test_processor_pipeline import produce
from test_processor_rollback import DAY, records
from waiting import wait_for

PARTITIONS = 4


async def test_as_of_covers_every_record_before_it_trails_when_behind_and_advances_when_idle(
        infra, redis_client, key_prefix, topic_factory, unique, seed):
    rng = random.Random(seed)
    postbacks, rejected = await topic_factory("pb", PARTITIONS), await topic_factory("rej", 1)
    store = DeviceStateStore(redis_client, key_prefix, postbacks, 30 * DAY)
    index = SegmentIndex(redis_client, key_prefix, PARTITIONS, topic=postbacks)
    consumer = AIOKafkaConsumer(bootstrap_servers=infra.kafka, group_id=f"g-{unique}", enable_auto_commit=False,
                                auto_offset_reset="none", session_timeout_ms=6000, heartbeat_interval_ms=2000)
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    clock = SystemClock()
    pipeline = PostbackPipeline(consumer, producer, store, clock, postbacks, rejected, 500)
    pipeline.subscribe()
    freshness = Freshness(consumer, store, clock, postbacks, lambda: set(pipeline.owned_partitions))

    def keyed(batch):
        return [(f"1:{r.install_id}".encode(), r.model_dump_json(by_alias=True).encode()) for r in batch]

    async def apply_all(total: int):
        async def done():
            await pipeline.poll_once(100)
            return sum(m + 1 for m in (await store.watermarks(range(PARTITIONS))).values()) >= total
        await wait_for(done, timeout=60, interval=0, message=f"{total} applied")

    try:
        await wait_for(lambda: _joined(pipeline), timeout=30, interval=0, message="partitions assigned")
        assert await index.as_of() is None  # nothing recorded yet: no claim
        await produce(infra.kafka, postbacks, keyed(records(rng, 0, 400)))
        acked = clock.now_ms()
        await apply_all(400)
        await freshness.tick()  # asks for the end offsets
        recorded = await freshness.tick()  # the watermarks reach them: recorded
        assert set(recorded) == set(range(PARTITIONS))
        first = await index.as_of()
        assert first is not None and acked <= first <= clock.now_ms()

        # Behind: records the worker has not applied keep the as-of where it was.
        await produce(infra.kafka, postbacks, keyed(records(rng, 400, 400)))
        behind_since = clock.now_ms()
        await freshness.tick()
        await freshness.tick()
        assert await index.as_of() < behind_since
        await apply_all(800)
        await freshness.tick()
        await freshness.tick()
        assert await index.as_of() >= behind_since  # now it covers the second 400

        # Idle and caught up: the as-of keeps advancing without new postbacks.
        before = await index.as_of()
        await wait_for(lambda: _advanced(freshness, index, before), timeout=10, interval=0.05,
                       message="the as-of to advance while idle")
    finally:
        await consumer.stop()
        await producer.stop()


async def _joined(pipeline) -> bool:
    await pipeline.poll_once(100)
    return len(pipeline.owned_partitions) == PARTITIONS


async def _advanced(freshness, index, before: int) -> bool:
    await freshness.tick()
    return (await index.as_of() or 0) > before
