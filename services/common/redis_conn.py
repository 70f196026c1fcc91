"""Redis connections with a clear start-up error when the server is not there.

`REDIS_URL` names a single server (`redis://host:port/db`) or a Redis Cluster
(`redis+cluster://host:port[,host:port...]`: any reachable nodes; the client discovers the rest).
Every service takes the same code path on both: the key layout puts each partition's keys under
one hash tag (services/common/keys.py), so every script and transaction stays on one slot, and
what spans partitions (fan-out reads, the processor's batch writes) is grouped per node."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

CLUSTER_SCHEME = "redis+cluster://"


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME)


def cluster_startup_nodes(url: str) -> list[tuple[str, int]]:
    """`redis+cluster://a:7000,b:7001/0` -> [("a", 7000), ("b", 7001)] (a cluster has one database)."""
    body = url[len(CLUSTER_SCHEME):].split("/")[0]
    nodes = []
    for part in filter(None, (p.strip() for p in body.split(","))):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"REDIS_URL {url!r}: {part!r} is not host:port")
        nodes.append((host, int(port)))
    if not nodes:
        raise ValueError(f"REDIS_URL {url!r} names no cluster node (redis+cluster://host:port[,host:port...])")
    return nodes


def is_cluster(client) -> bool:
    return isinstance(client, RedisCluster)


def async_redis(url: str, *, socket_connect_timeout: float = 2, **kwargs) -> aioredis.Redis | RedisCluster:
    """A client for `url` (a single server or, `redis+cluster://`, a cluster); other keyword
    arguments go to redis-py (e.g. `socket_timeout`, `retry`: the query service bounds every call
    by them, services/query/bootstrap.py)."""
    if is_cluster_url(url):
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in cluster_startup_nodes(url)],
                            socket_connect_timeout=socket_connect_timeout, health_check_interval=30, **kwargs)
    return aioredis.Redis.from_url(url, socket_connect_timeout=socket_connect_timeout, health_check_interval=30, **kwargs)


# The processor's apply script uses SET ... NX GET (Redis >= 7.0), and every service reads what it writes.
MIN_REDIS_VERSION = (7, 0)


def version_tuple(text: str) -> tuple[int, ...]:
    """"7.0.15" -> (7, 0, 15); parts that are not numbers count as 0."""
    return tuple(int(p) if p.isdigit() else 0 for p in text.split("."))


async def server_versions(client) -> list[str]:
    """The version of the server, or of every primary of a cluster."""
    if is_cluster(client):
        await client.initialize()
        infos = await client.info("server", target_nodes=RedisCluster.PRIMARIES)
        return [str(info.get("redis_version", "0")) for info in infos.values()]
    await client.ping()
    return [str((await client.info("server")).get("redis_version", "0"))]


async def check_redis(client, url: str) -> None:
    try:
        version = min(await server_versions(client), key=version_tuple)
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


async def run_scripts(client, calls) -> list:
    """Run `calls` ((script, keys, args) each, read-only or idempotent) together: one pipeline on
    a single server (redis-py's pipeline loads a script the server lacks first); on a cluster,
    whose pipelines refuse EVALSHA, concurrently, each routed to the node of its keys' slot (a
    node that lacks the script, e.g. a promoted replica, gets it loaded by the call itself)."""
    if is_cluster(client):
        return list(await asyncio.gather(*(script(keys=keys, args=args) for script, keys, args in calls)))
    async with client.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            await script(keys=keys, args=args, client=pipe)
        return await pipe.execute()
