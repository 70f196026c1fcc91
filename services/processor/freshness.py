"""Freshness: per partition, the instant before which everything the log held is applied.

Every `interval_s` the worker asks Kafka for its partitions' end offsets (a ListOffsets request;
`t` is read from the clock just before sending it). A record the ingress answered 2xx before `t`
was acknowledged by the broker before the request, so its offset is below that end. Once the
partition's Redis watermark reaches end - 1, `t` is recorded as the partition's as-of, a value
that only moves forward (`DeviceStateStore.record_as_of`). The query service reports the minimum
over partitions as `as_of`: every 2xx before it is in the answer.

A partition that is not caught up keeps its checkpoint until it is, so under steady load the as-of
trails by about the lag, and an idle, caught-up partition advances every interval."""

from __future__ import annotations

import asyncio
from typing import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.common.clock import Clock
from services.processor.store import DeviceStateStore


class Freshness:
    def __init__(self, consumer: AIOKafkaConsumer, store: DeviceStateStore, clock: Clock, topic: str,
                 owned: Callable[[], set[int]], interval_s: float = 1.0):
        self.consumer, self.store, self.clock, self.topic = consumer, store, clock, topic
        self.owned, self.interval_s = owned, interval_s
        self._pending: dict[int, tuple[int, int]] = {}  # partition -> (t, end offset asked at t)

    async def run(self) -> None:
        """Ticks forever; raises Redis/Kafka errors (the worker's guard pauses and retries)."""
        while True:
            await self.tick()
            await asyncio.sleep(self.interval_s)

    async def tick(self) -> dict[int, int]:
        """Records the as-of of every partition whose checkpoint is reached, then asks for new
        end offsets where none is pending. Returns what it recorded."""
        owned = self.owned()
        self._pending = {p: v for p, v in self._pending.items() if p in owned}
        recorded: dict[int, int] = {}
        if self._pending:
            marks = await self.store.watermarks(sorted(self._pending))
            recorded = {p: t for p, (t, end) in self._pending.items() if marks[p] >= end - 1}
            if recorded:
                await self.store.record_as_of(recorded)
                for p in recorded:
                    del self._pending[p]
        asked = sorted(p for p in owned if p not in self._pending)
        if asked:
            t = self.clock.now_ms()
            ends = await self.consumer.end_offsets([TopicPartition(self.topic, p) for p in asked])
            self._pending.update({tp.partition: (t, end) for tp, end in ends.items()})
        return recorded
