"""The outbox drain's round logic with fakes (no Redis, no Kafka): every owned partition's
entries go out to partition N % targets, entries are trimmed only after every send was
acknowledged, nothing is trimmed when one fails, and a full read marks a backlog (no pause)."""

import asyncio

import pytest
from waiting import wait_for

from services.processor.outbox import OutboxDrain
from services.processor.store import OutboxEntry


class FakeStore:
    def __init__(self, outboxes: dict[int, list[OutboxEntry]]):
        self.outboxes = outboxes
        self.reads: list[tuple[list[int], int]] = []
        self.trims: list[dict[int, str]] = []

    async def read_outboxes(self, partitions, count):
        self.reads.append((list(partitions), count))
        return {p: self.outboxes.get(p, [])[:count] for p in partitions}

    async def ack_outboxes(self, last_entry_ids, lengths_of=()):
        self.trims.append(dict(last_entry_ids))
        for p, last in last_entry_ids.items():
            ids = [e.entry_id for e in self.outboxes[p]]
            self.outboxes[p] = self.outboxes[p][ids.index(last) + 1:]
        return {p: len(self.outboxes[p]) for p in lengths_of}


class FakeBatch:
    def __init__(self, room: int):
        self.records, self.room = [], room

    def append(self, key, value, timestamp):
        if len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self):
        return len(self.records)


class FakeProducer:
    def __init__(self, targets: int, fail_partition: int | None = None, room: int = 2):
        self.targets, self.fail_partition, self.room = targets, fail_partition, room
        self.sent: list[tuple[int, list]] = []

    async def partitions_for(self, topic):
        return set(range(self.targets))

    def create_batch(self):
        return FakeBatch(self.room)

    async def send_batch(self, batch, topic, partition):
        self.sent.append((partition, batch.records))
        fut = asyncio.get_running_loop().create_future()
        if partition == self.fail_partition:
            fut.set_exception(RuntimeError("broker said no"))
        else:
            fut.set_result(None)
        return fut


def entry(entry_id: str, *keys: str) -> OutboxEntry:
    heads = "\n".join(f"{k}\t" + '{"event_id":"' + k + '"' for k in keys)
    return OutboxEntry(entry_id, {b"h": heads.encode(), b"t": ",".join(":1" for _ in keys).encode()})


async def test_one_round_sends_every_partition_in_order_then_trims_all():
    store = FakeStore({0: [entry("1-0", "1:a", "1:b"), entry("2-0", "1:c")], 3: [entry("5-0", "1:d")], 5: []})
    producer = FakeProducer(targets=2)
    drain = OutboxDrain(store, producer, "device-events", lambda: {0, 3, 5}, batch=4)
    assert await drain.drain_once() == 4
    assert store.reads == [([0, 3, 5], 4)]  # one read for all owned partitions
    by_target: dict[int, list[bytes]] = {}
    for target, records in producer.sent:
        by_target.setdefault(target, []).extend(k for k, _ in records)
    assert by_target == {0: [b"1:a", b"1:b", b"1:c"], 1: [b"1:d"]}  # 0 % 2, 3 % 2; outbox order kept
    assert store.trims == [{0: "2-0", 3: "5-0"}]
    assert store.outboxes == {0: [], 3: [], 5: []}
    assert drain.backlog is False
    assert await drain.drain_once() == 0 and store.trims == [{0: "2-0", 3: "5-0"}]  # nothing left, nothing trimmed


async def test_a_failed_send_trims_nothing_and_the_next_round_resends_the_same_records():
    store = FakeStore({0: [entry("1-0", "1:a")], 1: [entry("1-1", "1:b")]})
    drain = OutboxDrain(store, FakeProducer(targets=2, fail_partition=1), "device-events", lambda: {0, 1}, batch=4)
    with pytest.raises(RuntimeError):
        await drain.drain_once()
    assert store.trims == [] and len(store.outboxes[0]) == 1 and len(store.outboxes[1]) == 1
    producer = FakeProducer(targets=2)
    drain.producer = producer
    assert await drain.drain_once() == 2
    assert sorted(k for _, records in producer.sent for k, _ in records) == [b"1:a", b"1:b"]


async def test_a_full_read_is_a_backlog_so_the_next_round_follows_at_once():
    store = FakeStore({0: [entry(f"{i}-0", f"1:d{i}") for i in range(1, 6)]})
    drain = OutboxDrain(store, FakeProducer(targets=1), "device-events", lambda: {0}, batch=2, interval_s=60)
    assert await drain.drain_once() == 2 and drain.backlog is True
    assert await drain.drain_once() == 2 and drain.backlog is True
    assert await drain.drain_once() == 1 and drain.backlog is False
    # run() pauses interval_s only without a backlog: with 60 s it must still drain 5 entries at once
    store.outboxes[0] = [entry(f"{i}-1", f"1:e{i}") for i in range(1, 6)]
    task = asyncio.ensure_future(drain.run())
    try:
        # interval=0: loop turns only, and 1 s is far below the 60 s pause a wrong run() would take
        await wait_for(lambda: not store.outboxes[0], timeout=1, interval=0, message="the backlog drained")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert store.outboxes[0] == []


async def test_an_idle_drain_waits_for_notify_instead_of_polling():
    store = FakeStore({0: []})
    drain = OutboxDrain(store, FakeProducer(targets=1), "device-events", lambda: {0}, batch=4,
                        interval_s=0, idle_poll_s=3600)
    task = asyncio.ensure_future(drain.run())
    try:
        # An observation window, not a wait for a condition: that an idle drain does NOT read
        # again shows only after many loop turns (200) in which it could have.
        for _ in range(200):
            await asyncio.sleep(0)
        assert len(store.reads) == 1
        store.outboxes[0] = [entry("1-0", "1:a")]
        drain.notify()  # the pipeline applied a batch
        await wait_for(lambda: not store.outboxes[0], timeout=1, interval=0, message="the notified drain")
        assert store.outboxes[0] == [] and len(store.reads) == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_an_idle_drain_still_looks_every_idle_poll():
    store = FakeStore({0: []})
    drain = OutboxDrain(store, FakeProducer(targets=1), "device-events", lambda: {0}, batch=4,
                        interval_s=0, idle_poll_s=0.01)
    task = asyncio.ensure_future(drain.run())
    try:
        store.outboxes[0] = [entry("1-0", "1:a")]  # left without a notify (e.g. by another worker)
        await wait_for(lambda: not store.outboxes[0], timeout=5, interval=0.01, message="the idle poll's read")
        assert store.outboxes[0] == []
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
