"""Rejected postbacks: the real rejected topic -> bounded per-account lists, no loss, no doubles."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from waiting import wait_for

from services.common.models import RejectedPostbackRecord
from services.query.rejected import RejectedFeed, RejectedLog


def record(account_id: int | None, i: int) -> bytes:
    return RejectedPostbackRecord(stage="ingress", reason="unknown_event", message=f"m{i}", account_id=account_id,
                                  raw=f"id=d{i}&status=x_{account_id}", at=i).model_dump_json(by_alias=True).encode()


async def test_feed_keeps_the_newest_per_account_and_survives_restarts(infra, topic_factory, key_prefix, redis_client):
    """Records reach their account's list newest first, bounded to `keep`; a restarted feed
    (and a second replica) adds nothing twice; records without an account and garbage are dropped."""
    topic = await topic_factory("rejected", 2)
    store = RejectedLog(redis_client, key_prefix, topic, keep=5, ttl_ms=60_000)
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka, acks="all")
    await producer.start()
    try:
        for i in range(8):
            await producer.send_and_wait(topic, record(7, i), partition=0)
        await producer.send_and_wait(topic, record(8, 100), partition=1)
        await producer.send_and_wait(topic, record(None, 200), partition=1)
        await producer.send_and_wait(topic, b"not json", partition=1)
        feed = RejectedFeed(store, infra.kafka, CollectorRegistry(), retry_s=0.2)
        feed.start()
        try:
            async def done():
                return [r["message"] for r in await store.recent(7, 100)] == [f"m{i}" for i in (7, 6, 5, 4, 3)] \
                    and len(await store.recent(8, 100)) == 1
            await wait_for(done, timeout=60, interval=0.1, message="the newest five of account 7 and one of account 8")
        finally:
            await feed.stop()
        # A second feed (restart or replica) starting from the stored watermark adds nothing twice,
        # and picks up what arrived while no feed ran.
        await producer.send_and_wait(topic, record(8, 101), partition=1)
        feeds = [RejectedFeed(store, infra.kafka, CollectorRegistry(), retry_s=0.2) for _ in range(2)]
        for f in feeds:
            f.start()
        try:
            async def second():
                return [r["message"] for r in await store.recent(8, 100)] == ["m101", "m100"]
            await wait_for(second, timeout=60, interval=0.1, message="m101 once in account 8's list")
            await wait_for(lambda: all(f.running for f in feeds), timeout=60, message="both feeds consuming")
            # A fixed observation window, not a wait for a condition: that NOTHING is added twice
            # can only be seen by giving both running feeds time to (wrongly) add it.
            await asyncio.sleep(1.0)
            assert [r["message"] for r in await store.recent(8, 100)] == ["m101", "m100"]
            assert len(await store.recent(7, 100)) == 5
            assert 0 < await redis_client.pttl(store.keys.recent(7)) <= 60_000
        finally:
            for f in feeds:
                await f.stop()
    finally:
        await producer.stop()  # the lists go on the key_prefix fixture's teardown
