"""Parts 2 and 3, end to end through a real processor subprocess and the shared Kafka: a burst of
fires falling due in the same second, and a steady stream of fires next to other postbacks.

Timing comes from Kafka record timestamps (CreateTime, set by the processor's producer when the
outbox drain appends the record) and the records' due_at / fired_at, read back after the run:
the bench process does not consume while it measures."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer

from harness import ACCOUNT, PARTITIONS, EventIds, ProcessorRun, fire_lateness, log, now_ms, postback_value, tick_stats

EXCLUDE_DEP = {"event_exclude": ["dep"]}
OTHER_EVENTS = ["dep"] * 30 + ["first_open"] * 35 + ["purchase_view"] * 25 + ["install"] * 10


def producer(bootstrap: str, linger_ms: int = 5) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=linger_ms,
                            max_batch_size=1024 * 1024)


async def wait_until(predicate, timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval_s)
    return False


async def settle(run: ProcessorRun, trigger_id: int, expected: int, timeout_s: float) -> dict:
    """Waits until `expected` fires were decided and the outbox is empty (published)."""
    stats = {}

    async def done():
        nonlocal stats
        stats = await run.stats(trigger_id)
        decided = stats.get("f", 0) + stats.get("c", 0) + stats.get("l", 0)
        return (decided >= expected and await run.outbox() == 0) or not run.alive()
    ok = await wait_until(done, timeout_s)
    return {"settled": ok and run.alive(), "stats": stats}


async def burst_part(bootstrap: str, redis_url: str, run_id: str, work, n: int, delay_s: int = 20) -> dict:
    run = ProcessorRun("burst", run_id, bootstrap, redis_url, work)
    try:
        log("burst: starting the processor ...")
        await run.start()
        trigger_id = await run.create_trigger("burst", "reg", f"{delay_s}s", EXCLUDE_DEP)
        await asyncio.sleep(0.01)
        occurred = now_ms()
        due = occurred + delay_s * 1000
        log(f"burst: producing {n:,} reg postbacks on new devices, all with occurred_at {occurred} (due {due}) ...")
        ids, prod = EventIds(11), producer(bootstrap, 50)
        await prod.start()
        t0 = time.perf_counter()
        try:
            futures = []
            for i in range(n):
                install = f"b{i:015x}"
                futures.append(await prod.send(run.topics["postbacks"], postback_value(
                    ids.new(occurred), install, "reg", occurred, now_ms()), key=f"{ACCOUNT}:{install}".encode()))
                if len(futures) >= 20_000:
                    await asyncio.gather(*futures)
                    futures = []
            await asyncio.gather(*futures)
        finally:
            await prod.stop()
        produce_s = time.perf_counter() - t0

        async def applied():
            return await run.applied() >= n
        await wait_until(applied, max(due - now_ms(), 0) / 1000 + 120, 0.05)
        applied_at = now_ms()
        await wait_until(lambda: _empty(run), max(due - now_ms(), 0) / 1000 + 120, 0.05)
        drained_at = now_ms()
        log(f"  produced in {produce_s:.1f} s; applied {applied_at - occurred} ms and device-events published "
            f"{drained_at - occurred} ms after the event time (due at +{delay_s * 1000} ms)")
        await asyncio.sleep(max(due - now_ms() - 1000, 0) / 1000)
        cpu0 = await run.cpu()  # from 1 s before the due time: the drain's CPU, whenever the tick lands
        result = await settle(run, trigger_id, n, 300)
        settled_at = now_ms()
        cpu1 = await run.cpu()
        run.stop()
        log(f"  settled {settled_at - due} ms after due: {result['stats']}; reading the fires and ticks back ...")
        fires = fire_lateness(await run.read_topic("task_triggers"))
        ticks = tick_stats(await run.read_topic("postbacks"))
        span_ms = max(fires["last_ts"] - due, 1)
        log(f"  {fires['fires']:,} fires, last one {span_ms} ms after due: {fires['fires'] / span_ms * 1000:,.0f} fires/s")
        log("burst: the baseline, a bare aiokafka producer sending the same number of records of the same size ...")
        bare = await bare_producer(bootstrap, run.topics["task_triggers"], n, *fires["sample"])
        log(f"  send_batch: {bare['batch_rate']:,.0f} records/s; send() per record: {bare['send_rate']:,.0f} records/s")
        return {"n": n, "delay_s": delay_s, "produce_rate": n / produce_s, "applied_ms": applied_at - occurred,
                "drained_ms": drained_at - occurred, "due_ms": delay_s * 1000, **result, **fires, "span_ms": span_ms,
                "rate": fires["fires"] / span_ms * 1000, "settled_after_ms": settled_at - due, **ticks,
                "worker_cpu_s": cpu1[0] - cpu0[0], "redis_cpu_s": cpu1[1] - cpu0[1], "script_calls": cpu1[2] - cpu0[2],
                "script_s": (cpu1[3] - cpu0[3]) / 1e6, "bare": bare}
    finally:
        await run.cleanup()


async def _empty(run: ProcessorRun) -> bool:
    return await run.outbox() == 0


async def bare_producer(bootstrap: str, topic: str, n: int, key: bytes, value: bytes) -> dict:
    """The Kafka floor: `n` records of the fire record's size to the same topic, with the processor's
    producer settings (acks=all, idempotent, linger 5 ms, 512 KiB batches): once as the outbox
    sends (explicit batches per partition, send_batch), once with send() per record."""
    out = {"record_bytes": len(key) + len(value)}
    for mode in ("batch", "send"):
        prod = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                                max_batch_size=512 * 1024)
        await prod.start()
        try:
            started = time.perf_counter()
            futures = []
            if mode == "batch":
                per = n // PARTITIONS
                for p in range(PARTITIONS):
                    batch = prod.create_batch()
                    for _ in range(per + (p < n % PARTITIONS)):
                        if batch.append(key=key, value=value, timestamp=None) is None:
                            futures.append(await prod.send_batch(batch, topic, partition=p))
                            batch = prod.create_batch()
                            batch.append(key=key, value=value, timestamp=None)
                    futures.append(await prod.send_batch(batch, topic, partition=p))
            else:
                for _ in range(n):
                    futures.append(await prod.send(topic, value, key=key))
            await asyncio.gather(*futures)
            out[f"{mode}_rate"] = n / (time.perf_counter() - started)
        finally:
            await prod.stop()
    return out


async def steady_part(bootstrap: str, redis_url: str, run_id: str, work, seconds: float, rate: int, load: int,
                      delay_s: int = 5) -> dict:
    run = ProcessorRun("steady", run_id, bootstrap, redis_url, work)
    try:
        log("steady: starting the processor ...")
        await run.start()
        trigger_id = await run.create_trigger("steady", "reg", f"{delay_s}s", EXCLUDE_DEP)
        await asyncio.sleep(0.01)
        log(f"steady: {rate:,} reg/s (due {delay_s} s after their event time) + {load:,} other postbacks/s "
            f"for {seconds:g} s ...")
        prod = producer(bootstrap, 5)
        await prod.start()
        ids, topic = EventIds(13), run.topics["postbacks"]
        regs = others = 0
        futures = []
        cpu0 = await run.cpu()
        started, first_ms = time.monotonic(), now_ms()
        try:
            while (elapsed := time.monotonic() - started) < seconds:
                now = now_ms()
                for _ in range(int(elapsed * rate) - regs):
                    install = f"s{regs:015x}"
                    futures.append(await prod.send(topic, postback_value(ids.new(now), install, "reg", now, now),
                                                   key=f"{ACCOUNT}:{install}".encode()))
                    regs += 1
                for _ in range(int(elapsed * load) - others):
                    install = f"o{(others * 2654435761) % 200_000:015x}"
                    event = OTHER_EVENTS[others % len(OTHER_EVENTS)]
                    futures.append(await prod.send(topic, postback_value(ids.new(now), install, event, now, now),
                                                   key=f"{ACCOUNT}:{install}".encode()))
                    others += 1
                if len(futures) > 5000:
                    await asyncio.gather(*futures)
                    futures = []
                await asyncio.sleep(0.01)
            await asyncio.gather(*futures)
            sent_for = time.monotonic() - started
        finally:
            await prod.stop()
        cpu1 = await run.cpu()
        log(f"  sent {regs:,} reg + {others:,} others in {sent_for:.1f} s; waiting for the last fires ...")
        result = await settle(run, trigger_id, regs, delay_s + 120)
        settled_at = now_ms()
        run.stop()
        fires = fire_lateness(await run.read_topic("task_triggers"))
        ticks = tick_stats(await run.read_topic("postbacks"))
        late = fires["late"]
        log(f"  {fires['fires']:,} fires: lateness p50 {late and late[len(late) // 2]} ms")
        return {"seconds": sent_for, "rate": rate, "load": load, "delay_s": delay_s, "regs": regs, "others": others,
                "reg_rate": regs / sent_for, "other_rate": others / sent_for, **result, **fires, **ticks,
                "tick_window_s": max(fires["last_ts"] - first_ms - delay_s * 1000, 1) / 1000,
                "worker_cpu": (cpu1[0] - cpu0[0]) / sent_for, "redis_cpu": (cpu1[1] - cpu0[1]) / sent_for,
                "script_calls": cpu1[2] - cpu0[2], "script_share": (cpu1[3] - cpu0[3]) / 1e6 / sent_for}
    finally:
        await run.cleanup()
