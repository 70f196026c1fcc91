"""The ingress's door to Kafka: the `RecordProducer` interface and what goes with it.

The app sees only this interface; production runs ConfluentRecordProducer
(producer_confluent.py), unit tests a hand-written fake (tests/unit/test_ingress_app.py).
"""

from __future__ import annotations

from typing import Protocol

from aiokafka.partitioner import murmur2


class ProduceFailed(Exception):
    """Kafka did not acknowledge the record in time (or refused it). The record may still
    reach the topic later (a batch already on the wire cannot be recalled); it was never
    acknowledged to the sender, who retries, and `tid` makes that retry harmless."""


class RecordProducer(Protocol):
    """A producer whose `deliver` awaits nothing but plain futures (no asyncio.timeout, no
    current_task) may say so with a class attribute `runs_without_task = True`: the HTTP
    server then drives requests without an asyncio.Task (http_connection.HttpConnection._step)."""

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
    """The Java client's (and aiokafka's) default partitioner: murmur2 of the key. The
    producer is configured to the same (librdkafka's `murmur2_random`), so a device's records
    land on the partition the query service computes for it."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
