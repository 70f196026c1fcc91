"""Read side: segment counts over the per-partition bitmaps."""

from __future__ import annotations

import os
from pathlib import Path

import redis.asyncio as aioredis

from services.common.keys import PartitionKeys

_COUNT = (Path(__file__).parent / "segment_count.lua").read_text()


class SegmentIndex:
    """Counts devices matching include/exclude filters. Reads only; never blocks writers for
    longer than one BITOP over one partition's bitmaps."""

    def __init__(self, redis: aioredis.Redis, prefix: str, partitions: int):
        self.redis = redis
        self.prefix = prefix
        self.partitions = partitions
        self._count = redis.register_script(_COUNT)

    async def count(self, account_id: int, include: list[str], exclude: list[str], match: str = "all") -> int:
        total = 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(self.partitions):
                keys = PartitionKeys(self.prefix, p)
                scratch = f"{keys.tag}:scratch:{os.urandom(6).hex()}"
                await self._count(keys=[scratch], args=[keys.tag, account_id, match, len(include), *include, *exclude], client=pipe)
            for value in await pipe.execute():
                total += int(value)
        return total
