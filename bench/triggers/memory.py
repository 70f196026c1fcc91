"""Part 1: Redis bytes per pending fire. The same devices (each with one `reg`) applied through
DeviceStateStore.apply_batches twice in the bench's own Redis - with no trigger, and with one
trigger "on reg first, delay 1d" - and the difference of used_memory divided by the pending fires."""

from __future__ import annotations

import asyncio
import time

from aiokafka.partitioner import DefaultPartitioner

from harness import ACCOUNT, PARTITIONS, EventIds, log, now_ms, postback_value
from services.common.catalog_ids import MemoryIdLog
from services.common.keys import PartitionKeys
from services.common.trigger_registry import TriggerRegistry
from services.domain.triggers import DAY_MS, DEFAULT_MAX_LATENESS_MS, parse_delay
from services.processor.planning import plan_partition_batches
from services.processor.store import DeviceStateStore
from services.processor.triggers import TriggerPlan

CHUNK = 24_000  # records per apply round (3,000 per partition batch)


async def used_memory(redis) -> int:
    await asyncio.sleep(1.2)  # the AOF buffer is written every second: not counted at rest
    return int((await redis.info("memory"))["used_memory"])


async def fill(redis, devices: int, spread_s: int, with_trigger: bool) -> dict:
    """FLUSHALL, then `devices` new devices, one `reg` each, event times evenly spread over the
    `spread_s` seconds before now (so fires fall due over the next `spread_s` seconds of tomorrow)."""
    await redis.flushall()
    prefix = "mem"
    plan, trigger_id = None, 0
    if with_trigger:
        registry = TriggerRegistry(redis, prefix, MemoryIdLog())
        v = await registry.create(ACCOUNT, "reminder", "reg", "first", "1d", parse_delay("1d"), {}, True)
        trigger_id = v.id
        plan = TriggerPlan((await registry.snapshot()).book, DEFAULT_MAX_LATENESS_MS, 5000, 400)
        await asyncio.sleep(0.01)  # received after the trigger's valid_from
    store = DeviceStateStore(redis, prefix, "mem", 30 * DAY_MS)
    partitioner, parts = DefaultPartitioner(), list(range(PARTITIONS))
    ids = EventIds(7)
    received = now_ms()
    spread_ms = spread_s * 1000
    before = await used_memory(redis)
    offsets = [0] * PARTITIONS
    per_part: dict[int, list] = {}
    started = time.perf_counter()

    async def flush():
        batches = [b for p, msgs in per_part.items()
                   for b in plan_partition_batches(p, msgs, received, emit=False, triggers=plan)]
        await store.apply_batches(batches)
        per_part.clear()

    pending_records = 0
    for i in range(devices):
        install = f"{i * 2654435761 % (1 << 64):016x}"
        occurred = received - (i * spread_ms // devices)
        value = postback_value(ids.new(occurred), install, "reg", occurred, received)
        p = partitioner(f"{ACCOUNT}:{install}".encode(), parts, parts)
        per_part.setdefault(p, []).append((offsets[p], value))
        offsets[p] += 1
        pending_records += 1
        if pending_records >= CHUNK:
            await flush()
            pending_records = 0
        if i and i % 250_000 == 0:
            log(f"    {i:,} devices ...")
    if per_part:
        await flush()
    elapsed = time.perf_counter() - started
    after = await used_memory(redis)
    out = {"devices": devices, "spread_s": spread_s, "before": before, "after": after, "delta": after - before,
           "seconds": elapsed, "with_trigger": with_trigger}
    if with_trigger:
        out.update(await timer_layout(redis, prefix, trigger_id))
    return out


async def timer_layout(redis, prefix: str, trigger_id: int) -> dict:
    """Pending fires (the trigger's counters), timer hashes (one per trigger, epoch and due minute),
    their raw entry bytes, and MEMORY USAGE of the hashes and of the due-timers sorted sets."""
    pending = lists = raw = list_bytes = zset_bytes = 0
    for p in range(PARTITIONS):
        keys = PartitionKeys(prefix, p)
        pending += int(await redis.hget(keys.trigger_stats(trigger_id), "p1") or 0)
        zset_bytes += await redis.memory_usage(keys.timer_due, samples=0) or 0
        members = [m.decode() for m in await redis.zrange(keys.timer_due, 0, -1)]
        lists += len(members)
        for i in range(0, len(members), 2000):
            async with redis.pipeline(transaction=False) as pipe:
                for m in members[i:i + 2000]:
                    pipe.hvals(keys.timer_list(m))
                    pipe.memory_usage(keys.timer_list(m), samples=0)
                replies = await pipe.execute()
            for values, usage in zip(replies[::2], replies[1::2]):
                raw += sum(len(v) for v in values)  # entries joined by ",": the separators count too
                list_bytes += usage or 0
    return {"pending": pending, "lists": lists, "raw": raw, "list_bytes": list_bytes, "zset_bytes": zset_bytes}


async def memory_part(redis, devices: int, spreads: list[int]) -> list[dict]:
    """Per spread of event times: the baseline (no trigger), then the same devices with the trigger.
    The baseline is per spread: the windowed index (hour and day device sets) depends on it."""
    rows = []
    for spread in spreads:
        log(f"memory: {devices:,} devices x 1 reg, event times over {spread:,} s, no trigger (the baseline) ...")
        base = await fill(redis, devices, spread, False)
        log(f"  used_memory +{base['delta']:,} B ({base['delta'] / devices:.1f} B/device) in {base['seconds']:.0f} s")
        log("memory: the same devices with trigger 'on reg first, delay 1d' ...")
        r = await fill(redis, devices, spread, True)
        r["base"] = base
        r["trigger_bytes"] = r["delta"] - base["delta"]
        r["per_fire"] = r["trigger_bytes"] / max(r["pending"], 1)
        r["floor"] = r["raw"] / max(r["pending"], 1)
        log(f"  {r['pending']:,} pending in {r['lists']:,} timer hashes: {r['per_fire']:.1f} B/pending fire "
            f"(raw entries {r['floor']:.1f} B) in {r['seconds']:.0f} s")
        rows.append(r)
    await redis.flushall()
    return rows
