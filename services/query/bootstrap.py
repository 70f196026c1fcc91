"""The one wiring place of the query service: `create_app(settings)` (uvicorn
services.query.bootstrap:create_app --factory; the settings are read when uvicorn calls it)."""

from __future__ import annotations

from contextlib import asynccontextmanager

import structlog
from prometheus_client import CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.common.catalog import CatalogStore
from services.common.catalog_ids import id_log_for
from services.common.keys import PartitionKeys
from services.common.logs import configure_logging
from services.common.redis_conn import async_redis, check_redis
from services.query.api import build_api
from services.query.devices import DeviceLookup
from services.query.rejected import RejectedFeed, RejectedLog
from services.query.segments import SegmentIndex
from services.query.settings import QuerySettings

log = structlog.get_logger("query")


def create_app(settings: QuerySettings | None = None):
    settings = settings or QuerySettings()
    configure_logging(settings.log_level, settings.log_format)
    # Every Redis call of a request is bounded by QUERY_REDIS_TIMEOUT_S and not retried here
    # (redis-py would retry 3 times by default): a frozen Redis is a 503 within about that long.
    redis = async_redis(settings.redis_url, socket_connect_timeout=settings.redis_timeout_s,
                        socket_timeout=settings.redis_timeout_s, retry=Retry(NoBackoff(), 0))
    registry = CollectorRegistry()
    rejected = RejectedLog(redis, settings.key_prefix, settings.topic_rejected, settings.rejected_keep,
                           int(settings.rejected_ttl_days * 86_400_000))

    ids = id_log_for(settings)  # account / custom-event ids (services/domain/catalog_ids.py)
    segments = SegmentIndex(redis, settings.key_prefix, settings.postbacks_partitions, topic=settings.topic_postbacks)
    devices = DeviceLookup(redis, settings.key_prefix, settings.postbacks_partitions)

    @asynccontextmanager
    async def lifespan(app):
        await check_redis(redis, settings.redis_url)
        segments.partitions = devices.partitions = await partition_count(redis, settings)
        feed = None
        if settings.rejected_feed:
            feed = RejectedFeed(rejected, settings.kafka_bootstrap_servers, registry)
            app.state.rejected_feed = feed
            feed.start()
        log.info("query_started", prefix=settings.key_prefix, partitions=segments.partitions)
        try:
            yield
        finally:
            if feed:
                await feed.stop()
            await ids.close()
            await redis.aclose()

    return build_api(
        settings, CatalogStore(redis, settings.key_prefix, ids),
        segments, devices, rejected, registry=registry, lifespan=lifespan,
    )


async def partition_count(redis, settings: QuerySettings) -> int:
    """The partition count the processor recorded with the state (its identity record,
    services/domain/identity.py), else PBSEG_POSTBACKS_PARTITIONS: the query service reads the
    layout the state has, not the one it is configured with."""
    stored = await redis.hget(PartitionKeys(settings.key_prefix, 0).identity(settings.topic_postbacks), "partitions")
    if stored is None:
        return settings.postbacks_partitions
    if int(stored) != settings.postbacks_partitions:
        log.warning("partition_count_from_state", configured=settings.postbacks_partitions, stored=int(stored),
                    message="PBSEG_POSTBACKS_PARTITIONS differs from the count the state was built with; using the state's")
    return int(stored)
