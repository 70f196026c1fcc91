"""Bench helper for bench/ingress/run.sh: set up an account with custom events, count the
records on a topic, read the ingress's accepted counter, summarise wrk output."""

from __future__ import annotations

import asyncio
import re
import sys
import urllib.request

import orjson

from services.common.catalog import CatalogStore
from services.common.catalog_ids import MemoryIdLog
from services.common.keys import CatalogKeys
from services.common.redis_conn import async_redis
from services.common.topics import ensure_topics

CODES = ("first_open", "level_up", "purchase_view", "tutorial_done", "push_opt_in")


async def setup(redis_url: str, prefix: str, bootstrap: str, topics: list[str]) -> None:
    redis = async_redis(redis_url)
    store = CatalogStore(redis, prefix, MemoryIdLog())
    account_id, _ = await store.create_account("bench", 0)
    keys = CatalogKeys(prefix)
    async with redis.pipeline(transaction=True) as pipe:
        for i, code in enumerate(CODES, start=1):
            pipe.hset(keys.events(account_id), str(i), orjson.dumps({"id": i, "name": code, "code": code, "status": 1}))
            pipe.hset(keys.event_codes(account_id), code, str(i))
        pipe.incr(keys.version)
        await pipe.execute()
    await redis.aclose()
    await ensure_topics(bootstrap, {t: 8 for t in topics})
    print(f"ACCOUNT={account_id} CODES={','.join(CODES)}")


async def count(bootstrap: str, topic: str) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or await _partitions(consumer, topic))]
        end = await consumer.end_offsets(parts)
        start = await consumer.beginning_offsets(parts)
        print(sum(end[p] - start[p] for p in parts))
    finally:
        await consumer.stop()


async def _partitions(consumer, topic):
    await consumer._client.force_metadata_update()  # noqa: SLF001 - topic metadata for a non-subscribed topic
    return consumer._client.cluster.partitions_for_topic(topic) or set()  # noqa: SLF001


async def cleanup(redis_url: str, prefix: str, bootstrap: str, topics: list[str]) -> None:
    """Remove what `setup` and the run created: the prefix's keys and the run's topics."""
    from aiokafka.admin import AIOKafkaAdminClient

    redis = async_redis(redis_url)
    async for key in redis.scan_iter(match="{" + prefix + ":*", count=1000):
        await redis.delete(key)
    await redis.aclose()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    except Exception as exc:  # noqa: BLE001 - leftovers are harmless; say so and go on
        print(f"could not delete topics {topics}: {exc}", file=sys.stderr)
    finally:
        await admin.close()


def accepted(url: str) -> None:
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith('pbseg_ingress_requests_total{outcome="accepted"'):
            total += float(line.rsplit(" ", 1)[1])
    print(int(total))


def cpu_seconds(group: int) -> None:
    """CPU seconds (user + system) used so far by every process in process group `group`."""
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime + stime
    print(f"{total / ticks:.2f}")


def wrk_summary(path: str) -> None:
    """Prints: requests non2xx errors rps p50_ms p99_ms (from `wrk --latency` output)."""
    text = open(path).read()

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    requests = int(re.search(r"(\d+) requests in", text).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    print(requests, non2xx, errors, f"{rps:.0f}", f"{ms('50'):.2f}", f"{ms('99'):.2f}")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "setup":
        asyncio.run(setup(args[0], args[1], args[2], args[3:]))
    elif cmd == "count":
        asyncio.run(count(args[0], args[1]))
    elif cmd == "cleanup":
        asyncio.run(cleanup(args[0], args[1], args[2], args[3:]))
    elif cmd == "accepted":
        accepted(args[0])
    elif cmd == "cpu":
        cpu_seconds(int(args[0]))
    elif cmd == "wrk":
        wrk_summary(args[0])
    else:
        raise SystemExit(f"unknown command {cmd}")
