"""Device lookup (Redis adapter): finds a device's hash on its partition."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiokafka.partitioner import murmur2

from services.common.keys import PartitionKeys


def partition_of(account_id: int, install_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for the key `{account}:{install}`."""
    return (murmur2(f"{account_id}:{install_id}".encode()) & 0x7FFFFFFF) % partitions


class DeviceLookup:
    def __init__(self, redis: aioredis.Redis, prefix: str, partitions: int):
        self.redis = redis
        self.prefix = prefix
        self.partitions = partitions

    async def fields(self, account_id: int, install_id: str) -> dict[str, str] | None:
        """The device hash, or None. Reads the partition the key hashes to; if the device is not
        there (records produced with another partition count or partitioner), probes every
        partition in one pipeline."""
        home = partition_of(account_id, install_id, self.partitions)
        found = await self.redis.hgetall(PartitionKeys(self.prefix, home).device(account_id, install_id))
        if not found:
            async with self.redis.pipeline(transaction=False) as pipe:
                for p in range(self.partitions):
                    if p != home:
                        pipe.hgetall(PartitionKeys(self.prefix, p).device(account_id, install_id))
                found = next((h for h in await pipe.execute() if h), None)
        if not found:
            return None
        return {k.decode(): v.decode() for k, v in found.items()}
