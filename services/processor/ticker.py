"""The ticker: puts a tick on each owned postbacks partition that has fires due.

Every `interval_s` it reads, per owned partition, the timer hashes with a fire due by now (one
pipelined round trip) and appends a tick (services/domain/triggers.py `tick_value`) naming them to that
partition of the postbacks log. The pipeline applies the tick like any record, in log order: the
fires are decided in the same atomic script as the watermark, on the state after every record
before the tick, and go out through the outbox (docs/decisions/0022-trigger-timers-in-the-log.md).

One tick per partition is in flight at a time: the next is appended once the last one is applied
(the watermark passed it), or after `resend_s` (a tick is harmless twice: what it decided is
gone from the timers). Kafka down: no tick, fires wait (never lost); the guard retries."""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Iterable

import structlog
from aiokafka import AIOKafkaProducer

from services.common.clock import Clock
from services.domain.triggers import tick_value
from services.processor import metrics
from services.processor.store import DeviceStateStore

log = structlog.get_logger("processor.ticker")


class Ticker:
    def __init__(self, store: DeviceStateStore, producer: AIOKafkaProducer, topic: str,
                 partitions: Callable[[], Iterable[int]], clock: Clock, interval_s: float, lists: int, budget: int,
                 resend_s: float = 5.0):
        self.store, self.producer, self.topic, self.partitions, self.clock = store, producer, topic, partitions, clock
        self.interval_s, self.lists, self.budget, self.resend_s = interval_s, lists, budget, resend_s
        self._in_flight: dict[int, tuple[int, float]] = {}  # partition -> (tick offset, sent at, monotonic)
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """A tick was applied: look again now (a burst drains tick after tick)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            await self.tick_once()
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass

    async def tick_once(self) -> int:
        """Append a tick to every owned partition with due timers; returns how many."""
        partitions = sorted(self.partitions())
        if not partitions:
            return 0
        now = self.clock.now_ms()
        due = await self.store.due_timers(partitions, now, self.lists)
        sends, mono = [], time.monotonic()
        for p, (members, watermark) in due.items():
            if not members:
                continue
            flight = self._in_flight.get(p)
            if flight is not None and flight[0] > watermark and mono - flight[1] < self.resend_s:
                continue
            sends.append((p, await self.producer.send(self.topic, tick_value(now, members, self.budget), partition=p)))
        for p, future in sends:
            meta = await future
            self._in_flight[p] = (meta.offset, mono)
        if sends:
            metrics.TICKS.inc(len(sends))
        return len(sends)
