"""Rejected postbacks: the ingress's rejected topic -> bounded per-account Redis lists.

Retention: the newest `keep` records per account (default 1,000) and at most `ttl_days`
(default 7) after the account's last rejection; records without an account id (e.g. a
malformed `status`) belong to nobody and are not kept. The feed reads every partition
without a consumer group, starting after the watermark stored in Redis with the lists,
so a restart or a second query replica neither loses nor doubles a record.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import redis.asyncio as aioredis
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter

from services.common.background import cancel_and_wait
from services.common.keys import RejectedKeys, lua_header
from services.common.models import RejectedPostbackRecord

log = structlog.get_logger("query.rejected")
_APPEND = lua_header() + (Path(__file__).parent / "rejected_append.lua").read_text()


class RejectedLog:
    """Redis adapter: append (idempotent per offset) and read the recent rejections."""

    def __init__(self, redis: aioredis.Redis, prefix: str, topic: str, keep: int, ttl_ms: int):
        self.redis = redis
        self.keys = RejectedKeys(prefix)
        self.topic = topic
        self.keep = keep
        self.ttl_ms = ttl_ms
        self._append = redis.register_script(_APPEND)

    async def watermark(self, partition: int) -> int:
        return int(await self.redis.get(self.keys.applied_offset(self.topic, partition)) or -1)

    async def append(self, partition: int, batch: list[tuple[int, int, bytes]]) -> int:
        """batch: (offset, account_id, record JSON). Atomic with the partition's watermark."""
        args: list = [self.keys.tag, self.keep, self.ttl_ms]
        for offset, account_id, raw in batch:
            args += [offset, account_id, raw]
        return int(await self._append(keys=[self.keys.applied_offset(self.topic, partition)], args=args))

    async def recent(self, account_id: int, limit: int) -> list[dict]:
        return [orjson.loads(r) for r in await self.redis.lrange(self.keys.recent(account_id), 0, limit - 1)]


def decode_rejected(value: bytes) -> RejectedPostbackRecord | None:
    try:
        return RejectedPostbackRecord.model_validate_json(value)
    except ValueError:
        return None


class RejectedFeed:
    """Background task: consumes the rejected topic into the RejectedLog. Never raises; logs
    and retries (every `retry_s`) while Kafka or Redis is away."""

    def __init__(self, log_store: RejectedLog, bootstrap: str, registry, retry_s: float = 2.0):
        self.store = log_store
        self.bootstrap = bootstrap
        self.retry_s = retry_s
        self.running = False
        self._task: asyncio.Task | None = None
        self.consumed = Counter("query_rejected_postbacks_consumed_total", "Rejected postbacks read from Kafka",
                                ["outcome"], registry=registry)

    async def _run_once(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            parts = None
            while not parts:
                # The consumer has no subscription, so ask the cluster directly (the topic may
                # be created after the query service starts).
                cluster = await consumer._client.fetch_all_metadata()
                parts = cluster.partitions_for_topic(self.store.topic)
                if not parts:
                    await asyncio.sleep(self.retry_s)
            tps = [TopicPartition(self.store.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            for tp in tps:
                wm = await self.store.watermark(tp.partition)
                if wm >= 0:
                    consumer.seek(tp, wm + 1)
                else:
                    await consumer.seek_to_beginning(tp)
            self.running = True
            log.info("rejected_feed_started", topic=self.store.topic, partitions=len(tps))
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for tp, messages in batches.items():
                    batch = []
                    for m in messages:
                        record = decode_rejected(m.value)
                        if record is None or record.account_id is None:
                            self.consumed.labels("dropped").inc()
                            continue
                        batch.append((m.offset, record.account_id, record.model_dump_json(by_alias=True).encode()))
                    if batch:
                        await self.store.append(tp.partition, batch)
                        self.consumed.labels("kept").inc(len(batch))
        finally:
            self.running = False
            await consumer.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the API up; retry the feed
                log.warning("rejected_feed_failed", error=str(exc))
                await asyncio.sleep(self.retry_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
