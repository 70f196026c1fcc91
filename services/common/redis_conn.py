"""Redis connections with a clear start-up error when the server is not there."""

from __future__ import annotations

import redis.asyncio as aioredis


def async_redis(url: str, **kwargs) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_connect_timeout=2, health_check_interval=30, **kwargs)


async def check_redis(client: aioredis.Redis, url: str) -> None:
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure is reported the same way
        raise SystemExit(
            f"cannot reach Redis at {url} ({exc}). Start it with `make up`, or set REDIS_URL to a running server."
        ) from exc
