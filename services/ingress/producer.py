"""The ingress's door to Kafka: `RecordProducer` and its aiokafka implementation.

The app sees only this interface, so a test or another client library can stand in.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

log = structlog.get_logger("ingress.producer")


class ProduceFailed(Exception):
    """Kafka did not acknowledge the record in time (or refused it). The record may still
    reach the topic later (a batch already on the wire cannot be recalled); it was never
    acknowledged to the sender, who retries, and `tid` makes that retry harmless."""


class RecordProducer(Protocol):
    async def start(self, timeout_s: float) -> None:
        """Connect; raises RuntimeError naming the broker when it does not answer in time."""

    async def stop(self) -> None:
        """Flush what is buffered (bounded by the client's own timeouts) and disconnect."""

    async def deliver(self, topic: str, key: bytes, value: bytes, timeout_s: float) -> None:
        """Block until the broker acknowledged the record (acks=all). Raises ProduceFailed
        after at most `timeout_s` seconds, including any wait for buffer space."""

    def deliver_in_background(self, topic: str, key: bytes | None, value: bytes, timeout_s: float) -> bool:
        """Best effort, never blocks: returns False (and sends nothing) when too many
        background records are already pending. Failures are logged and counted."""

    async def reachable(self, timeout_s: float) -> bool:
        """True when a broker answered a metadata request within `timeout_s`."""


def partition_for(key: bytes, partitions: int) -> int:
    """The Java client's (and aiokafka's) default partitioner: murmur2 of the key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class _OpenBatch:
    """Records waiting for their partition's next produce request; one future for all."""

    __slots__ = ("entries", "done")

    def __init__(self, done: asyncio.Future):
        self.entries: list[list] = []  # [key, value]; value None = its request gave up
        self.done = done


class AiokafkaRecordProducer:
    """aiokafka with acks=all and the idempotent producer (no duplicates from its retries).

    `deliver` batches by partition itself instead of calling `AIOKafkaProducer.send` per
    record (which costs ~50 us of Python per record): the records that arrive while the
    partition's previous batch is on the wire go out together in the next one, all waiting
    on one future. One batch per partition is in flight at a time, so a device's records
    keep their order. A record whose request gave up (503) before its batch was built is
    left out of it.
    """

    def __init__(self, bootstrap: str, linger_ms: int, max_batch_bytes: int, max_background: int, on_background_failure=None):
        self.bootstrap = bootstrap
        self._config = dict(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                            linger_ms=linger_ms, max_batch_size=max_batch_bytes)
        self._producer: AIOKafkaProducer | None = None  # needs the running loop: built in start()
        self._partitions: dict[str, int] = {}
        self._open: dict[tuple[str, int], _OpenBatch] = {}
        self._senders: dict[tuple[str, int], asyncio.Task] = {}
        self._max_background = max_background
        self._background: set[asyncio.Task] = set()
        self._on_background_failure = on_background_failure or (lambda reason: None)

    async def start(self, timeout_s: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        last: Exception | None = None
        while asyncio.get_running_loop().time() < deadline:
            self._producer = AIOKafkaProducer(**self._config)
            try:
                await self._producer.start()
                return
            except Exception as exc:  # noqa: BLE001 - broker not there (yet): retry until the deadline
                last = exc
                await self._producer.stop()
                log.warning("kafka_not_reachable", bootstrap=self.bootstrap, error=str(exc))
                await asyncio.sleep(1.0)
        raise RuntimeError(
            f"cannot reach Kafka at {self.bootstrap} within {timeout_s:.0f}s ({last}). "
            "Start it with `make up`, or set KAFKA_BOOTSTRAP_SERVERS to a running broker."
        )

    async def stop(self) -> None:
        pending = [*self._background, *self._senders.values()]
        if pending:  # let batches already taken finish (bounded), then give up on the rest
            await asyncio.wait(pending, timeout=5.0)
        for task in [*self._background, *self._senders.values()]:
            task.cancel()
        if self._producer is not None:
            await self._producer.stop()

    async def deliver(self, topic: str, key: bytes, value: bytes, timeout_s: float) -> None:
        entry = [key, value]
        try:
            async with asyncio.timeout(timeout_s):
                partitions = self._partitions.get(topic)
                if partitions is None:
                    partitions = self._partitions[topic] = len(await self._producer.partitions_for(topic))
                tp = (topic, partition_for(key, partitions))
                batch = self._open.get(tp)
                if batch is None:
                    batch = self._open[tp] = _OpenBatch(asyncio.get_running_loop().create_future())
                batch.entries.append(entry)
                if tp not in self._senders:
                    self._senders[tp] = asyncio.create_task(self._send_loop(tp))
                # shield: one request timing out must not cancel the batch's shared future
                await asyncio.shield(batch.done)
        except TimeoutError as exc:
            entry[1] = None
            raise ProduceFailed(f"no acknowledgement from Kafka within {timeout_s}s") from exc
        except ProduceFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - any client error means "not stored"
            raise ProduceFailed(str(exc)) from exc

    async def _send_loop(self, tp: tuple[str, int]) -> None:
        """Sends the partition's open batch, waits for its acknowledgement, repeats while
        records arrived meanwhile; ends when none are waiting."""
        topic, partition = tp
        producer = self._producer
        try:
            while (batch := self._open.pop(tp, None)) is not None:
                try:
                    acks = []
                    builder = producer.create_batch()
                    for key, value in batch.entries:
                        if value is None:
                            continue
                        if builder.append(timestamp=None, key=key, value=value) is None:  # full
                            acks.append(await producer.send_batch(builder, topic, partition=partition))
                            builder = producer.create_batch()
                            builder.append(timestamp=None, key=key, value=value)  # a record < the batch size
                    if builder.record_count():
                        builder.close()
                        acks.append(await producer.send_batch(builder, topic, partition=partition))
                    for ack in acks:
                        await ack
                    batch.done.set_result(None)
                except Exception as exc:  # noqa: BLE001 - every waiter of this batch gets a 503
                    batch.done.set_exception(ProduceFailed(str(exc)))
                    batch.done.exception()  # retrieved: no "never retrieved" warning without waiters
        finally:
            self._senders.pop(tp, None)

    def deliver_in_background(self, topic: str, key: bytes | None, value: bytes, timeout_s: float) -> bool:
        if len(self._background) >= self._max_background:
            return False
        task = asyncio.create_task(self._deliver_logged(topic, key, value, timeout_s))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return True

    async def _deliver_logged(self, topic: str, key: bytes | None, value: bytes, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                ack = await self._producer.send(topic, value, key=key)
                await ack
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - best effort: count and log, never raise
            self._on_background_failure(type(exc).__name__)
            log.warning("background_produce_failed", topic=topic, error=repr(exc))

    async def reachable(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._producer.client.fetch_all_metadata()
            return True
        except Exception:  # noqa: BLE001 - unreachable for whatever reason
            return False
