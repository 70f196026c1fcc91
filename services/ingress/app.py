"""The ingress ASGI app: GET/POST /api/postback/ -> one record on the postbacks topic.

A raw ASGI callable (no framework): the hot path is parse -> rate limit -> produce ->
reply, a few dict lookups around the pure `parse_postback`. Replies are JSON; every 4xx is
`{"error", "message"}`, counted in metrics and written to the rejected-postbacks topic.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.common.clock import Clock
from services.common.ids import new_event_id
from services.ingress.catalog_cache import CatalogCache
from services.ingress.metrics import IngressMetrics
from services.ingress.parsing import PostbackRules, RejectedPostback, parse_postback
from services.ingress.producer import ProduceFailed, RecordProducer
from services.ingress.rate_limit import AccountRateLimit
from services.ingress.records import postback_key, postback_value, rejected_key, rejected_value
from services.ingress.settings import IngressSettings

log = structlog.get_logger("ingress")

_JSON = (b"content-type", b"application/json")
_POSTBACK_PATHS = frozenset({"/api/postback/", "/api/postback"})
_USAGE = "use GET or POST /api/postback/?id=<install id>&status=<event code>_<account id>"


async def _reply(send, status: int, body: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [_JSON, *headers] if headers else [_JSON]})
    await send({"type": "http.response.body", "body": body})


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
        self._probe_task: asyncio.Task | None = None
        self._kafka_warning = _Throttled("kafka_produce_failed")
        self._dropped_warning = _Throttled("rejected_record_dropped")

    # ------------------------------------------------------------------ routing
    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path in _POSTBACK_PATHS:
                return await self._postback(scope, receive, send)
            if path == "/healthz":
                return await _reply(send, 200, b'{"status":"ok"}')
            if path == "/readyz":
                return await self._readyz(send)
            if path == "/metrics":
                return await self._metrics(send)
            self.metrics.count("rejected", "not_found")
            return await _reply(send, 404, _error_body("not_found", f"no such path {path[:100]!r}; {_USAGE}"))
        if kind == "lifespan":
            return await self._lifespan(receive, send)

    async def _readyz(self, send):
        loaded = self.catalog.loaded
        ready = loaded and self.kafka_ok
        body = orjson.dumps({"ready": ready, "kafka": self.kafka_ok, "catalog_loaded": loaded,
                             "catalog_version": self.catalog.version})
        await _reply(send, 200 if ready else 503, body)

    async def _metrics(self, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())]})
        await send({"type": "http.response.body", "body": generate_latest(self.metrics.registry)})

    # ------------------------------------------------------------------ postbacks
    async def _postback(self, scope, receive, send):
        metrics = self.metrics
        metrics.in_flight.inc()
        try:
            query = scope["query_string"].decode("latin-1")
            method = scope["method"]
            if method != "GET":
                if method != "POST":
                    rejection = RejectedPostback(405, "method_not_allowed", f"{method[:16]} is not supported; {_USAGE}")
                    return await self._reject(send, rejection, query, [(b"allow", b"GET, POST")])
                # The body is not used (PushExpress senders put the parameters in the URL),
                # but it is read within limits so a huge or slow one cannot tie us up.
                rejection = await self._drain_body(scope, receive)
                if rejection is not None:
                    return await self._reject(send, rejection, query)
            snapshot = self.catalog.snapshot
            if snapshot is None:
                metrics.count("unavailable", "not_ready")
                return await _reply(send, 503, _error_body("not_ready", "the catalog is not loaded yet; retry shortly"),
                                    [(b"retry-after", b"1")])
            now = self.clock.now_ms()
            parsed = parse_postback(query, snapshot, now, self.rules)
            if type(parsed) is RejectedPostback:
                return await self._reject(send, parsed, query)
            if self.rate_limit.enabled:
                wait_s = self.rate_limit.admit(parsed.account_id, now)
                if wait_s:
                    rejection = RejectedPostback(
                        429, "rate_limited",
                        f"account {parsed.account_id} sends more than {self.settings.rate_limit_per_s:g} postbacks/s; retry after {wait_s} s",
                        parsed.account_id)
                    return await self._reject(send, rejection, query, [(b"retry-after", str(wait_s).encode())])
            event_id = new_event_id(now)
            started = time.perf_counter()
            try:
                await self.producer.deliver(self.settings.topic_postbacks, postback_key(parsed.account_id, parsed.install_id),
                                            postback_value(parsed, event_id, now), self.settings.produce_timeout_s)
            except ProduceFailed as exc:
                self.kafka_ok = False
                metrics.count("unavailable", "kafka_unavailable")
                self._kafka_warning.warn(error=str(exc))
                return await _reply(send, 503, _error_body(
                    "kafka_unavailable", "the postback could not be stored right now and was NOT accepted; retry later (send `tid` to make retries safe)"),
                    [(b"retry-after", b"1")])
            metrics.produce_seconds.observe(time.perf_counter() - started)
            metrics.accepted.inc()
            await _reply(send, 200, b'{"status":"accepted","event_id":"' + event_id.encode() + b'"}')
        finally:
            metrics.in_flight.dec()

    async def _drain_body(self, scope, receive) -> RejectedPostback | None:
        limit = self.settings.max_body_bytes
        has_body = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return RejectedPostback(400, "invalid_content_length", "Content-Length must be a number")
                if length > limit:
                    return RejectedPostback(413, "body_too_large", f"the body is {length} bytes; at most {limit} are read (the body is ignored: put the parameters in the URL)")
                has_body = has_body or length > 0
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:
            return None
        received = 0
        try:
            async with asyncio.timeout(self.settings.body_read_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return RejectedPostback(400, "body_incomplete", "the connection closed before the body ended")
                    received += len(message.get("body", b""))
                    if received > limit:
                        return RejectedPostback(413, "body_too_large", f"the body exceeds {limit} bytes (it is ignored: put the parameters in the URL)")
                    if not message.get("more_body", False):
                        return None
        except TimeoutError:
            return RejectedPostback(408, "body_timeout", f"the body did not arrive within {self.settings.body_read_timeout_s:g} s")

    async def _reject(self, send, rejection: RejectedPostback, query: str, headers: list | None = None) -> None:
        self.metrics.count("rejected", rejection.error)
        value = rejected_value(rejection, query, self.clock.now_ms())
        if self.producer.deliver_in_background(self.settings.topic_rejected, rejected_key(rejection.account_id), value,
                                               self.settings.produce_timeout_s):
            self.metrics.rejected_writes.labels("queued").inc()
        else:
            self.metrics.rejected_writes.labels("dropped").inc()
            self._dropped_warning.warn(reason=rejection.error)
        log.debug("postback_rejected", status=rejection.status, reason=rejection.error, account_id=rejection.account_id)
        await _reply(send, rejection.status, _error_body(rejection.error, rejection.message), headers)

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
        log.info("ingress_started", topic=self.settings.topic_postbacks, catalog_version=self.catalog.version)

    async def shutdown(self) -> None:
        if self._probe_task:
            self._probe_task.cancel()
        await self.catalog.stop()
        await self.producer.stop()

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - the server prints it and exits
                    log.error("ingress_startup_failed", error=str(exc))
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
