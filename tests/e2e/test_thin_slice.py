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
