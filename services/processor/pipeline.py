"""The postbacks pipeline: aiokafka batches -> per partition: decode/plan -> rejections -> one
atomic Lua call, written to Redis as soon as ~SEND_AT records are planned (Redis applies them
while the rest is planned) -> metrics. Runs inside the Faust worker (app.py).

Why aiokafka and not a Faust agent: bench/processor measured Faust's per-event stream far
below the 30,000 events/s target on this machine, while `getmany()` batches are not the limit
(docs/decisions/0004-processor-aiokafka-batches-in-faust.md). The guarantees do not depend on Kafka's committed
offsets: on assignment every partition is sought to its Redis watermark + 1, and the apply
script skips offsets at or below the watermark, so redelivery after a crash or a rebalance
changes nothing. Committed offsets are written only so that standard lag tools see progress.

Redis going back under a running worker (restored from an older copy, a failover to a replica
that lagged) is noticed by the apply script: a batch that starts beyond watermark + 1 applies
nothing, and the partition is sought back to watermark + 1 (re-applied records carry their Kafka
timestamp as `processed_at`, so they are published byte-identical). The consumer never falls
back to `auto_offset_reset`: an offset the log no longer holds stops the worker (LogTruncated).
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError

from services.common.clock import Clock
from services.processor import metrics
from services.processor.planning import PartitionBatch, plan_partition_batches
from services.processor.rejections import rejected_message
from services.processor.store import BatchResult, DeviceStateStore
from services.processor.triggers import BookCache

log = structlog.get_logger("processor")

# Planned batches go to Redis in one write once they hold this many records (or at the end of
# the poll). Full polls (5,000 records over 8 partitions) then make ~4 writes and Redis starts on
# the first while the worker plans the rest; small polls (a steady 10,000/s is ~250 records per
# 25 ms fetch) make one, keeping per-write costs (a pooled connection, a task, a reply read)
# off every small batch: one write per partition cost ~50% more worker CPU per postback there.
SEND_AT = 1000


class LogTruncated(RuntimeError):
    """The log no longer holds the offsets Redis needs next: continuing would skip postbacks."""


class _SeekToWatermark(ConsumerRebalanceListener):
    def __init__(self, pipeline: "PostbackPipeline"):
        self.pipeline = pipeline

    async def on_partitions_revoked(self, revoked):
        # Not needed for exactness (a new owner's overlapping batch skips what ours applied, or
        # ours skips what it applied: both are atomic with the watermark); it spares the redo.
        await self.pipeline.wait_applied()
        self.pipeline.owned_partitions.difference_update(tp.partition for tp in revoked)
        metrics.ASSIGNED.set(len(self.pipeline.owned_partitions))

    async def on_partitions_assigned(self, assigned):
        await self.pipeline.seek_to_watermarks(assigned)


class PostbackPipeline:
    """Consumes the postbacks topic in a consumer group and applies it to Redis.

    Nothing is lost: a batch's rejections are acknowledged by Kafka before the batch (and so
    the watermark past them) is applied. Nothing is doubled: the batch and the watermark are
    one atomic script. `run()` raises on Redis/Kafka failures; the worker then exits and a
    restart resumes from the watermark."""

    def __init__(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, store: DeviceStateStore,
                 clock: Clock, topic: str, rejected_topic: str, max_batch: int,
                 on_outbox_work: Callable[[], None] = lambda: None, send_at: int = SEND_AT,
                 outbox_max_entries: int = 0, books: BookCache | None = None,
                 on_tick_applied: Callable[[], None] = lambda: None):
        self.consumer = consumer
        self.books = books  # the trigger registry as of the poll (services/processor/triggers.py)
        self.on_tick_applied = on_tick_applied  # wakes the ticker (a burst drains tick after tick)
        self.on_outbox_work = on_outbox_work  # wakes the outbox drain (outbox.py)
        self.producer = producer
        self.store = store
        self.clock = clock
        self.topic = topic
        self.rejected_topic = rejected_topic
        self.max_batch = max_batch
        self.send_at = send_at
        self.owned_partitions: set[int] = set()
        self._in_flight: dict[int, asyncio.Future] = {}  # partition -> the apply task of its last write
        self._epoch: dict[int, int] = {}  # partition -> seeks so far (batches planned before a seek are stale)
        self._rewound_to: dict[int, int] = {}  # partition -> the watermark of its last regression seek
        self.outbox_max_entries = outbox_max_entries
        self.outbox_full = False  # consumption paused until the outboxes drain (backpressure)
        self._last_outbox_check = 0.0
        self.ready = asyncio.Event()
        self._rate = metrics.RateWindow()
        self._last_commit = 0.0
        self._last_lag = 0.0  # the lag gauges are refreshed at most once a second
        self._last_report = time.monotonic()
        self._since_report = 0

    def subscribe(self) -> None:
        self.consumer.subscribe([self.topic], listener=_SeekToWatermark(self))

    async def seek_to_watermarks(self, assigned) -> None:
        partitions = sorted(tp.partition for tp in assigned if tp.topic == self.topic)
        marks = await self.store.watermarks(partitions)
        for p in partitions:
            self._epoch[p] = self._epoch.get(p, 0) + 1
            self._rewound_to.pop(p, None)
            self.consumer.seek(TopicPartition(self.topic, p), marks[p] + 1)
        self.owned_partitions.update(partitions)
        metrics.ASSIGNED.set(len(self.owned_partitions))
        self.on_outbox_work()  # a previous owner may have left entries in these outboxes
        log.info("partitions_assigned", partitions=partitions, resume_at={p: marks[p] + 1 for p in partitions})

    async def _seek_unpositioned(self, exc: NoOffsetForPartitionError) -> None:
        tps = [tp for tp in exc.args if isinstance(tp, TopicPartition)] or list(self.consumer.assignment())
        tps = [tp for tp in tps if tp.topic == self.topic and tp in self.consumer.assignment()]
        marks = await self.store.watermarks(sorted(tp.partition for tp in tps))
        for tp in tps:
            self.consumer.seek(tp, marks[tp.partition] + 1)
        log.info("positioned_from_watermarks", partitions={tp.partition: marks[tp.partition] + 1 for tp in tps})

    async def recover(self) -> None:
        """After a failed dependency came back: forget what was in flight (each batch was applied
        whole or not at all) and re-read every owned partition from its Redis watermark + 1."""
        for task in self._in_flight.values():
            task.cancel()
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
        self._in_flight.clear()
        assigned = self.consumer.assignment()
        if assigned:
            await self.seek_to_watermarks(assigned)

    async def run(self) -> None:
        """Poll, plan partition batches and send them to Redis as they are planned (`send_at`),
        so Redis applies some while the worker plans the others (they overlap instead of taking
        turns; measured in docs/decisions/0009-send-at-once.md). A partition's batches are applied
        strictly in order: the next is sent only after the previous one returned."""
        try:
            while True:
                batches, _ = await self.fetch_and_apply()
                await self._commit_and_observe(batches)
        finally:
            for task in self._in_flight.values():
                if not task.done():
                    task.cancel()

    async def poll_once(self, timeout_ms: int = 200) -> int:
        """One poll, applied before returning (tests and tools)."""
        batches, tasks = await self.fetch_and_apply(timeout_ms)
        applied = sum(await asyncio.gather(*tasks))
        await self._commit_and_observe(batches)
        return applied

    async def fetch_and_apply(self, timeout_ms: int = 200) -> tuple[list[PartitionBatch], list[asyncio.Future]]:
        """Fetch one poll's records; plan each partition's batch and publish its rejections (they
        are on Kafka, acknowledged, before the batch - and the watermark past them - can be
        applied); send the planned batches to Redis once they hold `send_at` records (and the rest
        at the end of the poll). Returns the batches and their apply tasks (still running)."""
        self._raise_failed_applies()
        await self._backpressure()
        try:
            data = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=self.max_batch)
        except OffsetOutOfRangeError as exc:
            raise LogTruncated(await self._truncation_message(exc)) from exc
        except NoOffsetForPartitionError as exc:
            # The fetcher looked for a position of a just-assigned partition before the rebalance
            # listener had set it (it awaits the Redis watermarks first). The position is the
            # watermark + 1, as the listener sets it; never a reset policy.
            await self._seek_unpositioned(exc)
            return [], []
        self.ready.set()
        now = self.clock.now_ms()
        plan = None
        if self.books is not None and any(data.values()):
            # every record and tick of the poll was appended before this Redis time: a trigger
            # version in force for any of them is in the book
            plan = await self.books.ensure(max(m.timestamp for msgs in data.values() for m in msgs))
        batches, tasks, group, grouped = [], [], [], 0
        for tp, msgs in data.items():
            if not msgs or tp.topic != self.topic:
                continue
            for batch in plan_partition_batches(tp.partition, ((m.offset, m.value, m.timestamp) for m in msgs), now,
                                                triggers=plan):
                batch.epoch = self._epoch.get(tp.partition, 0)
                batches.append(batch)
                if batch.rejected:
                    await self._publish_rejections(batch, now)
                group.append(batch)
                grouped += batch.size
                if grouped >= self.send_at:
                    tasks.append(await self._send(group))
                    group, grouped = [], 0
        if group:
            tasks.append(await self._send(group))
        return batches, tasks

    async def _send(self, group: list[PartitionBatch]) -> asyncio.Future:
        # A group may hold several batches of one partition (a tick ends a batch): they go out on
        # the same connection, in order, and Redis applies them in that order.
        for batch in group:
            previous = self._in_flight.get(batch.partition)
            if previous is not None:
                await previous  # raises when it failed: run() stops, a restart resumes from the watermark
        started = time.perf_counter()
        results = await self.store.send_batches(group)  # on the wire: Redis applies while we plan on
        task = asyncio.ensure_future(self._applied(group, results, started))
        for batch in group:
            self._in_flight[batch.partition] = task
        return task

    def _raise_failed_applies(self) -> None:
        for partition, task in list(self._in_flight.items()):
            if task.done():
                del self._in_flight[partition]
                task.result()  # raises the apply's error

    async def wait_applied(self) -> None:
        """Until every batch sent so far was applied (or failed); used on revocation."""
        if self._in_flight:
            await asyncio.gather(*set(self._in_flight.values()), return_exceptions=True)

    async def _applied(self, group: list[PartitionBatch], results: "asyncio.Future[list[BatchResult]]",
                       started: float) -> int:
        applied, ticked = 0, False
        for batch, result in zip(group, await results):
            if result.gap:
                self._rewind(batch, result.watermark)
                continue
            if batch.tick:
                ticked = True
                metrics.FIRES.labels("sent").inc(result.fires)
                metrics.FIRES.labels("not_sent").inc(result.fire_decisions - result.fires)
            metrics.BATCH_SIZE.observe(batch.size)
            if result.skipped_offsets:
                metrics.DUPLICATES.labels("offset").inc(result.skipped_offsets)
            if result.duplicate_tids:
                metrics.DUPLICATES.labels("tid").inc(result.duplicate_tids)
            applied += result.applied
        self.on_outbox_work()
        if ticked:
            self.on_tick_applied()
        metrics.APPLY_SECONDS.observe(time.perf_counter() - started)
        metrics.EVENTS_APPLIED.inc(applied)
        metrics.EVENTS_PER_SECOND.set(self._rate.add(applied))
        self._since_report += applied
        return applied

    async def _backpressure(self) -> None:
        """At most twice a second: pause consumption while an owned partition's outbox holds more
        than `outbox_max_entries` entries (device-events cannot be written fast enough, or at
        all), resume once every one is down to half. Paused, the loop keeps polling (nothing is
        fetched), so the group membership and the drain go on; nothing is lost or skipped."""
        now = time.monotonic()
        if not self.outbox_max_entries or now - self._last_outbox_check < 0.5 or not self.owned_partitions:
            return
        self._last_outbox_check = now
        lengths = await self.store.outbox_lengths(sorted(self.owned_partitions))
        longest = max(lengths.values(), default=0)
        assigned = [tp for tp in self.consumer.assignment() if tp.topic == self.topic]
        if not self.outbox_full and longest > self.outbox_max_entries:
            self.outbox_full = True
            self.consumer.pause(*assigned)
            metrics.OUTBOX_FULL.set(1)
            log.warning("outbox_full", longest=longest, bound=self.outbox_max_entries,
                        message="device-events are not being published fast enough; consumption paused")
        elif self.outbox_full and longest <= self.outbox_max_entries // 2:
            self.outbox_full = False
            self.consumer.resume(*assigned)
            metrics.OUTBOX_FULL.set(0)
            log.info("outbox_drained", longest=longest, message="consumption resumed")
        elif self.outbox_full:
            self.consumer.pause(*assigned)  # partitions assigned since keep still too

    def _rewind(self, batch: PartitionBatch, watermark: int) -> None:
        """The script refused `batch`: it starts beyond watermark + 1. Seek back there once per
        regression; batches planned before that seek are stale and refused the same way. A batch
        planned after it that still starts beyond watermark + 1 means the log lacks the offsets."""
        p = batch.partition
        if batch.epoch != self._epoch.get(p, 0):
            return
        if self._rewound_to.get(p) == watermark:
            raise LogTruncated(f"partition {p} of {self.topic}: Redis has applied up to offset {watermark}, but the "
                               f"log's next record after it is offset {batch.first_offset}: offsets {watermark + 1}.."
                               f"{batch.first_offset - 1} are missing from the log. Continuing would skip them; "
                               "restore the log, or rebuild Redis from what it holds (pbseg rebuild --yes).")
        self._epoch[p] = self._epoch.get(p, 0) + 1
        self._rewound_to[p] = watermark
        self.consumer.seek(TopicPartition(self.topic, p), watermark + 1)
        metrics.WATERMARK_REGRESSIONS.labels(str(p)).inc()
        log.warning("watermark_regressed", partition=p, watermark=watermark, batch_first_offset=batch.first_offset,
                    message="Redis lost applied batches (rollback or failover); re-reading from watermark + 1")

    async def _truncation_message(self, exc: OffsetOutOfRangeError) -> str:
        wanted = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        starts = await self.consumer.beginning_offsets(list(wanted)) if wanted else {}
        parts = [f"partition {tp.partition}: needs offset {offset}, the log starts at {starts.get(tp, '?')}"
                 for tp, offset in sorted(wanted.items(), key=lambda kv: kv[0].partition)]
        return (f"{self.topic}: the log no longer holds what Redis needs next ({'; '.join(parts) or exc}). The "
                "postbacks in between were deleted (retention?) before they were applied; continuing would skip "
                "them. Restore the log, or rebuild from what it holds: pbseg rebuild --yes (see docs/architecture.md).")

    async def _publish_rejections(self, batch: PartitionBatch, now: int) -> None:
        futures = []
        for rejected in batch.rejected:
            key, value = rejected_message(rejected.rejection, self.topic, batch.partition, rejected.offset, now)
            futures.append(await self.producer.send(self.rejected_topic, value, key=key or None))
            metrics.REJECTIONS.labels(rejected.rejection.reason).inc()
            log.warning("record_rejected", partition=batch.partition, offset=rejected.offset,
                        reason=rejected.rejection.reason, message=rejected.rejection.message)
        await asyncio.gather(*futures)

    async def _commit_and_observe(self, batches: list[PartitionBatch]) -> None:
        now = time.monotonic()
        if batches and now - self._last_commit >= 1.0:
            self._last_commit = now
            offsets = {TopicPartition(self.topic, b.partition): b.last_offset + 1 for b in batches
                       if b.partition in self.owned_partitions}
            try:
                await self.consumer.commit(offsets)
            except Exception as exc:  # noqa: BLE001 - informational only; Redis holds the truth
                log.info("offset_commit_skipped", error=str(exc))
        if now - self._last_lag < 1.0:
            return
        self._last_lag = now
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None:
                try:
                    position = await self.consumer.position(tp)
                except Exception:  # noqa: BLE001 - partition being revoked
                    continue
                metrics.LAG.labels(str(tp.partition)).set(max(high - position, 0))
        if now - self._last_report >= 10.0:
            log.info("progress", applied=self._since_report, per_second=round(self._since_report / (now - self._last_report)),
                     partitions=sorted(self.owned_partitions))
            self._last_report, self._since_report = now, 0
