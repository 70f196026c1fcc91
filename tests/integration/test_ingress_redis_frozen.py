"""Redis frozen (SIGSTOP, a private redis-server) under a running ingress: it keeps accepting
postbacks from its last catalog snapshot, every 2xx is on the topic, and a request that must
re-check the catalog (an unknown account) is answered within the Redis timeout, not held."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid

import httpx
import orjson

from services.common.catalog import CatalogStore
from services.common.catalog_ids import MemoryIdLog
from services.common.redis_conn import async_redis
from services.common.topics import ensure_topics
from services.devstack.procs import start_process, stop_process, wait_until
from local_servers import free_port
from test_ingress_postbacks import ingress_ready, read_topic


async def test_a_frozen_redis_does_not_stop_the_ingress(infra, private_redis):
    tag = uuid.uuid4().hex[:10]
    redis_proc, url = private_redis
    name = f"test-{tag}-ingress-frozen"
    try:
        client = async_redis(url)
        account, _ = await CatalogStore(client, f"tf{tag}", MemoryIdLog()).create_account("frozen", 0)
        await client.aclose()
        port = free_port()
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=infra.kafka, REDIS_URL=url, PBSEG_KEY_PREFIX=f"tf{tag}",
                   PBSEG_TOPIC_POSTBACKS=f"postbacks-{tag}", PBSEG_TOPIC_REJECTED=f"rejected-{tag}",
                   INGRESS_BIND=f"127.0.0.1:{port}")
        await ensure_topics(infra.kafka, {env["PBSEG_TOPIC_POSTBACKS"]: 2, env["PBSEG_TOPIC_REJECTED"]: 1})
        base = f"http://127.0.0.1:{port}"
        start_process(name, [sys.executable, "-m", "services.ingress"], env=env)
        await asyncio.to_thread(wait_until, name, lambda: ingress_ready(base), 60)
        redis_proc.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        event_ids = []
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            for i in range(100):
                resp = await http.get("/api/postback/", params={"id": f"dev-{i % 9}", "status": f"reg_{account}"})
                assert resp.status_code == 200, resp.text
                event_ids.append(resp.json()["event_id"])
            started = time.monotonic()
            unknown = await http.get("/api/postback/", params={"id": "x", "status": f"reg_{account + 1}"})
            recheck_s = time.monotonic() - started
        assert unknown.status_code == 404 and recheck_s < 3, (unknown.status_code, recheck_s)
        during = time.monotonic() - frozen
        redis_proc.send_signal(signal.SIGCONT)
        records = await read_topic(infra.kafka, env["PBSEG_TOPIC_POSTBACKS"], 100)
        assert {orjson.loads(m.value)["event_id"] for m in records} == set(event_ids)
        print(f"100 postbacks accepted during the freeze in {during:.1f} s; a catalog re-check answered in {recheck_s:.2f} s")
    finally:
        redis_proc.send_signal(signal.SIGCONT)
        await asyncio.to_thread(stop_process, name, 10)
