"""`pbseg rebuild`: rebuilds every partition's Redis state from the postbacks log.

Chosen method: wipe, then replay (not "fresh prefix, then swap"): the query service and the
catalog address keys by one prefix, and a swap would need every reader to follow a pointer.
1. Refuse while the processor's consumer group has live members (two writers would race) -
   stop the processors first, or pass force=True when you know they are gone.
   Refuse too when a partition's log no longer starts at offset 0 (retention or deleteRecords
   removed its oldest records): the rebuilt state would silently lack them. Nothing is deleted
   then; accept_truncated_log=True rebuilds from what is left and reports the missing offsets.
2. Delete every key of every partition hash tag `{<prefix>:pN}` (devices, numbers, reverse
   map, bitmaps, tids, watermarks, outboxes). The catalog (`{<prefix>:cat}`) is untouched.
3. Replay each partition from its earliest retained offset up to the end offsets seen at the
   start, through the same planning code and the same Lua script as live processing, in the
   same offset order - so device numbers, ordinals, first/last/count, tid decisions (which
   compare ingress receive times, not the wall clock) and watermarks come out identical.
   The outbox is NOT refilled: downstream consumers already received those records.
4. Start the processors again: they resume at the rebuilt watermarks + 1.
Rejected records are skipped silently (they already are on the rejected topic)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from tqdm import tqdm

from services.common.clock import SystemClock
from services.common.redis_conn import async_redis, check_redis
from services.processor.planning import plan_partition_batches
from services.processor.triggers import BookCache
from services.common.trigger_registry import TriggerRegistry
from services.processor.settings import ProcessorSettings
from services.processor.store import DeviceStateStore


class RebuildRefused(RuntimeError):
    """The rebuild would race a running processor, or cannot replay what it needs."""


class TruncatedLog(RebuildRefused):
    """A partition's log no longer starts at offset 0: its oldest records cannot be replayed."""


@dataclass(frozen=True)
class RebuildReport:
    partitions: int
    records: int
    applied: int
    rejected: int
    duplicate_tids: int
    keys_deleted: int
    seconds: float
    # partition -> offsets no longer in the log (0..start-1), rebuilt without; only with
    # accept_truncated_log, else the rebuild refuses
    missing_offsets: dict[int, int] = field(default_factory=dict)


def missing_offsets(log_starts: dict[int, int]) -> dict[int, int]:
    """Per partition whose log no longer starts at 0, how many offsets (0..start-1) are gone."""
    return {p: start for p, start in sorted(log_starts.items()) if start > 0}


def truncated_log_message(topic: str, missing: dict[int, int], watermarks: dict[int, int]) -> str:
    """What the refusal says: which partitions, where their logs start, what Redis holds, what to do."""
    parts = []
    for p, start in missing.items():
        mark = watermarks.get(p, -1)
        held = (f"Redis holds its state up to offset {mark}, which the rebuild would delete" if mark >= 0
                else "no state for it in Redis")
        parts.append(f"partition {p} starts at offset {start} (offsets 0-{start - 1} are gone; {held})")
    return (f"the log of topic {topic!r} no longer reaches back to offset 0, where a rebuild starts: "
            f"{'; '.join(parts)}. Nothing was deleted. Restore the log (from a backup or tiered storage; "
            "keep it with retention.ms=-1), or rebuild from what is left with `pbseg rebuild --yes "
            "--accept-truncated-log`: the effects of the missing offsets (devices, counts, deposit ordinals) "
            "are then lost for good.")


async def live_members(bootstrap: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
        return sum(len(g[-1]) for r in responses for g in r.groups if g[1] == group)
    finally:
        await admin.close()


async def rebuild(settings: ProcessorSettings, *, force: bool = False, progress: bool = True,
                  max_batch: int = 10_000, accept_truncated_log: bool = False) -> RebuildReport:
    """Wipe and replay (the module docstring). Raises RebuildRefused (live members) and
    TruncatedLog (unless accept_truncated_log) before deleting anything."""
    started = time.monotonic()
    if not force:
        members = await live_members(settings.kafka_bootstrap_servers, settings.consumer_group)
        if members:
            raise RebuildRefused(f"consumer group {settings.consumer_group!r} has {members} live member(s): "
                                 "stop the processors first (or pass --force if they are gone)")
    redis = async_redis(settings.redis_url)
    await check_redis(redis, settings.redis_url)
    store = DeviceStateStore.from_settings(redis, settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024,
                                fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    try:
        partitions = sorted(await _partitions(consumer, settings.topic_postbacks))
        tps = [TopicPartition(settings.topic_postbacks, p) for p in partitions]
        consumer.assign(tps)
        begin, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        missing = missing_offsets({tp.partition: begin[tp] for tp in tps})
        if missing and not accept_truncated_log:
            raise TruncatedLog(truncated_log_message(settings.topic_postbacks, missing,
                                                     await store.watermarks(partitions)))
        deleted = 0
        for p in partitions:
            deleted += await store.wipe_partition(p)
        for p, start in missing.items():
            # Accepted loss: the watermark says offsets below the log start are accounted for, so
            # the apply script's gap rule (a batch beyond watermark + 1 applies nothing) lets the
            # replay begin there, and a worker afterwards resumes after the replayed end.
            await redis.set(store.keys(p).applied_offset(settings.topic_postbacks), start - 1)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if end[tp] > begin[tp]}
        total = sum(end[tp] - begin[tp] for tp in tps)
        records = applied = rejected = dups = 0
        clock = SystemClock()
        # The triggers as of now (a Redis time after every record of the log): each tick of the
        # log decides as it did live (the version in force at its time), without publishing.
        plan = await BookCache(TriggerRegistry(redis, settings.key_prefix), settings.trigger_max_lateness_s * 1000,
                               settings.tick_budget, settings.window_retention_days).ensure(clock.now_ms())
        with tqdm(total=total, unit="rec", desc="rebuild", disable=not progress, smoothing=0.1) as bar:
            while remaining:
                data = await consumer.getmany(*remaining, timeout_ms=500, max_records=max_batch)
                batches = []
                for tp, messages in data.items():
                    messages = [m for m in messages if m.offset < end[tp]]
                    if messages:
                        batches += plan_partition_batches(tp.partition, ((m.offset, m.value, m.timestamp) for m in messages),
                                                          clock.now_ms(), emit=False, triggers=plan)
                for result in await store.apply_batches(batches):
                    applied += result.applied
                    dups += result.duplicate_tids
                n = sum(b.size for b in batches)
                records += n
                rejected += sum(len(b.rejected) for b in batches)
                bar.update(n)
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
        return RebuildReport(len(partitions), records, applied, rejected, dups, deleted, time.monotonic() - started,
                             missing)
    finally:
        await consumer.stop()
        await redis.aclose()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer._client.force_metadata_update()  # first metadata may predate the topic
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise RebuildRefused(f"topic {topic!r} does not exist on Kafka")
    return parts


def main(args) -> int:
    """CLI entry (services/cli/main.py): `pbseg rebuild --yes [--force] [--accept-truncated-log]`."""
    import asyncio
    import sys

    import orjson

    settings = ProcessorSettings()
    if not args.yes:
        print(f"this deletes and rebuilds every partition key under prefix {settings.key_prefix!r} "
              f"from topic {settings.topic_postbacks!r}; run again with --yes", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(rebuild(settings, force=args.force, progress=not args.no_progress,
                                     accept_truncated_log=getattr(args, "accept_truncated_log", False)))
    except RebuildRefused as exc:
        print(f"rebuild refused: {exc}", file=sys.stderr)
        return 1
    for p, gone in report.missing_offsets.items():
        print(f"partition {p}: offsets 0-{gone - 1} ({gone}) were no longer in the log; "
              "the rebuilt state lacks their effects", file=sys.stderr)
    print(orjson.dumps(report.__dict__, option=orjson.OPT_NON_STR_KEYS).decode())
    return 0
