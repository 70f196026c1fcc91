"""The ingress as a real process against the real broker and Redis: records on the topic with
the right key and schema, rejections on the rejected topic, the postback secret, catalog
changes within 1 s, and the HTTP limits enforced by the server."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import uuid

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from services.common.catalog import CatalogStore
from services.common.catalog_ids import MemoryIdLog
from services.common.models import PostbackRecord, RejectedPostbackRecord
from services.common.topics import ensure_topics
from services.devstack.procs import start_process, stop_process, wait_until
from waiting import wait_for  # tests/waiting.py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ingress_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def read_topic(bootstrap: str, topic: str, count: int, timeout_s: float = 10.0) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    records = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records


class Ingress:
    def __init__(self, url: str, env: dict[str, str], store: CatalogStore, bootstrap: str):
        self.url, self.env, self.store, self.bootstrap = url, env, store, bootstrap
        self.topic, self.rejected_topic = env["PBSEG_TOPIC_POSTBACKS"], env["PBSEG_TOPIC_REJECTED"]

    async def get(self, client: httpx.AsyncClient, **params) -> httpx.Response:
        return await client.get(f"{self.url}/api/postback/", params=params)

    async def catalog_caught_up(self) -> None:
        """Wait until the ingress serves the catalog version now in Redis (it polls every 0.25 s)."""
        wanted = await self.store.version()
        async with httpx.AsyncClient(timeout=2) as client:
            async def caught_up() -> bool:
                version = (await client.get(f"{self.url}/readyz")).json()["catalog_version"]
                return version is not None and version >= wanted
            await wait_for(caught_up, timeout=5, message=f"the ingress to load catalog version {wanted}")


@pytest.fixture(scope="module")
async def ingress(infra):
    from services.common.redis_conn import async_redis

    tag = uuid.uuid4().hex[:10]
    port = free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=infra.kafka, REDIS_URL=infra.redis_url,
               PBSEG_KEY_PREFIX=f"ti{tag}", PBSEG_TOPIC_POSTBACKS=f"postbacks-{tag}",
               PBSEG_TOPIC_REJECTED=f"rejected-{tag}", INGRESS_BIND=f"127.0.0.1:{port}",
               INGRESS_HEADER_READ_TIMEOUT_S="1", INGRESS_BODY_READ_TIMEOUT_S="1")
    await ensure_topics(infra.kafka, {env["PBSEG_TOPIC_POSTBACKS"]: 4, env["PBSEG_TOPIC_REJECTED"]: 2})
    name = f"test-{tag}-ingress"
    url = f"http://127.0.0.1:{port}"
    redis = async_redis(infra.redis_url)
    start_process(name, [sys.executable, "-m", "services.ingress"], env=env)
    try:
        await asyncio.to_thread(wait_until, name, lambda: ingress_ready(url), 60)
        yield Ingress(url, env, CatalogStore(redis, env["PBSEG_KEY_PREFIX"], MemoryIdLog()), infra.kafka)
    finally:
        await asyncio.to_thread(stop_process, name, 10)
        await redis.aclose()


async def test_accepted_postbacks_are_on_the_topic_with_key_and_schema(ingress):
    account, _ = await ingress.store.create_account("acme", 0)
    await ingress.store.create_event(account, "First open", "first_open", 0)
    await ingress.catalog_caught_up()
    sent = [dict(id="dev-1", status=f"first_open_{account}"),
            dict(id="dev-2", status=f"dep_{account}", amount="9.99", currency="eur", tid="tx-1", ts="1700000000"),
            dict(id="dev/3", status=f"reg_{account}", utm="ignored")]
    async with httpx.AsyncClient(timeout=5) as client:
        replies = [await ingress.get(client, **params) for params in sent]
        post = await client.post(f"{ingress.url}/api/postback/", params=dict(id="dev-4", status=f"install_{account}"),
                                 content=b"anything")
    assert [r.status_code for r in replies] == [200, 200, 200] and post.status_code == 200, [r.text for r in replies]
    event_ids = [r.json()["event_id"] for r in (*replies, post)]
    records = [m for m in await read_topic(ingress.bootstrap, ingress.topic, 4)
               if orjson.loads(m.value)["account_id"] == account]
    by_id = {PostbackRecord.model_validate_json(m.value).event_id: m for m in records}
    assert set(by_id) == set(event_ids)
    dep = PostbackRecord.model_validate_json(by_id[event_ids[1]].value)
    assert (dep.amount, dep.currency, dep.tid, dep.occurred_at) == ("9.99", "EUR", "tx-1", 1_700_000_000_000)
    assert by_id[event_ids[0]].key == f"{account}:dev-1".encode()
    assert by_id[event_ids[2]].key == f"{account}:dev/3".encode()


async def test_unknown_and_inactive_events_are_rejected_onto_the_rejected_topic(ingress):
    account, _ = await ingress.store.create_account("acme", 0)
    event_id = await ingress.store.create_event(account, "Old", "old_thing", 0)
    await ingress.store.set_event_status(account, event_id, 0, 0)
    await ingress.catalog_caught_up()
    async with httpx.AsyncClient(timeout=5) as client:
        unknown = await ingress.get(client, id="d", status=f"nope_{account}")
        inactive = await ingress.get(client, id="d", status=f"old_thing_{account}")
        malformed = await ingress.get(client, id="d", status="garbage")
        derived = await ingress.get(client, id="d", status=f"dep_2_{account}")
        currency = await ingress.get(client, id="d", status=f"dep_{account}", currency="USDT")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_event")
    assert (derived.status_code, derived.json()["error"]) == (422, "derived_event")
    assert "numbers deposits itself" in derived.json()["message"] and f"status=dep_{account}" in derived.json()["message"]
    assert (currency.status_code, currency.json()["error"]) == (422, "invalid_currency")
    assert (inactive.status_code, inactive.json()["error"]) == (422, "event_inactive")
    assert (malformed.status_code, malformed.json()["error"]) == (400, "invalid_status")
    assert all(set(r.json()) == {"error", "message"} for r in (unknown, inactive, malformed, derived, currency))
    rejected = [RejectedPostbackRecord.model_validate_json(m.value)
                for m in await read_topic(ingress.bootstrap, ingress.rejected_topic, 5)]
    mine = {(r.reason, r.account_id) for r in rejected if r.account_id == account or "garbage" in r.raw or "USDT" in r.raw}
    assert {("unknown_event", account), ("event_inactive", account), ("invalid_status", None),
            ("derived_event", account), ("invalid_currency", None)} <= mine
    # nothing of these reached the postbacks topic
    assert not [m for m in await read_topic(ingress.bootstrap, ingress.topic, 10**6, timeout_s=1.5)
                if orjson.loads(m.value)["account_id"] == account]


async def test_postback_secret_is_enforced(ingress):
    account, _ = await ingress.store.create_account("locked", 0)
    await ingress.store.set_secret(account, "s3cret-abc")
    await ingress.catalog_caught_up()
    async with httpx.AsyncClient(timeout=5) as client:
        missing = await ingress.get(client, id="d", status=f"reg_{account}")
        wrong = await ingress.get(client, id="d", status=f"reg_{account}", key="s3cret-abd")
        right = await ingress.get(client, id="d", status=f"reg_{account}", key="s3cret-abc")
    assert (missing.status_code, missing.json()["error"]) == (403, "missing_key")
    assert (wrong.status_code, wrong.json()["error"]) == (403, "wrong_key")
    assert right.status_code == 200


async def test_catalog_change_is_picked_up_within_one_second(ingress):
    account, _ = await ingress.store.create_account("fresh", 0)
    await ingress.catalog_caught_up()
    async with httpx.AsyncClient(timeout=5) as client:
        async def answers(status: int) -> bool:
            return (await ingress.get(client, id="d", status=f"level_up_{account}")).status_code == status

        assert await answers(404)
        event_id = await ingress.store.create_event(account, "Level up", "level_up", 0)
        await wait_for(lambda: answers(200), timeout=1.0, interval=0.02, message="the new event accepted within 1 s")
        await ingress.store.set_event_status(account, event_id, 0, 0)
        await wait_for(lambda: answers(422), timeout=1.0, interval=0.02, message="the deactivation visible within 1 s")


async def test_server_limits(ingress):
    async with httpx.AsyncClient(timeout=5) as client:
        too_long = await client.get(f"{ingress.url}/api/postback/?id=d&status=reg_1&pad={'x' * 5000}")
        assert (too_long.status_code, too_long.json()["error"]) == (414, "query_too_long")
        huge_header = await client.get(f"{ingress.url}/healthz", headers={"x-big": "y" * 40_000})
        assert huge_header.status_code // 100 == 4
        body = await client.post(f"{ingress.url}/api/postback/?id=d&status=reg_1", content=b"z" * 70_000)
        assert (body.status_code, body.json()["error"]) == (413, "body_too_large")
        assert (await client.get(f"{ingress.url}/healthz")).status_code == 200
        metrics = (await client.get(f"{ingress.url}/metrics")).text
        assert 'pbseg_ingress_requests_total{outcome="rejected",reason="query_too_long"}' in metrics
        assert "pbseg_ingress_produce_seconds_bucket" in metrics and "pbseg_ingress_in_flight" in metrics
    # A request line without an HTTP version (HTTP/0.9 style): 400, closed, never processed.
    reader, writer = await asyncio.open_connection("127.0.0.1", int(ingress.url.rsplit(":", 1)[1]))
    writer.write(b"GET /api/postback/?id=d&status=reg_1\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=10)
    assert data.startswith(b"HTTP/1.1 400 ") and b"malformed_request" in data
    writer.close()
    # A client that never finishes its headers is cut off (header read timeout, 1 s here).
    reader, writer = await asyncio.open_connection("127.0.0.1", int(ingress.url.rsplit(":", 1)[1]))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), timeout=10)
    assert time.monotonic() - started < 5 and b" 200 " not in data
    writer.close()
