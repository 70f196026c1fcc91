"""The synthetic device writer (tests/synthetic.py, used by the query tests and the query
benchmark) writes exactly what the apply script writes for the same devices: a second writer of
the layout, kept honest by comparing the two key by key on the real Redis."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup import delete_prefix
from services.common.keys import PartitionKeys
from services.common.models import PostbackRecord
from services.processor.planning import plan_partition_batch
from services.processor.store import DeviceStateStore
from services.query.devices import partition_of
from synthetic import write_devices

PARTITIONS = 2
TS = 1_700_000_000_000
ACCOUNT = 3
# Keys only the processor has (watermarks, the outbox, tids; the windowed buckets, which need
# occurrence times - and at TS they are past the retention): not part of the device layout.
PROCESSOR_ONLY = (":applied:", ":outbox", ":t:", ":ws:", ":wb:")

events = st.fixed_dictionaries({}, optional={"reg": st.integers(1, 3), "promo": st.integers(1, 2)}).flatmap(
    lambda d: st.integers(0, 4).map(lambda dep: {**d, **({"dep": dep} if dep else {})}))  # dep last (see below)
datasets = st.dictionaries(st.text("abcdef0123:{}%", min_size=1, max_size=10), events, min_size=1, max_size=30)


async def _dump(redis, prefix: str) -> dict:
    out = {}
    for p in range(PARTITIONS):
        tag = PartitionKeys(prefix, p).tag
        async for key in redis.scan_iter(match=f"{tag}:*", count=1000):
            name = key.decode()
            if any(part in name for part in PROCESSOR_ONLY):
                continue
            kind = (await redis.type(key)).decode()
            if kind == "zset":
                out[name[len(tag):]] = (p, kind, await redis.zrange(key, 0, -1, withscores=True))
                continue
            value = {"hash": redis.hgetall, "string": redis.get, "set": redis.smembers}[kind]
            out[name[len(tag):]] = (p, kind, await value(key))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(devices=datasets)
async def test_the_synthetic_writer_writes_what_the_apply_script_writes(redis_client, key_prefix, devices):
    synthetic, applied = f"{key_prefix}s", f"{key_prefix}a"
    try:
        await write_devices(redis_client, synthetic, PARTITIONS, ACCOUNT, devices, ts_ms=TS)
        # The same devices as postbacks, in the same device order: every code's occurrences, `dep`
        # last (the writer appends dep_2.. after the other codes; the script as the deposits come).
        messages: dict[int, list] = {p: [] for p in range(PARTITIONS)}
        for install_id, counts in devices.items():
            codes = [c for c, n in counts.items() for _ in range(n)] or ["install"]
            for code in codes:
                p = partition_of(ACCOUNT, install_id, PARTITIONS)
                record = PostbackRecord(event_id=f"e{len(messages[p])}", account_id=ACCOUNT, install_id=install_id,
                                        event=code, occurred_at=TS, received_at=TS)
                messages[p].append((len(messages[p]), record.model_dump_json(by_alias=True).encode()))
        store = DeviceStateStore(redis_client, applied, "synthetic-check", 30 * 86_400_000)
        await store.apply_batches([plan_partition_batch(p, m, TS, emit=False) for p, m in messages.items() if m])
        assert await _dump(redis_client, synthetic) == await _dump(redis_client, applied)
    finally:
        await delete_prefix(redis_client, synthetic)
        await delete_prefix(redis_client, applied)
