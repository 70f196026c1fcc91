"""The ingress's HTTP server as a real process against the real broker:
pipelined postbacks on one connection are answered in order and are all on the topic, and
SIGTERM under load stops gracefully (every 2xx is on the topic, the process exits 0)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid

import httpx
import orjson

from services.common.catalog import CatalogStore
from services.common.catalog_ids import MemoryIdLog
from services.common.topics import ensure_topics
from services.devstack.procs import pid_of, start_process, stop_process, wait_until
from test_ingress_postbacks import free_port, ingress_ready, read_topic
from waiting import wait_for  # tests/waiting.py


def exited(pid: int) -> bool:
    """Gone, or a zombie (this test process started it and has not reaped it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def reply_bodies(data: bytes) -> list[bytes]:
    bodies = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        bodies.append(rest[:length])
        data = rest[length:]
    return bodies


async def _start(infra, tag: str):
    port = free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=infra.kafka, REDIS_URL=infra.redis_url,
               PBSEG_KEY_PREFIX=f"tn{tag}", PBSEG_TOPIC_POSTBACKS=f"postbacks-{tag}",
               PBSEG_TOPIC_REJECTED=f"rejected-{tag}", INGRESS_BIND=f"127.0.0.1:{port}")
    await ensure_topics(infra.kafka, {env["PBSEG_TOPIC_POSTBACKS"]: 4, env["PBSEG_TOPIC_REJECTED"]: 1})
    from services.common.redis_conn import async_redis

    redis = async_redis(infra.redis_url)
    account, _ = await CatalogStore(redis, env["PBSEG_KEY_PREFIX"], MemoryIdLog()).create_account("native", 0)
    await redis.aclose()
    name = f"test-{tag}-ingress-native"
    url = f"http://127.0.0.1:{port}"
    start_process(name, [sys.executable, "-m", "services.ingress"], env=env)
    await asyncio.to_thread(wait_until, name, lambda: ingress_ready(url), 60)
    return name, port, env["PBSEG_TOPIC_POSTBACKS"], account


async def test_pipelined_postbacks_are_answered_in_order_and_all_on_the_topic(infra):
    name, port, topic, account = await _start(infra, uuid.uuid4().hex[:10])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 200
        writer.write(b"".join(f"GET /api/postback/?id=dev-{i % 7}&status=reg_{account}&seq={i} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
                              for i in range(n)))
        await writer.drain()
        data = b""
        while data.count(b"HTTP/1.1 200 OK") < n:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            assert chunk, f"connection closed after {data.count(b'HTTP/1.1 ')} replies"
            data += chunk
        writer.close()
        event_ids = [orjson.loads(body)["event_id"] for body in reply_bodies(data)]
        assert len(event_ids) == n
    finally:
        await asyncio.to_thread(stop_process, name, 10)
    records = await read_topic(infra.kafka, topic, n)
    by_event = {orjson.loads(m.value)["event_id"]: m for m in records}
    assert set(by_event) == set(event_ids)
    # Replies came in request order, and each device's records are in that order on its partition.
    for device in range(7):
        mine = [m for m in records if m.key == f"{account}:dev-{device}".encode()]
        assert [orjson.loads(m.value)["event_id"] for m in sorted(mine, key=lambda m: m.offset)] == \
            [e for i, e in enumerate(event_ids) if i % 7 == device]


async def test_sigterm_under_load_answers_what_it_read_and_loses_nothing(infra):
    name, port, topic, account = await _start(infra, uuid.uuid4().hex[:10])
    pid = pid_of(name)
    accepted: list[str] = []
    other: list[int] = []

    async def sender(client: httpx.AsyncClient, worker: int) -> None:
        for i in range(10_000):
            try:
                reply = await client.get(f"http://127.0.0.1:{port}/api/postback/", params=dict(id=f"d{worker}", status=f"reg_{account}"))
            except httpx.HTTPError:
                return  # the server stopped accepting or closed the connection: done
            if reply.status_code == 200:
                accepted.append(reply.json()["event_id"])
            else:
                other.append(reply.status_code)

    try:
        async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=16)) as client:
            senders = [asyncio.create_task(sender(client, w)) for w in range(16)]
            # SIGTERM while requests are in flight: once the senders are well under way.
            await wait_for(lambda: len(accepted) >= 100, timeout=10, message="100 postbacks accepted before SIGTERM")
            os.killpg(pid, signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*senders), 15)
        await wait_for(lambda: exited(pid), timeout=15, interval=0.1, message="the ingress to exit after SIGTERM")
    finally:
        await asyncio.to_thread(stop_process, name, 5)
    assert other == [] or set(other) <= {503}
    on_topic = {orjson.loads(m.value)["event_id"] for m in await read_topic(infra.kafka, topic, len(accepted))}
    assert set(accepted) <= on_topic, f"{len(set(accepted) - on_topic)} accepted postbacks are not on the topic"
