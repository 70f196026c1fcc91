"""device-events.v1 unwritable (here: its max.message.bytes below any record batch, so every
send is refused): the worker keeps applying until an outbox holds
PROCESSOR_OUTBOX_MAX_ENTRIES entries, then pauses consumption (metric, one log line) instead of
filling Redis; no crash, nothing lost. Once the topic takes writes again the outboxes drain,
consumption resumes, and every occurrence is published (duplicates byte-identical)."""

from __future__ import annotations

import subprocess
import sys

import httpx
import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.common.models import PostbackRecord
from services.common.topics import ensure_topics
from services.processor.store import DeviceStateStore
from test_processor_pipeline import produce, read_all
from local_servers import free_port
from waiting import wait_for

T0 = 1_764_000_000_000
PARTITIONS = 2
BOUND = 3



def wave(start: int, n: int) -> list[tuple[bytes, bytes]]:
    return [(f"1:d{i % 5}".encode(), PostbackRecord(event_id=f"e{i}", account_id=1, install_id=f"d{i % 5}", event="reg",
                                                  occurred_at=T0 + i, received_at=T0 + i).model_dump_json(by_alias=True).encode())
            for i in range(start, start + n)]


async def metric(port: int, name: str) -> float | None:
    try:
        async with httpx.AsyncClient(timeout=3) as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.HTTPError:
        return None
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")), None)


async def test_an_unwritable_device_events_topic_pauses_consumption_and_loses_nothing(infra, service_env, redis_client,
                                                                                     key_prefix, tmp_path):
    port = free_port()
    env = dict(service_env, PROCESSOR_DATADIR=str(tmp_path / "faust"), PROCESSOR_WEB_PORT=str(port),
               PROCESSOR_OUTBOX_MAX_ENTRIES=str(BOUND), PROCESSOR_FETCH_MIN_BYTES="1")
    events_topic = env["PBSEG_TOPIC_DEVICE_EVENTS"]
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
    await admin.start()
    await admin.create_topics([NewTopic(events_topic, PARTITIONS, 1, topic_configs={"max.message.bytes": "64"})])
    await ensure_topics(infra.kafka, {env["PBSEG_TOPIC_POSTBACKS"]: PARTITIONS, env["PBSEG_TOPIC_REJECTED"]: 1})
    store = DeviceStateStore(redis_client, key_prefix, env["PBSEG_TOPIC_POSTBACKS"], 30 * 86_400_000)
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        worker = subprocess.Popen([sys.executable, "-m", "services.processor", "-l", "warn"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    sent = 0
    try:
        async def applied() -> int:
            return sum(m + 1 for m in (await store.watermarks(range(PARTITIONS))).values())

        async def paused_by_backpressure() -> bool:
            nonlocal sent
            if await metric(port, "pbseg_processor_outbox_full") == 1.0:
                return True
            if await applied() >= sent:  # caught up: one more wave makes one more outbox entry per partition
                await produce(infra.kafka, env["PBSEG_TOPIC_POSTBACKS"], wave(sent, 10))
                sent += 10
            return False
        await wait_for(paused_by_backpressure, timeout=90, interval=0.2, message="consumption paused by a full outbox")
        lengths = await store.outbox_lengths(range(PARTITIONS))
        # bounded: the pipeline looks twice a second, and a poll adds at most one entry per partition
        assert BOUND < max(lengths.values()) <= BOUND + 10, lengths
        await produce(infra.kafka, env["PBSEG_TOPIC_POSTBACKS"], wave(sent, 50))  # these wait in Kafka
        sent += 50
        held = await applied()
        await wait_for(lambda: _stays(applied, held), timeout=5, message="nothing applied while paused")
        assert held < sent and worker.poll() is None
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, events_topic,
                                                  configs={"max.message.bytes": "1048588"})])
        await wait_for(lambda: _at_least(applied(), sent), timeout=120, message="all applied after the topic healed")
        await wait_for(lambda: _drained(store), timeout=120, message="outboxes drained")
        assert worker.poll() is None, "no crash"
    finally:
        worker.terminate()
        worker.wait(30)
        await admin.close()
    by_id: dict[str, bytes] = {}
    for m in await read_all(infra.kafka, events_topic):
        event_id = orjson.loads(m.value)["event_id"]
        assert by_id.setdefault(event_id, m.value) == m.value, event_id
    assert {e for e in by_id if not e.endswith(":install")} == {f"e{i}" for i in range(sent)}
    assert "outbox_full" in log_path.read_text() and "outbox_drained" in log_path.read_text()
    print(f"{sent} postbacks; paused at outbox lengths {lengths}; {len(by_id)} device-events after healing")


async def _stays(read, value) -> bool:
    return await read() == value


async def _at_least(value, want) -> bool:
    return await value >= want


async def _drained(store) -> bool:
    return max((await store.outbox_lengths(range(PARTITIONS))).values()) == 0
