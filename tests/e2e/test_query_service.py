"""End to end: accounts CLI, events API -> ingress, postbacks -> processor -> query answers,
rejected postbacks back in the query API. Real processes, real Kafka and Redis."""

from __future__ import annotations

import json

import httpx
from waiting import wait_for

from services.common.keys import PartitionKeys
from services.common.redis_conn import async_redis
from services.query.devices import partition_of


async def test_events_postbacks_segments_devices_and_rejections(running_stack):
    stack = running_stack
    account = json.loads(stack.pbseg("accounts", "create", "--name", "e2e-query"))
    acct, key = account["account_id"], account["api_key"]
    secret = json.loads(stack.pbseg("accounts", "set-secret", "--account", str(acct), "--secret", "e2e-secret-1"))["secret"]
    h = {"Authorization": f"Bearer {key}"}
    q, ing = stack.query_url, stack.ingress_url
    async with httpx.AsyncClient(timeout=10) as c:
        event_id = (await c.post(f"{q}/api/b/v2/events", json={"name": "Promo", "code": "promo"}, headers=h)).json()["id"]

        def send(install, code, with_key=True):
            params = {"id": install, "status": f"{code}_{acct}"} | ({"key": secret} if with_key else {})
            return c.get(f"{ing}/api/postback/", params=params)

        # The new event reaches the ingress (it polls the catalog version).
        async def accepted():
            return (await send("dev-1", "promo")).status_code == 200
        await wait_for(accepted, timeout=60, interval=0.1, message="the new event to reach the ingress")
        for install, code in [("dev-1", "reg"), ("dev-1", "dep"), ("dev-1", "dep"), ("dev-2", "reg"), ("dev-3", "dep")]:
            assert (await send(install, code)).status_code == 200

        async def counted():
            r = await c.post(f"{q}/api/b/v2/segments/count", json={"event_include": ["reg", "dep"]}, headers=h)
            return r.json()["count"] == 1 and (await c.get(f"{q}/api/b/v2/devices/dev-3", headers=h)).status_code == 200
        await wait_for(counted, timeout=60, interval=0.1, message="the processor to apply the postbacks")
        body = {"event_include": ["reg"], "event_exclude": ["dep_2"]}
        assert (await c.post(f"{q}/api/b/v2/segments/count", json=body, headers=h)).json()["count"] == 1
        page = (await c.post(f"{q}/api/b/v2/segments/devices", json=body, headers=h)).json()
        assert (page["devices"], page["next_cursor"]) == (["dev-2"], None)
        export = (await c.post(f"{q}/api/b/v2/segments/export", json={}, headers=h)).text.splitlines()
        assert sorted(json.loads(x)["install_id"] for x in export) == ["dev-1", "dev-2", "dev-3"]

        # The processor put the device on the partition the lookup computes first (murmur2 of the key).
        redis = async_redis(stack.env["REDIS_URL"])
        try:
            for install in ("dev-1", "dev-2", "dev-3"):
                home = PartitionKeys(stack.env["PBSEG_KEY_PREFIX"], partition_of(acct, install, 4))
                assert await redis.hexists(home.device_index_of(acct, install), install), install
        finally:
            await redis.aclose()
        device = (await c.get(f"{q}/api/b/v2/devices/dev-1", headers=h)).json()
        assert device["deposit_count"] == 2
        assert {e["code"]: e["occurrences"] for e in device["events"]} == {"install": 1, "reg": 1, "dep": 2, "dep_2": 1, "promo": 1}
        assert all(0 < e["first_at"] <= e["last_at"] for e in device["events"])

        overview = (await c.get(f"{q}/api/b/v2/segments/events", headers=h)).json()["events"]
        assert [(e["code"], e["devices"]) for e in overview] == \
            [("install", 3), ("reg", 2), ("dep", 2), ("dep_2", 1), ("promo", 1)]
        assert overview[-1]["postback_url"].endswith(f"status=promo_{acct}&key={secret}")
        assert overview[3]["postback_url"] is None  # dep_2 is derived: no URL to give a sender
        # The URL as a sender uses it: PushExpress's placeholder filled in, sent to the ingress.
        url = overview[2]["postback_url"]
        assert "id={your installation id}&" in url
        filled = ing + "/api/postback/" + url.split("/api/postback/", 1)[1].replace("{your installation id}", "dev-url")
        assert (await c.get(filled)).status_code == 200
        derived = await send("dev-1", "dep_2")
        assert (derived.status_code, derived.json()["error"]) == (422, "derived_event")

        # Deactivated: the ingress refuses it, and the refusal shows up among the rejected postbacks.
        await c.post(f"{q}/api/b/v2/events/{event_id}/deactivate", headers=h)

        async def refused():
            return (await send("dev-9", "promo")).status_code == 422
        await wait_for(refused, timeout=60, interval=0.1, message="the deactivation to reach the ingress")
        assert (await send("dev-9", "reg", with_key=False)).status_code == 403

        async def listed():
            rows = (await c.get(f"{q}/api/b/v2/postbacks/rejected", headers=h)).json()["rejected"]
            return {r["reason"] for r in rows} >= {"event_inactive", "missing_key", "derived_event"} and rows
        rows = await wait_for(listed, timeout=60, interval=0.1, message="rejected postbacks to reach the query service")
        assert all(r["account_id"] == acct for r in rows)

        # Revoked keys stop working.
        extra = json.loads(stack.pbseg("accounts", "add-key", "--account", str(acct)))
        xh = {"Authorization": f"Bearer {extra['api_key']}"}
        assert (await c.get(f"{q}/api/b/v2/events", headers=xh)).status_code == 200
        stack.pbseg("accounts", "revoke-key", "--account", str(acct), "--key-id", extra["key_id"])
        assert (await c.get(f"{q}/api/b/v2/events", headers=xh)).status_code == 401
        listing = json.loads(stack.pbseg("accounts", "list"))
        mine = next(a for a in listing if a["account_id"] == acct)
        assert mine["has_secret"] and mine["key_ids"] == [key[4:12]]
