"""The query service when its Redis misbehaves: a frozen Redis (SIGSTOP) answers 503 with
Retry-After within 2 s on every data route, and the service recovers by itself after SIGCONT.

The Redis here is a private redis-server the test starts on a free port (never the shared one):
the app is built by the real wiring (services/query/bootstrap.py), so the client's timeouts and
retry policy are the production ones.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import redis.asyncio as aioredis
from query_fixtures import make_settings
from waiting import wait_for

from services.common.catalog import CatalogStore
from services.common.catalog_ids import MemoryIdLog
from services.query.bootstrap import create_app
from synthetic import write_devices

S = "/api/b/v2/segments"
BOUND_S = 2.0



async def test_a_frozen_redis_is_503_with_retry_after_within_2_s_then_200_again(private_redis, key_prefix):
    """SIGSTOP: count, devices, overview and device lookup each answer 503 `unavailable` with
    Retry-After within 2 s (measured and printed); after SIGCONT all answer 200 again."""
    proc, url = private_redis
    seed = aioredis.Redis.from_url(url)
    try:
        account_id, api_key = await CatalogStore(seed, key_prefix, MemoryIdLog()).create_account("frozen", 1)
        await write_devices(seed, key_prefix, 4, account_id, {f"d{i}": {"reg": 1, "dep": i % 3} for i in range(50)})
    finally:
        await seed.aclose()
    app = create_app(make_settings(key_prefix, url))
    headers = {"Authorization": f"Bearer {api_key}"}
    calls = {
        "count": ("POST", f"{S}/count", {"event_include": ["reg"]}),
        "devices": ("POST", f"{S}/devices", {"event_include": ["dep"], "limit": 10}),
        "overview": ("GET", f"{S}/events", None),
        "device lookup": ("GET", "/api/b/v2/devices/d7", None),
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://q", timeout=30) as client:
        async def call(name: str) -> httpx.Response:
            method, path, body = calls[name]
            return await client.request(method, path, json=body, headers=headers)

        for name in calls:
            assert (await call(name)).status_code == 200, name
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            took = {}
            for name in calls:
                started = time.monotonic()
                resp = await call(name)
                took[name] = time.monotonic() - started
                assert resp.status_code == 503, (name, resp.status_code, resp.text)
                assert resp.headers["retry-after"] == "1" and resp.json()["error"] == "unavailable", name
                assert resp.json()["message"], name
            print("time to 503 under SIGSTOP: " + ", ".join(f"{n} {s:.2f} s" for n, s in took.items()))
            assert max(took.values()) < BOUND_S, took
            started = time.monotonic()
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and time.monotonic() - started < BOUND_S
        finally:
            os.kill(proc.pid, signal.SIGCONT)

        async def all_ok():
            return all([(await call(name)).status_code == 200 for name in calls])
        started = time.monotonic()
        await wait_for(all_ok, timeout=10, interval=0.05, message="every route to answer 200 after SIGCONT")
        print(f"200 again {time.monotonic() - started:.2f} s after SIGCONT")
        count = (await call("count")).json()
        assert count == {"count": 50, "as_of": None}
    await app.state.catalog.redis.aclose()
