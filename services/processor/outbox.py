"""Drains the per-partition Redis outboxes to the device-events topic.

An entry leaves the outbox only after Kafka acknowledged it (acks=all, idempotent producer),
so none is lost; a crash between the acknowledgement and the trim publishes the same entries
again - byte for byte the same records (same event_id, ordinal, processed_at), which is the
documented at-least-once contract of device-events.v1. Entries of one partition are sent in
outbox order, keyed `{account_id}:{install_id}`, so one device's records stay in order."""

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
        """Publish up to `batch` entries of every owned partition; returns how many."""
        published = 0
        for partition in sorted(self.partitions()):
            entries = await self.store.read_outbox(partition, self.batch)
            if not entries:
                metrics.OUTBOX_BACKLOG.labels(str(partition)).set(0)
                continue
            futures = [await self.producer.send(self.topic, e.value, key=e.key) for e in entries]
            await asyncio.gather(*futures)
            await self.store.ack_outbox(partition, entries[-1].entry_id)
            published += len(entries)
            metrics.OUTBOX_PUBLISHED.inc(len(entries))
            if len(entries) == self.batch:
                metrics.OUTBOX_BACKLOG.labels(str(partition)).set(await self.store.outbox_length(partition))
            else:
                metrics.OUTBOX_BACKLOG.labels(str(partition)).set(0)
        return published
