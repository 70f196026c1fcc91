"""Fixtures for the query service's integration tests: the real app in-process (httpx ASGI
transport) against the real Redis, under the test's own key prefix (whose keys the key_prefix
fixture deletes on teardown)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from services.common.catalog import CatalogStore
from services.common.catalog_ids import MemoryIdLog
from services.common.clock import FixedClock
from services.query.api import build_api
from services.query.devices import DeviceLookup
from services.query.rejected import RejectedLog
from services.query.segments import SegmentIndex
from services.query.settings import QuerySettings
from synthetic import write_devices

PARTITIONS = 4
# Short, so a test can watch what a failed segment script left behind expire.
SCRATCH_TTL_MS = 300


@dataclass
class Tenant:
    account_id: int
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass
class QueryHarness:
    app: object
    client: httpx.AsyncClient
    catalog: CatalogStore
    settings: QuerySettings
    redis: object

    async def tenant(self, name: str = "t") -> Tenant:
        account_id, key = await self.catalog.create_account(name, 1_700_000_000_000)
        return Tenant(account_id, key)

    async def devices(self, tenant: Tenant, devices: dict[str, dict[str, int]]) -> None:
        await write_devices(self.redis, self.settings.key_prefix, PARTITIONS, tenant.account_id, devices)

    async def call(self, tenant: Tenant | None, method: str, url: str, **kw) -> httpx.Response:
        headers = kw.pop("headers", {}) | (tenant.headers if tenant else {})
        return await self.client.request(method, url, headers=headers, **kw)


def make_settings(key_prefix: str, redis_url: str) -> QuerySettings:
    return QuerySettings.model_validate({
        "REDIS_URL": redis_url, "PBSEG_KEY_PREFIX": key_prefix, "PBSEG_POSTBACKS_PARTITIONS": PARTITIONS,
        "QUERY_POSTBACK_BASE_URL": "https://pb.example.com", "QUERY_REJECTED_FEED": False,
    })


@pytest.fixture
async def query(infra, key_prefix, redis_client):
    settings = make_settings(key_prefix, infra.redis_url)
    catalog = CatalogStore(redis_client, key_prefix, MemoryIdLog())
    app = build_api(settings, catalog, SegmentIndex(redis_client, key_prefix, PARTITIONS, scratch_ttl_ms=SCRATCH_TTL_MS),
                    DeviceLookup(redis_client, key_prefix, PARTITIONS),
                    RejectedLog(redis_client, key_prefix, "rejected-test", 1000, 86_400_000),
                    registry=CollectorRegistry(), clock=FixedClock())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://query") as client:
        yield QueryHarness(app, client, catalog, settings, redis_client)


def ndjson(body: bytes) -> list[dict]:
    return [orjson.loads(line) for line in body.splitlines() if line]
