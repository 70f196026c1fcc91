"""`RecordProducer` on confluent-kafka (librdkafka): batching, compression of requests and
retries run in librdkafka's C threads, so a postback costs the event loop one `produce()`
call and one future.

Delivery reports are served by a thread blocked in `poll()`: it wakes as soon as reports
arrive (no timer granularity, no polling while idle), collects them in a list and hands the
whole list to the loop with ONE `call_soon_threadsafe`, where the futures are resolved (so
they are only ever touched on the loop's thread). Measured against `poll(0)` from a task
every 1 ms: docs/decisions/0002-ingress-confluent-kafka-client.md.

Deadlines cost no timer per request: every request has the same timeout, so their futures
sit in a FIFO a task on the loop expires from the front every `sweep_s` (a 503 comes at most
`sweep_s` early, never late). librdkafka's own `message.timeout.ms` is the same bound, so a
record whose request got a 503 is not retried by the client afterwards (it may still have
reached the broker if it was on the wire).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import threading
import time

import structlog
from confluent_kafka import KafkaException, Producer

from services.ingress.producer import ProduceFailed

log = structlog.get_logger("ingress.producer")


def _resolve(fut: asyncio.Future, err) -> None:
    if fut.done():  # the request already gave up (503); the record was not acknowledged to it
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(ProduceFailed(str(err)))


class ConfluentRecordProducer:
    """acks=all + enable.idempotence: librdkafka's retries cannot duplicate or reorder."""

    # deliver() only awaits plain futures (and asyncio.sleep): the HTTP server may run it
    # without an asyncio.Task (services/ingress/http_connection.py).
    runs_without_task = True

    def __init__(self, bootstrap: str, linger_ms: float, max_batch_bytes: int, max_background: int,
                 on_background_failure=None, sweep_s: float = 0.01, delivery_timeout_s: float = 2.0,
                 probe_topic: str | None = None):
        self.bootstrap = bootstrap
        # /readyz's probe asks for this topic's metadata only: all topics' metadata costs
        # CPU in proportion to the cluster's topics (16 ms for 576 topics here, every probe).
        self._probe_topic = probe_topic
        self._config = {
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
            "linger.ms": linger_ms, "batch.size": max_batch_bytes, "socket.nagle.disable": True,
            # The Java client's (and aiokafka's) murmur2, not librdkafka's default CRC32: a
            # device's key lands on the same partition whichever client wrote it.
            "partitioner": "murmur2_random",
            "message.timeout.ms": int(max(linger_ms + 100, delivery_timeout_s * 1000)),
            "log.connection.close": False,
            "error_cb": self._on_client_error,
        }
        self._last_error_log = 0.0
        self._deadlines: collections.deque[tuple[float, asyncio.Future]] = collections.deque()
        self._producer: Producer | None = None
        self._sweep_s = sweep_s
        self._sweep_task: asyncio.Task | None = None
        self._poll_thread: threading.Thread | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Delivery reports collected by the poll thread: (future, error); future None = a
        # background record. Only the poll thread appends (inside poll()) and swaps it.
        self._reports: list = []
        self._max_background = max_background
        self._background = 0
        self._on_background_failure = on_background_failure or (lambda reason: None)

    async def start(self, timeout_s: float) -> None:
        self._producer = Producer(self._config)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.reachable(min(2.0, max(0.1, deadline - time.monotonic()))):
                self._loop = asyncio.get_running_loop()
                self._sweep_task = asyncio.create_task(self._sweep())
                self._poll_thread = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
                self._poll_thread.start()
                return
            log.warning("kafka_not_reachable", bootstrap=self.bootstrap)
            await asyncio.sleep(0.5)
        raise RuntimeError(
            f"cannot reach Kafka at {self.bootstrap} within {timeout_s:.0f}s. "
            "Start it with `make up`, or set KAFKA_BOOTSTRAP_SERVERS to a running broker."
        )

    def _on_client_error(self, err) -> None:
        """librdkafka's global errors (broker down, ...): logged at most once per second."""
        now = time.monotonic()
        if now - self._last_error_log >= 1.0:
            self._last_error_log = now
            log.warning("kafka_client_error", error=str(err), bootstrap=self.bootstrap)

    def _poll(self) -> None:
        """The poll thread: serve delivery reports, hand each batch of them to the loop."""
        producer, loop = self._producer, self._loop
        while not self._stopping:
            try:
                producer.poll(0.1)  # returns as soon as reports were served (GIL released while waiting)
            except Exception as exc:  # noqa: BLE001 - never let the thread die: waiting requests would only time out
                log.error("kafka_poll_failed", error=repr(exc))
                time.sleep(0.1)
            if self._reports:
                reports, self._reports = self._reports, []
                try:
                    loop.call_soon_threadsafe(self._resolve_all, reports)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    return

    def _resolve_all(self, reports: list) -> None:
        for fut, err in reports:
            if fut is not None:
                _resolve(fut, err)
            else:
                self._background -= 1
                if err is not None:
                    self._on_background_failure(str(err.name()))
                    log.warning("background_produce_failed", error=str(err))

    async def _sweep(self) -> None:
        deadlines, interval = self._deadlines, self._sweep_s
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            while deadlines and (deadlines[0][0] <= now or deadlines[0][1].done()):
                fut = deadlines.popleft()[1]
                if not fut.done():
                    fut.set_exception(ProduceFailed("no acknowledgement from Kafka in time"))
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        """Wait (at most 5 s) until librdkafka has nothing left to send and its reports were
        resolved, then stop the poll thread and the sweep."""
        if self._producer is not None and self._poll_thread is not None:
            deadline = time.monotonic() + 5.0
            while len(self._producer) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # the poll thread serves the delivery reports meanwhile
            self._stopping = True
            await asyncio.to_thread(self._poll_thread.join, 1.0)
            await asyncio.sleep(0)  # run the last hand-over, if any
            if self._reports:
                reports, self._reports = self._reports, []
                self._resolve_all(reports)
        if self._sweep_task:
            self._sweep_task.cancel()

    async def deliver(self, topic: str, key: bytes, value: bytes, timeout_s: float) -> None:
        loop = self._loop
        fut = loop.create_future()
        # Expire one sweep interval early so the reply never comes later than timeout_s.
        deadline = loop.time() + timeout_s - self._sweep_s
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=functools.partial(self._report, fut))
                break
            except BufferError:  # librdkafka's queue is full: Kafka is not keeping up
                if loop.time() >= deadline:
                    raise ProduceFailed("the client's queue stayed full") from None
                await asyncio.sleep(0.005)
            except KafkaException as exc:
                raise ProduceFailed(str(exc)) from exc
        self._deadlines.append((deadline, fut))
        await fut  # raises ProduceFailed (nack or deadline)

    def deliver_in_background(self, topic: str, key: bytes | None, value: bytes, timeout_s: float) -> bool:
        if self._background >= self._max_background:
            return False
        try:
            self._producer.produce(topic, value, key, on_delivery=self._background_done)
        except (BufferError, KafkaException) as exc:
            self._on_background_failure(type(exc).__name__)
            return False
        self._background += 1
        return True

    def _report(self, fut: asyncio.Future, err, _msg) -> None:  # in the poll thread
        self._reports.append((fut, err))

    def _background_done(self, err, _msg) -> None:  # in the poll thread
        self._reports.append((None, err))

    async def reachable(self, timeout_s: float) -> bool:
        try:
            await asyncio.to_thread(self._producer.list_topics, self._probe_topic, timeout_s)
            return True
        except Exception:  # noqa: BLE001 - unreachable for whatever reason
            return False
