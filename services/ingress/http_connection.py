"""One HTTP/1.1 client connection of the ingress's server: an asyncio.Protocol that parses with
httptools (llhttp) and calls `IngressApp.handle()` directly on the event loop's thread.

No ASGI/RSGI layer and no hand-over between threads per request (bench/results/ingress.md
has the figures that chose this). What it guarantees:

- HTTP/1.1 keep-alive and HTTP/1.0 (keep-alive only when asked for); GET, POST and others
  (the app answers 405); HEAD replies carry no body.
- Pipelined requests are answered in the order they arrived: each request takes a slot in
  `_slots`, replies are written from the front as their slots complete.
- Limits: request line + headers at most `max_header_bytes` (414 when the request target
  alone is longer, else 431), body at most `max_body_bytes` (413, declared or counted), the
  body is read and discarded (never stored), chunked bodies too. A malformed request gets
  400 `malformed_request`, so does a request line without HTTP/1.0 or 1.1 (HTTP/0.9 style
  `GET /path` alone is never processed). Each of these replies is JSON `{"error", "message"}` and closes
  the connection (what follows in the stream cannot be trusted).
- Read timeouts, checked by the server's sweep (`check_timeouts`, every `tick` seconds, so
  they fire up to one tick late): headers not complete `header_timeout_s` after the request
  began -> closed; body not complete `body_timeout_s` after the headers -> 408 `body_timeout`
  (through the app, like a postback's other rejections) and closed; idle keep-alive longer
  than `keepalive_timeout_s` -> closed.
- Backpressure: at most `max_pipelined` requests are handled at once per connection;
  further requests already read wait (parsed, not started) and reading pauses until the
  backlog drains; reading also pauses while the transport's write buffer is above its
  high-water mark (`pause_writing`).
- A client that goes away does not cancel its requests: a record handed to Kafka is
  delivered either way, the reply is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from email.utils import formatdate
from http import HTTPStatus

import httptools
import orjson
import structlog

from services.ingress.app import JSON_HEADERS
from services.ingress.parsing import RejectedPostback

log = structlog.get_logger("ingress.http")

# Connection states, for the read timeouts. LINGER: our side is shut after a reply that
# ended the connection early; what the client still sends is read and dropped for a moment,
# so closing does not reset the connection before the client has read that reply.
IDLE, HEADERS, BODY, LINGER = 0, 1, 2, 3
LINGER_S = 2.0

_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_CONTENT_JSON = JSON_HEADERS  # the app's own list: replies with it take a precomputed header line
_INTERNAL_ERROR = (500, _CONTENT_JSON, b'{"error":"internal_error","message":"the server failed on this request; retry"}')
_KEEP_ALIVE_10 = b"connection: keep-alive\r\n"
_CLOSE = b"connection: close\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_METHODS = {m.encode(): m for m in ("GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS")}


def http_date() -> bytes:
    """The `date` header line for now (the server refreshes it once per tick)."""
    return b"date: " + formatdate(time.time(), usegmt=True).encode() + b"\r\n"


def encode_headers(headers: list[tuple[str, str]]) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers)


class ConnectionLimits:
    """The knobs a connection reads, shared by all connections of a server."""

    __slots__ = ("max_header_bytes", "max_body_bytes", "header_timeout_s", "body_timeout_s",
                 "keepalive_timeout_s", "max_pipelined", "write_high_water")

    def __init__(self, max_header_bytes: int = 16_384, max_body_bytes: int = 65_536, header_timeout_s: float = 5.0,
                 body_timeout_s: float = 5.0, keepalive_timeout_s: float = 15.0, max_pipelined: int = 16,
                 write_high_water: int = 65_536):
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.max_pipelined = max_pipelined
        self.write_high_water = write_high_water


class _ProtocolError(Exception):
    """Raised inside a parser callback to stop parsing; the reply is in `HttpConnection._fatal`."""


class _Slot:
    """One request between being read and its reply being written."""

    __slots__ = ("reply", "keep_alive", "head")

    def __init__(self, keep_alive: bool, head: bool):
        self.reply: tuple | None = None  # (status, headers, body), once known
        self.keep_alive = keep_alive
        self.head = head


def _rejection_reader(rejection: RejectedPostback | None):
    async def read_body():
        return rejection
    return read_body


async def _no_body():
    return None


class HttpConnection(asyncio.Protocol):
    """One client connection. `server` provides: app, limits, loop, now (coarse loop time),
    date_line, connections (a set this adds itself to), closing (bool)."""

    def __init__(self, server):
        self.server = server
        self.app = server.app
        self.limits: ConnectionLimits = server.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._slots: collections.deque[_Slot] = collections.deque()
        self._waiting: collections.deque = collections.deque()  # parsed requests not started (backpressure)
        self._running = 0
        self._state = IDLE
        self._since = 0.0
        self._writing_paused = False
        self._reading_paused = False
        self._closing = False  # no more requests are read; close once the replies are out
        self._fatal: tuple[int, str, str] | None = None
        self._linger = False  # the last reply ends the connection before its input did
        # The request being read.
        self._url = b""
        self._head_bytes = 0
        self._content_length = -1
        self._body_bytes = 0
        self._body_rejection: RejectedPostback | None = None
        self._expect_continue = False

    # ------------------------------------------------------------------ transport events
    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=self.limits.write_high_water)
        self._state = HEADERS  # the first request's header timeout counts from connecting
        self._since = self.server.now
        self.server.connections.add(self)
        if self.server.closing:
            self._closing = True
            transport.close()

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        self.transport = None
        self._closing = True
        self._waiting.clear()

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade/CONNECT request: what was read is answered, then the connection ends.
            self._stop_reading()
            self._close_if_done()
        except httptools.HttpParserError as exc:
            if self._closing:  # a request after one that ends the connection: not answered
                return
            fatal = self._fatal
            if fatal is None:
                if "Content-Length" in str(exc):
                    fatal = (400, "invalid_content_length", f"Content-Length must be one number ({exc})")
                else:
                    fatal = (400, "malformed_request", f"the request is not valid HTTP/1.1 ({str(exc)[:100]})")
            self._fail(*fatal)

    def eof_received(self):
        if self._state == LINGER:
            self.transport.close()
            return True
        # A body cut short by the client's end of sending will never complete.
        if self._state == BODY and not self._closing:
            self._dispatch_early(RejectedPostback(400, "body_incomplete", "the connection closed before the body ended"))
        self._stop_reading()
        self._close_if_done()
        return True  # keep the write side open until the replies are out

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        if self._state == IDLE:  # a new connection starts in HEADERS: its wait counts from connecting
            self._state = HEADERS
            self._since = self.server.now
        self._url = b""
        self._head_bytes = 0
        self._content_length = -1
        self._body_bytes = 0
        self._body_rejection = None
        self._expect_continue = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_header_bytes:
            self._fatal = (414, "query_too_long", f"the request target exceeds {self.limits.max_header_bytes} bytes "
                           f"(the query string may have at most {self.app.settings.max_query_bytes})")
            raise _ProtocolError

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes + len(self._url) > self.limits.max_header_bytes:
            self._fatal = (431, "headers_too_large", f"the request line and headers exceed {self.limits.max_header_bytes} bytes")
            raise _ProtocolError
        if len(name) == 14 and name.lower() == b"content-length":
            self._content_length = int(value) if value.isdigit() else -1  # llhttp rejects other values itself
        elif len(name) == 6 and name.lower() == b"expect":
            self._expect_continue = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        version = self.parser.get_http_version()
        if version != "1.1" and version != "1.0":
            # llhttp takes a request line without a version as HTTP/0.9 (and passes 2.0):
            # never processed, answered 400 like any other malformed request.
            self._fatal = (400, "malformed_request", f"the request line must end with HTTP/1.1 or HTTP/1.0 (got HTTP/{version}); "
                           "send GET /api/postback/?id=...&status=... HTTP/1.1")
            raise _ProtocolError
        self._state = BODY
        self._since = self.server.now
        if self._closing:
            return
        limit = self.limits.max_body_bytes
        if self._content_length > limit:
            self._dispatch_early(RejectedPostback(
                413, "body_too_large", f"the body is {self._content_length} bytes; at most {limit} are read (the body is ignored: put the parameters in the URL)"))
        elif self._expect_continue and self.transport is not None:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes and self._state == BODY:
            self._dispatch_early(RejectedPostback(
                413, "body_too_large", f"the body exceeds {self.limits.max_body_bytes} bytes (it is ignored: put the parameters in the URL)"))

    def on_message_complete(self) -> None:
        if self._state == BODY and not self._closing:
            self._complete(close=False)
        else:  # dispatched early (413/408/400), or the connection is closing: not answered
            self._state = IDLE

    # ------------------------------------------------------------------ requests
    def _complete(self, close: bool) -> None:
        self._state = IDLE
        self._since = self.server.now
        parser = self.parser
        method_b = parser.get_method()
        method = _METHODS.get(method_b) or method_b.decode("latin-1")
        if close:
            keep_alive = False
        else:
            keep_alive = parser.should_keep_alive()
            if keep_alive and parser.get_http_version() == "1.0":
                keep_alive = 2  # HTTP/1.0 asked for keep-alive: say so in the reply
        self._enqueue(method, self._url, keep_alive, self._body_rejection)

    def _dispatch_early(self, rejection: RejectedPostback) -> None:
        """The body will not be read (too large, too slow, cut short): answer the request
        now with `rejection` as its body's verdict, then close."""
        self._body_rejection = rejection
        self._linger = True
        self._complete(close=True)
        self._stop_reading()

    def _enqueue(self, method: str, url: bytes, keep_alive, body_rejection) -> None:
        slot = _Slot(keep_alive, method == "HEAD")
        self._slots.append(slot)
        if self._running < self.limits.max_pipelined and not self._waiting:
            self._start(slot, method, url, body_rejection)
        else:
            self._waiting.append((slot, method, url, body_rejection))
            self._update_reading()

    def _start(self, slot: _Slot, method: str, url: bytes, body_rejection) -> None:
        path, _, query = url.partition(b"?")
        if method == "POST":
            read_body = _rejection_reader(body_rejection) if body_rejection is not None else _no_body
        else:
            read_body = None
        self._running += 1
        coro = self.app.handle(method, path.decode("latin-1"), query.decode("latin-1"), read_body)
        if self.server.drive_without_task:
            self._step(slot, coro)
        else:
            self.server.loop.create_task(coro).add_done_callback(functools.partial(self._task_done, slot))

    def _task_done(self, slot: _Slot, task: asyncio.Task) -> None:
        exc = task.exception()
        if exc is None:
            slot.reply = task.result()
        else:
            log.error("ingress_request_failed", error=repr(exc), exc_info=exc)
            slot.reply = _INTERNAL_ERROR
        self._on_done()

    def _step(self, slot: _Slot, coro, _done=None) -> None:
        """Drive the app's coroutine without an asyncio.Task: run it until it waits for a
        future, resume it when that future is done (Kafka's acknowledgement, mostly). A
        Task per request would add a loop callback to start it and one to report it done,
        and the app needs nothing of a Task's when its producer says so (`runs_without_task`:
        no asyncio.timeout or current_task on its path); otherwise each request is a Task."""
        try:
            waiting_for = coro.send(None)
        except StopIteration as finished:
            slot.reply = finished.value
            self._on_done()
            return
        except Exception as exc:  # noqa: BLE001 - a bug, not the client's fault: logged, 500
            log.error("ingress_request_failed", error=repr(exc), exc_info=exc)
            slot.reply = _INTERNAL_ERROR
            self._on_done()
            return
        if waiting_for is None:  # a bare yield (asyncio.sleep(0))
            self.server.loop.call_soon(self._step, slot, coro)
        else:
            waiting_for._asyncio_future_blocking = False
            waiting_for.add_done_callback(functools.partial(self._step, slot, coro))

    def _on_done(self) -> None:
        self._running -= 1
        slots = self._slots
        while slots and slots[0].reply is not None:
            self._write(slots.popleft())
        waiting = self._waiting
        while waiting and self._running < self.limits.max_pipelined:
            self._start(*waiting.popleft())
        if not slots:
            self._since = self.server.now
            self._close_if_done()
        if self._reading_paused:
            self._update_reading()

    def _encode(self, slot: _Slot) -> bytes:
        """The reply's bytes, when it is its turn to be written (the connection header
        depends on what comes after it)."""
        status, headers, body = slot.reply
        keep_alive = slot.keep_alive
        if keep_alive is False or self._closing and not self._slots:
            slot.keep_alive = keep_alive = False
            conn = _CLOSE
        else:
            conn = _KEEP_ALIVE_10 if keep_alive == 2 else b""
        head = (_STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode()) + (
            b"content-type: application/json\r\n" if headers is _CONTENT_JSON else encode_headers(headers))
        head += b"content-length: %d\r\n" % len(body) + self.server.date_line + conn + b"\r\n"
        return head if slot.head else head + body

    def _write(self, slot: _Slot) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(self._encode(slot))
        if slot.keep_alive is False:
            self._stop_reading()
            self._slots.clear()
            self._waiting.clear()
            if self._linger and transport.can_write_eof():
                transport.write_eof()
                self._state, self._since = LINGER, self.server.now
                self._reading_paused = False
                transport.resume_reading()
            else:
                transport.close()

    def _fail(self, status: int, error: str, message: str) -> None:
        """A request the protocol itself rejects: the reply comes after the earlier ones,
        then the connection closes."""
        self._stop_reading()
        self._linger = True
        self.app.metrics.count("rejected", error)
        slot = _Slot(False, False)
        slot.reply = (status, _CONTENT_JSON, orjson.dumps({"error": error, "message": message}))
        self._slots.append(slot)
        if len(self._slots) == 1:
            self._slots.popleft()
            self._write(slot)

    # ------------------------------------------------------------------ flow control
    def _stop_reading(self) -> None:
        self._closing = True
        if self.transport is not None and not self._reading_paused and self._state != LINGER:
            self._reading_paused = True
            self.transport.pause_reading()

    def _close_if_done(self) -> None:
        if self._closing and not self._slots and self.transport is not None and self._state != LINGER:
            self.transport.close()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or self._closing:
            return
        want_pause = self._writing_paused or self._waiting or self._running >= self.limits.max_pipelined
        if want_pause and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not want_pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    # ------------------------------------------------------------------ timeouts and shutdown
    def check_timeouts(self, now: float) -> None:
        """Called by the server's sweep: enforce the read timeouts (see the module docstring)."""
        if self.transport is None:
            return
        state, waited, limits = self._state, now - self._since, self.limits
        if state == IDLE:
            if not self._slots and not self._closing and waited > limits.keepalive_timeout_s:
                self.transport.close()
        elif state == HEADERS:
            if waited > limits.header_timeout_s:
                self._stop_reading()  # earlier replies still go out; this request is not answered
                self._close_if_done()
        elif state == LINGER:
            if waited > LINGER_S:
                self.transport.close()
        elif state == BODY and waited > limits.body_timeout_s and not self._closing:
            self._dispatch_early(RejectedPostback(408, "body_timeout", f"the body did not arrive within {limits.body_timeout_s:g} s"))

    def shutdown(self) -> None:
        """Graceful stop: read no more requests, finish the ones read, then close."""
        if self.transport is None:
            return
        if self._state == LINGER:
            self.transport.close()
            return
        self._stop_reading()
        self._close_if_done()
