"""`pbseg repartition`: the migration to another partition count (issue 11, item 3). The log is
copied into a new topic with N partitions and the state rebuilt from it; afterwards every device,
count and deposit ordinal is what the domain says for the whole history, even for devices that an
earlier in-place partition add had split over two partitions."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from reference_book import Reference
from services.common.keys import PartitionKeys
from services.ingress.producer import partition_for
from services.processor.store import DeviceStateStore
from test_processor_pipeline import Harness, produce, read_all
from test_processor_rollback import DAY, records

TARGET_PARTITIONS = 5


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli.main", "repartition", *args], env=env,
                          capture_output=True, text=True, timeout=180)


def keyed(batch):
    return [(f"1:{r.install_id}".encode(), r.model_dump_json(by_alias=True).encode()) for r in batch]


async def add_partitions(bootstrap: str, topic: str, total: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_partitions({topic: NewPartitions(total_count=total)})
    finally:
        await admin.close()


async def test_repartition_copies_the_log_and_rebuilds_exact_state(infra, redis_client, key_prefix, topic_factory,
                                                                   unique, service_env, seed):
    """2 partitions, processed; then an in-place add to 3 and more postbacks (devices split); then
    `pbseg repartition --to 5`: the target holds every record at murmur2(key) % 5 with its timestamp, and the
    rebuilt state equals the reference over the whole history, each device in exactly one partition."""
    rng = random.Random(seed)
    harness = Harness(infra, redis_client, key_prefix,
                      (await topic_factory("pb", 2), await topic_factory("rej", 1), await topic_factory("dev", 2)),
                      f"proc-{unique}")
    first, later = records(rng, 0, 600), records(rng, 600, 200)
    await produce(infra.kafka, harness.postbacks, keyed(first))
    await harness.run_until_applied(len(first))
    await add_partitions(infra.kafka, harness.postbacks, 3)
    await produce(infra.kafka, harness.postbacks, keyed(later))
    ref = Reference(30 * DAY)
    for r in first + later:
        ref.apply(r)

    target = f"pb5-{unique}"
    env = dict(service_env, PBSEG_KEY_PREFIX=key_prefix, PBSEG_TOPIC_POSTBACKS=harness.postbacks,
               PBSEG_POSTBACKS_PARTITIONS="2", PROCESSOR_GROUP=harness.group)
    unconfirmed = await asyncio.to_thread(cli, env, "--to", str(TARGET_PARTITIONS), "--target", target)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    done = await asyncio.to_thread(cli, env, "--to", str(TARGET_PARTITIONS), "--target", target, "--yes")
    print(done.stderr[-2000:])
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert (report["records"], report["source_partitions"], report["target_partitions"]) == (800, 3, TARGET_PARTITIONS)
    assert "copy" in done.stderr and "rec" in done.stderr  # the progress bar
    assert f"PBSEG_TOPIC_POSTBACKS={target} PBSEG_POSTBACKS_PARTITIONS={TARGET_PARTITIONS}" in done.stderr

    copied = await read_all(infra.kafka, target)
    source = {(m.key, m.value): m.timestamp for m in await read_all(infra.kafka, harness.postbacks)}
    assert len(copied) == 800 and {(m.key, m.value) for m in copied} == set(source)
    assert all(m.partition == partition_for(m.key, TARGET_PARTITIONS) and m.timestamp == source[(m.key, m.value)]
               for m in copied)

    store = DeviceStateStore(redis_client, key_prefix, target, 30 * DAY)
    for (account, install), expected in ref.devices.items():
        located = [(p, d) for p in range(TARGET_PARTITIONS) if (d := await store.device(p, account, install))]
        assert [(p, events) for p, (_, events) in located] == [(partition_for(f"1:{install}".encode(),
                                                                              TARGET_PARTITIONS), expected)], install
    counts: dict[str, int] = {}
    for p in range(TARGET_PARTITIONS):
        for code, n in (await redis_client.hgetall(PartitionKeys(key_prefix, p).device_counts(1))).items():
            counts[code.decode()] = counts.get(code.decode(), 0) + int(n)
    assert counts == ref.device_counts(1)
    marks = await store.watermarks(range(TARGET_PARTITIONS))
    assert sum(m + 1 for m in marks.values()) == 800
    # nothing of the old layout is left: no watermark or identity of the old topic
    leftovers = [k async for k in redis_client.scan_iter(match=f"*{harness.postbacks}*")]
    assert leftovers == []
    print(f"seed={seed}: {len(ref.devices)} devices, {sum(counts.values())} (device, code) pairs after 2+1 -> 5")


async def test_repartition_refuses_a_target_that_holds_records(infra, topic_factory, service_env, unique, key_prefix,
                                                              redis_client):
    """A target with records (a copy that did not finish) is refused and nothing in Redis changes."""
    source, target = await topic_factory("pb", 2), await topic_factory("half", 3)
    await produce(infra.kafka, target, [(b"1:x", b"{}")])
    marker = f"{PartitionKeys(key_prefix, 0).tag}:keep"
    await redis_client.set(marker, "1")
    env = dict(service_env, PBSEG_TOPIC_POSTBACKS=source, PROCESSOR_GROUP=f"none-{unique}")
    refused = await asyncio.to_thread(cli, env, "--to", "3", "--target", target, "--yes")
    assert refused.returncode == 1 and "already holds 1 records" in refused.stderr, refused.stderr
    assert await redis_client.get(marker) == b"1"
