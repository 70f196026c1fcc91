"""The native HTTP server's connection protocol (services/ingress/http_connection.py) with a
fake transport and the fake producer: pipelining, keep-alive, HTTP/1.0, limits, read timeouts,
POST bodies, malformed requests, backpressure and graceful shutdown."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest

from services.ingress.http_connection import ConnectionLimits, HttpConnection
from services.ingress.http_server import HttpServer
from test_ingress_app import FakeProducer, make_app
from waiting import wait_for  # tests/waiting.py


class FakeTransport:
    """Collects what the connection writes; closing reports the loss like a real transport."""

    def __init__(self):
        self.out = bytearray()
        self.closed = self.eof = False
        self.reading = True
        self.protocol = None

    def write(self, data: bytes) -> None:
        assert not self.closed and not self.eof, "write after close"
        self.out += data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    abort = close

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        self.high = high

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True


def parse_replies(raw: bytes, heads: int = 0) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream of HTTP/1.1 replies; the first `heads` are replies to HEAD (no body)."""
    replies = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"incomplete reply head: {raw[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
        length = 0 if status == 100 or len(replies) < heads else int(headers["content-length"])
        replies.append((status, headers, rest[:length]))
        raw = rest[length:]
    return [r for r in replies if r[0] != 100]


class Native:
    """One connection of a HttpServer around `app`, driven by hand."""

    def __init__(self, app, **limits):
        self.app = app
        self.server = HttpServer(app, ConnectionLimits(**limits))
        self.server.loop = asyncio.get_running_loop()
        self.transport = FakeTransport()
        self.conn = HttpConnection(self.server)
        self.transport.protocol = self.conn
        self.conn.connection_made(self.transport)

    def send(self, data: bytes) -> None:
        self.conn.data_received(data)

    async def settle(self) -> None:
        for _ in range(30):
            await asyncio.sleep(0)

    def replies(self, heads: int = 0):
        return parse_replies(bytes(self.transport.out), heads)

    def advance(self, seconds: float) -> None:
        self.server.now += seconds
        for conn in list(self.server.connections):
            conn.check_timeouts(self.server.now)


def request(path: str = "/api/postback/?id=d&status=reg_42", method: str = "GET", headers: str = "",
            body: bytes = b"", version: str = "1.1") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: t\r\n{headers}\r\n".encode() + body


class GatedProducer(FakeProducer):
    """deliver() waits until the test opens the gate of that install id."""

    def __init__(self):
        super().__init__()
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []

    async def deliver(self, topic, key, value, timeout_s):
        install_id = key.decode().split(":", 1)[1]
        self.started.append(install_id)
        gate = self.gates.get(install_id)
        if gate is not None:
            await gate.wait()
        await super().deliver(topic, key, value, timeout_s)


def gated_app(*gated: str, **settings):
    app, _ = make_app(**settings)
    producer = GatedProducer()
    producer.gates = {name: asyncio.Event() for name in gated}
    app.producer = producer
    return app, producer


async def test_pipelined_requests_are_answered_in_order():
    app, producer = gated_app("slow")
    native = Native(app)
    native.send(request("/api/postback/?id=slow&status=reg_42") + request("/healthz")
                + request("/nope") + request("/api/postback/?id=fast&status=reg_42"))
    await native.settle()
    assert native.transport.out == b"" and producer.started == ["slow", "fast"]  # the first one holds the rest back
    producer.gates["slow"].set()
    await native.settle()
    replies = native.replies()
    assert [r[0] for r in replies] == [200, 200, 404, 200]
    assert orjson.loads(replies[2][2])["error"] == "not_found"
    assert [orjson.loads(r[2]).get("event_id") is not None for r in replies] == [True, False, False, True]
    assert not native.transport.closed


async def test_keep_alive_and_http_1_0():
    app, producer = make_app()
    native = Native(app)
    native.send(request())
    await native.settle()
    native.send(request())
    await native.settle()
    assert [r[0] for r in native.replies()] == [200, 200] and not native.transport.closed
    assert all("connection" not in r[1] for r in native.replies())
    # HTTP/1.0 asking for keep-alive gets it, and is told so.
    ten = Native(app)
    ten.send(request(version="1.0", headers="Connection: keep-alive\r\n"))
    await ten.settle()
    [(status, headers, _)] = ten.replies()
    assert status == 200 and headers["connection"] == "keep-alive" and not ten.transport.closed
    # HTTP/1.0 without it, and HTTP/1.1 with Connection: close, end after the reply.
    for raw in (request(version="1.0"), request(headers="Connection: close\r\n")):
        closing = Native(app)
        closing.send(raw)
        await closing.settle()
        [(status, headers, _)] = closing.replies()
        assert status == 200 and headers["connection"] == "close" and closing.transport.closed
    assert len(producer.delivered) == 5


async def test_post_body_is_read_and_discarded_chunked_and_with_expect_continue():
    app, producer = make_app()
    native = Native(app)
    native.send(request(method="POST", headers="Content-Length: 5\r\n", body=b"ab"))
    await native.settle()
    assert native.transport.out == b""  # waiting for the rest of the body
    native.send(b"cde" + request(method="POST", headers="Transfer-Encoding: chunked\r\n", body=b"3\r\nxyz\r\n0\r\n\r\n"))
    await native.settle()
    native.send(request(method="POST", headers="Content-Length: 4\r\nExpect: 100-continue\r\n"))
    await native.settle()
    assert native.transport.out.endswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    native.send(b"wxyz")
    await native.settle()
    assert [r[0] for r in native.replies()] == [200, 200, 200] and len(producer.delivered) == 3


@pytest.mark.parametrize("raw, status, error", [
    (request("/api/postback/?id=d&status=reg_42&pad=" + "x" * 20_000), 414, "query_too_long"),
    (request(headers="X-Big: " + "y" * 20_000 + "\r\n"), 431, "headers_too_large"),
    (b"GET /a b c HTTP/1.1\r\n\r\n", 400, "malformed_request"),
    (b"NOT-A-REQUEST\r\n\r\n", 400, "malformed_request"),
    (b"G\x00T / HTTP/1.1\r\n\r\n", 400, "malformed_request"),
    (b"GET /api/postback/?id=a&status=reg_42\r\n\r\n", 400, "malformed_request"),  # HTTP/0.9: no version
    (b"GET /api/postback/?id=a&status=reg_42 HTTP/0.9\r\n\r\n", 400, "malformed_request"),
    (b"GET /api/postback/?id=a&status=reg_42 HTTP/2.0\r\n\r\n", 400, "malformed_request"),
    (request(method="POST", headers="Content-Length: abc\r\n"), 400, "invalid_content_length"),
    (request(method="POST", headers="Content-Length: 1\r\nContent-Length: 2\r\n"), 400, "invalid_content_length"),
])
async def test_protocol_rejections_are_json_4xx_and_end_the_connection(raw, status, error):
    app, producer = make_app()
    native = Native(app)
    native.send(request("/healthz") + raw + request("/healthz"))
    await native.settle()
    replies = native.replies()
    assert [r[0] for r in replies] == [200, status]  # the request after the bad one is not answered
    body = orjson.loads(replies[1][2])
    assert set(body) == {"error", "message"} and body["error"] == error
    assert replies[1][1]["connection"] == "close" and native.transport.eof  # shut for writing, then lingering
    assert not native.transport.reading or native.conn._closing
    assert producer.delivered == []
    assert f'outcome="rejected",reason="{error}"' in (await _metrics(app))


async def _metrics(app) -> str:
    return (await app.handle("GET", "/metrics", "", None))[2].decode()


async def test_a_request_line_without_an_http_version_is_never_processed():
    """HTTP/0.9 style `GET /path`: 400 and the connection ends when the blank line follows; a
    bare line (all an HTTP/0.9 client sends) waits for headers and is closed by the header
    timeout. Either way no record is produced."""
    app, producer = make_app()
    answered = Native(app)
    answered.send(b"GET /api/postback/?id=a&status=reg_42\r\n\r\n")
    await answered.settle()
    [(status, headers, body)] = answered.replies()
    assert (status, orjson.loads(body)["error"], headers["connection"]) == (400, "malformed_request", "close")
    assert "HTTP/1.1" in orjson.loads(body)["message"]
    bare = Native(app, header_timeout_s=5)
    bare.send(b"GET /api/postback/?id=a&status=reg_42\r\n")
    await bare.settle()
    bare.advance(6)
    assert bare.transport.closed and bare.transport.out == b""
    assert producer.delivered == [] and producer.background == []


async def test_a_query_over_4_kb_is_the_apps_414_and_the_connection_stays():
    app, producer = make_app()
    native = Native(app)
    native.send(request("/api/postback/?id=d&status=reg_42&pad=" + "x" * 5000) + request())
    await native.settle()
    replies = native.replies()
    assert [(r[0], orjson.loads(r[2]).get("error")) for r in replies] == [(414, "query_too_long"), (200, None)]
    assert [v for _, _, v in producer.background]  # the rejection went to the rejected topic
    assert not native.transport.closed


async def test_body_over_the_limit_gets_413_declared_or_counted():
    app, producer = make_app(INGRESS_MAX_BODY_BYTES=1000)
    declared = Native(app, max_body_bytes=1000)
    declared.send(request(method="POST", headers="Content-Length: 5000\r\n", body=b"x" * 100))
    await declared.settle()
    [(status, headers, body)] = declared.replies()
    assert (status, orjson.loads(body)["error"], headers["connection"]) == (413, "body_too_large", "close")
    assert declared.transport.eof and declared.transport.reading  # lingering: the rest is read and dropped
    declared.send(b"x" * 4900)
    declared.advance(3)
    assert declared.transport.closed
    counted = Native(app, max_body_bytes=1000)
    counted.send(request(method="POST", headers="Transfer-Encoding: chunked\r\n", body=b"400\r\n" + b"x" * 1024 + b"\r\n"))
    await counted.settle()
    [(status, _, body)] = counted.replies()
    assert (status, orjson.loads(body)["error"]) == (413, "body_too_large")
    assert producer.delivered == [] and len(producer.background) == 2


async def test_slow_clients_time_out():
    app, producer = make_app()
    limits = dict(header_timeout_s=5, body_timeout_s=5, keepalive_timeout_s=15)
    # Headers not complete in time: closed, nothing answered.
    headers = Native(app, **limits)
    headers.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
    headers.advance(4)
    assert not headers.transport.closed
    headers.advance(2)
    assert headers.transport.closed and headers.transport.out == b""
    # A connection that sends nothing at all: the same header timeout.
    silent = Native(app, **limits)
    silent.advance(6)
    assert silent.transport.closed
    # Body not complete in time: 408 from the app, then closed.
    body = Native(app, **limits)
    body.send(request(method="POST", headers="Content-Length: 10\r\n", body=b"abc"))
    body.advance(6)
    await body.settle()
    [(status, headers_, reply)] = body.replies()
    assert (status, orjson.loads(reply)["error"], headers_["connection"]) == (408, "body_timeout", "close")
    # Idle keep-alive: open for keepalive_timeout_s after the last reply, then closed.
    idle = Native(app, **limits)
    idle.send(request())
    await idle.settle()
    idle.advance(10)
    assert not idle.transport.closed
    idle.advance(6)
    assert idle.transport.closed
    assert len(producer.delivered) == 1


async def test_a_request_waiting_for_kafka_is_not_idle():
    app, producer = gated_app("slow")
    native = Native(app, keepalive_timeout_s=1, header_timeout_s=1)
    native.send(request("/api/postback/?id=slow&status=reg_42"))
    await native.settle()
    native.advance(5)
    assert not native.transport.closed
    producer.gates["slow"].set()
    await native.settle()
    assert [r[0] for r in native.replies()] == [200]


async def test_head_replies_have_no_body():
    app, _ = make_app()
    native = Native(app)
    native.send(request("/healthz", method="HEAD") + request("/healthz"))
    await native.settle()
    [(s1, h1, b1), (s2, _, b2)] = native.replies(heads=1)
    assert (s1, b1, h1["content-length"]) == (200, b"", str(len(b2))) and s2 == 200


async def test_too_many_pipelined_requests_wait_and_reading_pauses():
    app, producer = gated_app("a", "b", "c", "d", "e")
    native = Native(app, max_pipelined=2)
    native.send(b"".join(request(f"/api/postback/?id={x}&status=reg_42") for x in "abcde"))
    await native.settle()
    assert producer.started == ["a", "b"] and not native.transport.reading
    for x in "abcde":
        producer.gates[x].set()
        await native.settle()
    assert producer.started == list("abcde") and native.transport.reading
    assert [r[0] for r in native.replies()] == [200] * 5


async def test_reading_pauses_while_the_write_buffer_is_full():
    app, _ = make_app()
    native = Native(app)
    native.conn.pause_writing()
    assert not native.transport.reading
    native.conn.resume_writing()
    assert native.transport.reading


async def test_a_client_that_goes_away_still_gets_its_record_delivered():
    app, producer = gated_app("gone")
    native = Native(app)
    native.send(request("/api/postback/?id=gone&status=reg_42"))
    await native.settle()
    native.conn.connection_lost(None)
    producer.gates["gone"].set()
    await native.settle()
    assert [k for _, k, _ in producer.delivered] == [b"42:gone"] and native.transport.out == b""


async def test_graceful_shutdown_finishes_requests_in_flight():
    app, producer = gated_app("slow")
    native = Native(app)
    native.send(request("/api/postback/?id=slow&status=reg_42"))
    await native.settle()
    closing = asyncio.create_task(native.server.close())
    await native.settle()
    native.send(request("/api/postback/?id=late&status=reg_42"))  # read no more
    assert not closing.done() and not native.transport.closed
    producer.gates["slow"].set()
    await asyncio.wait_for(closing, 2)
    [(status, headers, _)] = native.replies()
    assert (status, headers["connection"]) == (200, "close") and native.transport.closed
    assert producer.started == ["slow"]


async def test_over_a_real_socket():
    """The same protocol on a real transport (a socket pair, no network): pipelining and a 413
    whose reply the client reads in full although it was still sending its body."""
    app, producer = make_app(INGRESS_MAX_BODY_BYTES=1000)
    server = HttpServer(app, ConnectionLimits(max_body_bytes=1000))
    loop = asyncio.get_running_loop()
    server.loop, server.now = loop, loop.time()
    ours, theirs = socket.socketpair()
    await loop.connect_accepted_socket(server._protocol, ours)
    reader, writer = await asyncio.open_connection(sock=theirs)
    writer.write(request() + request("/healthz") + request("/api/postback/?id=e&status=reg_42"))
    data = b""
    while data.count(b"HTTP/1.1 ") < 3:
        data += await asyncio.wait_for(reader.read(65536), 2)
    assert [r[0] for r in parse_replies(data)] == [200, 200, 200]
    writer.write(request(method="POST", headers="Content-Length: 100000\r\n") + b"x" * 50_000)
    rest = await asyncio.wait_for(reader.read(), 5)  # until the server shuts its side
    [(status, _, body)] = parse_replies(rest)
    assert (status, orjson.loads(body)["error"]) == (413, "body_too_large")
    writer.close()
    await server.close()
    assert len(producer.delivered) == 2


class TimeoutProducer(FakeProducer):
    """A producer whose deliver() uses asyncio.timeout, which needs an asyncio.Task."""

    runs_without_task = False

    async def deliver(self, topic, key, value, timeout_s):
        async with asyncio.timeout(timeout_s):
            await asyncio.sleep(0.001)
        await super().deliver(topic, key, value, timeout_s)


@pytest.mark.parametrize("producer_class", [FakeProducer, TimeoutProducer])
async def test_requests_run_with_or_without_a_task_as_the_producer_needs(producer_class):
    app, _ = make_app()
    app.producer = producer = producer_class()
    native = Native(app)
    assert native.server.drive_without_task is (producer_class is FakeProducer)
    native.send(request() + request("/healthz") + request())
    await wait_for(lambda: len(native.replies()) == 3, timeout=2, interval=0.002, message="three replies")
    assert [r[0] for r in native.replies()] == [200, 200, 200] and len(producer.delivered) == 2


async def test_a_bug_in_the_app_is_a_logged_500_not_a_dead_connection():
    app, _ = make_app()

    async def broken(*args):
        raise KeyError("bug")
    app.handle = broken
    native = Native(app)
    native.send(request() + request())
    await native.settle()
    replies = native.replies()
    assert [(r[0], orjson.loads(r[2])["error"]) for r in replies] == [(500, "internal_error")] * 2


async def test_metrics_show_open_connections():
    app, _ = make_app()
    native = Native(app)
    other = FakeTransport()
    other.protocol = HttpConnection(native.server)
    other.protocol.connection_made(other)
    native.send(request("/metrics"))
    await native.settle()
    [(status, _, body)] = native.replies()
    assert status == 200 and "\npbseg_ingress_connections 2.0\n" in body.decode()
    other.close()
    await native.settle()
    native.send(request("/metrics"))
    await native.settle()
    assert "\npbseg_ingress_connections 1.0\n" in native.replies()[1][2].decode()


async def test_an_upgrade_request_is_answered_as_http_1_1_then_the_connection_ends():
    app, producer = make_app()
    native = Native(app)
    native.send(request(headers="Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"))
    await native.settle()
    assert [r[0] for r in native.replies()] == [200] and len(producer.delivered) == 1
    assert native.transport.closed
