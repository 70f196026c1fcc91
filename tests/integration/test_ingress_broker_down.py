"""Kafka gone -> 503 with Retry-After, never a 2xx; every 2xx given is on the topic.

Runs its own throwaway broker (never the shared one): first it is frozen (SIGSTOP, a hung
broker), then, after it was thawed and the records were counted, killed outright.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
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
from services.common.redis_conn import async_redis
from services.common.topics import ensure_topics
from services.devstack.infra import start_kafka
from services.devstack.procs import RUN_DIR, pid_of, start_process, stop_process, wait_until


def free_port_pair() -> int:
    """A port p with p+1 free too (the throwaway broker's controller listens on p+1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


def ready(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code
    except httpx.HTTPError:
        return 0


async def count_on_topic(bootstrap: str, topic: str, event_ids: set[str], timeout_s: float = 15) -> set[str]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + timeout_s
        while not event_ids <= seen and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                seen.update(orjson.loads(m.value)["event_id"] for m in messages)
    finally:
        await consumer.stop()
    return seen


@pytest.fixture
async def throwaway_broker():
    port = free_port_pair()
    name = f"kafka-ingress-test-{uuid.uuid4().hex[:8]}"
    bootstrap = f"127.0.0.1:{port}"
    try:
        await asyncio.to_thread(start_kafka, bootstrap, name, lambda *a: None, "256m")
        yield name, bootstrap
    finally:
        pid = pid_of(name)
        if pid:
            try:
                os.killpg(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        await asyncio.to_thread(stop_process, name, 5)
        shutil.rmtree(RUN_DIR / "data" / name, ignore_errors=True)
        (RUN_DIR / f"{name}.properties").unlink(missing_ok=True)


async def _fire(client: httpx.AsyncClient, url: str, account: int, n: int, tag: str) -> list[tuple[int, dict, float]]:
    async def one(i: int):
        started = time.monotonic()
        resp = await client.get(f"{url}/api/postback/", params={"id": f"{tag}-{i}", "status": f"reg_{account}"})
        return resp.status_code, resp.json() | {"retry-after": resp.headers.get("retry-after")}, time.monotonic() - started
    return await asyncio.gather(*(one(i) for i in range(n)))


async def test_broker_down_gives_503_and_never_a_2xx(infra, throwaway_broker):
    broker_name, bootstrap = throwaway_broker
    tag = uuid.uuid4().hex[:10]
    topic = f"postbacks-{tag}"
    await ensure_topics(bootstrap, {topic: 2, f"rejected-{tag}": 1})
    redis = async_redis(infra.redis_url)
    store = CatalogStore(redis, f"tb{tag}", MemoryIdLog())
    account, _ = await store.create_account("down", 0)
    port = free_port_pair()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, REDIS_URL=infra.redis_url, PBSEG_KEY_PREFIX=f"tb{tag}",
               PBSEG_TOPIC_POSTBACKS=topic, PBSEG_TOPIC_REJECTED=f"rejected-{tag}", INGRESS_BIND=f"127.0.0.1:{port}",
               INGRESS_KAFKA_PROBE_S="0.5")
    name = f"test-{tag}-ingress"
    start_process(name, [sys.executable, "-m", "services.ingress"], env=env)
    try:
        await asyncio.to_thread(wait_until, name, lambda: ready(url) == 200, 60)
        broker_pid = pid_of(broker_name)
        async with httpx.AsyncClient(timeout=10) as client:
            before = await _fire(client, url, account, 20, "up")
            assert {status for status, _, _ in before} == {200}

            os.killpg(broker_pid, signal.SIGSTOP)  # a hung broker
            frozen = await _fire(client, url, account, 30, "frozen")
            assert {status for status, _, _ in frozen} == {503}
            assert all(body["error"] == "kafka_unavailable" and body["retry-after"] for _, body, _ in frozen)
            assert max(elapsed for _, _, elapsed in frozen) < 4.0  # bounded by the 2 s produce timeout
            assert ready(url) == 503

            os.killpg(broker_pid, signal.SIGCONT)
            accepted = {body["event_id"] for status, body, _ in before}
            seen = await count_on_topic(bootstrap, topic, accepted)
            assert accepted <= seen, "a postback answered 2xx is missing from the topic"

            stop_process(broker_name, timeout=0.5)  # now gone for good (SIGKILL if slow)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                dead = await _fire(client, url, account, 10, "dead")
                if {status for status, _, _ in dead} == {503}:
                    break
            assert {status for status, _, _ in dead} == {503}
            assert all(elapsed < 4.0 for _, _, elapsed in dead)
    finally:
        await asyncio.to_thread(stop_process, name, 10)
        await redis.aclose()
