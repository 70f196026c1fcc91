"""Synthetic device data in the processor's Redis layout, for tests and the query benchmark
(tests/integration/test_synthetic_layout.py checks it writes what the apply script writes).

Writes exactly what services/processor/apply_batch.lua leaves behind for a device (the forward
map install id -> dense device number, the reverse map, one bit per event code in the segment bitmaps, the
codes set, the per-code device counters, the count ranks, the per-partition device sequence and, optionally, the packed device states), but in bulk:
bitmaps are built in memory and SET in one piece. Devices go to the partition Kafka's default
partitioner would pick, so device lookups find them where the processor would have put them.
No windowed buckets: every occurrence here has the one time `ts_ms`; windows are tested through the
processor (tests/integration/test_query_windows.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis

from services.common.keys import NAMES_BUCKET, PartitionKeys, device_index_bucket
from services.domain.codes import DEP, INSTALL, deposit_code
from services.domain.device_state import EventStat, format_device_state
from services.query.devices import partition_of


@dataclass
class PartitionImage:
    """One account's devices on one partition, being assembled."""

    install_ids: list[str] = field(default_factory=list)
    bits: dict[str, int] = field(default_factory=dict)  # code -> int bitmap (bit n = 1 << n)
    states: list[str] = field(default_factory=list)  # packed device state per device, in number order
    ranks: dict[str, dict[int, int]] = field(default_factory=dict)  # code -> device number -> count >= 2 (not dep)


def bitmap_bytes(value: int, nbits: int) -> bytes:
    """An int whose bit n is device n -> Redis bitmap bytes (bit 0 = most significant bit of byte 0)."""
    nbytes = (nbits + 7) // 8
    # Reverse the bit order per byte in bulk: Redis numbers bits from the MSB of each byte.
    raw = value.to_bytes(nbytes, "little")
    return raw.translate(_REVERSE)


_REVERSE = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


async def write_devices(redis: aioredis.Redis, prefix: str, partitions: int, account_id: int,
                        devices: dict[str, dict[str, int]], ts_ms: int = 1_700_000_000_000,
                        device_hashes: bool = True) -> None:
    """devices: install id -> {code: occurrences}. `install` is added to every device and a
    `dep` count of n adds dep_2..dep_n, as the processor does. Replaces the account's data."""
    images = [PartitionImage() for _ in range(partitions)]
    for install_id, events in devices.items():
        img = images[partition_of(account_id, install_id, partitions)]
        num = len(img.install_ids) + 1  # the processor's numbers start at 1 (INCR)
        img.install_ids.append(install_id)
        codes = {INSTALL: 1, **{c: n for c, n in events.items() if n > 0}}
        for k in range(2, codes.get(DEP, 0) + 1):
            codes[deposit_code(k)] = 1
        for code in codes:
            img.bits[code] = img.bits.get(code, 0) | (1 << num)
            if codes[code] >= 2 and code != DEP:
                img.ranks.setdefault(code, {})[num] = codes[code]
        if device_hashes:
            img.states.append(format_device_state({c: EventStat(ts_ms, ts_ms, n) for c, n in codes.items()}))
    for p, img in enumerate(images):
        await write_partition(redis, PartitionKeys(prefix, p), account_id, img, device_hashes)


async def write_partition(redis: aioredis.Redis, keys: PartitionKeys, account_id: int, img: PartitionImage,
                          device_hashes: bool = True) -> None:
    n = len(img.install_ids)
    async with redis.pipeline(transaction=False) as pipe:
        if n:  # as the processor: a partition without devices of the account has no sequence
            pipe.set(keys.device_seq(account_id), n)
        for code, bits in img.bits.items():
            pipe.set(keys.segment(account_id, code), bitmap_bytes(bits, bits.bit_length()))  # as long as BITFIELD makes it
        if img.bits:
            pipe.sadd(keys.segment_codes(account_id), *img.bits)
            pipe.hset(keys.device_counts(account_id), mapping={c: bits.bit_count() for c, bits in img.bits.items()})
        for code, ranked in img.ranks.items():
            pipe.zadd(keys.count_rank(account_id, code), {str(num): n for num, n in ranked.items()})
        buckets: dict[int, dict[int, str]] = {}
        index: dict[int, dict[str, int]] = {}
        for i, install_id in enumerate(img.install_ids, start=1):
            buckets.setdefault(i // NAMES_BUCKET, {})[i % NAMES_BUCKET] = install_id
            index.setdefault(device_index_bucket(install_id), {})[install_id] = i
        for b, mapping in buckets.items():
            pipe.hset(keys.device_names(account_id, b), mapping=mapping)
        for b, forward in index.items():
            pipe.hset(keys.device_index(account_id, b), mapping=forward)
        if device_hashes:
            states: dict[int, dict[int, str]] = {}
            for i, state in enumerate(img.states, start=1):
                states.setdefault(i // NAMES_BUCKET, {})[i % NAMES_BUCKET] = state
            for b, mapping in states.items():
                pipe.hset(keys.device_states(account_id, b), mapping=mapping)
        await pipe.execute()
