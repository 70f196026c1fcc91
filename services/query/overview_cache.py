"""Device counts per event for the Segments overview, cached per account.

Counting is BITCOUNT over every event's bitmap in every partition: at 10M devices and 50
events that is ~60 MB of bitmaps to scan, tens of milliseconds. The overview is a dashboard,
so it is served from a per-process cache: values younger than `fresh_ms` are returned as
they are; older ones (up to `stale_ms`) are returned while ONE background refresh runs;
older still (or a first request) wait for a fresh computation. `fresh_ms=0` disables it.
Counts on the overview may therefore be up to `fresh_ms` (plus one computation) old;
/segments/count is never cached.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Awaitable, Callable

from services.common.clock import Clock


@dataclass
class _Entry:
    at_ms: int
    counts: dict[str, int]


class OverviewCounts:
    def __init__(self, compute: Callable[[int], Awaitable[dict[str, int]]], clock: Clock, fresh_ms: int, stale_ms: int,
                 max_accounts: int = 10_000):
        self._compute = compute
        self._clock = clock
        self.fresh_ms, self.stale_ms = fresh_ms, max(stale_ms, fresh_ms)
        self._max = max_accounts
        self._entries: dict[int, _Entry] = {}
        self._inflight: dict[int, asyncio.Task] = {}

    async def _refresh(self, account_id: int) -> dict[str, int]:
        started = self._clock.now_ms()
        counts = await self._compute(account_id)
        if len(self._entries) >= self._max and account_id not in self._entries:
            self._entries.pop(next(iter(self._entries)))  # oldest inserted first: a bound, not an LRU
        self._entries[account_id] = _Entry(started, counts)
        return counts

    def _start(self, account_id: int) -> asyncio.Task:
        task = self._inflight.get(account_id)
        if task is None or task.done():
            task = asyncio.ensure_future(self._refresh(account_id))
            self._inflight[account_id] = task
            task.add_done_callback(lambda t, a=account_id: self._inflight.pop(a, None) if self._inflight.get(a) is t else None)
        return task

    async def get(self, account_id: int) -> dict[str, int]:
        if self.fresh_ms <= 0:
            return await self._compute(account_id)
        entry = self._entries.get(account_id)
        age = None if entry is None else self._clock.now_ms() - entry.at_ms
        if age is not None and age <= self.fresh_ms:
            return entry.counts
        if age is not None and age <= self.stale_ms:
            self._start(account_id)
            return entry.counts
        return await asyncio.shield(self._start(account_id))
