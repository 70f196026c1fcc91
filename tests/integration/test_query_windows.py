"""Time, count and money conditions against the ground truth, on a real Kafka and Redis: backdated
postbacks over 60 days go through the log and the processor's pipeline; the query API's counts and
device pages for random windows, counts and deposit sums equal the domain's evaluator run over
the raw occurrences (services/domain/conditions.py `all_hold`). The hour precision is checked at
its boundary, and windows whose edges lie at least two hours from every event time agree with
the exact (millisecond) window too."""

from __future__ import annotations

import random
import time

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CollectorRegistry

from query_fixtures import make_settings
from services.common.catalog import CatalogStore
from services.common.catalog_ids import MemoryIdLog
from services.common.clock import FixedClock, SystemClock
from services.common.models import PostbackRecord
from services.domain.conditions import HOUR_MS, amount_units, Occurrence, Window, all_hold, parse_conditions
from services.processor.pipeline import PostbackPipeline
from services.processor.store import DeviceStateStore
from services.query.api import build_api
from services.query.devices import DeviceLookup
from services.query.rejected import RejectedLog
from services.query.segments import SegmentIndex
from test_processor_pipeline import produce
from waiting import wait_for

PARTITIONS = 4
DAY = 24 * HOUR_MS
S = "/api/b/v2/segments"
EVENTS = ("reg", "dep", "promo")
COND_EVENTS = EVENTS + ("install",)  # a device's install occurs with its first postback
AMOUNTS = ("0.0000000001", "1", "9.99", "19.99", "100", "12345678901234567890.1234567890")


class Applied:
    """A real pipeline on its own topics, and the query app over what it applied."""

    def __init__(self, infra, redis, prefix, postbacks, rejected, unique, now):
        self.infra, self.redis, self.prefix, self.postbacks, self.rejected = infra, redis, prefix, postbacks, rejected
        self.unique, self.now = unique, now
        self.store = DeviceStateStore(redis, prefix, postbacks, 30 * DAY)

    async def run(self, records: list[PostbackRecord]) -> None:
        await produce(self.infra.kafka, self.postbacks, [(f"{r.account_id}:{r.install_id}".encode(),
                                                          r.model_dump_json(by_alias=True).encode()) for r in records])
        consumer = AIOKafkaConsumer(bootstrap_servers=self.infra.kafka, group_id=f"g-{self.unique}",
                                    enable_auto_commit=False, auto_offset_reset="none", session_timeout_ms=6000)
        producer = AIOKafkaProducer(bootstrap_servers=self.infra.kafka, acks="all", enable_idempotence=True)
        await consumer.start()
        await producer.start()
        pipeline = PostbackPipeline(consumer, producer, self.store, SystemClock(), self.postbacks, self.rejected, 500)
        pipeline.subscribe()

        async def done():
            await pipeline.poll_once(200)
            return sum(m + 1 for m in (await self.store.watermarks(range(PARTITIONS))).values()) >= len(records)
        try:
            await wait_for(done, timeout=90, interval=0, message=f"{len(records)} records applied")
        finally:
            await consumer.stop()
            await producer.stop()

    def client(self, catalog: CatalogStore) -> httpx.AsyncClient:
        settings = make_settings(self.prefix, self.infra.redis_url)
        app = build_api(settings, catalog, SegmentIndex(self.redis, self.prefix, PARTITIONS, topic=self.postbacks),
                        DeviceLookup(self.redis, self.prefix, PARTITIONS),
                        RejectedLog(self.redis, self.prefix, "rejected-test", 1000, DAY),
                        registry=CollectorRegistry(), clock=FixedClock(self.now))
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://query")


def history(rng: random.Random, account: int, now: int, devices: int) -> tuple[list[PostbackRecord], dict]:
    """Postbacks with event times over the last 60 days, received now (backdated), in random
    order; some repeat a tid (not an occurrence again). Returns them and each device's occurrences."""
    records, occurrences, seen = [], {}, set()
    for d in range(devices):
        install = f"dev-{d}"
        occurrences[install] = []
        for k in range(rng.randrange(1, 9)):
            event = rng.choice(EVENTS)
            at = now - rng.randrange(60 * DAY)
            tid = f"t{rng.randrange(4)}" if rng.random() < 0.3 else None
            amount = currency = None
            if event == "dep" and rng.random() < 0.8:
                amount, currency = rng.choice(AMOUNTS), rng.choice(("USD", "USD", "EUR", None))
            record = PostbackRecord(event_id=f"{install}-{k}", account_id=account, install_id=install, event=event,
                                    occurred_at=at, received_at=now - 1000, tid=tid, amount=amount, currency=currency)
            records.append(record)
            if tid is not None and (install, event, tid) in seen:
                continue  # a repeated tid: the first one counts
            seen.add((install, event, tid)) if tid is not None else None
            units = None if amount is None or currency is None else amount_units(amount)
            if not occurrences[install]:
                occurrences[install].append(Occurrence("install", at))
            occurrences[install].append(Occurrence(event, at, units, currency))
    order = sorted(range(len(records)), key=lambda _: rng.random())
    # a device's records keep their relative order (same partition, same key): only interleaving changes
    by_device: dict[str, list[PostbackRecord]] = {}
    for r in records:
        by_device.setdefault(r.install_id, []).append(r)
    shuffled = [by_device[records[i].install_id].pop(0) for i in order]
    return shuffled, occurrences


def random_body(rng: random.Random, now: int) -> dict:
    conditions = []
    for _ in range(rng.randrange(1, 4)):
        kind = rng.random()
        if kind < 0.55:
            c = {"event": rng.choice(COND_EVENTS), "occurred": rng.random() < 0.65}
            if rng.random() < 0.5:
                c["within"] = {"last": rng.choice((f"{rng.randrange(1, 61)}d", f"{rng.randrange(1, 1440)}h",
                                                   f"{rng.randrange(1, 6000)}m"))}
            else:
                start = now - rng.randrange(2 * HOUR_MS, 61 * DAY)
                c["within"] = {"from": start, "to": min(now, start + rng.randrange(HOUR_MS // 2, 30 * DAY))}
        elif kind < 0.8:
            event = rng.choice(COND_EVENTS)
            bounds = rng.choice(({"gte": rng.randrange(0, 5)}, {"lte": rng.randrange(0, 5)},
                                 {"gte": rng.randrange(1, 3), "lte": rng.randrange(3, 6)}))
            c = {"event": event, "count": bounds}
        else:
            bounds = rng.choice(({"gte": "19.99"}, {"lte": "20"}, {"gte": "1", "lte": "120"}, {"gte": "0.0000000001"},
                                 {"gte": "12345678901234567890"}, {"lte": "0"}))
            c = {"deposit_sum": {"currency": rng.choice(("USD", "eur")), **bounds}}
        conditions.append(c)
    body: dict = {"conditions": conditions}
    if rng.random() < 0.3:
        body["event_include"] = [rng.choice(EVENTS)]
    if rng.random() < 0.2:
        body["event_exclude"] = [rng.choice(EVENTS)]
    return body


def expected(occurrences: dict, body: dict, now: int, exact: bool = False) -> set[str]:
    conditions = parse_conditions(body["conditions"], now)
    out = set()
    for install, occ in occurrences.items():
        have = {"install"} | {o.event for o in occ}
        if not all(c in have for c in body.get("event_include", [])) or any(c in have for c in body.get("event_exclude", [])):
            continue
        if exact:
            ok = all(_exact_holds(c, occ) for c in conditions)
        else:
            ok = all_hold(conditions, occ)
        if ok:
            out.add(install)
    return out


def _exact_holds(condition, occ) -> bool:
    """The condition with its window taken to the millisecond (no hour rounding)."""
    window: Window | None = getattr(condition, "window", None)
    if window is None:
        return all_hold([condition], occ)
    inside = [o for o in occ if o.event == condition.event and window.start <= o.at < window.end]
    return bool(inside) == condition.occurred


def edges_clear(body: dict, occurrences: dict, now: int) -> bool:
    """Every window edge at least two hours from every event time of its event."""
    for raw, c in zip(body["conditions"], parse_conditions(body["conditions"], now)):
        window = getattr(c, "window", None)
        if window is None:
            continue
        times = [o.at for occ in occurrences.values() for o in occ if o.event == c.event]
        if any(abs(t - edge) < 2 * HOUR_MS for t in times for edge in (window.start, window.end)):
            return False
    return True


@pytest.mark.seed(1313)
async def test_windows_counts_and_sums_equal_the_evaluator_over_raw_occurrences(
        infra, redis_client, key_prefix, topic_factory, unique, seed):
    rng = random.Random(seed)
    now = int(time.time() * 1000)  # windowed buckets expire on Redis' clock: the history is real time
    catalog = CatalogStore(redis_client, key_prefix, MemoryIdLog())
    account, api_key = await catalog.create_account("t", now)
    await catalog.create_event(account, "Promo", "promo", now)
    records, occurrences = history(rng, account, now, 160)
    run = Applied(infra, redis_client, key_prefix, await topic_factory("pb", PARTITIONS), await topic_factory("rej", 1),
                  unique, now)
    await run.run(records)
    headers = {"Authorization": f"Bearer {api_key}"}
    clear, sizes = 0, []
    async with run.client(catalog) as client:
        for i in range(60):
            body = random_body(rng, now)
            want = expected(occurrences, body, now)
            sizes.append(len(want))
            r = await client.post(f"{S}/count", json=body, headers=headers)
            assert r.status_code == 200 and r.json()["count"] == len(want), (i, body, r.text)
            page = (await client.post(f"{S}/devices", json={**body, "limit": 1000}, headers=headers)).json()
            assert set(page["devices"]) == want, (i, body)
            for install in rng.sample(sorted(occurrences), 4) if i < 20 else ():  # the device lookup agrees
                v = (await client.post(f"{S}/verdict", json={**body, "install_id": install}, headers=headers)).json()
                assert v["found"] and v["selected"] == (install in want) and bool(v["reasons"]) != v["selected"], (body, v)
            if edges_clear(body, occurrences, now):
                clear += 1
                assert want == expected(occurrences, body, now, exact=True), (i, body)
        assert clear >= 10, "too few windows with clear edges to compare with the exact window"
        # the chart: devices per UTC day from the day buckets, as the occurrences say
        for event in COND_EVENTS:
            r = await client.get(f"{S}/daily", params={"event": event, "days": 61}, headers=headers)
            assert r.status_code == 200, r.text
            got = {d["start"] // DAY: d["devices"] for d in r.json()["days"]}
            assert len(got) == 61 and max(got) == now // DAY
            want = {day: len({i for i, occ in occurrences.items() if any(o.event == event and o.at // DAY == day
                                                                          for o in occ)}) for day in got}
            assert got == want and sum(want.values()) > 0, event
        r = await client.get(f"{S}/daily", params={"event": "nosuch"}, headers=headers)
        assert r.status_code == 422 and r.json()["error"] == "unknown_events"
        assert len(set(sizes)) >= 20 and 0 < sum(sizes), f"the bodies select too little variety: {sizes}"
    print(f"seed={seed}: {len(records)} postbacks, {sum(map(len, occurrences.values()))} occurrences; "
          f"{clear} bodies with edges 2 h clear of every event; devices selected: {sizes}")


async def test_hour_precision_at_its_boundary(infra, redis_client, key_prefix, topic_factory, unique):
    """A window covers the whole hours it touches: an event at the first millisecond of the hour a
    window starts in counts, one a millisecond before that hour does not; likewise at the end."""
    now = (int(time.time() * 1000) // HOUR_MS) * HOUR_MS + 40 * 60_000  # 40 minutes into an hour
    h = now // HOUR_MS * HOUR_MS - 10 * HOUR_MS  # an hour ten hours ago
    catalog = CatalogStore(redis_client, key_prefix, MemoryIdLog())
    account, api_key = await catalog.create_account("t", now)
    # "next-hour": a later hour of today (a clock ahead): a window ending now must not read today's
    # whole day bucket then (the script does when the day's later hours are empty)
    times = {"at-start": h, "before-start": h - 1, "last-ms": h + 2 * HOUR_MS - 1, "after-end": h + 2 * HOUR_MS,
             "next-hour": now + HOUR_MS}
    records = [PostbackRecord(event_id=name, account_id=account, install_id=name, event="reg", occurred_at=at,
                              received_at=now - 1000) for name, at in times.items()]
    run = Applied(infra, redis_client, key_prefix, await topic_factory("pb", PARTITIONS), await topic_factory("rej", 1),
                  unique, now)
    await run.run(records)
    headers = {"Authorization": f"Bearer {api_key}"}
    body = {"conditions": [{"event": "reg", "within": {"from": h + 30 * 60_000, "to": h + HOUR_MS + 1}}]}
    async with run.client(catalog) as client:
        page = (await client.post(f"{S}/devices", json=body, headers=headers)).json()
        assert set(page["devices"]) == {"at-start", "last-ms"}
        # `last` ends now (40 minutes into the hour): the window starting 10 h 40 min ago covers h
        last = {"conditions": [{"event": "reg", "within": {"last": "640m"}}]}
        assert set((await client.post(f"{S}/devices", json=last, headers=headers)).json()["devices"]) == \
            {"at-start", "last-ms", "after-end"}


async def test_a_bucket_turns_from_a_set_into_a_bitmap_once_dense_and_answers_the_same(redis_client, key_prefix, infra):
    """Device sets: a bucket holding more than devset_limit(devices, bucket)
    devices becomes a bitmap (the set deleted), in the batch that crosses the line or any later
    one; a sparse bucket stays a set; windows over both answer what the evaluator says."""
    from services.common.keys import DEVSET_SET_MIN, PartitionKeys, devset_limit
    from services.domain.windows import occurrence_buckets
    from services.processor.planning import plan_partition_batch
    now = int(time.time() * 1000)
    busy, quiet = now - 3 * DAY, now - 5 * DAY
    store = DeviceStateStore(redis_client, key_prefix, "devsets", 30 * DAY)
    recs = [PostbackRecord(event_id=f"e{i}", account_id=1, install_id=f"d{i}", event="reg",
                           occurred_at=busy if i % 20 else quiet, received_at=now, tid=None) for i in range(400)]
    offset = 0
    for chunk in (recs[:40], recs[40:200], recs[200:]):  # the busy day crosses the line in the second batch
        messages = [(offset + k, r.model_dump_json(by_alias=True).encode()) for k, r in enumerate(chunk)]
        offset += len(chunk)
        await store.apply_batches([plan_partition_batch(0, messages, now)])
    keys = PartitionKeys(key_prefix, 0)
    busy_day, quiet_day = occurrence_buckets(busy)[1], occurrence_buckets(quiet)[1]
    assert devset_limit(400, busy_day) == DEVSET_SET_MIN < 380 and devset_limit(10 ** 9, "h1") == 16_384
    assert (devset_limit(1_250_000, "h1"), devset_limit(1_250_000, "d1")) == (4_882, 305)
    assert await redis_client.exists(keys.window_bits(1, "reg", busy_day)) == 1
    assert await redis_client.exists(keys.window_set(1, "reg", busy_day)) == 0
    assert await redis_client.bitcount(keys.window_bits(1, "reg", busy_day)) == 380
    assert await redis_client.scard(keys.window_set(1, "reg", quiet_day)) == 20 <= DEVSET_SET_MIN
    assert await redis_client.exists(keys.window_bits(1, "reg", quiet_day)) == 0
    ttl = await redis_client.ttl(keys.window_bits(1, "reg", busy_day))
    assert 397 * 86_400 <= ttl <= 398 * 86_400  # the end of a day 3 days ago + the 400-day retention
    index = SegmentIndex(redis_client, key_prefix, 1, topic="devsets")
    from services.query.filters import FilterBody
    for last, want in (("4d", 380), ("6d", 400), ("2d", 0)):
        f = FilterBody(conditions=[{"event": "reg", "within": {"last": last}}]).segment_filter(now)
        assert await index.count(1, f) == want, last
        g = FilterBody(conditions=[{"event": "reg", "occurred": False, "within": {"last": last}}]).segment_filter(now)
        assert await index.count(1, g) == 400 - want, last


async def test_a_window_over_many_day_bitmaps_counts_each_device_once(redis_client, key_prefix, infra):
    """More day bitmaps than one BITOP takes (15 at a time, by length): 20 busy days of 80 new
    devices each (bitmaps of growing lengths), and devices seen on several days count once."""
    from services.common.keys import PartitionKeys
    from services.domain.windows import occurrence_buckets
    from services.processor.planning import plan_partition_batch
    from services.query.filters import FilterBody
    now = int(time.time() * 1000)
    store = DeviceStateStore(redis_client, key_prefix, "manydays", 30 * DAY)
    recs = [PostbackRecord(event_id=f"e{d}-{i}", account_id=1, install_id=f"d{d * 80 + i}", event="reg",
                           occurred_at=now - (d + 2) * DAY, received_at=now) for d in range(20) for i in range(80)]
    recs += [PostbackRecord(event_id=f"again{i}", account_id=1, install_id=f"d{i}", event="reg",
                            occurred_at=now - 3 * DAY, received_at=now) for i in range(80)]  # day 0's devices again
    messages = [(o, r.model_dump_json(by_alias=True).encode()) for o, r in enumerate(recs)]
    await store.apply_batches([plan_partition_batch(0, messages, now)])
    keys = PartitionKeys(key_prefix, 0)
    days = [occurrence_buckets(now - (d + 2) * DAY)[1] for d in range(20)]
    assert all([await redis_client.exists(keys.window_bits(1, "reg", b)) for b in days])
    index = SegmentIndex(redis_client, key_prefix, 1, topic="manydays")
    for last, want in (("23d", 1600), ("12d", 880), ("3d", 160), ("2d", 80)):  # day d is d + 2 days ago
        f = FilterBody(conditions=[{"event": "reg", "within": {"last": last}}]).segment_filter(now)
        assert await index.count(1, f) == want, last
