"""Wiring for the ingress: the one place that builds its dependencies."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from services.common.catalog import CatalogStore
from services.common.clock import SystemClock
from services.common.logs import configure_logging
from services.common.redis_conn import async_redis
from services.ingress.app import IngressApp
from services.ingress.catalog_cache import CatalogCache
from services.ingress.settings import IngressSettings


def create_app(settings: IngressSettings | None = None) -> IngressApp:
    settings = settings or IngressSettings()
    configure_logging(settings.log_level, settings.log_format)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True, linger_ms=2,
    )
    catalog = CatalogCache(CatalogStore(async_redis(settings.redis_url), settings.key_prefix), settings.catalog_poll_s)
    return IngressApp(settings, producer, catalog, SystemClock())
