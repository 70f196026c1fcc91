"""`pbseg tail`: a topic's records as a downstream consumer sees them, filtered by account."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import orjson
from aiokafka import AIOKafkaProducer

from local_servers import free_port
from waiting import wait_for


def tail_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli.main", "tail", *args]


async def tail(env: dict, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(subprocess.run, tail_cmd(*args), env=env, capture_output=True, text=True,
                                   timeout=60)


async def produce(bootstrap: str, topic: str, items: list[tuple[int, bytes | None, bytes]]) -> None:
    """(partition, key, value) in order, each acknowledged before the next is sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition, key, value in items:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


def trigger(account: int, n: int) -> bytes:
    return orjson.dumps({"schema": "task-trigger.v1", "fire_id": f"f{account}-{n}", "trigger_id": 1,
                         "trigger_version": 1, "account_id": account, "install_id": f"i{n}",
                         "cause_event_id": f"e{n}", "due_at": 1_000 + n, "fired_at": 2_000 + n})


def lines(stdout: str) -> list[dict]:
    return [orjson.loads(line) for line in stdout.splitlines()]


async def test_from_beginning_prints_exactly_one_accounts_records_in_order(infra, service_env, topic_factory):
    """--from-beginning --account 7 --max K on a short name: account 7's K records, in offset
    order, read from a partition other than 0; a non-JSON record keyed `7:` is printed raw."""
    topic = await topic_factory("task-triggers", 3)
    items: list[tuple[int, bytes | None, bytes]] = []
    for n in range(5):
        items.append((1, f"7:i{n}".encode(), trigger(7, n)))
        items.append((n % 3, f"8:i{n}".encode(), trigger(8, n)))
    items.append((1, b"7:broken", b"not json \xff"))
    items.append((1, b"8:i9", trigger(8, 9)))
    items.append((1, b"7:i9", trigger(7, 9)))  # past --max: never printed
    await produce(infra.kafka, topic, items)

    env = dict(service_env, PBSEG_TOPIC_TASK_TRIGGERS=topic)
    done = await tail(env, "task-triggers", "--from-beginning", "--account", "7", "--max", "6")

    assert done.returncode == 0, done.stderr
    printed = lines(done.stdout)
    assert printed[:5] == [orjson.loads(trigger(7, n)) for n in range(5)]
    assert printed[5] == {"partition": 1, "offset": 7, "raw": "not json \\xff"}
    assert len(printed) == 6


async def test_rejected_filter_uses_account_id_and_stops_after_quiet_seconds(infra, service_env, topic_factory):
    """`rejected` reads PBSEG_TOPIC_REJECTED; a rejection of an unknown account (null) matches no
    account; --timeout-s ends the run once nothing more arrives."""
    topic = await topic_factory("rejected", 2)

    def rejection(account: int | None, reason: str) -> bytes:
        return orjson.dumps({"schema": "rejected-postback.v1", "stage": "ingress", "reason": reason,
                             "message": reason, "account_id": account, "raw": "id=x", "at": 1})
    await produce(infra.kafka, topic, [(0, b"3", rejection(3, "a")), (0, None, rejection(None, "b")),
                                       (1, b"4", rejection(4, "c")), (0, b"3", rejection(3, "d"))])

    done = await tail(dict(service_env, PBSEG_TOPIC_REJECTED=topic), "rejected", "--from-beginning",
                      "--account", "3", "--timeout-s", "2")

    assert done.returncode == 0, done.stderr
    assert [r["reason"] for r in lines(done.stdout)] == ["a", "d"]


async def test_default_starts_at_the_end_with_meta_and_ctrl_c_exits_0(infra, service_env, topic_factory):
    """Without --from-beginning only records produced after the start are printed; --with-meta
    gives topic, partition, offset, timestamp, key and the value; Ctrl-C ends it with status 0."""
    topic = await topic_factory("device-events", 2)
    await produce(infra.kafka, topic, [(0, b"5:old", orjson.dumps({"account_id": 5, "n": "old"}))])
    proc = subprocess.Popen(tail_cmd(topic, "--with-meta"), env=service_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first_line = asyncio.ensure_future(asyncio.to_thread(proc.stdout.readline))
        sent = 0

        async def printed_one():
            # The tail says nothing once it is positioned: keep producing until it prints.
            nonlocal sent
            if not first_line.done() and proc.poll() is None:
                await produce(infra.kafka, topic, [(1, b"5:new", orjson.dumps({"account_id": 5, "n": sent}))])
                sent += 1
            return first_line.done() or proc.poll() is not None
        await wait_for(printed_one, timeout=30, interval=0.1, message="pbseg tail to print a new record")
        line = await first_line
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.to_thread(proc.communicate, timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    assert proc.returncode == 0, err
    assert "Traceback" not in err
    record = orjson.loads(line)
    assert record["value"]["n"] != "old" and record["value"]["account_id"] == 5
    assert (record["topic"], record["partition"], record["key"]) == (topic, 1, "5:new")
    assert record["offset"] == record["value"]["n"]  # partition 1 holds only the new records
    assert record["timestamp"] > 0


async def test_unknown_topic_exits_2_naming_it_and_the_short_names(service_env, unique):
    """A topic the broker does not have: exit 2, one line naming it and the short names."""
    done = await tail(service_env, f"no-such-topic-{unique}")

    assert done.returncode == 2
    assert done.stdout == ""
    [message] = done.stderr.splitlines()
    assert f"no-such-topic-{unique}" in message
    assert all(short in message for short in ("device-events", "task-triggers", "rejected", "postbacks"))


async def test_unreachable_kafka_exits_1_saying_how_to_start_it(service_env):
    """No broker at KAFKA_BOOTSTRAP_SERVERS: exit 1 within ~10 s, saying `make up` or set it."""
    bootstrap = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = await tail(dict(service_env, KAFKA_BOOTSTRAP_SERVERS=bootstrap), "device-events")

    assert done.returncode == 1
    assert bootstrap in done.stderr and "make up" in done.stderr and "KAFKA_BOOTSTRAP_SERVERS" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 15
