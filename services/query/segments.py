"""Read side: segment counts and device pages over the per-partition bitmaps (Redis adapter).

Reads only. Each partition's work is one Lua script (BITOP over that partition's bitmaps into
a scratch key it deletes before returning, with a TTL from the moment it exists, so a script
that fails half-way leaves nothing for longer than `scratch_ttl_ms`), so a query never blocks
the processor for longer than one partition's BITOPs, and the layout works on Redis Cluster
unchanged. Redis errors propagate (the API answers 503).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import redis.asyncio as aioredis

import orjson

from services.common.keys import SUM_DIGITS, PartitionKeys, lua_header
from services.domain.conditions import CountRank, InWindow, SumRange
from services.domain.windows import HOURS_PER_DAY, day_bucket, hour_bucket
from services.common.redis_conn import run_scripts
from services.domain.filters import SegmentFilter
from services.query.cursors import Cursor

_HERE = Path(__file__).parent
_PRELUDE = lua_header() + (_HERE / "segment_filter.lua").read_text()
_COUNT = _PRELUDE + (_HERE / "segment_count.lua").read_text()
_PAGE = _PRELUDE + (_HERE / "segment_page.lua").read_text()
_DAILY = lua_header() + (_HERE / "segment_daily.lua").read_text()
# Scratch keys live only while their script runs (Redis' clock stands still in a script), so
# any TTL is long enough; this one only bounds what a failed script leaves behind.
SCRATCH_TTL_MS = 10_000


@dataclass(frozen=True)
class DevicePage:
    install_ids: list[str]
    next_cursor: Cursor | None


def _with_edges(buckets) -> tuple[list, list]:
    """A window's buckets as (whole buckets, edge days): the hours of a day the window covers only
    in part become [day, [covered hours], [the day's other hours]], so the script may read the
    day instead when the other hours are empty (a window ending now: the rest of today)."""
    whole, by_day = [], {}
    for b in buckets:
        if b.startswith("h"):
            by_day.setdefault(int(b[1:]) // HOURS_PER_DAY, []).append(b)
        else:
            whole.append(b)
    edges = []
    for day, hours in by_day.items():
        covered = set(hours)
        others = [b for b in (hour_bucket(day * HOURS_PER_DAY + h) for h in range(HOURS_PER_DAY)) if b not in covered]
        edges.append([day_bucket(day), hours, others])
    return whole, edges


def program(steps) -> bytes:
    """The index steps as segment_filter.lua takes them (ARGV[8]): one JSON array."""
    out = []
    for s in steps:
        neg = int(s.negate)
        if isinstance(s, InWindow):
            out.append(["w", neg, s.event, *_with_edges(s.buckets)])
        elif isinstance(s, CountRank):
            out.append(["k", neg, s.event, str(s.lo), "+inf" if s.hi is None else str(s.hi)])
        elif isinstance(s, SumRange):
            out.append(["s", neg, s.currency, f"[{s.lo:0{SUM_DIGITS}d}:",
                        "+" if s.hi is None else f"({s.hi:0{SUM_DIGITS}d};"])
        else:
            raise TypeError(f"not an index step: {s!r}")
    return orjson.dumps(out)


class SegmentIndex:
    """Counts and lists devices matching include/exclude filters."""

    def __init__(self, redis: aioredis.Redis, prefix: str, partitions: int, scratch_ttl_ms: int = SCRATCH_TTL_MS,
                 topic: str = "postbacks.v1"):
        self.redis = redis
        self.prefix = prefix
        self.partitions = partitions
        self.topic = topic  # the postbacks topic whose partitions' as-of keys `as_of` reads
        self.scratch_ttl_ms = scratch_ttl_ms
        self._count = redis.register_script(_COUNT)
        self._page = redis.register_script(_PAGE)
        self._daily = redis.register_script(_DAILY)

    def _args(self, keys: PartitionKeys, account_id: int, f: SegmentFilter) -> tuple[list[str], list]:
        token = os.urandom(8).hex()
        return [keys.scratch(token), keys.scratch(token + "x")], [
            keys.tag, account_id, f.include_match, self.scratch_ttl_ms, len(f.event_include), len(f.event_exclude),
            len(f.require), program(f.steps), *f.event_include, *f.event_exclude, *f.require]

    async def as_of(self) -> int | None:
        """Unix ms before which every postback on the log is reflected in what is read after this
        call: the minimum of the partitions' as-of (services/processor/freshness.py); None while a
        partition has none yet. Read it BEFORE the answer it qualifies."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(self.partitions):
                pipe.get(PartitionKeys(self.prefix, p).applied_as_of(self.topic))
            values = await pipe.execute()
        return None if any(v is None for v in values) else min(int(v) for v in values)

    async def count(self, account_id: int, f: SegmentFilter) -> int:
        """Matching devices summed over partitions; one pipelined round trip."""
        calls = [(self._count, *self._args(PartitionKeys(self.prefix, p), account_id, f)) for p in range(self.partitions)]
        return sum(int(v) for v in await run_scripts(self.redis, calls))

    async def page(self, account_id: int, f: SegmentFilter, start: Cursor | None, limit: int) -> DevicePage:
        """Up to `limit` matching devices from `start` on, in (partition, device number) order.
        Device numbers only grow, so walking with the cursor returns every device that matched
        for the whole walk exactly once; the last page may be empty."""
        fp = f.fingerprint()
        partition, position = (start.partition, start.position) if start else (0, 0)
        found: list[str] = []
        while partition < self.partitions:
            keys, args = self._args(PartitionKeys(self.prefix, partition), account_id, f)
            reply = await self._page(keys=keys, args=[*args, position, limit - len(found)])
            nxt = int(reply[0])
            found += [v.decode() if isinstance(v, bytes) else str(v) for v in reply[2::2] if v]
            if nxt >= 0:
                return DevicePage(found, Cursor(partition, nxt, fp))
            partition, position = partition + 1, 0
            if len(found) == limit:
                return DevicePage(found, Cursor(partition, 0, fp) if partition < self.partitions else None)
        return DevicePage(found, None)

    async def walk(self, account_id: int, f: SegmentFilter, page_size: int = 5_000) -> AsyncIterator[list[str]]:
        """Every matching device, page by page (for the export)."""
        cursor: Cursor | None = None
        while True:
            page = await self.page(account_id, f, cursor, page_size)
            if page.install_ids:
                yield page.install_ids
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def step_hits(self, account_id: int, partition: int, number: int, steps) -> list[bool]:
        """For one device, whether each index step's set holds it (before `negate`): one
        pipelined round trip of GETBIT / SISMEMBER per windowed bucket (only one of the two keys
        exists), ZSCORE per count rank, HGET of the device's sum per deposit-sum range."""
        keys = PartitionKeys(self.prefix, partition)
        bucket, field = keys.device_location(number)
        async with self.redis.pipeline(transaction=False) as pipe:
            for s in steps:
                if isinstance(s, InWindow):
                    for b in s.buckets:
                        pipe.getbit(keys.window_bits(account_id, s.event, b), number)
                        pipe.sismember(keys.window_set(account_id, s.event, b), str(number))
                elif isinstance(s, CountRank):
                    pipe.zscore(keys.count_rank(account_id, s.event), str(number))
                else:
                    pipe.hget(keys.deposit_sum_of(account_id, bucket), f"{field}:{s.currency}")
            replies = iter(await pipe.execute())
        hits = []
        for s in steps:
            if isinstance(s, InWindow):
                hits.append(any([bool(next(replies)) for _ in range(2 * len(s.buckets))]))
            elif isinstance(s, CountRank):
                score = next(replies)
                hits.append(score is not None and s.lo <= int(score) and (s.hi is None or int(score) <= s.hi))
            else:
                units = int(next(replies) or 0)
                hits.append(s.lo <= units and (s.hi is None or units <= s.hi))
        return hits

    async def daily(self, account_id: int, code: str, days: list[int]) -> list[int]:
        """Devices on which `code` occurred on each UTC day (day numbers, unix ms // 1 d): the
        windowed index's day buckets summed over partitions (a device lives in one partition).
        O(days x partitions) commands, no BITOP; a day older than the window retention is 0."""
        buckets = [day_bucket(d) for d in days]
        calls = [(self._daily, [keys.scratch("daily")], [keys.tag, account_id, code, *buckets])
                 for keys in (PartitionKeys(self.prefix, p) for p in range(self.partitions))]
        totals = [0] * len(days)
        for reply in await run_scripts(self.redis, calls):
            for i, n in enumerate(reply):
                totals[i] += int(n)
        return totals

    async def device_counts(self, account_id: int) -> dict[str, int]:
        """Devices on which each code occurred, for every code the account has seen: one HGETALL
        of the per-partition counter hash (kept equal to the bitmaps' BITCOUNT by the
        processor's apply script) per partition, in one pipelined round trip. O(events), not
        O(devices)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(self.partitions):
                pipe.hgetall(PartitionKeys(self.prefix, p).device_counts(account_id))
            replies = await pipe.execute()
        counts: dict[str, int] = {}
        for reply in replies:
            for code, n in reply.items():
                code = code.decode() if isinstance(code, bytes) else code
                counts[code] = counts.get(code, 0) + int(n)
        return counts
