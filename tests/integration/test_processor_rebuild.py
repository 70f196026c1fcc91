"""`pbseg rebuild`: wipe the partition keys, replay the log, end where live processing ended."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from services.common.keys import PartitionKeys
from test_processor_pipeline import T0, Harness, pb, produce  # same directory (rootdir-relative import)


async def snapshot(redis, prefix: str) -> dict:
    """Every partition key with its content (tid TTLs aside: they restart at the rebuild)."""
    state = {}
    for p in range(4):
        async for key in redis.scan_iter(match=f"{PartitionKeys(prefix, p).tag}:*", count=2000):
            kind = (await redis.type(key)).decode()
            if kind == "hash":
                state[key] = await redis.hgetall(key)
            elif kind == "set":
                state[key] = await redis.smembers(key)
            elif kind == "string":
                state[key] = await redis.get(key)
            elif kind == "stream":
                if await redis.xlen(key):  # a drained outbox may linger as an empty stream
                    state[key] = ("stream", await redis.xlen(key))
            else:
                state[key] = (kind, None)
    return state


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli.main", "rebuild", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.seed(7)
async def test_rebuild_ends_in_the_state_of_live_processing(infra, redis_client, key_prefix, topic_factory, unique, service_env,
                                                            seed):
    """Live state, then damage, then `pbseg rebuild --yes`: the same keys with the same content."""
    harness = Harness(infra, redis_client, key_prefix,
                      (await topic_factory("pb", 4), await topic_factory("rej", 2), await topic_factory("dev", 4)),
                      f"proc-{unique}")
    rng = random.Random(seed)
    items = []
    for i in range(3000):
        install = f"r{rng.randrange(300)}"
        event = rng.choice(["reg", "dep", "dep", "open", "install"])
        tid = rng.choice([None, f"t{rng.randrange(50)}"])
        items.append((f"1:{install}".encode(), pb(f"x{i}", install, event, T0 + rng.randrange(10_000), tid)))
        if i % 500 == 0:
            items.append((b"1:bad", b"not json"))
    await produce(infra.kafka, harness.postbacks, items)
    await harness.run_until_applied(len(items))
    live = await snapshot(redis_client, key_prefix)
    assert len(live) > 300

    tag = PartitionKeys(key_prefix, 0).tag
    victim = next(k for k in live if k.startswith(f"{tag}:v:".encode()))
    await redis_client.delete(victim)
    await redis_client.set(f"{tag}:junk", "x")
    await redis_client.set(PartitionKeys(key_prefix, 1).applied_offset(harness.postbacks), 10**9)

    env = dict(service_env, PBSEG_KEY_PREFIX=key_prefix, PBSEG_TOPIC_POSTBACKS=harness.postbacks,
               PROCESSOR_GROUP=harness.group)
    done = await asyncio.to_thread(cli, env, "--yes")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert (report["records"], report["rejected"], report["partitions"]) == (len(items), 6, 4)
    assert "rebuild" in done.stderr and "rec" in done.stderr  # the tqdm progress bar
    assert await snapshot(redis_client, key_prefix) == live


async def test_rebuild_needs_confirmation_and_refuses_while_a_processor_runs(infra, service_env, topic_factory, unique, key_prefix, redis_client):
    """Without --yes nothing happens; with a live member in the processor group it refuses."""
    topic = await topic_factory("pb", 4)
    env = dict(service_env, PBSEG_TOPIC_POSTBACKS=topic, PROCESSOR_GROUP=f"live-{unique}")
    marker = f"{PartitionKeys(key_prefix, 0).tag}:keep"
    await redis_client.set(marker, "1")
    unconfirmed = await asyncio.to_thread(cli, env)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=infra.kafka, group_id=f"live-{unique}")
    await consumer.start()
    try:
        for _ in range(100):
            if consumer.assignment():
                break
            await consumer.getmany(timeout_ms=100)
        refused = await asyncio.to_thread(cli, env, "--yes")
    finally:
        await consumer.stop()
    assert refused.returncode == 1 and "live member" in refused.stderr
    assert await redis_client.get(marker) == b"1"


async def log_bounds(bootstrap: str, topic: str, partitions: int) -> tuple[dict[int, int], dict[int, int]]:
    """Each partition's log start and end offset as the broker reports them."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        begin, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        return {tp.partition: begin[tp] for tp in tps}, {tp.partition: end[tp] for tp in tps}
    finally:
        await consumer.stop()


async def delete_records_before(bootstrap: str, topic: str, starts: dict[int, int]) -> None:
    """Moves each partition's log start forward, as retention would (the broker's deleteRecords)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, p): RecordsToDelete(n) for p, n in starts.items()})
    finally:
        await admin.close()


@pytest.mark.seed(11)
async def test_rebuild_refuses_a_truncated_log_and_accepts_it_only_when_told(infra, redis_client, key_prefix, topic_factory,
                                                                             unique, service_env, seed):
    """Log starts moved past 0 on two partitions: `--yes` refuses naming them and deletes nothing;
    `--yes --accept-truncated-log` rebuilds from what is left and reports the missing offsets."""
    harness = Harness(infra, redis_client, key_prefix,
                      (await topic_factory("pb", 4), await topic_factory("rej", 2), await topic_factory("dev", 4)),
                      f"proc-{unique}")
    rng = random.Random(seed)
    items = [(f"1:r{i % 120}".encode(), pb(f"x{i}", f"r{i % 120}", rng.choice(["reg", "dep", "open"]), T0 + i))
             for i in range(800)]
    await produce(infra.kafka, harness.postbacks, items)
    await harness.run_until_applied(len(items))
    _, end = await log_bounds(infra.kafka, harness.postbacks, 4)
    assert min(end.values()) > 40
    cut = {1: 25, 3: 10}
    await delete_records_before(infra.kafka, harness.postbacks, cut)
    assert (await log_bounds(infra.kafka, harness.postbacks, 4))[0] == {0: 0, 1: 25, 2: 0, 3: 10}
    live = await snapshot(redis_client, key_prefix)

    env = dict(service_env, PBSEG_KEY_PREFIX=key_prefix, PBSEG_TOPIC_POSTBACKS=harness.postbacks,
               PROCESSOR_GROUP=harness.group)
    refused = await asyncio.to_thread(cli, env, "--yes")
    print(refused.stderr)
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.startswith(f"rebuild refused: the log of topic {harness.postbacks!r} no longer reaches back "
                                     "to offset 0")
    assert (f"partition 1 starts at offset 25 (offsets 0-24 are gone; Redis holds its state up to offset {end[1] - 1}, "
            "which the rebuild would delete)") in refused.stderr
    assert f"partition 3 starts at offset 10 (offsets 0-9 are gone; Redis holds its state up to offset {end[3] - 1}" \
        in refused.stderr
    assert "partition 0" not in refused.stderr and "partition 2" not in refused.stderr
    assert "Nothing was deleted" in refused.stderr and "--accept-truncated-log" in refused.stderr
    assert await snapshot(redis_client, key_prefix) == live

    accepted = await asyncio.to_thread(cli, env, "--yes", "--accept-truncated-log")
    print(accepted.stderr)
    assert accepted.returncode == 0, accepted.stderr
    report = orjson.loads(accepted.stdout)
    assert report["missing_offsets"] == {"1": 25, "3": 10}
    assert report["records"] == len(items) - 35
    assert "partition 1: offsets 0-24 (25) were no longer in the log; the rebuilt state lacks their effects" \
        in accepted.stderr
    assert "partition 3: offsets 0-9 (10) were no longer in the log" in accepted.stderr
    assert "rebuild" in accepted.stderr and "rec" in accepted.stderr  # the progress bar stays
    rebuilt = await snapshot(redis_client, key_prefix)
    for p in (0, 2):  # whole logs: key by key as before
        tag = PartitionKeys(key_prefix, p).tag.encode()
        assert {k: v for k, v in rebuilt.items() if k.startswith(tag)} == {k: v for k, v in live.items()
                                                                            if k.startswith(tag)}
    assert await harness.store.watermarks(range(4)) == {p: end[p] - 1 for p in range(4)}
