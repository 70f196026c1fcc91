"""Drains the per-partition Redis outboxes to the device-events topic.

An entry leaves the outbox only after Kafka acknowledged it (acks=all, idempotent producer),
so none is lost; a crash between the acknowledgement and the trim publishes the same entries
again - byte for byte the same records (same event_id, ordinal, processed_at), which is the
documented at-least-once contract of device-events.v1. Entries of one partition are sent in
outbox order to one device-events partition, keyed `{account_id}:{install_id}`, so one
device's records stay in order (the idempotent producer keeps order across its retries)."""

from __future__ import annotations

import asyncio
from typing import Callable, Iterable

import structlog
from aiokafka import AIOKafkaProducer

from services.processor import metrics
from services.processor.store import DeviceStateStore

log = structlog.get_logger("processor.outbox")


class OutboxDrain:
    def __init__(self, store: DeviceStateStore, producer: AIOKafkaProducer, topic: str,
                 partitions: Callable[[], Iterable[int]], batch: int, interval_s: float = 0.02,
                 idle_poll_s: float = 1.0, fires_topic: str = "task-triggers.v1"):
        self.store = store
        self.producer = producer
        self.topic = topic
        self.fires_topic = fires_topic  # a tick's fires (task-trigger.v1), same partition rule
        self.partitions = partitions
        self.batch = batch
        self.interval_s = interval_s
        self.idle_poll_s = idle_poll_s
        self.backlog = False  # the last round read a full `batch` of some partition
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """Something may be in an outbox: a batch was applied, or partitions were assigned
        (a previous owner may have left entries). Called by the pipeline."""
        self._wake.set()

    async def run(self) -> None:
        """Rounds back to back while a backlog remains; else at most one per `interval_s` (under
        a steady load a round then carries several applied batches), and only once `notify()`
        said there is work - or after `idle_poll_s`, the safety net - so an idle worker does
        not poll Redis 50 times a second."""
        while True:
            self._wake.clear()  # before the read: a batch applied from here on wakes the next round
            await self.drain_once()
            if self.backlog:
                continue
            await asyncio.sleep(self.interval_s)
            if not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), self.idle_poll_s)
                except asyncio.TimeoutError:
                    pass

    async def drain_once(self) -> int:
        """Publish up to `batch` outbox entries (applied batches) of every owned partition;
        returns how many records were published. One Redis round trip reads every owned
        partition's outbox, their records go out together, and one round trip trims what Kafka
        acknowledged (nothing is trimmed when a send fails: the next round sends it again)."""
        partitions = sorted(self.partitions())
        self.backlog = False
        if not partitions:
            return 0
        entries = await self.store.read_outboxes(partitions, self.batch)
        busy = {p: found for p, found in entries.items() if found}
        self.backlog = any(len(found) == self.batch for found in busy.values())
        for p in partitions:
            if p not in busy:
                metrics.OUTBOX_BACKLOG.labels(str(p)).set(0)
        if not busy:
            return 0
        targets = len(await self.producer.partitions_for(self.topic))
        futures, published, fired = [], 0, 0
        for p, found in busy.items():
            events = [e for e in found if not e.is_fires]
            fires = [e for e in found if e.is_fires]
            if events:
                published += await self._send(self.topic, p % targets, [r for e in events for r in e.records()], futures)
            if fires:
                fire_targets = len(await self.producer.partitions_for(self.fires_topic))
                fired += await self._send(self.fires_topic, p % fire_targets,
                                          [r for e in fires for r in e.fire_records()], futures)
        await asyncio.gather(*futures)
        full = [p for p, found in busy.items() if len(found) == self.batch]
        lengths = await self.store.ack_outboxes({p: found[-1].entry_id for p, found in busy.items()}, full)
        for p in busy:
            metrics.OUTBOX_BACKLOG.labels(str(p)).set(lengths.get(p, 0))
        metrics.OUTBOX_PUBLISHED.inc(published)
        metrics.FIRES_PUBLISHED.inc(fired)
        return published + fired

    async def _send(self, topic: str, target: int, records: list[tuple[bytes, bytes]], futures: list) -> int:
        """Send the records as producer batches to partition `target` of `topic` (source partition
        N -> N % partitions: all of N's devices land in one partition, in order; co-partitioned
        when the counts match); appends the delivery futures. Explicit batches skip aiokafka's
        per-record partitioner, which costs more than the rest."""
        batch = self.producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await self.producer.send_batch(batch, topic, partition=target))
                batch = self.producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        if batch.record_count():
            futures.append(await self.producer.send_batch(batch, topic, partition=target))
        return len(records)
