"""The device layout written by apply_batch.lua on the real Redis: the Lua bucket function equals
Python's (shared vectors), devices land where keys.py says, buckets stay listpack-encoded, and
the per-code counters equal the bitmaps' BITCOUNT on random data, redelivery included."""

import json
import random
from pathlib import Path

from services.common.keys import NAMES_BUCKET, PartitionKeys, device_index_bucket, parse_device_state, parse_event_value
from services.common.models import PostbackRecord
from services.processor.planning import plan_partition_batch
from services.processor.reference import ReferenceDeviceState
from services.processor.store import DeviceStateStore

BUCKET_LUA = (Path(__file__).parents[2] / "services/processor/device_bucket.lua").read_text()
VECTORS = json.loads((Path(__file__).parents[1] / "unit/device_bucket_vectors.json").read_text())  # shared with the unit test
T0 = 1_700_000_000_000
DAY = 86_400_000


async def test_lua_bucket_equals_python_on_the_shared_vectors(redis_client):
    got = await redis_client.eval(BUCKET_LUA + "\nlocal out = {} for i, s in ipairs(ARGV) do out[i] = device_bucket(s) end "
                                  "return out", 0, *[v["input"] for v in VECTORS])
    assert [int(x) for x in got] == [v["bucket"] for v in VECTORS]


async def _delete(redis, prefix):
    async for key in redis.scan_iter(match=f"{{{prefix}:*", count=2000):
        await redis.unlink(key)


async def test_random_postbacks_match_the_reference_key_by_key(redis_client, key_prefix):
    """3,000 random postbacks (2 accounts, 300 devices, repeated deposits, tids), applied in
    batches and then all redelivered: every device's packed state equals the reference, and every
    partition's counters equal its bitmaps' BITCOUNT."""
    rng = random.Random(11)
    store = DeviceStateStore(redis_client, key_prefix, "layout", 30 * DAY)
    ref = ReferenceDeviceState(30 * DAY)
    partitions = 2
    messages: dict[int, list[tuple[int, bytes]]] = {0: [], 1: []}
    for i in range(3_000):
        account, install = rng.choice((1, 2)), f"dev-{rng.randrange(300)}"
        event = rng.choice(("install", "reg", "dep", "dep", "promo", "open_app"))
        at = T0 + rng.randrange(10_000)
        tid = f"t{rng.randrange(50)}" if rng.random() < 0.2 else None
        record = PostbackRecord(event_id=f"e{i}", account_id=account, install_id=install, event=event,
                                occurred_at=at, received_at=T0 + i, tid=tid)
        p = hash((account, install)) % partitions
        messages[p].append((len(messages[p]), record.model_dump_json(by_alias=True).encode()))
        ref.apply(record)
    try:
        chunks = {p: [msgs[i:i + 250] for i in range(0, len(msgs), 250)] for p, msgs in messages.items()}
        for r in range(max(len(c) for c in chunks.values())):
            await store.apply_batches([plan_partition_batch(p, c[r], T0, emit=False) for p, c in chunks.items() if r < len(c)])
        state_before = {}
        for (account, install), expected in ref.devices.items():
            found = []
            for p in range(partitions):
                keys = PartitionKeys(key_prefix, p)
                num = await redis_client.hget(keys.device_index(account, device_index_bucket(install)), install)
                if num is not None:
                    num = int(num)
                    value = await redis_client.hget(keys.device_states(account, num // NAMES_BUCKET), num % NAMES_BUCKET)
                    found.append((p, num, value))
            assert len(found) == 1, (account, install)
            p, num, value = found[0]
            state = parse_device_state(value)
            assert {c: parse_event_value(v) for c, v in state.items()} == \
                {c: (s.first, s.last, s.count) for c, s in expected.items()}, (account, install)
            names = PartitionKeys(key_prefix, p).device_names(account, num // NAMES_BUCKET)
            assert (await redis_client.hget(names, num % NAMES_BUCKET)).decode() == install
            state_before[(account, install)] = value
        for p in range(partitions):
            keys = PartitionKeys(key_prefix, p)
            for account in (1, 2):
                codes = {c.decode() for c in await redis_client.smembers(keys.segment_codes(account))}
                counters = {c.decode(): int(n) for c, n in (await redis_client.hgetall(keys.device_counts(account))).items()}
                assert counters == {c: await redis_client.bitcount(keys.segment(account, c)) for c in codes}
                assert sum(counters.values()) > 0
            # Forward-map buckets stay listpack-encoded (state buckets too while every state is
            # <= hash-max-listpack-value; these random devices have longer ones, see architecture).
            async for key in redis_client.scan_iter(match=keys.tag.replace("{", "\\{").replace("}", "\\}") + ":i:*"):
                assert await redis_client.object("encoding", key) == b"listpack", key
        totals = {}
        for account in (1, 2):
            for p in range(partitions):
                for c, n in (await redis_client.hgetall(PartitionKeys(key_prefix, p).device_counts(account))).items():
                    totals[(account, c.decode())] = totals.get((account, c.decode()), 0) + int(n)
        assert totals == {(a, c): n for a in (1, 2) for c, n in ref.device_counts(a).items()}
        # Redelivery of everything changes nothing (offsets at or below the watermark).
        snapshot = {p: await redis_client.hgetall(PartitionKeys(key_prefix, p).device_counts(1)) for p in range(partitions)}
        await store.apply_batches([plan_partition_batch(p, msgs, T0, emit=False) for p, msgs in messages.items()])
        assert {p: await redis_client.hgetall(PartitionKeys(key_prefix, p).device_counts(1)) for p in range(partitions)} == snapshot
    finally:
        await _delete(redis_client, key_prefix)
