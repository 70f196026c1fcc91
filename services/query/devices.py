"""Device lookup (Redis adapter): finds a device's packed state on its partition."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiokafka.partitioner import murmur2

from services.common.keys import PartitionKeys
from services.domain.device_state import EventStat, parse_device_state


def partition_of(account_id: int, install_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for the key `{account}:{install}`."""
    return (murmur2(f"{account_id}:{install_id}".encode()) & 0x7FFFFFFF) % partitions


class DeviceLookup:
    def __init__(self, redis: aioredis.Redis, prefix: str, partitions: int):
        self.redis = redis
        self.prefix = prefix
        self.partitions = partitions

    async def events(self, account_id: int, install_id: str) -> dict[str, EventStat] | None:
        """The device's events {code: EventStat}, or None (`locate`, then the packed state: a
        second round trip)."""
        found = await self.locate(account_id, install_id)
        if found is None:
            return None
        partition, num = found
        keys = PartitionKeys(self.prefix, partition)
        bucket, field = keys.device_location(num)
        state = await self.redis.hget(keys.device_states(account_id, bucket), field)
        if state is None:
            return None
        try:
            return parse_device_state(state)
        except ValueError:  # a state this reader does not understand: the device exists, no events shown
            return {}

    async def locate(self, account_id: int, install_id: str) -> tuple[int, int] | None:
        """(partition, device number) of the device, or None. Reads the forward map of the
        partition the key hashes to; if the device is not there (records produced with another
        partition count or partitioner), probes every partition's forward map in one pipeline."""
        home = partition_of(account_id, install_id, self.partitions)
        partition, num = home, await self.redis.hget(PartitionKeys(self.prefix, home).device_index_of(account_id, install_id),
                                                    install_id)
        if num is None:
            others = [p for p in range(self.partitions) if p != home]
            async with self.redis.pipeline(transaction=False) as pipe:
                for p in others:
                    pipe.hget(PartitionKeys(self.prefix, p).device_index_of(account_id, install_id), install_id)
                partition, num = next(((p, n) for p, n in zip(others, await pipe.execute()) if n is not None), (None, None))
        return None if num is None else (partition, int(num))
