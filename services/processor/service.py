"""The processor's lifecycle as a mode.Service that the Faust app starts (bootstrap.py builds
both): the Redis client, the Kafka clients, the pipeline, the outbox drain and the web port."""

from __future__ import annotations

import asyncio

import mode
import structlog
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from redis.exceptions import (AskError, BusyLoadingError, ClusterError, OutOfMemoryError, ReadOnlyError, ResponseError,
                              SlotNotCoveredError, TryAgainError)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common.clock import SystemClock
from services.common.redis_conn import async_redis, check_redis
from services.common.topics import check_postbacks_topic
from services.processor import metrics
from services.processor.identity import StateMismatch, check_state_identity
from services.processor.freshness import Freshness
from services.processor.outbox import OutboxDrain
from services.processor.pipeline import PostbackPipeline
from services.processor.settings import ProcessorSettings
from services.processor.store import DeviceStateStore
from services.processor.ticker import Ticker
from services.processor.triggers import BookCache
from services.common.trigger_registry import TriggerRegistry
from services.processor.web import build_web_app

log = structlog.get_logger("processor")


def build_kafka_clients(s: ProcessorSettings) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap_servers, group_id=s.consumer_group, client_id="pbseg-processor",
        enable_auto_commit=False, max_poll_records=s.max_batch,
        # never a silent jump: every assigned partition is sought to its Redis watermark + 1, and
        # an offset the log no longer holds stops the worker (pipeline.LogTruncated)
        auto_offset_reset="none",
        session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=max(s.session_timeout_ms // 3, 500),
        fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_min_bytes=s.fetch_min_bytes, fetch_max_wait_ms=s.fetch_max_wait_ms,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=s.kafka_bootstrap_servers, client_id="pbseg-processor", acks="all",
        enable_idempotence=True, linger_ms=5, max_batch_size=512 * 1024,
    )
    return consumer, producer


RETRY_FIRST_S, RETRY_MAX_S = 0.25, 5.0
READY_PING_S = 1.0
HEALTHY_AFTER_S = 1.0


def is_transient(exc: BaseException) -> bool:
    """Failures a dependency recovers from by itself: Redis down, frozen (timeouts), loading,
    out of memory; Kafka unreachable or retriable. Not: state or log mismatches, bugs."""
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, BusyLoadingError, OutOfMemoryError,
                        KafkaConnectionError, KafkaTimeoutError, asyncio.TimeoutError)):
        return True
    # Redis Cluster in a failover: a master gone (its slots uncovered until the replica is
    # promoted), a redirect the client could not follow yet, a replica still read-only.
    if isinstance(exc, (ClusterError, SlotNotCoveredError, TryAgainError, AskError, ReadOnlyError)):
        return True
    if isinstance(exc, ResponseError) and str(exc).startswith(("OOM", "LOADING", "MASTERDOWN", "TRYAGAIN")):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


class ProcessorService(mode.Service):
    """Owns the Redis client, the Kafka clients, the pipeline, the outbox drain and the web port.
    `settings` is set on the subclass bootstrap.build_app makes (Faust instantiates services itself)."""

    settings: ProcessorSettings

    async def on_start(self) -> None:
        settings = self.settings
        self.paused: dict[str, str] = {}  # part -> the failure it waits out
        # A frozen Redis must not hang the worker: a reply slower than this is a (transient) failure.
        self.redis = async_redis(settings.redis_url, socket_timeout=settings.redis_timeout_s)
        await check_redis(self.redis, settings.redis_url)
        self.store = DeviceStateStore.from_settings(self.redis, settings)
        self.consumer, self.producer = build_kafka_clients(settings)
        try:
            await self.producer.start()
            await self.consumer.start()
        except KafkaConnectionError as exc:
            raise SystemExit(f"cannot reach Kafka at {settings.kafka_bootstrap_servers} ({exc}). "
                             "Start it with `make up`, or set KAFKA_BOOTSTRAP_SERVERS.") from exc
        await check_postbacks_topic(settings.kafka_bootstrap_servers, settings)  # the whole log, or refuse
        try:
            await check_state_identity(self.store, self.consumer, settings.kafka_bootstrap_servers,
                                       settings.topic_postbacks)
        except StateMismatch as exc:
            log.error("state_mismatch", message=str(exc))
            raise SystemExit(f"refusing to start: {exc}") from exc
        self.drain = OutboxDrain(self.store, self.producer, settings.topic_device_events,
                                 lambda: set(self.pipeline.owned_partitions), settings.outbox_batch,
                                 settings.outbox_interval_ms / 1000, fires_topic=settings.topic_task_triggers)
        books = BookCache(TriggerRegistry(self.redis, settings.key_prefix), settings.trigger_max_lateness_s * 1000,
                          settings.tick_budget, settings.window_retention_days)
        self.ticker = Ticker(self.store, self.producer, settings.topic_postbacks,
                             lambda: set(self.pipeline.owned_partitions), SystemClock(),
                             settings.tick_interval_ms / 1000, settings.tick_lists, settings.tick_budget)
        self.pipeline = PostbackPipeline(self.consumer, self.producer, self.store, SystemClock(),
                                         settings.topic_postbacks, settings.topic_rejected, settings.max_batch,
                                         on_outbox_work=self.drain.notify,
                                         outbox_max_entries=settings.outbox_max_entries, books=books,
                                         on_tick_applied=self.ticker.notify)
        self.pipeline.subscribe()
        self.freshness = Freshness(self.consumer, self.store, SystemClock(), settings.topic_postbacks,
                                   lambda: set(self.pipeline.owned_partitions), settings.freshness_interval_s)
        self.runner = web.AppRunner(build_web_app(self._ready))
        await self.runner.setup()
        await web.TCPSite(self.runner, settings.web_host, settings.web_port).start()
        log.info("processor_started", topic=settings.topic_postbacks, group=settings.consumer_group,
                 prefix=settings.key_prefix, web=f"http://{settings.web_host}:{settings.web_port}")

    async def _ready(self) -> tuple[bool, str]:
        if self.paused:
            return False, "paused: " + "; ".join(f"{part}: {error}" for part, error in sorted(self.paused.items()))
        try:
            await asyncio.wait_for(self.redis.ping(), READY_PING_S)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return False, f"redis: {exc!r}"
        if not self.pipeline.ready.is_set():
            return False, "consumer has not joined its group yet"
        return True, f"partitions {sorted(self.pipeline.owned_partitions)}"

    @mode.Service.task
    async def _consume(self) -> None:
        await self._guard("pipeline", self.pipeline.run, self.pipeline.recover)

    @mode.Service.task
    async def _publish(self) -> None:
        # The outbox holds every record safely: any Kafka refusal (the topic unwritable, a record
        # too large for it, ...) is waited out, never a crash loop; backpressure bounds the outbox.
        await self._guard("outbox", self.drain.run, transient=lambda exc: is_transient(exc) or isinstance(exc, KafkaError))

    @mode.Service.task
    async def _tick(self) -> None:
        await self._guard("ticker", self.ticker.run)

    @mode.Service.task
    async def _fresh(self) -> None:
        await self._guard("freshness", self.freshness.run)

    async def _guard(self, name: str, run, recover=None, transient=None) -> None:
        """Runs `run()`; a transient failure of Redis or Kafka (down, frozen, out of memory)
        pauses this part - /readyz says why, one log line, a metric - and it retries with backoff
        until the dependency answers, then `recover()`s (the pipeline re-reads from the Redis
        watermarks) and goes on. Anything else stops the worker: every applied batch is atomic
        with its watermark, so a restart resumes exactly."""
        delay = RETRY_FIRST_S
        loop = asyncio.get_running_loop()
        while True:
            started, healthy = loop.time(), None
            try:
                if recover is not None and name in self.paused:
                    await recover()
                # back to ready once it has run this long without failing (not between retries)
                healthy = loop.call_later(HEALTHY_AFTER_S, self._resumed, name)
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if healthy is not None:
                    healthy.cancel()
                if self.should_stop:  # shutting down: the clients were closed under the running task
                    return
                if not (transient or is_transient)(exc):
                    log.error("processor_failed", part=name, error=repr(exc))
                    await self.crash(exc)
                    return
                if name not in self.paused:
                    delay = RETRY_FIRST_S
                    log.warning("processor_paused", part=name, error=repr(exc),
                                message="a dependency failed; retrying with backoff, nothing is lost")
                self.paused[name] = repr(exc)
                metrics.PAUSED.labels(name).set(1)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def _resumed(self, name: str) -> None:
        if self.paused.pop(name, None) is not None:
            metrics.PAUSED.labels(name).set(0)
            log.info("processor_resumed", part=name)

    async def on_stop(self) -> None:
        for owner, method in (("consumer", "stop"), ("producer", "stop"), ("runner", "cleanup"), ("redis", "aclose")):
            resource = getattr(self, owner, None)  # absent when start-up failed before creating it
            if resource is None:
                continue
            try:
                await getattr(resource, method)()
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
