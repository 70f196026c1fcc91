"""Redis connections with a clear start-up error when the server is not there."""

from __future__ import annotations

import redis.asyncio as aioredis


def async_redis(url: str, *, socket_connect_timeout: float = 2, **kwargs) -> aioredis.Redis:
    """A client for `url`; other keyword arguments go to redis-py (e.g. `socket_timeout`, `retry`:
    the query service bounds every call by them, services/query/bootstrap.py)."""
    return aioredis.Redis.from_url(url, socket_connect_timeout=socket_connect_timeout, health_check_interval=30, **kwargs)


# The processor's apply script uses SET ... NX GET (Redis >= 7.0), and every service reads what it writes.
MIN_REDIS_VERSION = (7, 0)


def version_tuple(text: str) -> tuple[int, ...]:
    """"7.0.15" -> (7, 0, 15); parts that are not numbers count as 0."""
    return tuple(int(p) if p.isdigit() else 0 for p in text.split("."))


async def check_redis(client: aioredis.Redis, url: str) -> None:
    try:
        await client.ping()
        version = str((await client.info("server")).get("redis_version", "0"))
    except Exception as exc:  # noqa: BLE001 - any failure is reported the same way
        raise SystemExit(
            f"cannot reach Redis at {url} ({exc}). Start it with `make up`, or set REDIS_URL to a running server."
        ) from exc
    if version_tuple(version) < MIN_REDIS_VERSION:
        raise SystemExit(
            f"Redis at {url} is version {version}; postback segments needs Redis >= "
            f"{'.'.join(map(str, MIN_REDIS_VERSION))} (the processor's apply script uses SET ... NX GET). "
            "Upgrade it, or point REDIS_URL at a newer server (`make up` starts one)."
        )
