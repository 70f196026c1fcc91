"""The walking skeleton: postback in over HTTP, device counted over HTTP."""

import json

import httpx
from waiting import wait_for


async def _count(client: httpx.AsyncClient, url: str, api_key: str, code: str) -> int:
    resp = await client.post(f"{url}/api/b/v2/segments/count", json={"event_include": [code]},
                             headers={"Authorization": f"Bearer {api_key}"})
    assert resp.status_code == 200, resp.text
    return resp.json()["count"]


async def test_postback_is_counted_by_the_query_service(running_stack):
    """A device that sent `reg` twice and another that sent it once count as two devices."""
    account = json.loads(running_stack.pbseg("accounts", "create", "--name", "e2e"))
    api_key, account_id = account["api_key"], account["account_id"]
    async with httpx.AsyncClient(timeout=10) as client:
        assert await _count(client, running_stack.query_url, api_key, "reg") == 0
        for install_id in ("dev-a", "dev-b", "dev-a"):
            resp = await client.get(f"{running_stack.ingress_url}/api/postback/",
                                    params={"id": install_id, "status": f"reg_{account_id}"})
            assert resp.status_code == 200, resp.text
            assert resp.json()["status"] == "accepted"
        async def counted():  # the processor applies asynchronously
            return await _count(client, running_stack.query_url, api_key, "reg") == 2
        await wait_for(counted, timeout=30, interval=0.1, message="two devices counted with reg")
        assert await _count(client, running_stack.query_url, api_key, "reg") == 2
        assert await _count(client, running_stack.query_url, api_key, "install") == 2
        assert await _count(client, running_stack.query_url, api_key, "dep") == 0


async def test_a_count_whose_as_of_is_past_a_2xx_includes_it(running_stack):
    """The freshness promise over HTTP: once a count's `as_of` is at or after the moment the last
    postback got its 2xx, that very answer counts every postback; an idle system's as_of keeps moving."""
    import time

    account = json.loads(running_stack.pbseg("accounts", "create", "--name", "fresh"))
    api_key, account_id = account["api_key"], account["account_id"]
    async with httpx.AsyncClient(timeout=10) as client:
        for i in range(30):
            resp = await client.get(f"{running_stack.ingress_url}/api/postback/",
                                    params={"id": f"dev-{i}", "status": f"reg_{account_id}"})
            assert resp.status_code == 200, resp.text
        answered = int(time.time() * 1000)

        async def fresh_answer():
            resp = await client.post(f"{running_stack.query_url}/api/b/v2/segments/count", json={"event_include": ["reg"]},
                                     headers={"Authorization": f"Bearer {api_key}"})
            body = resp.json()
            return body if body["as_of"] is not None and body["as_of"] >= answered else None
        body = await wait_for(fresh_answer, timeout=30, interval=0.1, message="a count with as_of past the last 2xx")
        assert body["count"] == 30
        later = await wait_for(lambda: _as_of_after(client, running_stack, api_key, body["as_of"]), timeout=10,
                               interval=0.2, message="the as_of to advance while idle")
        assert later > body["as_of"]


async def _as_of_after(client, stack, api_key: str, before: int):
    resp = await client.post(f"{stack.query_url}/api/b/v2/segments/devices", json={"event_include": ["reg"], "limit": 5},
                             headers={"Authorization": f"Bearer {api_key}"})
    as_of = resp.json()["as_of"]
    return as_of if as_of and as_of > before else None
