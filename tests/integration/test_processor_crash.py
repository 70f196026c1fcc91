"""The crash proof: 100,000+ postbacks while the worker is SIGKILLed at random moments (40,000 on
the cluster topology, PBSEG_TOPOLOGY=cluster: the same proof, smaller, to keep `make test` short).

Afterwards Redis equals an independent in-memory reference (services/domain/postback.py)
exactly, and the device-events topic holds every occurrence once its duplicates are removed
by event_id, with the right ordinal, and duplicates are byte-identical."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from services.common.keys import PartitionKeys
from services.common.models import PostbackRecord
from index_check import check_indexes
from reference_book import Reference
from services.domain.device_state import parse_device_state
from test_processor_pipeline import read_all  # same directory (rootdir-relative import)
from waiting import wait_for  # tests/waiting.py (tests/ is on sys.path via the rootdir conftest)

PARTITIONS = 4
RECORDS = 100_000
CLUSTER_RECORDS = 40_000
KILLS = 4
DAY = 86_400_000
# Event times around yesterday: windowed buckets expire 400 days after their hour on Redis' clock,
# so a fixed date would age out of the index one day.
T0 = (int(time.time() * 1000) // DAY - 1) * DAY
EVENTS = ["reg"] * 15 + ["dep"] * 35 + ["open"] * 20 + ["purchase"] * 15 + ["lvl_up"] * 10 + ["install"] * 5
BAD = [b"\xff garbage", b"{}", b"[]", b'{"schema":"postback.v1"}']


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate(seed: int, records: int = RECORDS) -> tuple[list[tuple[bytes, bytes]], Reference, int]:
    """Random postbacks (2 accounts, 12,000 devices, duplicate tids, late events) plus bad
    records, and the reference state after applying the valid ones in the same order."""
    rng = random.Random(seed)
    ref = Reference(30 * DAY)
    used_tids: dict[tuple[int, str, str], list[str]] = {}
    items, bad = [], 0
    for i in range(records):
        account = rng.choice((1, 2))
        install = f"dev-{rng.randrange(6000):05d}"
        event = rng.choice(EVENTS)
        tid = None
        if rng.random() < 0.4:
            previous = used_tids.setdefault((account, install, event), [])
            if previous and rng.random() < 0.3:
                tid = rng.choice(previous)
            else:
                tid = f"tx{i}"
                previous.append(tid)
        amount, currency = (rng.choice(("9.99", "100", "0.0000000001", "12345678901234567890.5")),
                            rng.choice(("USD", "EUR", None))) if event == "dep" and rng.random() < 0.7 else (None, None)
        record = PostbackRecord(event_id=f"ev{i:07d}", account_id=account, install_id=install, event=event,
                                occurred_at=T0 + rng.randrange(-DAY, DAY), received_at=T0 + i, tid=tid,
                                amount=amount, currency=currency)
        ref.apply(record)
        items.append((f"{account}:{install}".encode(), record.model_dump_json(by_alias=True).encode()))
        if i % 4000 == 17:
            value = BAD[bad % len(BAD)] if bad % 5 else orjson.dumps({**record.model_dump(by_alias=True), "event": "dep_7", "event_id": f"bad{i}"})
            items.append((f"{account}:{install}".encode(), value))
            bad += 1
    return items, ref, bad


async def produce(producer: AIOKafkaProducer, topic: str, items) -> None:
    futures = [await producer.send(topic, value, key=key) for key, value in items]
    await asyncio.gather(*futures)


class Worker:
    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "services.processor", "-l", "warn"],
                                     env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def kill(self, sig=signal.SIGKILL) -> None:
        os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=30)


async def owned_partitions(port: str) -> int:
    """The worker's pbseg_processor_assigned_partitions; 0 when it does not answer (yet)."""
    try:
        async with httpx.AsyncClient(timeout=0.5) as web:
            text = (await web.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.HTTPError:
        return 0
    line = next((x for x in text.splitlines() if x.startswith("pbseg_processor_assigned_partitions ")), "x 0")
    return int(float(line.split()[1]))


async def applied(redis, prefix: str, topic: str) -> int:
    async with redis.pipeline(transaction=False) as pipe:  # not MGET: one slot per partition on a cluster
        for p in range(PARTITIONS):
            pipe.get(PartitionKeys(prefix, p).applied_offset(topic))
        values = await pipe.execute()
    return sum(int(v) + 1 for v in values if v is not None)


@pytest.mark.parametrize("second_worker", [False, True], ids=["one-worker", "two-workers"])
async def test_state_is_exact_after_repeated_sigkills(second_worker, service_env, infra, redis_client, key_prefix,
                                                      topic_factory, tmp_path, seed):
    """Redis and device-events.v1 equal the ground truth after 4 SIGKILLs at random moments;
    with a second worker in the group, partitions (and their outboxes) also move between the
    two on every kill and restart."""
    env = dict(service_env)
    topic = await topic_factory("postbacks", PARTITIONS)
    env.update({"PBSEG_TOPIC_POSTBACKS": topic, "PBSEG_TOPIC_REJECTED": await topic_factory("rejected", 2),
                "PBSEG_TOPIC_DEVICE_EVENTS": await topic_factory("device-events", PARTITIONS),
                "PROCESSOR_WEB_PORT": str(free_port()), "PROCESSOR_DATADIR": str(tmp_path / "faust"),
                "PBSEG_LOG_LEVEL": "warning"})
    rng = random.Random(seed)
    records = CLUSTER_RECORDS if infra.origin == "local cluster" else RECORDS
    items, ref, bad = generate(seed, records)
    total = len(items)
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka, acks="all", enable_idempotence=True, linger_ms=20,
                                max_batch_size=1024 * 1024)
    await producer.start()
    waves = [items[len(items) * i // (KILLS + 1):len(items) * (i + 1) // (KILLS + 1)] for i in range(KILLS + 1)]
    worker = Worker(env, tmp_path / "worker.log")
    # A second worker in the same group stays up throughout: every kill and restart of the
    # first moves partitions between the two (rebalances, handovers of outboxes).
    steady = Worker(dict(env, PROCESSOR_WEB_PORT=str(free_port()), PROCESSOR_DATADIR=str(tmp_path / "faust2")),
                    tmp_path / "steady.log")
    if second_worker:
        steady.start()
    kills_mid_work = kills_owning = 0
    produced = 0
    try:
        for cycle in range(KILLS):
            # A wave is produced while the worker starts and works; the kill comes at a random
            # moment after it began applying (the last one at a random moment after its start,
            # which may be before it joined the group).
            producing = asyncio.create_task(produce(producer, topic, waves[cycle]))
            produced += len(waves[cycle])
            worker.start()
            started = time.monotonic()
            if cycle < KILLS - 1:
                before = await applied(redis_client, key_prefix, topic)

                # With a second worker, progress alone may all be the steady worker's: also wait
                # until the restarted one owns partitions, so the kill hits a partition owner.
                async def working():
                    return await applied(redis_client, key_prefix, topic) != before and \
                        (not second_worker or await owned_partitions(env["PROCESSOR_WEB_PORT"]) > 0)
                # A worker that is not working after 60 s is killed all the same: that kill only
                # does not count as mid-work, and the assertions below judge the count.
                with contextlib.suppress(AssertionError):
                    await wait_for(working, timeout=60, interval=0.02, message="the restarted worker to apply")
                # The random pause before the kill IS the test (kills land at random moments), so it stays a sleep.
                # (shorter with fewer records: smaller waves are applied sooner)
                await asyncio.sleep(rng.uniform(0.0, 0.3 * records / RECORDS))
            else:
                # A kill at a random moment after the start (maybe before joining the group): the
                # pause is the behaviour under test, not a wait for a condition.
                await asyncio.sleep(max(0.0, started + rng.uniform(1.0, 8.0) - time.monotonic()))
            kills_owning += await owned_partitions(env["PROCESSOR_WEB_PORT"]) > 0
            worker.kill()
            await producing
            kills_mid_work += await applied(redis_client, key_prefix, topic) < produced
        await produce(producer, topic, waves[-1])
        worker.start()
        outboxes = [PartitionKeys(key_prefix, p).outbox for p in range(PARTITIONS)]

        async def caught_up():
            return await applied(redis_client, key_prefix, topic) == total and \
                sum([await redis_client.xlen(k) for k in outboxes]) == 0
        await wait_for(caught_up, timeout=90, interval=0.2, message="every record applied and every outbox drained")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{env['PROCESSOR_WEB_PORT']}", timeout=5) as web:
            async def ready_with_partitions():
                # With a second worker all may be applied before this one joined: ready, and its
                # share of the partitions assigned (the rebalance may still run).
                try:
                    return (await web.get("/readyz")).status_code == 200 and \
                        "pbseg_processor_lag{partition=" in (await web.get("/metrics")).text
                except httpx.ConnectError:  # the restarted worker's web server is not listening yet
                    return False
            await wait_for(ready_with_partitions, timeout=60, interval=0.1,
                           message="the restarted worker to be ready with partitions assigned")
            assert (await web.get("/readyz")).status_code == 200
            assert (await web.get("/healthz")).status_code == 200
            metrics_text = (await web.get("/metrics")).text
        worker.kill(signal.SIGTERM)
        if second_worker:
            assert steady.proc.poll() is None, "the second worker must have survived the rebalances"
            steady.kill(signal.SIGTERM)
    finally:
        await producer.stop()
        for w in (worker, steady):
            if w.proc and w.proc.poll() is None:
                w.kill()
    if second_worker:  # the second worker keeps up, so "work in progress" is judged by ownership
        assert kills_owning >= 2, "the killed worker must have owned partitions"
    else:
        assert kills_mid_work >= 2, "the kills must interrupt work in progress"
    assert await applied(redis_client, key_prefix, topic) == total
    assert "pbseg_processor_lag{partition=" in metrics_text and "pbseg_processor_batch_size_bucket" in metrics_text

    # Every device: the same events with the same first/last/count; deposits counted exactly.
    async with redis_client.pipeline(transaction=False) as pipe:
        for account, install in ref.devices:
            for p in range(PARTITIONS):
                pipe.hget(PartitionKeys(key_prefix, p).device_index_of(account, install), install)
        replies = await pipe.execute()
    located = {}
    for i, device in enumerate(ref.devices):
        found = [(p, int(r)) for p, r in enumerate(replies[i * PARTITIONS:(i + 1) * PARTITIONS]) if r is not None]
        assert len(found) == 1, device
        located[device] = found[0]
    async with redis_client.pipeline(transaction=False) as pipe:
        for (account, _), (p, num) in located.items():
            keys = PartitionKeys(key_prefix, p)
            pipe.hget(keys.device_states(account, keys.device_location(num)[0]), keys.device_location(num)[1])
        states = await pipe.execute()
    numbers = {}
    for (device, expected), state in zip(ref.devices.items(), states):
        numbers[device] = located[device][1]
        assert parse_device_state(state) == expected, device
    # No device more than the reference; per-event device counts equal the reference.
    device_entries = 0
    for p in range(PARTITIONS):
        async for key in redis_client.scan_iter(match=PartitionKeys(key_prefix, p).device_index("*", "*"), count=5000):
            device_entries += await redis_client.hlen(key)
    assert device_entries == len(ref.devices)
    for account in (1, 2):
        expected_counts = ref.device_counts(account)
        codes = set()
        for p in range(PARTITIONS):
            codes |= {c.decode() for c in await redis_client.smembers(PartitionKeys(key_prefix, p).segment_codes(account))}
        assert codes == set(expected_counts)
        for code, count in expected_counts.items():
            assert sum([await redis_client.bitcount(PartitionKeys(key_prefix, p).segment(account, code))
                        for p in range(PARTITIONS)]) == count, (account, code)
        # The per-code counters equal each partition's bitmap BITCOUNT exactly (crashes included).
        for p in range(PARTITIONS):
            keys = PartitionKeys(key_prefix, p)
            counters = {c.decode(): int(n) for c, n in (await redis_client.hgetall(keys.device_counts(account))).items()}
            bitcounts = {c: await redis_client.bitcount(keys.segment(account, c)) for c in codes}
            assert counters == {c: n for c, n in bitcounts.items() if n}, (account, p)
    # The windowed buckets, count ranks and deposit sums hold exactly the reference's occurrences.
    compared = await check_indexes(redis_client, key_prefix, PARTITIONS, ref.published, located)
    print(f"indexes: {compared}")
    # The reverse map names each device number's install id.
    async with redis_client.pipeline(transaction=False) as pipe:
        for (account, install), num in numbers.items():
            for p in range(PARTITIONS):
                keys = PartitionKeys(key_prefix, p)
                pipe.hget(keys.device_names(account, keys.device_location(num)[0]), keys.device_location(num)[1])
        names = await pipe.execute()
    for i, (account, install) in enumerate(numbers):
        assert install.encode() in names[i * PARTITIONS:(i + 1) * PARTITIONS]

    # device-events: every occurrence, duplicates byte-identical, the right ordinal.
    published = await read_all(infra.kafka, env["PBSEG_TOPIC_DEVICE_EVENTS"])
    by_id: dict[str, bytes] = {}
    for message in published:
        event_id = orjson.loads(message.value)["event_id"]
        assert by_id.setdefault(event_id, message.value) == message.value, event_id
    expected_events = {e.event_id: e for e in ref.published}
    assert set(by_id) == set(expected_events)
    for event_id, value in by_id.items():
        record, want = orjson.loads(value), expected_events[event_id]
        assert (record["event"], record["deposit_ordinal"], record["first_occurrence"], record["install_id"],
                record["account_id"], record["occurred_at"]) == \
            (want.event, want.deposit_ordinal, want.first_occurrence, want.install_id, want.account_id, want.occurred_at)
    print(f"{total} records, {len(ref.devices)} devices, {ref.duplicate_tids} duplicate tids, "
          f"{len(published)} device-event records for {len(by_id)} occurrences, {kills_mid_work} kills mid-work, "
          f"{kills_owning} kills while owning partitions")

    # Every bad record reached the rejected topic (a crash may repeat one, never lose one).
    rejected = await read_all(infra.kafka, env["PBSEG_TOPIC_REJECTED"])
    assert len({orjson.loads(m.value)["message"] for m in rejected}) == bad
    # The run's ~47,000 keys (tids live 30 days) go on the key_prefix fixture's teardown, passed
    # or failed, so that repeated runs do not grow the shared Redis that later tests SCAN.
