"""Redis adapter of the processor: applies batches through apply_batch.lua."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from services.common.keys import PartitionKeys
from services.common.models import PostbackRecord

_SCRIPT = (Path(__file__).parent / "apply_batch.lua").read_text()


@dataclass(frozen=True)
class BatchResult:
    applied: int
    skipped_offsets: int
    duplicate_tids: int


class DeviceStateStore:
    """Applies postbacks of one partition atomically together with the applied-offset watermark.
    Idempotent: offsets at or below the watermark change nothing."""

    def __init__(self, redis: aioredis.Redis, prefix: str, topic: str, tid_retention_ms: int):
        self.redis = redis
        self.prefix = prefix
        self.topic = topic
        self.tid_retention_ms = tid_retention_ms
        self._script = redis.register_script(_SCRIPT)

    async def apply(self, partition: int, batch: list[tuple[int, PostbackRecord]], now_ms: int) -> BatchResult:
        keys = PartitionKeys(self.prefix, partition)
        argv: list = [keys.tag, self.tid_retention_ms, now_ms]
        for offset, r in batch:
            argv += [offset, r.event_id, r.account_id, r.install_id, r.event, r.occurred_at,
                     r.tid or "", r.amount or "", r.currency or "", ""]
        applied, skipped, dups = await self._script(keys=[keys.applied_offset(self.topic)], args=argv)
        return BatchResult(int(applied), int(skipped), int(dups))
