"""schemathesis against the OpenAPI document of a running query service: no input yields a 5xx.

The service runs as a real process (uvicorn) against the real Redis under the test's own
prefix, with an account, custom events and devices, so generated requests reach real data.
Bounded: a fixed number of examples per operation and a time budget."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from query_fixtures import PARTITIONS
from waiting import wait_for

from services.common.catalog import CatalogStore
from services.common.catalog_ids import MemoryIdLog
from synthetic import write_devices

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_no_generated_request_gets_a_5xx(infra, key_prefix, redis_client, tmp_path, seed):
    catalog = CatalogStore(redis_client, key_prefix, MemoryIdLog())
    account_id, api_key = await catalog.create_account("fuzz", 1)
    for code in ("promo", "buy"):
        await catalog.create_event(account_id, code, code, 1)
    await write_devices(redis_client, key_prefix, PARTITIONS, account_id,
                        {f"d{i}": {"reg": 1, "dep": i % 3, "promo": i % 2} for i in range(300)})
    port = free_port()
    env = dict(os.environ, REDIS_URL=infra.redis_url, KAFKA_BOOTSTRAP_SERVERS=infra.kafka, PBSEG_KEY_PREFIX=key_prefix,
               PBSEG_POSTBACKS_PARTITIONS=str(PARTITIONS), QUERY_REJECTED_FEED="false", PBSEG_LOG_LEVEL="warning")
    server = subprocess.Popen([str(BIN / "uvicorn"), "services.query.bootstrap:create_app", "--factory", "--host", "127.0.0.1",
                               "--port", str(port), "--no-access-log", "--log-level", "warning"],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "wb"))
    try:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                urllib.request.urlopen(f"{base}/readyz", timeout=1)
                return True
            except OSError:
                return False
        await wait_for(ready, timeout=30, interval=0.1, message="the query service's /readyz")
        run = await asyncio.to_thread(subprocess.run, [
            str(BIN / "schemathesis"), "run", f"{base}/openapi.json", "--checks", "not_a_server_error",
            "-H", f"Authorization: Bearer {api_key}", "--max-examples", "15", "--max-time", "30",
            "--seed", str(seed), "--exclude-path", "/metrics", "--no-color",
            "--report", "junit", "--report-dir", str(tmp_path)], capture_output=True, text=True, env=env, timeout=150)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        report = next(tmp_path.glob("junit-*.xml")).read_text()
        assert 'failures="0"' in report and 'errors="0"' in report, report
        for op in ("POST /api/b/v2/segments/count", "POST /api/b/v2/segments/devices", "PUT /api/b/v2/events/{event_id}",
                   "GET /api/b/v2/devices/{install_id}", "POST /api/b/v2/segments/export"):
            assert f'name="{op}"' in report, f"{op} was not exercised"
    finally:
        server.terminate()  # its keys go on the key_prefix fixture's teardown, after it stopped
        server.wait(10)
