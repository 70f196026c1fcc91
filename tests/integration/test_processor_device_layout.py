"""The device layout written by apply_batch.lua on the real Redis: devices land where keys.py
says (the forward-map bucket is computed by planning.py), buckets stay listpack-encoded, and the
per-code counters equal the bitmaps' BITCOUNT on random data, redelivery included; batches big
enough that the script's grouped writes are split into several commands."""

import random

from reference_book import Reference
from services.common.keys import NAMES_BUCKET, PartitionKeys, device_index_bucket
from services.common.models import PostbackRecord
from services.domain.device_state import parse_device_state
from services.processor.planning import plan_partition_batch
from services.processor.store import DeviceStateStore

T0 = 1_700_000_000_000
DAY = 86_400_000


async def _delete(redis, prefix):
    async for key in redis.scan_iter(match=f"{{{prefix}:*", count=2000):
        await redis.unlink(key)


async def test_random_postbacks_match_the_reference_key_by_key(redis_client, key_prefix):
    """3,000 random postbacks (2 accounts, 300 devices, repeated deposits, tids), applied in
    batches and then all redelivered: every device's packed state equals the reference, and every
    partition's counters equal its bitmaps' BITCOUNT."""
    rng = random.Random(11)
    store = DeviceStateStore(redis_client, key_prefix, "layout", 30 * DAY)
    ref = Reference(30 * DAY)
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
            assert parse_device_state(value) == expected, (account, install)
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
            async for key in redis_client.scan_iter(match=keys.device_index("*", "*")):
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


async def test_one_big_batch_splits_its_grouped_writes_and_matches_the_reference(redis_client, key_prefix):
    """One partition batch of 6,000 postbacks on 2,500 devices (new ones first: 2,500 install bits
    in one BITFIELD, 512 fields per state bucket in one HSET - both over the script's 1,000 values
    per command), then a second batch on the same devices (state buckets read by HMGET): states,
    reverse map, counters and the script's replies equal the reference."""
    store = DeviceStateStore(redis_client, key_prefix, "big", 30 * DAY)
    ref = Reference(30 * DAY)
    rng = random.Random(5)
    batches, offset = [], 0
    for n in (3_000, 3_000):
        msgs = []
        for i in range(n):
            install = f"big-{i % 2_500}" if offset < 2_500 else f"big-{rng.randrange(2_500)}"
            event = rng.choice(("reg", "dep", "open_app"))
            record = PostbackRecord(event_id=f"b{offset}", account_id=7, install_id=install, event=event,
                                    occurred_at=T0 + rng.randrange(100_000), received_at=T0 + offset,
                                    tid=f"t{rng.randrange(4)}" if event == "dep" else None)
            ref.apply(record)
            msgs.append((offset, record.model_dump_json(by_alias=True).encode()))
            offset += 1
        batches.append(msgs)
    try:
        replies = [await store.apply_batches([plan_partition_batch(0, msgs, T0, emit=False)]) for msgs in batches]
        assert sum(r[0].applied + r[0].duplicate_tids for r in replies) == 6_000
        assert sum(r[0].duplicate_tids for r in replies) > 0
        keys = PartitionKeys(key_prefix, 0)
        assert int(await redis_client.get(keys.device_seq(7))) == 2_500
        for (account, install), expected in ref.devices.items():
            num = int(await redis_client.hget(keys.device_index(account, device_index_bucket(install)), install))
            value = await redis_client.hget(keys.device_states(account, num // NAMES_BUCKET), num % NAMES_BUCKET)
            assert parse_device_state(value) == expected, install
            assert (await redis_client.hget(keys.device_names(account, num // NAMES_BUCKET), num % NAMES_BUCKET)).decode() == install
        counters = {c.decode(): int(n) for c, n in (await redis_client.hgetall(keys.device_counts(7))).items()}
        assert counters == ref.device_counts(7)
        assert counters == {c: await redis_client.bitcount(keys.segment(7, c)) for c in counters}
    finally:
        await _delete(redis_client, key_prefix)
