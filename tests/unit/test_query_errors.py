"""Redis failures in a request: every kind is 503 `unavailable` with Retry-After, never a 500,
whichever store raises it (the app over stub stores: no network)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry
from redis.exceptions import BusyLoadingError, ConnectionError, NoScriptError, ResponseError, TimeoutError

from services.common.clock import FixedClock
from services.query.api import build_api
from services.query.settings import QuerySettings

ERRORS = [ConnectionError("Error 111 connecting"), TimeoutError("Timeout reading"),
          BusyLoadingError("Redis is loading the dataset in memory"),
          ResponseError("OOM command not allowed when used memory > 'maxmemory'."),
          ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
          NoScriptError("No matching script")]


class Failing:
    """Every store call raises `error` (the catalog's account lookup only when `in_auth`)."""

    def __init__(self, error: Exception, in_auth: bool):
        self.error, self.in_auth, self.redis = error, in_auth, self

    async def account_for_api_key(self, key: str):
        if self.in_auth:
            raise self.error
        return 7

    def __getattr__(self, name):
        async def fail(*args, **kwargs):
            raise self.error
        return fail

    async def walk(self, *args, **kwargs):
        raise self.error
        yield  # an async generator, like SegmentIndex.walk


ROUTES = [("GET", "/api/b/v2/segments/events", None), ("POST", "/api/b/v2/segments/count", {}),
          ("POST", "/api/b/v2/segments/devices", {}), ("POST", "/api/b/v2/segments/export", {}),
          ("GET", "/api/b/v2/devices/d1", None), ("GET", "/api/b/v2/events", None),
          ("GET", "/api/b/v2/postbacks/rejected", None)]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__ + ":" + str(e)[:12])
@pytest.mark.parametrize("in_auth", [True, False], ids=["in auth", "in the route"])
async def test_every_redis_error_is_503_with_retry_after(error, in_auth):
    store = Failing(error, in_auth)
    settings = QuerySettings.model_validate({"QUERY_REJECTED_FEED": False})
    app = build_api(settings, store, store, store, store, registry=CollectorRegistry(), clock=FixedClock())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://q") as client:
        for method, path, body in ROUTES:
            resp = await client.request(method, path, json=body, headers={"Authorization": "Bearer pbs_x"})
            assert resp.status_code == 503, (path, resp.status_code, resp.text)
            assert resp.headers["retry-after"] == "1" and resp.headers["content-type"] == "application/json"
            assert resp.json()["error"] == "unavailable" and type(error).__name__ in resp.json()["message"]
