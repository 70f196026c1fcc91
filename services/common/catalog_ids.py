"""Where catalog ids come from: the catalog-ids topic (services/domain/catalog_ids.py says why).

`IdLog` is the port. `KafkaIdLog` is the production adapter; `MemoryIdLog` is its in-memory
reference (unit tests, seeding test fixtures and benchmarks); both pass
tests/contract/test_catalog_ids.py.

An allocation record is `{"kind", ...entity}`: what recreates the entity if Redis loses it
(`pbseg catalog check --restore`, services/cli/catalog.py). Filler records, written only to move a
partition past ids a catalog already holds, are `{"kind": "padding"}`.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.errors import KafkaError

from services.common.settings import CommonSettings
from services.common.topics import TopicSpec, ensure_topics, partition_count, topic_plan
from services.domain.catalog_ids import KIND_PARTITION, id_at, padding_needed

_PADDING = orjson.dumps({"kind": "padding"})


class IdLogUnavailable(Exception):
    """The id log did not confirm an allocation in time: nothing was handed out (the query API
    answers 503 with Retry-After, the CLI exits 1). An allocation record may still have been
    written; its id is then skipped, never reused."""


class IdLog(Protocol):
    async def allocate(self, kind: str, entity: dict, above: int = 0) -> int:
        """A new id of `kind`, greater than `above`, durable before it returns (blocks until the
        log confirms, at most the adapter's timeout). Raises IdLogUnavailable."""

    async def allocations(self, kind: str) -> list[tuple[int, dict]]:
        """Every allocation record of `kind` so far, as (id, entity), oldest first."""

    async def close(self) -> None: ...


class MemoryIdLog:
    """The reference: one list per kind, an id per position."""

    def __init__(self) -> None:
        self._records: dict[str, list[bytes]] = {kind: [] for kind in KIND_PARTITION}

    async def allocate(self, kind: str, entity: dict, above: int = 0) -> int:
        records = self._records[kind]
        records.extend([_PADDING] * padding_needed(kind, len(records), above))
        records.append(orjson.dumps({"kind": kind, **entity}))
        return id_at(kind, len(records) - 1)

    async def allocations(self, kind: str) -> list[tuple[int, dict]]:
        return _entities(kind, enumerate(self._records[kind]))

    async def close(self) -> None:
        return None


class KafkaIdLog:
    """Allocations are records on `topic` (one partition per kind, services/domain/catalog_ids.py),
    produced with acks=all and idempotence; an id is its record's offset. The producer starts on
    the first allocation (creating the topic as `spec` says if it is missing), so services that
    only read the catalog never need Kafka."""

    def __init__(self, bootstrap: str, topic: str, spec: TopicSpec, timeout_s: float = 5.0):
        self.bootstrap, self.topic, self.spec, self.timeout_s = bootstrap, topic, spec, timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            await ensure_topics(self.bootstrap, {self.topic: self.spec}, timeout_s=self.timeout_s)
            await self._grow()
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                                        linger_ms=0, request_timeout_ms=int(self.timeout_s * 1000))
            await producer.start()
            self._producer = producer
        return self._producer

    async def allocate(self, kind: str, entity: dict, above: int = 0) -> int:
        partition = KIND_PARTITION[kind]
        record = orjson.dumps({"kind": kind, **entity})
        try:
            async with asyncio.timeout(self.timeout_s), self._lock:
                producer = await self._started()
                offset = (await producer.send_and_wait(self.topic, record, partition=partition)).offset
                if id_at(kind, offset) > above:
                    return id_at(kind, offset)
                # The catalog already holds ids up to `above` (a recreated topic, or a catalog
                # older than the log): skip past them, then allocate again. The first record is
                # superseded; its entity is stored under the new id.
                for _ in range(padding_needed(kind, offset + 1, above)):
                    await producer.send(self.topic, _PADDING, partition=partition)
                offset = (await producer.send_and_wait(self.topic, record, partition=partition)).offset
                return id_at(kind, offset)
        except (TimeoutError, KafkaError, OSError) as exc:
            await self._reset()
            raise IdLogUnavailable(f"the catalog id log ({self.topic} on Kafka at {self.bootstrap}) did not "
                                   f"confirm an allocation within {self.timeout_s:g} s: {exc!r}") from exc

    async def _grow(self) -> None:
        """A topic made before a kind was added has fewer partitions than kinds: add them (the
        records have no keys, so no record moves; each partition is its own sequence)."""
        if await partition_count(self.bootstrap, self.topic, self.timeout_s) >= self.spec.partitions:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=int(self.timeout_s * 1000))
        await admin.start()
        try:
            await admin.create_partitions({self.topic: NewPartitions(total_count=self.spec.partitions)})
        finally:
            await admin.close()

    async def allocations(self, kind: str) -> list[tuple[int, dict]]:
        tp = TopicPartition(self.topic, KIND_PARTITION[kind])
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    isolation_level="read_committed", request_timeout_ms=int(self.timeout_s * 1000))
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            rows: list[tuple[int, bytes]] = []
            while await consumer.position(tp) < end:
                for message in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    rows.append((message.offset, message.value))
            return _entities(kind, rows)
        finally:
            await consumer.stop()

    async def _reset(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), self.timeout_s)
            except Exception:  # noqa: BLE001 - a broken producer is dropped either way
                pass

    async def close(self) -> None:
        await self._reset()


def id_log_for(settings: CommonSettings) -> KafkaIdLog:
    """The production id log of these settings (PBSEG_TOPIC_CATALOG_IDS, created as topic_plan says)."""
    return KafkaIdLog(settings.kafka_bootstrap_servers, settings.topic_catalog_ids,
                      topic_plan(settings)[settings.topic_catalog_ids], settings.catalog_id_timeout_s)


def _entities(kind: str, rows) -> list[tuple[int, dict]]:
    out = []
    for offset, raw in rows:
        entity = orjson.loads(raw)
        if entity.pop("kind", None) == kind:
            out.append((id_at(kind, offset), entity))
    return out
