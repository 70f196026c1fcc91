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
from services.processor.store import DeviceStateStore, OutboxEntry

log = structlog.get_logger("processor.outbox")


class OutboxDrain:
    def __init__(self, store: DeviceStateStore, producer: AIOKafkaProducer, topic: str,
                 partitions: Callable[[], Iterable[int]], batch: int, idle_sleep_s: float = 0.02):
        self.store = store
        self.producer = producer
        self.topic = topic
        self.partitions = partitions
        self.batch = batch
        self.idle_sleep_s = idle_sleep_s

    async def run(self) -> None:
        while True:
            if not await self.drain_once():
                await asyncio.sleep(self.idle_sleep_s)

    async def drain_once(self) -> int:
        """Publish up to `batch` outbox entries (applied batches) of every owned partition;
        returns how many records were published."""
        published = 0
        for partition in sorted(self.partitions()):
            entries = await self.store.read_outbox(partition, self.batch)
            if not entries:
                metrics.OUTBOX_BACKLOG.labels(str(partition)).set(0)
                continue
            count = await self._publish(partition, entries)
            await self.store.ack_outbox(partition, entries[-1].entry_id)
            published += count
            metrics.OUTBOX_PUBLISHED.inc(count)
            if len(entries) == self.batch:
                metrics.OUTBOX_BACKLOG.labels(str(partition)).set(await self.store.outbox_length(partition))
            else:
                metrics.OUTBOX_BACKLOG.labels(str(partition)).set(0)
        return published

    async def _publish(self, partition: int, entries: list[OutboxEntry]) -> int:
        """Send the entries' records as producer batches to device-events partition
        `partition % n` and wait for every acknowledgement. Source partition N's devices all
        land in one device-events partition, in order (co-partitioned when the counts match);
        explicit batches skip aiokafka's per-record partitioner, which costs more than the rest."""
        target = partition % len(await self.producer.partitions_for(self.topic))
        futures, count = [], 0
        batch = self.producer.create_batch()
        for entry in entries:
            for key, value in entry.records():
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await self.producer.send_batch(batch, self.topic, partition=target))
                    batch = self.producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
                count += 1
        if batch.record_count():
            futures.append(await self.producer.send_batch(batch, self.topic, partition=target))
        await asyncio.gather(*futures)
        return count
