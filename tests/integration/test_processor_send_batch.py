"""DeviceStateStore.send_batches on the real Redis: the EVALSHAs are on the wire when it returns
(Redis applies the batches while the worker goes on planning), a script missing from Redis' cache
is loaded and run, and the results equal those of apply_batches."""

import time

import redis

from services.common.keys import PartitionKeys
from services.common.models import PostbackRecord
from services.processor.planning import plan_partition_batch
from services.processor.store import DeviceStateStore, _SCRIPT

T0 = 1_700_000_000_000
DAY = 86_400_000


def _messages(n: int, start: int = 0) -> list[tuple[int, bytes]]:
    return [(start + i, PostbackRecord(event_id=f"e{start + i}", account_id=3, install_id=f"dev-{i % 7}",
                                       event="dep" if i % 2 else "reg", occurred_at=T0 + i,
                                       received_at=T0 + i).model_dump_json(by_alias=True).encode())
            for i in range(n)]


async def test_the_scripts_are_sent_before_send_batches_returns(infra, redis_client, key_prefix):
    """With the event loop blocked right after send_batches returned, Redis still applies both
    batches: it had the whole request already (a task would not have sent it yet)."""
    store = DeviceStateStore(redis_client, key_prefix, "send", 30 * DAY)
    marks = [PartitionKeys(key_prefix, p).applied_offset("send") for p in (0, 1)]
    await store.apply_batches([plan_partition_batch(0, _messages(1), T0, emit=False)])  # connect, load the script
    probe = redis.Redis.from_url(infra.redis_url)
    try:
        pending = await store.send_batches([plan_partition_batch(0, _messages(40, start=1), T0, emit=False),
                                            plan_partition_batch(1, _messages(5), T0, emit=False)])
        deadline = time.monotonic() + 10
        while probe.mget(marks) != [b"40", b"4"] and time.monotonic() < deadline:
            # Deliberately blocking (not wait_for, which would yield): that nothing of ours can
            # run while Redis applies the batches is what this test is about.
            time.sleep(0.01)
        assert probe.mget(marks) == [b"40", b"4"]
        results = await pending
        assert [(r.partition, r.applied, r.skipped_offsets) for r in results] == [(0, 40, 0), (1, 5, 0)]
    finally:
        probe.close()  # the keys go on the key_prefix fixture's teardown


async def test_a_script_missing_from_the_cache_is_loaded_and_applied(redis_client, key_prefix):
    """A script Redis does not know (as after a Redis restart) answers NOSCRIPT for every batch
    of the write; the results then come from loading and running it, once per batch."""
    store = DeviceStateStore(redis_client, key_prefix, "send", 30 * DAY)
    # the same script under a sha Redis has never seen (unique per test run)
    store._script = redis_client.register_script(_SCRIPT + f"\n-- {key_prefix}\n")
    assert (await redis_client.script_exists(store._script.sha)) == [False]
    results = await (await store.send_batches([plan_partition_batch(1, _messages(10), T0, emit=False),
                                               plan_partition_batch(2, _messages(3), T0, emit=False)]))
    assert [(r.partition, r.applied, r.skipped_offsets) for r in results] == [(1, 10, 0), (2, 3, 0)]
    assert await redis_client.get(PartitionKeys(key_prefix, 1).applied_offset("send")) == b"9"
    (again,) = await (await store.send_batches([plan_partition_batch(1, _messages(10), T0, emit=False)]))
    assert (again.applied, again.skipped_offsets) == (0, 10)


async def test_send_batch_and_apply_batches_give_the_same_state(redis_client, key_prefix):
    """The two ways of applying reach the same results, device states and counts."""
    one = DeviceStateStore(redis_client, key_prefix + "a", "send", 30 * DAY)
    two = DeviceStateStore(redis_client, key_prefix + "b", "send", 30 * DAY)
    msgs = _messages(60)  # both prefixes extend key_prefix: its fixture deletes their keys too
    for chunk in (msgs[:25], msgs[25:]):
        (a,) = await (await one.send_batches([plan_partition_batch(2, chunk, T0, emit=True)]))
        (b,) = await two.apply_batches([plan_partition_batch(2, chunk, T0, emit=True)])
        assert a == b
    for i in range(7):
        assert await one.device(2, 3, f"dev-{i}") == await two.device(2, 3, f"dev-{i}")
    counts = [await redis_client.hgetall(PartitionKeys(p, 2).device_counts(3)) for p in (key_prefix + "a", key_prefix + "b")]
    assert counts[0] == counts[1] and counts[0]
