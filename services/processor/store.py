"""Redis adapter of the processor: the apply script, watermarks, the outbox, partition wipes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import orjson
import redis.asyncio as aioredis
from redis.exceptions import AskError, MovedError, NoScriptError, TryAgainError

from services.common.keys import PartitionKeys, lua_header
from services.domain.conditions import DEFAULT_WINDOW_RETENTION_DAYS
from services.domain.windows import DAY_MS
from services.common.redis_conn import is_cluster, run_scripts
from services.domain.device_event import entry_records, record_key
from services.domain.device_state import EventStat, parse_device_state
from services.domain.identity import LogIdentity
from services.domain.triggers import DEFAULT_MAX_LATENESS_MS, fire_line_record
from services.processor.planning import PartitionBatch

_HERE = Path(__file__).parent
# `#!lua` (no flags): Redis checks maxmemory BEFORE the script starts. A script without it would
# hit OOM at its first write past the limit and leave the writes before it (tids) in place
# without the watermark - a batch half applied. With it, a full Redis refuses the whole batch.
_SCRIPT = "#!lua\n" + lua_header() + (_HERE / "apply_batch.lua").read_text()


# SET KEYS[1] to ARGV[1] unless it already holds a larger number (a value only moving forward).
_MAX_SET = """local v = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > v then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
return 0"""


@dataclass(frozen=True)
class BatchResult:
    partition: int
    applied: int
    skipped_offsets: int
    duplicate_tids: int
    outbox_records: int
    gap: int = 0  # 1: the batch starts beyond watermark + 1 and applied nothing (Redis went back)
    watermark: int = -1  # the partition's watermark after the call
    fires: int = 0  # fires the batch's tick sent
    fire_decisions: int = 0  # fires the tick decided (sent, cancelled or skipped late)


@dataclass(frozen=True)
class OutboxEntry:
    """One applied batch's device-event records (apply_batch.lua, "Outbox")."""

    entry_id: str
    fields: dict[bytes, bytes]

    @property
    def is_fires(self) -> bool:
        """A tick's fires (field `f`: task-trigger records), not device events."""
        return b"f" in self.fields

    def fire_records(self) -> list[tuple[bytes, bytes]]:
        """(Kafka key, value) of each task-trigger.v1 record of a fires entry, in order; pure."""
        out = []
        for line in self.fields[b"f"].decode().split("\n"):
            record = fire_line_record(line)
            out.append((record_key(str(record["account_id"]), record["install_id"]).encode(), orjson.dumps(record)))
        return out

    def records(self) -> list[tuple[bytes, bytes]]:
        """(Kafka key, value) of each record, in the order they were applied. Pure: the same
        entry always yields the same bytes (so a re-sent record is identical). Raises
        UnknownOutboxEntry for an entry not in this version's format (it stays in the outbox)."""
        if b"h" not in self.fields or b"t" not in self.fields:
            raise UnknownOutboxEntry(f"outbox entry {self.entry_id} has fields {sorted(self.fields)}, not this "
                                     "version's h/t (services/domain/device_event.py): drain it with the version "
                                     "that wrote it")
        return entry_records(self.fields[b"h"], self.fields[b"t"], orjson.loads, orjson.dumps)


class UnknownOutboxEntry(ValueError):
    """An outbox entry this version cannot read: the drain stops instead of skipping it."""


class DeviceStateStore:
    """Device state of the partitions of one postbacks topic.

    `apply_batches` is atomic per partition batch (one Lua script each, pipelined in one round
    trip) together with that partition's applied-offset watermark, and idempotent: offsets at or
    below the watermark change nothing. Raises redis errors unchanged (the caller stops and
    the batch is redelivered from the watermark)."""

    def __init__(self, redis: aioredis.Redis, prefix: str, topic: str, tid_retention_ms: int,
                 window_retention_ms: int = DEFAULT_WINDOW_RETENTION_DAYS * DAY_MS,
                 max_lateness_ms: int = DEFAULT_MAX_LATENESS_MS):
        self.redis = redis
        self.prefix = prefix
        self.topic = topic
        self.tid_retention_ms = tid_retention_ms
        self.window_retention_ms = window_retention_ms  # windowed buckets expire this long after their end
        self.max_lateness_ms = max_lateness_ms  # a fire later than this is skipped (services/domain/triggers.py)
        self._script = redis.register_script(_SCRIPT)
        self._max_set = redis.register_script(_MAX_SET)

    @classmethod
    def from_settings(cls, redis: aioredis.Redis, settings, topic: str | None = None) -> "DeviceStateStore":
        """The store as the processor's settings configure it (worker, rebuild, repartition)."""
        return cls(redis, settings.key_prefix, topic or settings.topic_postbacks,
                   int(settings.tid_retention_days * DAY_MS), settings.window_retention_days * DAY_MS,
                   settings.trigger_max_lateness_s * 1000)

    def keys(self, partition: int) -> PartitionKeys:
        return PartitionKeys(self.prefix, partition)

    def _script_call(self, b: PartitionBatch) -> tuple[list, list]:
        keys = self.keys(b.partition)
        return [keys.applied_offset(self.topic)], [keys.tag, self.tid_retention_ms, b.processed_at, b.last_offset,
                                                  "1" if b.emit else "0", b.script_events(), b.script_lines(),
                                                  b.first_offset, self.window_retention_ms, self.max_lateness_ms,
                                                  b.tick]

    async def send_batches(self, batches: Sequence[PartitionBatch]) -> "asyncio.Future[list[BatchResult]]":
        """Write the batches' EVALSHAs (one per batch, each atomic on its own) to Redis in one
        write per node, now; returns a future of their results, in order. The caller plans its
        next batches while Redis applies these. (A task awaiting the script call only writes it
        after the event loop has run it twice - after the caller's next CPU-bound step: Redis then
        sat idle; docs/decisions/0009-send-at-once.md.) Several batches of one partition (a tick ends a
        batch) go out in order on its node's connection, and Redis applies them in that order. On a
        cluster each batch goes to the node that owns its partition's hash tag; a batch a node
        redirects (MOVED/ASK after a failover or resharding) or does not know the script for is
        run again through the client, which follows the redirect and loads the script."""
        calls = [self._script_call(b) for b in batches]
        if is_cluster(self.redis):
            await self.redis.initialize()  # the slot map (a no-op once known)
        groups: dict[object, list[int]] = {}
        for i, (keys, _) in enumerate(calls):
            groups.setdefault(self._node_of(keys[0]), []).append(i)
        sent = []
        try:
            for node, members in groups.items():
                conn = await self._acquire(node)
                sent.append((node, conn, members))
                await conn.send_packed_command(conn.pack_commands(
                    [("EVALSHA", self._script.sha, len(calls[i][0]), *calls[i][0], *calls[i][1]) for i in members]))
        except BaseException:
            for node, conn, _ in sent:
                await conn.disconnect()
                await self._release(node, conn)
            raise
        return asyncio.ensure_future(self._results(batches, calls, sent))

    def _node_of(self, key: str):
        return self.redis.get_node_from_key(key) if is_cluster(self.redis) else None

    async def _acquire(self, node):
        return node.acquire_connection() if node is not None else await self.redis.connection_pool.get_connection()

    async def _release(self, node, conn) -> None:
        if node is not None:
            node.release(conn)
        else:
            await self.redis.connection_pool.release(conn)

    async def _results(self, batches: Sequence[PartitionBatch], calls: list, sent: list) -> list[BatchResult]:
        replies: list = [None] * len(calls)
        failure: BaseException | None = None
        for node, conn, members in sent:
            try:
                for i in members:
                    try:
                        replies[i] = await conn.read_response()
                    except (NoScriptError, MovedError, AskError, TryAgainError):
                        replies[i] = None  # script cache emptied (restart, failover) or slot moved: below
            except BaseException as exc:
                await conn.disconnect()  # replies may be left unread on it
                failure = failure or exc
            finally:
                await self._release(node, conn)
        if failure is not None:
            raise failure
        for i, (keys, argv) in enumerate(calls):
            if replies[i] is None:  # through Script: loads it, follows redirects (partitions are independent)
                replies[i] = await self._script(keys=keys, args=argv)
        return [BatchResult(b.partition, *(int(x) for x in r)) for b, r in zip(batches, replies)]

    async def apply_batches(self, batches: Sequence[PartitionBatch]) -> list[BatchResult]:
        """Several batches (each atomic on its own, at most one per partition), applied before
        returning (rebuild, tests)."""
        if not batches:
            return []
        return await (await self.send_batches(batches))

    async def device(self, partition: int, account_id: int, install_id: str) -> tuple[int, dict[str, EventStat]] | None:
        """(dense device number, {code: EventStat}) of a device on this partition, or None."""
        keys = self.keys(partition)
        num = await self.redis.hget(keys.device_index_of(account_id, install_id), install_id)
        if num is None:
            return None
        num = int(num)
        bucket, field = keys.device_location(num)
        state = await self.redis.hget(keys.device_states(account_id, bucket), field)
        return num, parse_device_state(state or b"")

    async def watermarks(self, partitions: Sequence[int]) -> dict[int, int]:
        """Highest applied offset per partition; -1 when nothing was applied yet."""
        if not partitions:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:  # not MGET: the keys are on several slots
            for p in partitions:
                pipe.get(self.keys(p).applied_offset(self.topic))
            values = await pipe.execute()
        return {p: int(v) if v is not None else -1 for p, v in zip(partitions, values)}

    async def record_as_of(self, as_of: dict[int, int]) -> None:
        """Move each partition's as-of (services/processor/freshness.py) forward to the given
        unix ms; a smaller value than the stored one changes nothing."""
        await run_scripts(self.redis, [(self._max_set, [self.keys(p).applied_as_of(self.topic)], [t])
                                       for p, t in as_of.items()])

    async def as_of(self, partitions: Sequence[int]) -> dict[int, int | None]:
        """Each partition's recorded as-of (None: none yet)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in partitions:
                pipe.get(self.keys(p).applied_as_of(self.topic))
            values = await pipe.execute()
        return {p: int(v) if v is not None else None for p, v in zip(partitions, values)}

    async def identities(self, partitions: Sequence[int]) -> dict[int, LogIdentity | None]:
        """The log identity recorded with each partition's state (None: none recorded)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in partitions:
                pipe.hgetall(self.keys(p).identity(self.topic))
            replies = await pipe.execute()
        return {p: LogIdentity(r[b"topic_id"].decode(), int(r[b"partitions"]), int(r[b"layout"])) if r else None
                for p, r in zip(partitions, replies)}

    async def record_identity(self, partitions: Sequence[int], identity: LogIdentity) -> None:
        """Record that these partitions' state is built from `identity`'s log."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in partitions:
                pipe.hset(self.keys(p).identity(self.topic), mapping={
                    "topic_id": identity.topic_id, "partitions": identity.partitions, "layout": identity.layout})
            await pipe.execute()

    async def due_timers(self, partitions: Sequence[int], now_ms: int, limit: int) -> dict[int, tuple[list[str], int]]:
        """Per partition: up to `limit` timer hashes holding a fire due by `now_ms` (earliest first)
        and the watermark; one round trip (the ticker)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in partitions:
                keys = self.keys(p)
                pipe.zrangebyscore(keys.timer_due, "-inf", now_ms, start=0, num=limit)
                pipe.get(keys.applied_offset(self.topic))
            replies = await pipe.execute()
        return {p: ([m.decode() for m in replies[2 * i]], int(replies[2 * i + 1] or -1))
                for i, p in enumerate(partitions)}

    async def outbox_lengths(self, partitions: Sequence[int]) -> dict[int, int]:
        """Entries (applied batches) waiting in each partition's outbox; one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in partitions:
                pipe.xlen(self.keys(p).outbox)
            return dict(zip(partitions, await pipe.execute()))

    async def read_outboxes(self, partitions: Sequence[int], count: int) -> dict[int, list[OutboxEntry]]:
        """The oldest `count` outbox entries (one per applied batch) of each partition, in
        order; one round trip for all."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in partitions:
                pipe.xrange(self.keys(p).outbox, "-", "+", count=count)
            replies = await pipe.execute()
        return {p: [OutboxEntry(eid.decode(), fields) for eid, fields in rows] for p, rows in zip(partitions, replies)}

    async def ack_outboxes(self, last_entry_ids: dict[int, str], lengths_of: Sequence[int] = ()) -> dict[int, int]:
        """Drop each partition's outbox entries up to and including its `last_entry_id` (after
        Kafka acked their records), in one round trip; returns the remaining length of the
        partitions in `lengths_of` (for the backlog gauge)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p, last_entry_id in last_entry_ids.items():
                ms, seq = last_entry_id.split("-")
                pipe.xtrim(self.keys(p).outbox, minid=f"{ms}-{int(seq) + 1}", approximate=False)
            for p in lengths_of:
                pipe.xlen(self.keys(p).outbox)
            replies = await pipe.execute()
        return dict(zip(lengths_of, replies[len(last_entry_ids):]))

    async def wipe_partition(self, partition: int, scan_count: int = 2000) -> int:
        """Delete every key of the partition's hash tag (devices, bitmaps, tids, outbox,
        watermarks). Not atomic: run it only while no processor works on this prefix."""
        deleted = 0
        pattern = self.keys(partition).tag.replace("{", "\\{").replace("}", "\\}") + ":*"
        async for chunk in _chunks(self.redis.scan_iter(match=pattern, count=scan_count), 1000):
            deleted += await self.redis.unlink(*chunk)
        return deleted


async def _chunks(aiter, size: int):
    chunk = []
    async for item in aiter:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
