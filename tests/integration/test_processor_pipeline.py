"""The processor pipeline in-process against the real Kafka broker and Redis."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.common.clock import FixedClock
from waiting import wait_for
from services.common.keys import NAMES_BUCKET, PartitionKeys
from services.common.models import DeviceEventRecord, PostbackRecord, RejectedPostbackRecord
from services.processor import metrics
from services.processor.outbox import OutboxDrain
from services.processor.pipeline import PostbackPipeline
from services.processor.planning import plan_partition_batch
from services.processor.store import DeviceStateStore, UnknownOutboxEntry

DAY = 86_400_000
T0 = 1_764_000_000_000


def pb(event_id: str, install: str, event: str, at: int = T0, tid: str | None = None, account: int = 1) -> bytes:
    return PostbackRecord(event_id=event_id, account_id=account, install_id=install, event=event,
                          occurred_at=at, received_at=at, tid=tid).model_dump_json(by_alias=True).encode()


async def produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or await _parts(consumer, topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out = []
        while True:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= end[tp] for pos, tp in zip(positions, tps)):
                break
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(msgs)
        return out
    finally:
        await consumer.stop()


async def _parts(consumer, topic):
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic)


class Harness:
    def __init__(self, infra, redis_client, key_prefix, topics, group):
        self.infra, self.redis, self.prefix = infra, redis_client, key_prefix
        self.postbacks, self.rejected, self.device_events = topics
        self.group = group
        self.store = DeviceStateStore(redis_client, key_prefix, self.postbacks, 30 * DAY)

    async def run_until_applied(self, total_records: int, clock=None, send_at: int = 1000) -> PostbackPipeline:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.infra.kafka, group_id=self.group, enable_auto_commit=False,
                                    auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=2000)
        producer = AIOKafkaProducer(bootstrap_servers=self.infra.kafka, acks="all", enable_idempotence=True)
        await consumer.start()
        await producer.start()
        try:
            pipeline = PostbackPipeline(consumer, producer, self.store, clock or FixedClock(T0 + 5), self.postbacks,
                                        self.rejected, 1000, send_at=send_at)
            pipeline.subscribe()
            drain = OutboxDrain(self.store, producer, self.device_events, lambda: set(pipeline.owned_partitions), 500)
            for _ in range(300):
                await pipeline.poll_once(100)
                await drain.drain_once()
                marks = await self.store.watermarks(range(4))
                if sum(m + 1 for m in marks.values()) >= total_records:
                    break
            while await drain.drain_once():
                pass
            return pipeline
        finally:
            await consumer.stop()
            await producer.stop()

    async def device(self, install: str, account: int = 1) -> dict:
        for p in range(4):
            found = await self.store.device(p, account, install)
            if found:
                return {"#": str(found[0]), **found[1]}
        return {}

    async def device_count(self, code: str, account: int = 1) -> int:
        bits = sum([await self.redis.bitcount(PartitionKeys(self.prefix, p).segment(account, code)) for p in range(4)])
        counted = sum([int(await self.redis.hget(PartitionKeys(self.prefix, p).device_counts(account), code) or 0)
                       for p in range(4)])
        assert counted == bits, (code, counted, bits)  # the counters follow the bitmaps exactly
        return bits


@pytest.fixture
async def harness(infra, redis_client, key_prefix, topic_factory, unique):
    topics = (await topic_factory("pb", 4), await topic_factory("rej", 2), await topic_factory("dev", 4))
    return Harness(infra, redis_client, key_prefix, topics, f"proc-{unique}")


@pytest.mark.parametrize("send_at", [1000, 1])
async def test_postbacks_become_device_state_events_and_rejections(harness, infra, redis_client, send_at):
    """Events, install, ordinals, tid dedupe and bitmaps in Redis; records downstream; bad records
    rejected - whether a poll's partition batches go to Redis in one write or one write each."""
    k1, k2 = b"1:d1", b"1:d2"
    items = [
        (k1, pb("e1", "d1", "reg", T0)),
        (k1, pb("e2", "d1", "dep", T0 + 10, tid="t1")),
        (k1, pb("e3", "d1", "dep", T0 + 20, tid="t1")),  # same tid, same event: changes nothing
        (k1, b"\x00not json"),
        (k1, pb("e4", "d1", "dep", T0 + 5, tid="t2")),   # late: second deposit, first stays T0+10
        (k2, pb("e5", "d2", "dep_2", T0)),               # reserved: rejected
        (k2, pb("e6", "d2", "open", T0 + 1)),
        (k2, b'{"schema":"postback.v1","event_id":"x","account_id":1}'),
    ]
    rejected_before = metrics.REJECTIONS.labels("reserved_event")._value.get()
    tids_before = metrics.DUPLICATES.labels("tid")._value.get()
    await produce(infra.kafka, harness.postbacks, items)
    await harness.run_until_applied(len(items), send_at=send_at)

    d1 = await harness.device("d1")
    assert d1["dep"] == (T0 + 5, T0 + 10, 2)
    assert d1["dep_2"] == (T0 + 5, T0 + 5, 1)
    assert d1["reg"] == (T0, T0, 1)
    assert d1["install"] == (T0, T0, 1)
    assert "dep_3" not in d1
    d2 = await harness.device("d2")
    assert set(d2) == {"#", "install", "open"}
    assert {c: await harness.device_count(c) for c in ("install", "reg", "dep", "dep_2", "open")} == \
        {"install": 2, "reg": 1, "dep": 1, "dep_2": 1, "open": 1}
    # reverse map: device number -> install id
    for install, fields in (("d1", d1), ("d2", d2)):
        num = int(fields["#"])
        names = [await redis_client.hget(PartitionKeys(harness.prefix, p).device_names(1, num // NAMES_BUCKET), num % NAMES_BUCKET) for p in range(4)]
        assert install.encode() in names

    rejected = [RejectedPostbackRecord.model_validate_json(m.value) for m in await read_all(infra.kafka, harness.rejected)]
    assert sorted(r.reason for r in rejected) == ["reserved_event", "schema_violation", "undecodable"]
    assert all(r.stage == "processor" for r in rejected)
    assert metrics.REJECTIONS.labels("reserved_event")._value.get() == rejected_before + 1
    assert metrics.DUPLICATES.labels("tid")._value.get() == tids_before + 1

    events = [DeviceEventRecord.model_validate_json(m.value) for m in await read_all(infra.kafka, harness.device_events)]
    by_id = {e.event_id: e for e in events}
    assert len(by_id) == len(events) == 6
    assert (by_id["e2"].deposit_ordinal, by_id["e4"].deposit_ordinal) == (1, 2)
    assert by_id["e2"].first_occurrence and not by_id["e4"].first_occurrence
    assert by_id["e1:install"].event == "install" and by_id["e5" if "e5" in by_id else "e6:install"].event == "install"
    # processed_at is the postback's Kafka timestamp: the same on every (re-)application
    stamps = {orjson.loads(m.value)["event_id"]: m.timestamp for m in await read_all(infra.kafka, harness.postbacks)
              if m.value.startswith(b"{") and b'"event_id"' in m.value}
    assert by_id["e1"].processed_at == stamps["e1"] > 0 and by_id["e2"].tid == "t1"
    assert "e3" not in by_id
    assert [await redis_client.xlen(PartitionKeys(harness.prefix, p).outbox) for p in range(4)] == [0, 0, 0, 0]


async def test_a_batch_applied_twice_changes_nothing(harness, redis_client):
    """Redelivery after a crash: offsets at or below the watermark are skipped, state and outbox unchanged."""
    batch = plan_partition_batch(2, [(0, pb("a", "dx", "dep")), (1, pb("b", "dx", "dep", T0 + 1)), (2, b"bad")], T0)
    first = (await harness.store.apply_batches([batch]))[0]
    keys = PartitionKeys(harness.prefix, 2)
    state = await harness.store.device(2, 1, "dx")
    assert state is not None
    outbox = await redis_client.xlen(keys.outbox)
    again = (await harness.store.apply_batches([batch]))[0]
    assert (first.applied, first.skipped_offsets, first.outbox_records) == (2, 0, 3)
    assert (again.applied, again.skipped_offsets, again.outbox_records) == (0, 2, 0)
    assert await harness.store.device(2, 1, "dx") == state
    assert await redis_client.xlen(keys.outbox) == outbox
    assert (await harness.store.watermarks([2]))[2] == 2


async def test_a_tid_is_forgotten_only_after_the_retention(harness):
    """A repeated tid is a duplicate within the retention window and a new occurrence after it."""
    rec = lambda eid, received: PostbackRecord(event_id=eid, account_id=1, install_id="dt", event="dep",  # noqa: E731
                                               occurred_at=received, received_at=received, tid="same").model_dump_json(by_alias=True).encode()
    batch = plan_partition_batch(0, [(0, rec("a", T0)), (1, rec("b", T0 + 30 * DAY - 1)), (2, rec("c", T0 + 30 * DAY))], T0)
    result = (await harness.store.apply_batches([batch]))[0]
    assert (result.applied, result.duplicate_tids) == (2, 1)
    assert (await harness.device("dt"))["dep"].count == 2


async def test_assignment_resumes_after_the_redis_watermark(harness, infra, redis_client):
    """Kafka's committed offsets do not matter: a partition resumes at its Redis watermark + 1."""
    await produce(infra.kafka, harness.postbacks, [(b"1:w", pb(f"w{i}", "w", "reg", T0 + i)) for i in range(5)])
    part = [p for p in range(4) if await _has_records(infra, harness.postbacks, p)][0]
    await redis_client.set(PartitionKeys(harness.prefix, part).applied_offset(harness.postbacks), 2)
    await harness.run_until_applied(5)
    assert (await harness.device("w"))["reg"] == (T0 + 3, T0 + 4, 2)


async def test_a_partition_fetched_before_it_was_positioned_starts_at_the_watermark(harness, infra, redis_client):
    """The fetcher may ask for a just-assigned partition's position before the rebalance listener
    has set it (NoOffsetForPartitionError, as no reset policy is allowed): the pipeline then sets it
    to the Redis watermark + 1 itself, never to a reset policy's offset."""
    await produce(infra.kafka, harness.postbacks, [(b"1:u", pb(f"u{i}", "u", "reg", T0 + i)) for i in range(6)])
    part = [p for p in range(4) if await _has_records(infra, harness.postbacks, p)][0]
    await redis_client.set(PartitionKeys(harness.prefix, part).applied_offset(harness.postbacks), 3)
    consumer = AIOKafkaConsumer(bootstrap_servers=infra.kafka, enable_auto_commit=False, auto_offset_reset="none")
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    try:
        tp = TopicPartition(harness.postbacks, part)
        consumer.assign([tp])  # no listener: nothing positions it
        pipeline = PostbackPipeline(consumer, producer, harness.store, FixedClock(T0 + 5), harness.postbacks,
                                    harness.rejected, 1000)

        async def applied_to_the_end():
            await pipeline.poll_once(200)
            return (await harness.store.watermarks([part]))[part] == 5
        await wait_for(applied_to_the_end, timeout=30, interval=0, message="offsets 4 and 5 applied")
    finally:
        await consumer.stop()
        await producer.stop()
    assert (await harness.device("u"))["reg"] == (T0 + 4, T0 + 5, 2)  # offsets 0-3 counted as applied


async def _has_records(infra, topic, partition) -> bool:
    consumer = AIOKafkaConsumer(bootstrap_servers=infra.kafka)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        return (await consumer.end_offsets([tp]))[tp] > 0
    finally:
        await consumer.stop()


async def test_an_outbox_entry_in_an_unknown_format_stops_the_drain_and_stays(harness, redis_client, infra):
    """An entry this version cannot read is never skipped: the drain raises, naming it, and the
    entry stays in the outbox (nothing published, nothing lost)."""
    outbox = PartitionKeys(harness.prefix, 1).outbox
    await redis_client.xadd(outbox, {"event_id": "old1", "account_id": "1", "install_id": "legacy", "event": "dep"})
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        with pytest.raises(UnknownOutboxEntry, match="not this version's h/t"):
            await OutboxDrain(harness.store, producer, harness.device_events, lambda: {1}, 10).drain_once()
    finally:
        await producer.stop()
    assert await read_all(infra.kafka, harness.device_events) == []
    assert await redis_client.xlen(outbox) == 1
