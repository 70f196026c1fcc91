"""The ingress app: GET/POST /api/postback/ -> one record on the postbacks topic.

Served by the ingress's own HTTP server (http_server.py, http_connection.py), which calls
`handle()` for each request and `startup()`/`shutdown()` around serving. No framework: the
hot path is parse -> rate limit -> produce -> reply, a few dict lookups around the pure
`parse_postback`. Replies are JSON; every 4xx is `{"error", "message"}`, counted in metrics
and written to the rejected-postbacks topic.
"""

from __future__ import annotations

import asyncio
import gc
import time
from time import perf_counter

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.common.background import cancel_and_wait
from services.common.clock import Clock
from services.ingress.catalog_cache import CatalogCache
from services.common.ids import EventIds
from services.ingress.metrics import IngressMetrics
from services.ingress.parsing import PostbackRules, RejectedPostback, parse_postback
from services.ingress.producer import ProduceFailed, RecordProducer
from services.ingress.rate_limit import AccountRateLimit
from services.ingress.records import postback_key, postback_value, rejected_key, rejected_value
from services.ingress.settings import IngressSettings

log = structlog.get_logger("ingress")

_JSON = JSON_HEADERS = [("content-type", "application/json")]
_RETRY_1 = [("content-type", "application/json"), ("retry-after", "1")]
_POSTBACK_PATHS = frozenset({"/api/postback/", "/api/postback"})
# Rejections that depend on the catalog: checked against a fresh snapshot before replying.
_CATALOG_REJECTIONS = frozenset({"unknown_account", "unknown_event", "event_inactive", "missing_key", "wrong_key"})
_USAGE = "use GET or POST /api/postback/?id=<install id>&status=<event code>_<account id>"

# A reply: status, headers (str pairs, content-type first), body.
Reply = tuple[int, list[tuple[str, str]], bytes]


def _json_reply(status: int, body: bytes, extra: list[tuple[str, str]] | None = None) -> Reply:
    return status, [*_JSON, *extra] if extra else _JSON, body


def _error_body(error: str, message: str) -> bytes:
    return orjson.dumps({"error": error, "message": message})


class _Throttled:
    """Logs a repeated warning at most once per `every_s`, with how often it happened."""

    def __init__(self, event: str, every_s: float = 1.0):
        self.event, self.every_s, self.count, self.last = event, every_s, 0, 0.0

    def warn(self, **fields) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= self.every_s:
            log.warning(self.event, occurrences=self.count, **fields)
            self.count, self.last = 0, now


class IngressApp:
    def __init__(self, settings: IngressSettings, producer: RecordProducer, catalog: CatalogCache,
                 clock: Clock, metrics: IngressMetrics | None = None):
        self.settings = settings
        self.producer = producer
        self.catalog = catalog
        self.clock = clock
        self.metrics = metrics or IngressMetrics()
        self.rules = PostbackRules(settings.max_query_bytes, settings.max_future_skew_s * 1000)
        self.rate_limit = AccountRateLimit(settings.rate_limit_per_s, settings.rate_limit_burst)
        self.kafka_ok = False
        self._event_ids = EventIds()
        self._probe_task: asyncio.Task | None = None
        self._kafka_warning = _Throttled("kafka_produce_failed")
        self._dropped_warning = _Throttled("rejected_record_dropped")

    # ------------------------------------------------------------------ routing
    async def handle(self, method: str, path: str, query: str, read_body) -> Reply:
        """One request. `query` is the raw query string (bytes as latin-1); `read_body()`
        returns the server's verdict on the body, read within the limits: a
        RejectedPostback or None (only POSTs to the postback path call it)."""
        if path in _POSTBACK_PATHS:
            metrics = self.metrics
            metrics.in_flight += 1
            try:
                return await self._postback(method, query, read_body)
            finally:
                metrics.in_flight -= 1
        if path == "/healthz":
            return _json_reply(200, b'{"status":"ok"}')
        if path == "/readyz":
            return self._readyz()
        if path == "/metrics":
            return 200, [("content-type", CONTENT_TYPE_LATEST)], generate_latest(self.metrics.registry)
        self.metrics.count("rejected", "not_found")
        return _json_reply(404, _error_body("not_found", f"no such path {path[:100]!r}; {_USAGE}"))

    def _readyz(self) -> Reply:
        loaded = self.catalog.loaded
        ready = loaded and self.kafka_ok
        body = orjson.dumps({"ready": ready, "kafka": self.kafka_ok, "catalog_loaded": loaded,
                             "catalog_version": self.catalog.version})
        return _json_reply(200 if ready else 503, body)

    # ------------------------------------------------------------------ postbacks
    async def _postback(self, method: str, query: str, read_body) -> Reply:
        if method != "GET":
            if method != "POST":
                rejection = RejectedPostback(405, "method_not_allowed", f"{method[:16]} is not supported; {_USAGE}")
                return self._reject(rejection, query, [("allow", "GET, POST")])
            # The body is not used (PushExpress senders put the parameters in the URL),
            # but it is read within limits so a huge or slow one cannot tie us up.
            rejection = await read_body()
            if rejection is not None:
                return self._reject(rejection, query)
        snapshot = self.catalog.snapshot
        if snapshot is None:
            self.metrics.count("unavailable", "not_ready")
            return 503, _RETRY_1, _error_body("not_ready", "the catalog is not loaded yet; retry shortly")
        now = self.clock.now_ms()
        parsed = parse_postback(query, snapshot, now, self.rules)
        if type(parsed) is RejectedPostback:
            if parsed.error in _CATALOG_REJECTIONS:  # the cache may be behind Redis: look once more
                fresh = await self.catalog.recheck()
                if fresh is not snapshot and fresh is not None:
                    parsed = parse_postback(query, fresh, now, self.rules)
            if type(parsed) is RejectedPostback:
                return self._reject(parsed, query)
        if self.rate_limit.enabled:
            wait_s = self.rate_limit.admit(parsed.account_id, now)
            if wait_s:
                rejection = RejectedPostback(
                    429, "rate_limited",
                    f"account {parsed.account_id} sends more than {self.settings.rate_limit_per_s:g} postbacks/s; retry after {wait_s} s",
                    parsed.account_id)
                return self._reject(rejection, query, [("retry-after", str(wait_s))])
        event_id = self._event_ids.new(now)
        started = perf_counter()
        try:
            await self.producer.deliver(self.settings.topic_postbacks, postback_key(parsed.account_id, parsed.install_id),
                                        postback_value(parsed, event_id, now), self.settings.produce_timeout_s)
        except ProduceFailed as exc:
            self.kafka_ok = False
            self.metrics.count("unavailable", "kafka_unavailable")
            self._kafka_warning.warn(error=str(exc))
            return 503, _RETRY_1, _error_body(
                "kafka_unavailable", "the postback could not be stored right now and was NOT accepted; retry later (send `tid` to make retries safe)")
        metrics = self.metrics
        metrics.produce_seconds.observe(perf_counter() - started)
        metrics.accepted_count += 1
        return 200, _JSON, b'{"status":"accepted","event_id":"' + event_id.encode() + b'"}'

    def _reject(self, rejection: RejectedPostback, query: str, headers: list | None = None) -> Reply:
        self.metrics.count("rejected", rejection.error)
        value = rejected_value(rejection, query, self.clock.now_ms())
        if self.producer.deliver_in_background(self.settings.topic_rejected, rejected_key(rejection.account_id), value,
                                               self.settings.produce_timeout_s):
            self.metrics.rejected_writes.labels("queued").inc()
        else:
            self.metrics.rejected_writes.labels("dropped").inc()
            self._dropped_warning.warn(reason=rejection.error)
        log.debug("postback_rejected", status=rejection.status, reason=rejection.error, account_id=rejection.account_id)
        return _json_reply(rejection.status, _error_body(rejection.error, rejection.message), headers)

    # ------------------------------------------------------------------ lifecycle
    async def _probe_kafka(self) -> None:
        while True:
            self.kafka_ok = await self.producer.reachable(min(1.0, self.settings.kafka_probe_s))
            self.metrics.kafka_reachable.set(1 if self.kafka_ok else 0)
            await asyncio.sleep(self.settings.kafka_probe_s)

    async def startup(self) -> None:
        """Connect to Kafka and load the catalog; raises RuntimeError saying what is missing."""
        await self.producer.start(self.settings.startup_timeout_s)
        try:
            await self.catalog.refresh()
        except Exception as exc:  # noqa: BLE001 - reported as a start-up error
            await self.producer.stop()
            raise RuntimeError(f"cannot load the catalog from Redis at {self.settings.redis_url} ({exc}). "
                               "Start it with `make up`, or set REDIS_URL to a running server.") from exc
        self.kafka_ok = True
        self.catalog.start()
        self._probe_task = asyncio.create_task(self._probe_kafka())
        if self.settings.gc_freeze:
            # Everything loaded so far (modules, clients, the catalog) lives as long as the
            # process: move it out of the collector's reach, so the full collections that
            # the per-request garbage triggers stay short (p99, docs/decisions/0003-ingress-hot-path-tuning.md).
            gc.collect()
            gc.freeze()
        log.info("ingress_started", topic=self.settings.topic_postbacks, catalog_version=self.catalog.version)

    async def shutdown(self) -> None:
        await cancel_and_wait(self._probe_task)
        await self.catalog.stop()
        await self.producer.stop()
