"""Wiring for the ingress: the one place that builds its dependencies from its settings.

`bootstrap(settings)` is called once per worker process (services/ingress/http_server.py)
with the settings `__main__.main()` read; nothing here reads the environment.
"""

from __future__ import annotations

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.common.catalog import CatalogStore
from services.common.catalog_ids import id_log_for
from services.common.clock import SystemClock
from services.common.logs import configure_logging
from services.common.redis_conn import async_redis
from services.ingress.app import IngressApp
from services.ingress.catalog_cache import CatalogCache
from services.ingress.metrics import IngressMetrics
from services.ingress.producer import RecordProducer
from services.ingress.producer_confluent import ConfluentRecordProducer
from services.ingress.settings import IngressSettings


def build_producer(settings: IngressSettings, metrics: IngressMetrics) -> RecordProducer:
    def count_failure(reason: str) -> None:
        metrics.rejected_writes.labels("failed").inc()

    return ConfluentRecordProducer(
        bootstrap=settings.kafka_bootstrap_servers, linger_ms=settings.kafka_linger_ms,
        max_batch_bytes=settings.kafka_max_batch_bytes, max_background=settings.max_pending_rejected,
        on_background_failure=count_failure, delivery_timeout_s=settings.produce_timeout_s,
        probe_topic=settings.topic_postbacks)


def bootstrap(settings: IngressSettings) -> IngressApp:
    """The app with its real dependencies (not started: the server calls `startup()`)."""
    configure_logging(settings.log_level, settings.log_format)
    metrics = IngressMetrics()
    catalog = CatalogCache(
        CatalogStore(async_redis(settings.redis_url, socket_timeout=settings.redis_timeout_s,
                                 socket_connect_timeout=settings.redis_timeout_s, retry=Retry(NoBackoff(), 0)),
                     settings.key_prefix, id_log_for(settings)),  # read only: its id log never starts
        settings.catalog_poll_s,
        on_loaded=lambda snapshot: metrics.catalog_version.set(snapshot.version),
    )
    return IngressApp(settings, build_producer(settings, metrics), catalog, SystemClock(), metrics)
