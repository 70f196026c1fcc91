"""Event-triggered tasks against real Kafka and Redis (issue 14): the ground truth.

Random devices and postbacks (seeded) against six triggers whose filters use codes, windows,
counts and deposit sums; `first` versus `every`; repeated tids (not occurrences); deposits that
arrive during the delay (the filter flips: cancelled); a trigger deactivated and one whose filter
changes while fires are pending; backdated causes due in the past (fired at once) or later than
the maximum lateness (skipped); postbacks received before the triggers existed (no backfill).
The processor is SIGKILLed twice while fires fall due. Afterwards the task-triggers topic,
deduplicated by fire_id, equals the reference exactly (none missing, none extra, each with the
right version, duplicates byte-identical), and every trigger's stats equal the reference's."""

from __future__ import annotations

import asyncio
import random
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from query_fixtures import query  # noqa: F401 - the fixture
from reference_book import Reference
from services.common.keys import PartitionKeys
from services.common.models import PostbackRecord, TaskTriggerRecord
from services.domain.conditions import Occurrence, all_hold, amount_units, parse_conditions
from services.domain.filters import SegmentFilter, selects
from services.domain.triggers import fire_id
from test_processor_crash import Worker, free_port
from test_processor_pipeline import read_all
from test_processor_rollback import restore, snapshot
from waiting import wait_for

T = "/api/b/v2/triggers"
PARTITIONS = 4
HOUR = 3_600_000
SPREAD_MS = 3000
MAX_LATENESS_S = 6 * 3600
# name, on, occurrence, delay (s), filter v1, filter v2 (set while fires are pending) or None
TRIGGERS = [
    ("reminder", "reg", "first", 5, {"event_exclude": ["dep"]}, None),
    ("window", "open", "every", 6, {"conditions": [{"event": "reg", "occurred": True, "within": {"last": "1h"}}]}, None),
    ("counted", "lvl", "first", 5, {"conditions": [{"event": "open", "count": {"gte": 2}}]}, None),
    ("money", "dep", "every", 5, {"conditions": [{"deposit_sum": {"currency": "USD", "gte": "10"}}]}, None),
    ("switched off", "open", "first", 7, {}, None),
    ("edited", "lvl", "every", 6, {"event_exclude": ["open"]}, {"event_include": ["open"]}),
]
DEACTIVATED = "switched off"


def record(rng: random.Random, i: int, account: int, install: str, event: str, now: int, *, tid=None,
           occurred_at=None, amount=None, currency=None) -> PostbackRecord:
    return PostbackRecord(event_id=f"{now:012x}{i:020x}", account_id=account, install_id=install, event=event,
                          occurred_at=occurred_at if occurred_at is not None else now, received_at=now, tid=tid,
                          amount=amount, currency=currency)


def phase_one(rng: random.Random, account: int, now: int, start: int) -> list[PostbackRecord]:
    """~250 devices' postbacks, all received now (event time = now unless backdated)."""
    out, i = [], start
    for d in range(250):
        install = f"d{d:04d}"
        events = ["reg"] * (rng.random() < 0.8) + ["open"] * rng.randrange(4) + ["lvl"] * rng.randrange(3)
        events += ["dep"] * (rng.random() < 0.35) * rng.randrange(1, 3)
        rng.shuffle(events)
        for code in events:
            i += 1
            amount, currency = (rng.choice(("5", "7.5", "12")), rng.choice(("USD", "EUR"))) if code == "dep" else (None, None)
            tid = f"x{i}" if rng.random() < 0.3 else None
            at = now - rng.randrange(SPREAD_MS)  # event times spread: fires fall due over SPREAD_MS
            out.append(record(rng, i, account, install, code, now, tid=tid, amount=amount, currency=currency,
                              occurred_at=at))
            if tid and rng.random() < 0.5:  # the same transaction again: not an occurrence
                i += 1
                out.append(record(rng, i, account, install, code, now, tid=tid, amount=amount, currency=currency,
                                  occurred_at=at))
    for d in range(30):  # reg long ago: due an hour ago (fired at once) or 10 h ago (skipped: too late)
        i += 1
        back = HOUR if d < 20 else 10 * HOUR
        out.append(record(rng, i, account, f"b{d:03d}", "reg", now, occurred_at=now - back))
    return out


def expected(records: list[PostbackRecord], before: list[PostbackRecord], triggers: dict[str, dict]) -> dict:
    """The reference: per trigger, the fires (fire_id -> version), cancelled and skipped counts."""
    ref = Reference(30 * 86_400_000)
    for r in before:
        ref.apply(r)
    causes_from = len(ref.published)
    for r in records:
        ref.apply(r)
    occurrences: dict[str, list[Occurrence]] = {}
    amounts = {r.event_id: r for r in records}
    for e in ref.published:
        src = amounts.get(e.event_id)
        units = amount_units(src.amount) if src is not None and src.amount and src.currency else None
        occurrences.setdefault(e.install_id, []).append(
            Occurrence(e.event, e.occurred_at, units, src.currency.upper() if units is not None and src.currency else None))
    codes = {install: set(events) for (_, install), events in ref.devices.items()}
    want = {name: {"fires": {}, "cancelled": 0, "skipped_late": 0} for name in triggers}
    for e in ref.published[causes_from:]:
        for name, t in triggers.items():
            if t["on"]["event"] != e.event or (t["on"]["occurrence"] == "first" and not e.first_occurrence):
                continue
            due = e.occurred_at + t["delay_ms"]
            received = amounts[e.event_id.split(":")[0]].received_at
            if received - due > MAX_LATENESS_S * 1000:
                want[name]["skipped_late"] += 1
                continue
            if name == DEACTIVATED:
                want[name]["cancelled"] += 1
                continue
            body = t["final_filter"]
            f = SegmentFilter(tuple(body.get("event_include", ())), tuple(body.get("event_exclude", ())),
                              body.get("include_match", "all"))
            holds = selects(f, codes[e.install_id]) and all_hold(
                parse_conditions(body.get("conditions", []), int(time.time() * 1000)), occurrences[e.install_id])
            if holds:
                want[name]["fires"][fire_id(t["id"], e.event_id)] = t["final_version"]
            else:
                want[name]["cancelled"] += 1
    return want


async def produce(producer: AIOKafkaProducer, topic: str, records: list[PostbackRecord]) -> None:
    futures = [await producer.send(topic, r.model_dump_json(by_alias=True).encode(),
                                   key=f"{r.account_id}:{r.install_id}".encode()) for r in records]
    await asyncio.gather(*futures)


@pytest.mark.seed(1414)
@pytest.mark.parametrize("second_worker", [False, True], ids=["one-worker", "two-workers"])
async def test_fires_equal_the_reference_through_sigkills_and_a_rollback(second_worker, query, service_env, infra,
                                                                         redis_client, key_prefix, topic_factory,
                                                                         tmp_path, seed):
    """With a second worker in the group, every kill and restart also moves partitions (and
    their timers and outboxes) between the two. After the fires settled, Redis' partition state
    is rolled back to a copy taken at the first kill (mid-firing) and the worker restarted: the
    log's ticks decide the same fires again, published byte-identical."""
    rng = random.Random(seed)
    env = dict(service_env)
    topic = await topic_factory("postbacks", PARTITIONS)
    fires_topic = await topic_factory("task-triggers", PARTITIONS)
    env.update({"PBSEG_TOPIC_POSTBACKS": topic, "PBSEG_TOPIC_REJECTED": await topic_factory("rejected", 2),
                "PBSEG_TOPIC_DEVICE_EVENTS": await topic_factory("device-events", PARTITIONS),
                "PBSEG_TOPIC_TASK_TRIGGERS": fires_topic, "PROCESSOR_WEB_PORT": str(free_port()),
                "PROCESSOR_DATADIR": str(tmp_path / "faust"), "PBSEG_LOG_LEVEL": "warning",
                "PROCESSOR_TRIGGER_MAX_LATENESS_S": str(MAX_LATENESS_S)})
    tenant = await query.tenant()
    for code in ("open", "lvl"):
        await query.catalog.create_event(tenant.account_id, code, code, 1_700_000_000_000)
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    worker = Worker(env, tmp_path / "worker.log")
    steady = Worker(dict(env, PROCESSOR_WEB_PORT=str(free_port()), PROCESSOR_DATADIR=str(tmp_path / "faust2")),
                    tmp_path / "steady.log")
    try:
        worker.start()
        if second_worker:
            steady.start()
        now = int(time.time() * 1000)
        before = [record(rng, i, tenant.account_id, f"d{i:04d}", "reg", now) for i in range(30)]
        await produce(producer, topic, before)  # received before any trigger exists: never scheduled
        await wait_for(lambda: _applied(redis_client, key_prefix, topic, len(before)), timeout=60,
                       message="the postbacks before the triggers applied")

        triggers: dict[str, dict] = {}
        for name, on, occurrence, delay, filter_v1, _ in TRIGGERS:
            resp = await query.call(tenant, "POST", T, json={"name": name, "on": {"event": on, "occurrence": occurrence},
                                                             "delay": f"{delay}s", "filter": filter_v1})
            assert resp.status_code == 201, resp.text
            triggers[name] = resp.json() | {"final_filter": filter_v1, "final_version": 1}

        now = int(time.time() * 1000)
        records = phase_one(rng, tenant.account_id, now, 1000)
        await produce(producer, topic, records)
        # while the fires are pending: one trigger off, another's filter changed
        off = await query.call(tenant, "POST", f"{T}/{triggers[DEACTIVATED]['id']}/deactivate")
        assert off.status_code == 200 and off.json()["active"] is False
        for name, *_, filter_v2 in TRIGGERS:
            if filter_v2 is not None:
                changed = await query.call(tenant, "PATCH", f"{T}/{triggers[name]['id']}", json={"filter": filter_v2})
                assert changed.status_code == 200, changed.text
                triggers[name] |= {"final_filter": filter_v2, "final_version": changed.json()["version"]}
        settled = int(time.time() * 1000)
        earliest_due = now - SPREAD_MS + min(t[3] for t in TRIGGERS) * 1000
        assert settled < earliest_due - 1000, "the set-up took too long: the fires' premise (all before due) broke"

        want = expected(records, before, triggers)
        total = sum(len(w["fires"]) + w["cancelled"] + w["skipped_late"] for w in want.values())

        async def decided() -> int:
            n = 0
            for t in triggers.values():
                stats = (await query.call(tenant, "GET", f"{T}/{t['id']}/stats")).json()
                n += stats["fired"] + stats["cancelled"] + stats["skipped_late"]
            return n

        # SIGKILLs while the fires fall due (2-7 s after `now`), each followed by a restart; the
        # state at the first kill is kept for the rollback below
        at_kills, copy = [], None
        for k in range(2):
            await asyncio.sleep(max(0.0, now + rng.uniform(3000, 5000) - time.time() * 1000) / 1000)
            worker.kill()
            at_kills.append(await decided())
            if k == 0 and not second_worker:
                copy = await snapshot(redis_client, key_prefix)  # nothing writes: the worker is dead
            worker.start()
        print(f"decided at the kills: {at_kills} of {total}")
        assert 0 < at_kills[0] < total, "the first kill did not land while fires fell due"

        async def settled_stats():
            for name, t in triggers.items():
                stats = (await query.call(tenant, "GET", f"{T}/{t['id']}/stats")).json()
                w = want[name]
                if stats != {"pending": 0, "fired": len(w["fires"]), "cancelled": w["cancelled"],
                             "skipped_late": w["skipped_late"]}:
                    return False
            return True
        outboxes = [PartitionKeys(key_prefix, p).outbox for p in range(PARTITIONS)]
        await wait_for(settled_stats, timeout=90, interval=0.25, message="every trigger's stats equal the reference")
        await wait_for(lambda: _drained(redis_client, outboxes), timeout=60, message="the outboxes drained")
        if copy is not None:  # Redis goes back to the first kill's state: the log decides again
            worker.kill()
            await restore(redis_client, key_prefix, copy)
            assert await decided() == at_kills[0]
            worker.start()
            await wait_for(settled_stats, timeout=90, interval=0.25, message="the stats equal the reference again")
            await wait_for(lambda: _drained(redis_client, outboxes), timeout=60, message="the outboxes drained again")

        by_id: dict[str, bytes] = {}
        for message in await read_all(infra.kafka, fires_topic):
            value = message.value
            got = orjson.loads(value)
            TaskTriggerRecord.model_validate_json(value)  # schemas/task-trigger.v1.json
            assert message.key == f"{got['account_id']}:{got['install_id']}".encode()
            assert by_id.setdefault(got["fire_id"], value) == value, got  # a duplicate carries the same bytes
        fired = {fid: orjson.loads(v) for fid, v in by_id.items()}
        for name, t in triggers.items():
            mine = {fid: f["trigger_version"] for fid, f in fired.items() if f["trigger_id"] == t["id"]}
            assert mine == want[name]["fires"], name
        assert sum(len(w["fires"]) for w in want.values()) > 100 and want["reminder"]["cancelled"] > 10
        assert want["reminder"]["skipped_late"] == 10 and want[DEACTIVATED]["cancelled"] > 10
        for f in fired.values():
            assert f["fired_at"] >= f["due_at"] and f["account_id"] == tenant.account_id
        recent = (await query.call(tenant, "GET", f"{T}/{triggers['reminder']['id']}/fires?limit=5")).json()["fires"]
        assert len(recent) == 5 and all(r["fire_id"] in want["reminder"]["fires"] for r in recent)
    finally:
        await producer.stop()
        for w in (worker, steady):
            if w.proc and w.proc.poll() is None:
                w.kill()


async def _applied(redis, prefix: str, topic: str, n: int) -> bool:
    total = 0
    for p in range(PARTITIONS):
        v = await redis.get(PartitionKeys(prefix, p).applied_offset(topic))
        total += int(v) + 1 if v is not None else 0
    return total >= n


async def _drained(redis, outboxes) -> bool:
    return sum([await redis.xlen(k) for k in outboxes]) == 0
