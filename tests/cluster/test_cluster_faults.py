"""Faults on the cluster topology, under load, with the ground truth checked afterwards (issue 12,
item 4). The services run as real processes against 3 KRaft brokers and a Redis Cluster.

- A Kafka partition leader SIGKILLed while postbacks stream into the ingress: no false 2xx (every
  2xx record is on the topic), the 503s are bounded, nothing is lost.
- A Redis master SIGKILLed while the processor applies: its replica takes over, the processor
  resumes by itself (re-applying what the promoted replica lacked), and the state is exact.

After each: every device's events, the per-code device counts and the device-events (deduplicated
by event_id) with their deposit ordinals equal the domain reference over the records on the topic.
(A processor worker SIGKILLed while another runs: the crash proof's two-worker case, which
`make test` runs on this cluster too, tests/integration/test_processor_crash.py.)"""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from redis.crc import key_slot

from reference_book import Reference, check_device_events
from services.common.keys import PartitionKeys
from services.common.models import PostbackRecord
from services.devstack.cluster import kafka_node_name, kill_node, redis_node_name
from services.devstack.cluster_kafka import kafka_partition_leader, start_kafka_cluster
from services.devstack.cluster_redis import redis_cluster_masters, start_redis_cluster
from services.processor.store import DeviceStateStore
from integration.test_processor_pipeline import read_all  # tests/ is on sys.path
from waiting import wait_for

PARTITIONS = 4
DAY = 86_400_000
EVENTS = ["reg", "dep", "dep", "open", "purchase"]  # straight to Kafka (the processor takes any code)
SYSTEM_EVENTS = ["install", "reg", "dep", "dep"]  # through the ingress (custom codes need the catalog)


async def applied(store: DeviceStateStore) -> int:
    return sum(m + 1 for m in (await store.watermarks(range(PARTITIONS))).values())


async def check_against_reference(redis, prefix: str, topic: str, device_events: str, bootstrap: str,
                                  account: int) -> tuple[Reference, int]:
    """The state and device-events equal the domain reference over what `topic` holds, applied in
    each partition's offset order. Returns the reference and the device-event records seen."""
    ref = Reference(30 * DAY)
    for m in sorted(await read_all(bootstrap, topic), key=lambda m: (m.partition, m.offset)):
        ref.apply(PostbackRecord.model_validate_json(m.value), m.partition, m.offset)
    store = DeviceStateStore(redis, prefix, topic, 30 * DAY)
    for (acct, install), expected in ref.devices.items():
        located = [d for p in range(PARTITIONS) if (d := await store.device(p, acct, install))]
        assert [events for _, events in located] == [expected], install
    counts: dict[str, int] = {}
    for p in range(PARTITIONS):
        for code, n in (await redis.hgetall(PartitionKeys(prefix, p).device_counts(account))).items():
            counts[code.decode()] = counts.get(code.decode(), 0) + int(n)
    assert counts == ref.device_counts(account)
    published = await read_all(bootstrap, device_events)
    check_device_events([m.value for m in published], ref)
    return ref, len(published)


async def test_a_killed_kafka_leader_gives_no_false_2xx_and_loses_nothing(running_stack, redis_client, infra, seed):
    """3,000 postbacks from 16 concurrent senders; after 600 the leader of postbacks partition 0 is
    SIGKILLed (and restarted once the rest are sent). Every answer is 200 or 503 with Retry-After;
    every 200's record is on the topic; the processor's state equals the reference over the topic."""
    rng = random.Random(seed)
    env = running_stack.env
    topic = env["PBSEG_TOPIC_POSTBACKS"]
    account = json.loads(running_stack.pbseg("accounts", "create", "--name", "faults"))["account_id"]
    total, senders, kill_at = 3000, 16, 600
    plan = [(f"d{rng.randrange(400)}", rng.choice(SYSTEM_EVENTS), f"t{i}") for i in range(total)]
    answers: list[tuple[float, int, str | None]] = [None] * total  # (monotonic time, status, event_id)
    sent = 0
    killed = asyncio.Event()
    victim = kafka_node_name(kafka_partition_leader(topic, 0))

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < total:
            i, sent = sent, sent + 1
            if i == kill_at:
                await asyncio.to_thread(kill_node, victim)
                killed.set()
            install, event, tid = plan[i]
            params = {"id": install, "status": f"{event}_{account}", "tid": tid}
            if event == "dep":
                params.update(amount=f"{rng.randrange(1, 500)}.00", currency="USD")
            r = await client.get(f"{running_stack.ingress_url}/api/postback/", params=params)
            assert r.status_code in (200, 503), r.text
            if r.status_code == 503:
                assert r.headers["Retry-After"]
            answers[i] = (time.monotonic(), r.status_code, r.json().get("event_id") if r.status_code == 200 else None)

    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(*(sender(client) for _ in range(senders)))
    finally:
        await asyncio.to_thread(start_kafka_cluster)  # the killed broker back; waits for in-sync replicas
    assert killed.is_set()
    ok = {event_id for _, status, event_id in answers if status == 200}
    unavailable = [t for t, status, _ in answers if status == 503]
    on_topic = {orjson.loads(m.value)["event_id"] for m in await read_all(infra.kafka, topic)}
    assert ok <= on_topic, f"{len(ok - on_topic)} records answered 2xx are not on the topic"
    assert len(unavailable) < total // 2

    store = DeviceStateStore(redis_client, env["PBSEG_KEY_PREFIX"], topic, 30 * DAY)
    await wait_for(lambda: _at_least(applied(store), len(on_topic)), timeout=120, interval=0.2,
                   message=f"all {len(on_topic)} records on the topic applied")
    ref, published = await check_against_reference(redis_client, env["PBSEG_KEY_PREFIX"], topic,
                                                   env["PBSEG_TOPIC_DEVICE_EVENTS"], infra.kafka, account)
    window = f"{max(unavailable) - min(unavailable):.1f} s" if unavailable else "none"
    print(f"seed={seed}: killed {victim} after {kill_at} of {total}; {len(ok)} x 200, {len(unavailable)} x 503 "
          f"(503 window {window}), {len(on_topic)} on the topic (503s that landed anyway: {len(on_topic) - len(ok)}); "
          f"sending took {time.monotonic() - started:.1f} s; {len(ref.devices)} devices, {published} device-events")


async def _at_least(value, n: int) -> bool:
    return await value >= n


async def test_a_killed_redis_master_is_replaced_and_the_processor_resumes_exactly(running_stack, redis_client,
                                                                                   infra, seed):
    """8,000 postbacks produced in 4 waves; during the second, the master owning partition 0's hash
    tag is SIGKILLed, and the third follows at once. Its replica is promoted, the processor resumes without a human (re-reading from
    the promoted replica's watermark), and the state and device-events equal the reference."""
    rng = random.Random(seed)
    env = running_stack.env
    prefix, topic = env["PBSEG_KEY_PREFIX"], env["PBSEG_TOPIC_POSTBACKS"]
    account = json.loads(running_stack.pbseg("accounts", "create", "--name", "faults"))["account_id"]
    records = [PostbackRecord(event_id=f"r{i}", account_id=account, install_id=f"d{rng.randrange(500)}",
                              event=rng.choice(EVENTS), occurred_at=1_764_000_000_000 + i,
                              received_at=1_764_000_000_000 + i, tid=f"t{rng.randrange(3000)}" if rng.random() < 0.3
                              else None) for i in range(8000)]
    waves = [records[i * 2000:(i + 1) * 2000] for i in range(4)]
    tag = PartitionKeys(prefix, 0).tag
    slot = key_slot(tag.encode())
    [master] = [port for port, ranges in redis_cluster_masters() if any(a <= slot <= b for a, b in ranges)]
    victim = redis_node_name(master)
    store = DeviceStateStore(redis_client, prefix, topic, 30 * DAY)
    readyz = f"http://127.0.0.1:{env['PROCESSOR_WEB_PORT']}/readyz"
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka, acks="all", enable_idempotence=True, linger_ms=10)
    await producer.start()
    try:
        async def send(wave):
            futures = [await producer.send(topic, r.model_dump_json(by_alias=True).encode(),
                                           key=f"{account}:{r.install_id}".encode()) for r in wave]
            await asyncio.gather(*futures)

        await send(waves[0])
        await wait_for(lambda: _at_least(applied(store), 2000), timeout=60, message="the first wave applied")
        producing = asyncio.create_task(send(waves[1]))
        await wait_for(lambda: _at_least(applied(store), 2100), timeout=60, interval=0.01,
                       message="the second wave being applied")
        await asyncio.to_thread(kill_node, victim)
        killed_at = time.monotonic()
        await producing
        await send(waves[2])  # load goes on through the failover

        async def not_ready():
            async with httpx.AsyncClient(timeout=2) as http:
                try:
                    return (await http.get(readyz)).status_code == 503
                except httpx.HTTPError:
                    return False
        noticed = await wait_for(not_ready, timeout=30, interval=0.05, message="the processor to report not ready")
        detected = time.monotonic() - killed_at

        async def promoted():
            return any(a <= slot <= b for port, ranges in redis_cluster_masters() if port != master for a, b in ranges)
        await wait_for(promoted, timeout=30, interval=0.1, message="a replica promoted for the killed master's slots")
        promoted_after = time.monotonic() - killed_at
        await send(waves[3])
        await wait_for(lambda: _at_least(applied(store), 8000), timeout=120, interval=0.2,
                       message="every record applied after the failover")
        recovered = time.monotonic() - killed_at
        await asyncio.to_thread(start_redis_cluster)  # the killed node rejoins as a replica
    finally:
        await producer.stop()
    async with httpx.AsyncClient(timeout=5) as http:
        await wait_for(lambda: _ok(http, readyz), timeout=30, message="the processor ready again")
        metrics = (await http.get(readyz.replace("/readyz", "/metrics"))).text
    regressions = sum(float(line.split()[-1]) for line in metrics.splitlines()
                      if line.startswith("pbseg_processor_watermark_regressions_total{"))
    ref, published = await check_against_reference(redis_client, prefix, topic, env["PBSEG_TOPIC_DEVICE_EVENTS"],
                                                   infra.kafka, account)
    assert noticed
    print(f"seed={seed}: killed {victim} (slot {slot} of {tag}); not ready after {detected:.1f} s, replica promoted "
          f"after {promoted_after:.1f} s, all 8000 applied {recovered:.1f} s after the kill; {regressions:g} watermark "
          f"regressions seen; {len(ref.devices)} devices, {published} device-events")


async def _ok(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(url)).status_code == 200
    except httpx.HTTPError:
        return False
