"""Catalog ids survive Redis losing its last writes (issue 11, item 5): an id handed to a caller
is never handed out again, the lost entities are found from the id log, and restored.

The loss is made exact: every catalog key is DUMPed, more accounts and events are created, then
the catalog keys are put back as they were (what a restart from an AOF that missed the last
second, or a failover to a lagging replica, leaves)."""

from __future__ import annotations

import time

import httpx
import pytest

from services.common.catalog import CatalogStore
from services.common.catalog_check import lost_entities, restore
from services.common.catalog_ids import IdLogUnavailable, KafkaIdLog
from services.common.keys import CatalogKeys
from services.common.topics import TopicSpec
from services.domain.catalog_ids import ACCOUNT, EVENT


async def snapshot(redis, prefix: str) -> dict[bytes, bytes]:
    return {k: await redis.dump(k) async for k in redis.scan_iter(match=CatalogKeys(prefix).tag + "*")}


async def roll_back(redis, prefix: str, kept: dict[bytes, bytes]) -> None:
    now = [k async for k in redis.scan_iter(match=CatalogKeys(prefix).tag + "*")]
    if now:
        await redis.delete(*now)
    for key, value in kept.items():
        await redis.restore(key, 0, value)


@pytest.fixture
async def catalog(infra, redis_client, key_prefix, unique, delete_own_topics):
    ids = KafkaIdLog(infra.kafka, f"catalog-ids-{unique}", TopicSpec(3, {"retention.ms": "-1"}), timeout_s=20)
    yield CatalogStore(redis_client, key_prefix, ids)
    await ids.close()


async def test_ids_lost_by_redis_are_not_handed_out_again_and_are_restored(catalog, redis_client, key_prefix):
    """After the rollback, a new account and a new event get fresh ids (not the lost ones); `check` lists
    exactly the lost account and event; `--restore` brings both back, the lost account's API key works
    again, and a second check finds nothing. A deleted event is not taken for lost."""
    kept_account, _ = await catalog.create_account("kept", 1)
    gone = await catalog.create_event(kept_account, "Gone", "gone", 2)
    await catalog.delete_event(kept_account, gone, 3)
    kept = await snapshot(redis_client, key_prefix)

    lost_account, lost_key = await catalog.create_account("lost", 4)
    lost_event = await catalog.create_event(kept_account, "Trial", "trial", 5)
    await roll_back(redis_client, key_prefix, kept)
    assert await catalog.get_account(lost_account) is None and await catalog.custom_event(kept_account, lost_event) is None

    new_account, _ = await catalog.create_account("new", 6)
    new_event = await catalog.create_event(kept_account, "Promo", "promo", 7)
    assert new_account > lost_account and new_event > lost_event  # never reused

    lost = await lost_entities(catalog)
    assert [(e.kind, e.id) for e in lost] == [(ACCOUNT, lost_account), (EVENT, lost_event)]
    assert lost[0].entity["name"] == "lost" and lost[1].entity["code"] == "trial"
    for entity in lost:
        await restore(catalog, entity)
    assert await catalog.account_for_api_key(lost_key) == lost_account
    assert (await catalog.custom_event(kept_account, lost_event)).code == "trial"
    assert await lost_entities(catalog) == []
    # the restored ids stay taken: the next allocations are above all of them
    assert (await catalog.create_account("after", 8))[0] > new_account


async def test_a_catalog_older_than_its_log_is_skipped_past(catalog, redis_client, key_prefix):
    """A catalog that holds ids the log never allocated (created before the log, or the topic was
    recreated): allocation moves past them instead of handing one out twice."""
    keys = CatalogKeys(key_prefix)
    await redis_client.set(keys.account_seq, 30)
    await redis_client.set(keys.event_seq, 20)  # event ids up to 100 + 20
    account, _ = await catalog.create_account("a", 1)
    assert account == 31
    assert await catalog.create_event(account, "E", "e", 2) == 121
    assert (await catalog.create_account("b", 3))[0] == 32


async def test_a_catalog_write_without_kafka_is_refused_in_bounded_time(redis_client, key_prefix):
    """No broker at the address: create_account raises IdLogUnavailable within the timeout and stores nothing."""
    from local_servers import free_port
    ids = KafkaIdLog(f"127.0.0.1:{free_port()}", "catalog-ids-none", TopicSpec(3), timeout_s=1.5)
    store = CatalogStore(redis_client, key_prefix, ids)
    started = time.monotonic()
    with pytest.raises(IdLogUnavailable):
        await store.create_account("x", 1)
    assert time.monotonic() - started < 5
    assert await store.list_accounts() == []
    await ids.close()


async def test_the_query_api_answers_503_when_the_id_log_is_down(infra, redis_client, key_prefix):
    """POST /api/b/v2/events with Kafka unreachable: 503 unavailable with Retry-After, no event stored."""
    from local_servers import free_port
    from query_fixtures import make_settings
    from services.common.catalog_ids import MemoryIdLog
    from services.query.bootstrap import create_app

    _, api_key = await CatalogStore(redis_client, key_prefix, MemoryIdLog()).create_account("t", 1)
    settings = make_settings(key_prefix, infra.redis_url).model_copy(
        update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}", "catalog_id_timeout_s": 1.0})
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://query") as client:
        started = time.monotonic()
        r = await client.post("/api/b/v2/events", json={"name": "Promo", "code": "promo"},
                              headers={"Authorization": f"Bearer {api_key}"})
        assert r.status_code == 503 and r.headers["Retry-After"] and r.json()["error"] == "unavailable"
        assert time.monotonic() - started < 5
        r = await client.get("/api/b/v2/events", headers={"Authorization": f"Bearer {api_key}"})
        assert r.status_code == 200 and all(e["code"] != "promo" for e in r.json()["events"])
