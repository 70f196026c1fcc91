"""State that does not know its log: a worker refuses to continue Redis state built from another
log (the topic recreated, its partition count changed, a watermark beyond the log's end), with a
message that says what to do, and changes nothing. Before, a recreated topic made the worker skip
every new postback at or below the old watermark, silently, with /readyz 200."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.errors import TopicAlreadyExistsError

from services.common.keys import PartitionKeys
from services.common.models import PostbackRecord
from services.common.topics import ensure_topics
from services.processor.store import DeviceStateStore
from test_processor_pipeline import produce
from local_servers import free_port
from waiting import wait_for

T0 = 1_764_000_000_000
PARTITIONS = 4



def items(start: int, n: int) -> list[tuple[bytes, bytes]]:
    return [(f"1:d{i % 7}".encode(), PostbackRecord(event_id=f"e{i}", account_id=1, install_id=f"d{i % 7}", event="dep",
                                                  occurred_at=T0 + i, received_at=T0 + i).model_dump_json(by_alias=True).encode())
            for i in range(start, start + n)]


@pytest.fixture
async def world(infra, service_env, redis_client, key_prefix, tmp_path):
    env = dict(service_env, PROCESSOR_DATADIR=str(tmp_path / "faust"))
    topics = {env["PBSEG_TOPIC_POSTBACKS"]: PARTITIONS, env["PBSEG_TOPIC_REJECTED"]: 1,
              env["PBSEG_TOPIC_DEVICE_EVENTS"]: PARTITIONS}
    await ensure_topics(infra.kafka, topics)
    store = DeviceStateStore(redis_client, key_prefix, env["PBSEG_TOPIC_POSTBACKS"], 30 * 86_400_000)
    return env, store


def start_worker(env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "services.processor", "-l", "warn"],
                            env=dict(env, PROCESSOR_WEB_PORT=str(free_port())), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


async def apply_with_a_worker(env, store, infra, records) -> dict[int, int]:
    await produce(infra.kafka, env["PBSEG_TOPIC_POSTBACKS"], records)
    worker = start_worker(env)
    try:
        async def applied():
            return sum(m + 1 for m in (await store.watermarks(range(PARTITIONS))).values()) >= len(records)
        await wait_for(applied, timeout=60, message="the worker applied the records")
    finally:
        worker.terminate()
        worker.wait(30)
    return await store.watermarks(range(PARTITIONS))


async def refusal(env) -> str:
    worker = start_worker(env)
    try:
        out, _ = await asyncio.to_thread(worker.communicate, timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError("the worker kept running on state that is not its log's")
    assert worker.returncode != 0
    assert "refusing to start" in out and "pbseg rebuild --yes" in out, out
    return out


async def state_of(redis, prefix: str) -> dict:
    keys = [k for p in range(PARTITIONS) for k in [k async for k in redis.scan_iter(match=PartitionKeys(prefix, p).tag + ":*")]]
    return {k: await redis.dump(k) for k in sorted(keys)}


async def test_a_recreated_topic_under_kept_redis_is_refused(world, infra, redis_client, key_prefix):
    env, store = world
    topic = env["PBSEG_TOPIC_POSTBACKS"]
    await apply_with_a_worker(env, store, infra, items(0, 40))
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
    await admin.start()
    try:
        await admin.delete_topics([topic])

        async def recreated():
            try:
                await ensure_topics(infra.kafka, {topic: PARTITIONS}, timeout_s=5)
            except (TimeoutError, TopicAlreadyExistsError):
                return False
            return True
        await wait_for(recreated, timeout=60, interval=0.5, message="the topic deleted and created again")
    finally:
        await admin.close()
    await produce(infra.kafka, topic, items(100, 10))  # offsets start again at 0: all at or below the old watermarks
    before = await state_of(redis_client, key_prefix)
    out = await refusal(env)
    assert "recreated" in out
    assert await state_of(redis_client, key_prefix) == before


async def test_a_changed_partition_count_is_refused(world, infra, redis_client, key_prefix):
    env, store = world
    await apply_with_a_worker(env, store, infra, items(0, 20))
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
    await admin.start()
    try:
        await admin.create_partitions({env["PBSEG_TOPIC_POSTBACKS"]: NewPartitions(PARTITIONS + 2)})
    finally:
        await admin.close()
    before = await state_of(redis_client, key_prefix)
    out = await refusal(env)
    assert f"has {PARTITIONS + 2} partitions" in out and "count twice" in out
    assert await state_of(redis_client, key_prefix) == before


async def test_a_watermark_beyond_the_log_end_is_refused(world, infra, redis_client, key_prefix):
    env, store = world
    await produce(infra.kafka, env["PBSEG_TOPIC_POSTBACKS"], items(0, 5))
    await redis_client.set(PartitionKeys(key_prefix, 0).applied_offset(env["PBSEG_TOPIC_POSTBACKS"]), 1000)
    out = await refusal(env)
    assert "applied up to offset 1000" in out
    assert await store.identities(range(PARTITIONS)) == {p: None for p in range(PARTITIONS)}  # nothing recorded


async def test_offsets_the_log_no_longer_holds_stop_the_worker_saying_so(world, infra, redis_client, key_prefix):
    """Records deleted from the log before they were applied (retention): the worker does not
    jump to what is left (no auto_offset_reset), it stops and names the partition and offsets."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.records_to_delete import RecordsToDelete

    env, store = world
    topic = env["PBSEG_TOPIC_POSTBACKS"]
    marks = await apply_with_a_worker(env, store, infra, items(0, 40))
    p = max(marks, key=marks.get)
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
    await admin.start()
    try:
        # the next offsets of partition p arrive and are deleted before a worker applies them
        await produce(infra.kafka, topic, items(1000, 200))
        ends = await _end_offsets(infra, topic)
        await admin.delete_records({TopicPartition(topic, p): RecordsToDelete(ends[p])}, timeout_ms=10000)
    finally:
        await admin.close()
    worker = start_worker(env)
    out, _ = await asyncio.to_thread(worker.communicate, timeout=60)
    assert worker.returncode != 0
    assert f"partition {p}: needs offset {marks[p] + 1}, the log starts at {ends[p]}" in out, out
    assert (await store.watermarks([p]))[p] == marks[p]  # nothing skipped on the truncated partition


async def _end_offsets(infra, topic):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=infra.kafka)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()
