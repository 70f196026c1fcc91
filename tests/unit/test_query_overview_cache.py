"""The overview's count cache: fresh values as they are, stale ones while one refresh runs."""

from __future__ import annotations

import asyncio

from waiting import wait_for

from services.common.clock import FixedClock
from services.query.overview_cache import OverviewCounts


class Counter:
    def __init__(self):
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, account_id: int) -> dict[str, int]:
        self.calls += 1
        if self.gate:
            await self.gate.wait()
        return {"install": self.calls * 10 + account_id}


async def test_fresh_values_are_reused_and_accounts_are_separate():
    clock, compute = FixedClock(), Counter()
    cache = OverviewCounts(compute, clock, fresh_ms=1000, stale_ms=5000)
    assert await cache.get(1) == {"install": 11}
    clock.advance(1000)
    assert await cache.get(1) == {"install": 11} and compute.calls == 1
    assert await cache.get(2) == {"install": 22} and compute.calls == 2


async def test_stale_values_are_served_while_one_refresh_runs():
    clock, compute = FixedClock(), Counter()
    cache = OverviewCounts(compute, clock, fresh_ms=1000, stale_ms=5000)
    await cache.get(1)
    clock.advance(1001)
    compute.gate = asyncio.Event()
    assert await cache.get(1) == {"install": 11}
    assert await cache.get(1) == {"install": 11}
    # interval=0: loop turns, no time passes (a second refresh, had one started, would have run too)
    await wait_for(lambda: compute.calls >= 2, timeout=1, interval=0, message="the background refresh")
    assert compute.calls == 2  # one refresh for both stale reads
    compute.gate.set()

    async def refreshed():  # stale reads while the refresh runs return the old value and start none
        return await cache.get(1) == {"install": 21}
    await wait_for(refreshed, timeout=1, interval=0, message="the refreshed value")
    assert await cache.get(1) == {"install": 21}


async def test_too_old_values_wait_for_a_new_count_and_zero_disables():
    clock, compute = FixedClock(), Counter()
    cache = OverviewCounts(compute, clock, fresh_ms=1000, stale_ms=5000)
    await cache.get(1)
    clock.advance(5001)
    assert await cache.get(1) == {"install": 21}
    off = OverviewCounts(compute, clock, fresh_ms=0, stale_ms=0)
    await off.get(1)
    await off.get(1)
    assert compute.calls == 4
