"""Redis misbehaving under a running processor worker (a private redis-server, never the shared
one): frozen (SIGSTOP) and full (maxmemory, noeviction). The worker pauses - /readyz 503 saying
why, one log line, pbseg_processor_paused 1 - and resumes by itself; afterwards every postback is
applied exactly once. Before, a 10 s freeze ended the worker with redis TimeoutError for good."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.common.models import PostbackRecord
from services.common.redis_conn import async_redis
from services.common.topics import ensure_topics
from services.processor.store import DeviceStateStore
from test_processor_pipeline import produce
from local_servers import free_port
from waiting import wait_for

T0 = 1_764_000_000_000
PARTITIONS = 4
DEVICES = 13



def deposits(start: int, n: int) -> list[tuple[bytes, bytes]]:
    return [(f"1:d{i % DEVICES}".encode(), PostbackRecord(
        event_id=f"e{i}", account_id=1, install_id=f"d{i % DEVICES}", event="dep", occurred_at=T0 + i,
        received_at=T0 + i, tid=f"t{i}").model_dump_json(by_alias=True).encode()) for i in range(start, start + n)]


@pytest.fixture
async def worker(infra, service_env, private_redis, tmp_path):
    proc_redis, url = private_redis
    client = async_redis(url)
    env = dict(service_env, REDIS_URL=url, PROCESSOR_DATADIR=str(tmp_path / "faust"), PROCESSOR_REDIS_TIMEOUT_S="3",
               PROCESSOR_WEB_PORT=str(free_port()))
    await ensure_topics(infra.kafka, {env["PBSEG_TOPIC_POSTBACKS"]: PARTITIONS, env["PBSEG_TOPIC_REJECTED"]: 1,
                                      env["PBSEG_TOPIC_DEVICE_EVENTS"]: PARTITIONS})
    log = open(tmp_path / "worker.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "services.processor", "-l", "warn"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    store = DeviceStateStore(client, env["PBSEG_KEY_PREFIX"], env["PBSEG_TOPIC_POSTBACKS"], 30 * 86_400_000)
    yield proc, proc_redis, client, store, env, tmp_path / "worker.log"
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    await client.aclose()


async def applied(store) -> int:
    return sum(m + 1 for m in (await store.watermarks(range(PARTITIONS))).values())


async def readyz(env) -> int:
    try:
        async with httpx.AsyncClient(timeout=3) as http:
            return (await http.get(f"http://127.0.0.1:{env['PROCESSOR_WEB_PORT']}/readyz")).status_code
    except httpx.HTTPError:
        return 0


async def deposit_counts(store) -> dict[str, int]:
    counts = {}
    for d in range(DEVICES):
        for p in range(PARTITIONS):
            found = await store.device(p, 1, f"d{d}")
            if found:
                counts[f"d{d}"] = found[1]["dep"].count
    return counts


def expected_counts(n: int) -> dict[str, int]:
    return {f"d{d}": len(range(d, n, DEVICES)) for d in range(DEVICES)}


async def test_a_frozen_redis_pauses_the_worker_and_it_resumes_by_itself(infra, worker):
    proc, redis_proc, client, store, env, log_path = worker
    await produce(infra.kafka, env["PBSEG_TOPIC_POSTBACKS"], deposits(0, 100))
    await wait_for(lambda: applied(store), timeout=60, message="the first 100 applied")
    await wait_for(lambda: _is(readyz(env), 200), timeout=30, message="/readyz 200")
    redis_proc.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    await produce(infra.kafka, env["PBSEG_TOPIC_POSTBACKS"], deposits(100, 100))  # Kafka still takes them
    await wait_for(lambda: _is(readyz(env), 503), timeout=8, message="/readyz 503 while Redis is frozen")
    detected = time.monotonic() - frozen
    await wait_for(lambda: time.monotonic() - frozen >= 10, timeout=11, interval=0.2, message="a 10 s freeze")
    assert proc.poll() is None, "the worker must survive the freeze"
    redis_proc.send_signal(signal.SIGCONT)
    thawed = time.monotonic()
    await wait_for(lambda: _at_least(applied(store), 200), timeout=60, message="everything applied after SIGCONT")
    recovered = time.monotonic() - thawed
    await wait_for(lambda: _is(readyz(env), 200), timeout=30, message="/readyz 200 again")
    assert await deposit_counts(store) == expected_counts(200)  # nothing lost, nothing doubled
    assert proc.poll() is None
    assert "processor_paused" in Path(log_path).read_text()
    print(f"freeze: /readyz 503 after {detected:.1f} s; all applied {recovered:.1f} s after SIGCONT")


async def test_a_full_redis_pauses_applying_and_resumes_when_memory_is_freed(infra, worker):
    proc, _, client, store, env, log_path = worker
    await produce(infra.kafka, env["PBSEG_TOPIC_POSTBACKS"], deposits(0, 50))
    await wait_for(lambda: _at_least(applied(store), 50), timeout=60, message="the first 50 applied")
    used = int((await client.info("memory"))["used_memory"])
    # full: every write is refused (noeviction). Below what is used, not at it: the worker's reads
    # (the ticker polls every 100 ms) make used_memory move by a few KB, and at the limit exactly a
    # batch could start in a dip.
    await client.config_set("maxmemory", str(max(used - 256 * 1024, 1)))
    keys_before = await client.dbsize()
    await produce(infra.kafka, env["PBSEG_TOPIC_POSTBACKS"], deposits(50, 50))
    await wait_for(lambda: _is(readyz(env), 503), timeout=15, message="/readyz 503 while Redis is full")
    assert await applied(store) == 50 and await client.dbsize() == keys_before  # no half-applied batch (tids)
    assert await deposit_counts(store) == expected_counts(50)  # reads keep working
    await client.config_set("maxmemory", "0")
    await wait_for(lambda: _at_least(applied(store), 100), timeout=60, message="applied once memory is freed")
    assert await deposit_counts(store) == expected_counts(100)
    assert proc.poll() is None and "processor_paused" in Path(log_path).read_text()


async def _is(value, want) -> bool:
    return await value == want


async def _at_least(value, want) -> bool:
    return await value >= want
