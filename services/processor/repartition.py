"""`pbseg repartition --to N --target TOPIC`: the migration to another partition count.

Adding partitions to the postbacks topic in place would move devices to other partitions (a
second device number, doubled counts, restarted ordinals), so the processor refuses a changed
count (services/domain/identity.py). The migration instead copies the log into a new topic with
N partitions and rebuilds the state from it:

1. Refuse while processors run (as `pbseg rebuild` does), when the source log no longer starts
   at offset 0 (it would copy a history with holes), and when the target topic already holds
   records (a half-done copy: delete the target and start again).
2. Create the target as the postbacks topic is created (retention.ms=-1, replication from the
   settings), with N partitions.
3. Copy every record up to the end offsets seen at the start, with its key, value and Kafka
   timestamp (so `processed_at`, which is the record's timestamp, and every device-event derived
   again come out byte-identical), to partition murmur2(key) % N: the ingress's partitioner
   (services/ingress/producer.py `partition_for`), so new postbacks of a device land where its
   history is. Source partitions are merged by timestamp; each partition's own order is kept,
   so a device whose records sit in one source partition keeps its exact order, and a device
   split over two partitions by an earlier in-place partition add is ordered by time. A tick
   (event-triggered tasks) goes to every target partition: the rebuild then decides each fire as
   the live tick did, on the state of that moment (not published again).
4. Verify that every target partition holds exactly the records sent to it.
5. Delete the state of every old partition and rebuild from the target (`pbseg rebuild`).

Then the operator points every service at the target (PBSEG_TOPIC_POSTBACKS=TOPIC,
PBSEG_POSTBACKS_PARTITIONS=N) and starts them. The ingress must be stopped for the whole
migration: what it writes to the old topic meanwhile is not copied (docs/architecture.md).
"""

from __future__ import annotations

from services.domain.triggers import TICK_PREFIX

import asyncio
import heapq
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tqdm import tqdm

from services.common.redis_conn import async_redis, check_redis
from services.common.topics import ensure_topics, partition_count, topic_plan
from services.ingress.producer import partition_for
from services.processor.rebuild import (RebuildRefused, RebuildReport, TruncatedLog, _partitions, live_members,
                                        missing_offsets, rebuild, truncated_log_message)
from services.processor.settings import ProcessorSettings
from services.processor.store import DeviceStateStore


@dataclass(frozen=True)
class RepartitionReport:
    source: str
    target: str
    source_partitions: int
    target_partitions: int
    records: int
    seconds: float
    rebuild: RebuildReport


async def _records(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int, batch: int):
    """One source partition's records below `end`, in offset order, as (timestamp, partition, offset, key, value)."""
    while await consumer.position(tp) < end:
        for m in (await consumer.getmany(tp, timeout_ms=1000, max_records=batch)).get(tp, []):
            if m.offset < end:
                yield m.timestamp, tp.partition, m.offset, m.key, m.value


async def _merged(streams):
    """heapq.merge over async streams: smallest (timestamp, partition, offset) first."""
    heads = []
    for i, stream in enumerate(streams):
        async for item in stream:
            heads.append((item, i))
            break
    heapq.heapify(heads)
    while heads:
        item, i = heads[0]
        yield item
        nxt = await anext(streams[i], None)
        if nxt is None:
            heapq.heappop(heads)
        else:
            heapq.heapreplace(heads, (nxt, i))


async def repartition(settings: ProcessorSettings, target: str, partitions: int, *, force: bool = False,
                      progress: bool = True, batch: int = 5000) -> RepartitionReport:
    """The migration of the module docstring. Raises RebuildRefused / TruncatedLog before changing anything."""
    started = time.monotonic()
    source = settings.topic_postbacks
    if target == source:
        raise RebuildRefused("the target topic must be a new topic, not the postbacks topic itself")
    if not force and (members := await live_members(settings.kafka_bootstrap_servers, settings.consumer_group)):
        raise RebuildRefused(f"consumer group {settings.consumer_group!r} has {members} live member(s): "
                             "stop the processors (and the ingress) first")
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
                                enable_idempotence=True, linger_ms=20, max_batch_size=1024 * 1024)
    await consumer.start()
    await producer.start()
    try:
        old = sorted(await _partitions(consumer, source))
        tps = [TopicPartition(source, p) for p in old]
        consumer.assign(tps)
        begin, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        missing = missing_offsets({tp.partition: begin[tp] for tp in tps})
        if missing:
            raise TruncatedLog(truncated_log_message(source, missing, {}).replace(
                "a rebuild starts", "a repartition copies from"))
        target_settings = settings.model_copy(update={"topic_postbacks": target, "postbacks_partitions": partitions})
        await ensure_topics(settings.kafka_bootstrap_servers,
                            {target: topic_plan(target_settings)[target]})
        target_tps = [TopicPartition(target, p) for p in range(partitions)]
        if await partition_count(settings.kafka_bootstrap_servers, target) != partitions:
            raise RebuildRefused(f"topic {target!r} exists with another partition count: delete it or pick another name")
        held = await consumer.end_offsets(target_tps)
        if any(held.values()):
            raise RebuildRefused(f"topic {target!r} already holds {sum(held.values())} records (a copy that did not "
                                 "finish?): delete it and run the repartition again")
        await consumer.seek_to_beginning(*tps)
        total = sum(end[tp] - begin[tp] for tp in tps)
        sent = [0] * partitions
        futures = []
        with tqdm(total=total, unit="rec", desc=f"copy {source} -> {target}", disable=not progress) as bar:
            streams = [_records(consumer, tp, end[tp], batch) for tp in tps if end[tp] > begin[tp]]
            async for timestamp, _, _, key, value in _merged(streams):
                # A tick (services/domain/triggers.py) names timer hashes, which are named alike in
                # every partition: it goes to each target partition, at its place in time.
                for p in (range(partitions) if key is None and value and value.startswith(TICK_PREFIX)
                          else (partition_for(key, partitions),)):
                    futures.append(await producer.send(target, value, key=key, partition=p, timestamp_ms=timestamp))
                    sent[p] += 1
                if len(futures) >= batch:
                    for f in futures:
                        await f
                    bar.update(len(futures))
                    futures.clear()
            for f in futures:
                await f
            bar.update(len(futures))
        copied = await consumer.end_offsets(target_tps)
        if [copied[tp] for tp in target_tps] != sent:
            raise RebuildRefused(f"the copy does not add up: sent {sent} per partition of {target!r}, it holds "
                                 f"{[copied[tp] for tp in target_tps]}; nothing was rebuilt, delete it and run again")
    finally:
        await producer.stop()
        await consumer.stop()
    # The state of old partitions the target does not have would be left behind by the rebuild.
    redis = async_redis(settings.redis_url)
    await check_redis(redis, settings.redis_url)
    try:
        store = DeviceStateStore.from_settings(redis, settings, source)
        for p in range(partitions, len(old)):
            await store.wipe_partition(p)
    finally:
        await redis.aclose()
    report = await rebuild(target_settings, force=True, progress=progress)
    return RepartitionReport(source, target, len(old), partitions, sum(sent), time.monotonic() - started, report)


def main(args) -> int:
    """CLI entry (services/cli/main.py): `pbseg repartition --to N --target TOPIC --yes [--force]`."""
    import sys

    import orjson

    settings = ProcessorSettings()
    if not args.yes:
        print(f"this copies topic {settings.topic_postbacks!r} into a new topic {args.target!r} with {args.to} "
              f"partitions, then deletes and rebuilds every partition key under prefix {settings.key_prefix!r} "
              "from it. Stop the ingress and the processors first; run again with --yes", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(repartition(settings, args.target, args.to, force=args.force, progress=not args.no_progress))
    except RebuildRefused as exc:
        print(f"repartition refused: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps({**report.__dict__, "rebuild": report.rebuild.__dict__}, option=orjson.OPT_NON_STR_KEYS).decode())
    print(f"done: start every service with PBSEG_TOPIC_POSTBACKS={report.target} "
          f"PBSEG_POSTBACKS_PARTITIONS={report.target_partitions}; the old topic {report.source!r} can be deleted "
          "once you have checked the counts", file=sys.stderr)
    return 0
