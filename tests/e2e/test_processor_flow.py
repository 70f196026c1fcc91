"""End-to-end through the processor: HTTP postbacks in, Redis state and device-events.v1 out."""

from __future__ import annotations

import json

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from waiting import wait_for

from services.common.models import DeviceEventRecord


async def _count(client: httpx.AsyncClient, url: str, api_key: str, include: list[str], exclude: list[str]) -> int:
    resp = await client.post(f"{url}/api/b/v2/segments/count", json={"event_include": include, "event_exclude": exclude},
                             headers={"Authorization": f"Bearer {api_key}"})
    assert resp.status_code == 200, resp.text
    return resp.json()["count"]


async def _device_events(bootstrap: str, topic: str, expected: int) -> list[DeviceEventRecord]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(4)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[DeviceEventRecord] = []
        for _ in range(100):
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                out += [DeviceEventRecord.model_validate_json(m.value) for m in messages]
            if len({r.event_id for r in out}) >= expected:
                break
        return out
    finally:
        await consumer.stop()


async def test_deposits_through_the_stack_get_ordinals_downstream_and_in_segments(running_stack):
    """dep twice (+ one repeated tid) makes dep_2, not dep_3; downstream sees ordinals 1 and 2."""
    account = json.loads(running_stack.pbseg("accounts", "create", "--name", "e2e-processor"))
    api_key, account_id = account["api_key"], account["account_id"]
    async with httpx.AsyncClient(timeout=10) as client:
        async def account_known():  # the ingress sees a new account within about a second (catalog polling)
            resp = await client.get(f"{running_stack.ingress_url}/api/postback/", params={"id": "p-1", "status": f"reg_{account_id}"})
            return resp if resp.status_code != 404 else None
        resp = await wait_for(account_known, timeout=15, interval=0.1, message="the ingress to know the new account")
        assert resp.status_code == 200, resp.text
        for params in ({"id": "p-1", "status": f"dep_{account_id}", "tid": "order-1", "amount": "5.00"},
                       {"id": "p-1", "status": f"dep_{account_id}", "tid": "order-1", "amount": "5.00"},
                       {"id": "p-1", "status": f"dep_{account_id}", "tid": "order-2"},
                       {"id": "p-2", "status": f"dep_{account_id}"}):
            resp = await client.get(f"{running_stack.ingress_url}/api/postback/", params=params)
            assert resp.status_code == 200, resp.text
        # p-1 and p-2 may live on different partitions, applied in different polls: wait for both.
        async def both_applied():
            counts = (await _count(client, running_stack.query_url, api_key, ["dep_2"], ["dep_3"]),
                      await _count(client, running_stack.query_url, api_key, ["dep"], []))
            return counts if counts == (1, 2) else None
        count, deposited = await wait_for(both_applied, timeout=30, interval=0.1,
                                          message="one device with dep_2 (not dep_3) and two with dep")
        assert count == 1
        assert deposited == 2
        assert await _count(client, running_stack.query_url, api_key, ["install"], ["dep_2"]) == 1

        metrics_url = f"http://127.0.0.1:{running_stack.env['PROCESSOR_WEB_PORT']}"
        assert (await client.get(f"{metrics_url}/readyz")).status_code == 200
        metrics = (await client.get(f"{metrics_url}/metrics")).text
    applied = [line for line in metrics.splitlines() if line.startswith("pbseg_processor_events_applied_total ")]
    assert applied and float(applied[0].split()[1]) >= 4
    assert 'pbseg_processor_duplicates_skipped_total{kind="tid"} 1.0' in metrics

    records = await _device_events(running_stack.env["KAFKA_BOOTSTRAP_SERVERS"],
                                   running_stack.env["PBSEG_TOPIC_DEVICE_EVENTS"], 6)
    by_id = {r.event_id: r for r in records}
    deps = sorted((r.install_id, r.deposit_ordinal, r.tid) for r in by_id.values() if r.event == "dep")
    assert deps == [("p-1", 1, "order-1"), ("p-1", 2, "order-2"), ("p-2", 1, None)]
    assert sorted(r.install_id for r in by_id.values() if r.event == "install") == ["p-1", "p-2"]
    assert sorted(r.event for r in by_id.values() if r.install_id == "p-1") == ["dep", "dep", "install", "reg"]
