"""Wiring for the query service (uvicorn services.query.main:create_app --factory)."""

from __future__ import annotations

from services.common.catalog import CatalogStore
from services.common.logs import configure_logging
from services.common.redis_conn import async_redis
from services.query.api import build_api
from services.query.segments import SegmentIndex
from services.query.settings import QuerySettings


def create_app(settings: QuerySettings | None = None):
    settings = settings or QuerySettings()
    configure_logging(settings.log_level, settings.log_format)
    redis = async_redis(settings.redis_url)
    return build_api(CatalogStore(redis, settings.key_prefix), SegmentIndex(redis, settings.key_prefix, settings.postbacks_partitions))
