"""The app with a fake producer, through the HTTP server's connection protocol (bytes in,
bytes out): replies, limits, rejected records, 503 and 429."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from services.common.catalog import AccountEntry, CatalogSnapshot
from services.domain.codes import SYSTEM_EVENTS
from services.common.clock import FixedClock
from services.common.models import PostbackRecord, RejectedPostbackRecord
from services.ingress.app import IngressApp
from services.ingress.catalog_cache import CatalogCache
from services.ingress.producer import ProduceFailed
from services.ingress.settings import IngressSettings

CATALOG = CatalogSnapshot(version=3, accounts={
    42: AccountEntry(42, "acme", None, frozenset({*SYSTEM_EVENTS, "first_open"}), frozenset({"old"})),
    7: AccountEntry(7, "locked", "sekret", frozenset(SYSTEM_EVENTS), frozenset()),
})


class FakeProducer:
    """Records what would go to Kafka; `fail` makes deliver() raise like a dead broker."""

    runs_without_task = True  # the native server may drive requests without an asyncio.Task

    def __init__(self):
        self.delivered: list[tuple[str, bytes, bytes]] = []
        self.background: list[tuple[str, bytes | None, bytes]] = []
        self.fail = False
        self.background_room = 1000

    async def start(self, timeout_s): pass
    async def stop(self): pass
    async def reachable(self, timeout_s): return not self.fail

    async def deliver(self, topic, key, value, timeout_s):
        assert timeout_s <= 2.0
        if self.fail:
            raise ProduceFailed("broker gone")
        self.delivered.append((topic, key, value))

    def deliver_in_background(self, topic, key, value, timeout_s):
        if len(self.background) >= self.background_room:
            return False
        self.background.append((topic, key, value))
        return True


def make_app(**overrides) -> tuple[IngressApp, FakeProducer]:
    settings = IngressSettings.model_validate({"PBSEG_TOPIC_POSTBACKS": "pb", "PBSEG_TOPIC_REJECTED": "rej", **overrides})
    cache = CatalogCache(store=None, poll_s=0.25)
    cache.snapshot = CATALOG
    producer = FakeProducer()
    app = IngressApp(settings, producer, cache, FixedClock(1_700_000_000_000))
    app.kafka_ok = True
    return app, producer


async def call(app, path="/api/postback/", query=b"", method="GET", headers=(), body_chunks=(b"",), slow=False):
    """One request through one HttpConnection (tests/unit/test_ingress_http_server.py drives
    the protocol itself); returns status, headers (bytes) and body. `slow`: the body never
    comes, the body read timeout passes."""
    from urllib.parse import quote_from_bytes

    from services.ingress.http_server import limits_from
    from test_ingress_http_server import Native

    # What a real client puts on the wire: bytes a request line cannot carry are %-escaped.
    target = path.encode() + (b"?" + quote_from_bytes(query, safe=bytes(range(0x21, 0x7f)).replace(b"#", b"")).encode()
                              if query else b"")
    head = method.encode() + b" " + target + b" HTTP/1.1\r\nHost: t\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
    chunked = any(k == b"transfer-encoding" for k, _ in headers)
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in body_chunks if c) + b"0\r\n\r\n" if chunked else b"".join(body_chunks)
    native = Native(app, **{k: getattr(limits_from(app.settings), k) for k in ("max_header_bytes", "max_body_bytes", "body_timeout_s")})
    native.send(head + b"\r\n" + (b"" if slow else body))
    await native.settle()
    if slow:
        native.advance(app.settings.body_read_timeout_s + 1)
        await native.settle()
    status, reply_headers, reply_body = native.replies(heads=1 if method == "HEAD" else 0)[0]
    return status, {k.encode(): v.encode() for k, v in reply_headers.items()}, reply_body


async def test_body_shorter_than_its_content_length_is_incomplete():
    """The client stops sending before the declared body ended: 400, nothing delivered."""
    from test_ingress_http_server import Native, request

    app, producer = make_app()
    native = Native(app)
    native.send(request(method="POST", headers="Content-Length: 10\r\n", body=b"abc"))
    native.conn.eof_received()
    await native.settle()
    [(status, _, body)] = native.replies()
    assert (status, orjson.loads(body)["error"]) == (400, "body_incomplete") and producer.delivered == []


async def test_accepted_postback_is_delivered_with_key_and_schema():
    app, producer = make_app()
    status, headers, body = await call(app, query=b"id=dev-1&status=first_open_42&tid=t1")
    assert status == 200 and headers[b"content-type"] == b"application/json"
    reply = orjson.loads(body)
    assert reply["status"] == "accepted"
    [(topic, key, value)] = producer.delivered
    record = PostbackRecord.model_validate_json(value)
    assert (topic, key) == ("pb", b"42:dev-1")
    assert (record.event_id, record.event, record.tid) == (reply["event_id"], "first_open", "t1")


async def test_post_with_a_body_behaves_like_get():
    app, producer = make_app()
    status, _, _ = await call(app, method="POST", query=b"id=dev-1&status=reg_42",
                              headers=[(b"content-length", b"5")], body_chunks=[b"ab", b"cde"])
    assert status == 200 and len(producer.delivered) == 1


async def test_event_ids_are_unique():
    app, producer = make_app()
    ids = {orjson.loads((await call(app, query=b"id=d&status=reg_42"))[2])["event_id"] for _ in range(200)}
    assert len(ids) == 200


@pytest.mark.parametrize("query, status, error", [
    (b"id=d&status=nope_42", 404, "unknown_event"),
    (b"id=d&status=old_42", 422, "event_inactive"),
    (b"id=d&status=reg_7", 403, "missing_key"),
    (b"id=d&status=reg_7&key=nope", 403, "wrong_key"),
    (b"status=reg_42", 400, "missing_id"),
])
async def test_rejection_replies_and_writes_a_rejected_record(query, status, error):
    app, producer = make_app()
    got_status, _, body = await call(app, query=query)
    assert got_status == status and orjson.loads(body)["error"] == error
    assert producer.delivered == []
    [(topic, _, value)] = producer.background
    record = RejectedPostbackRecord.model_validate_json(value)
    assert (topic, record.reason, record.stage) == ("rej", error, "ingress")
    assert "key=nope" not in record.raw
    assert f'outcome="rejected",reason="{error}"' in (await call(app, path="/metrics"))[2].decode()


async def test_kafka_failure_is_503_with_retry_after_and_never_2xx():
    app, producer = make_app()
    producer.fail = True
    status, headers, body = await call(app, query=b"id=d&status=reg_42")
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert orjson.loads(body)["error"] == "kafka_unavailable"
    assert (await call(app, path="/readyz"))[0] == 503


async def test_rate_limit_answers_429_with_retry_after():
    app, producer = make_app(INGRESS_RATE_LIMIT_PER_S=2, INGRESS_RATE_LIMIT_BURST=2)
    statuses = [(await call(app, query=b"id=d&status=reg_42"))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    status, headers, body = await call(app, query=b"id=d&status=reg_42")
    assert headers[b"retry-after"] == b"1" and orjson.loads(body)["error"] == "rate_limited"
    assert len(producer.delivered) == 2
    assert RejectedPostbackRecord.model_validate_json(producer.background[-1][2]).account_id == 42


async def test_rate_limit_is_off_by_default():
    app, producer = make_app()
    for _ in range(500):
        assert (await call(app, query=b"id=d&status=reg_42"))[0] == 200


@pytest.mark.parametrize("kwargs, status, error", [
    (dict(method="PUT"), 405, "method_not_allowed"),
    (dict(query=b"id=d&status=reg_42&x=" + b"y" * 5000), 414, "query_too_long"),
    (dict(method="POST", headers=[(b"content-length", b"999999")]), 413, "body_too_large"),
    (dict(method="POST", headers=[(b"transfer-encoding", b"chunked")], body_chunks=[b"x" * 40_000] * 3), 413, "body_too_large"),
    (dict(method="POST", headers=[(b"content-length", b"abc")]), 400, "invalid_content_length"),
    (dict(path="/nope"), 404, "not_found"),
])
async def test_request_limits(kwargs, status, error):
    app, producer = make_app()
    got, _, body = await call(app, **{"query": b"id=d&status=reg_42", **kwargs})
    assert (got, orjson.loads(body)["error"]) == (status, error)
    assert producer.delivered == []


async def test_slow_body_times_out_with_408():
    app, producer = make_app(INGRESS_BODY_READ_TIMEOUT_S=0.05)
    status, _, body = await call(app, method="POST", query=b"id=d&status=reg_42",
                                 headers=[(b"content-length", b"10")], slow=True)
    assert (status, orjson.loads(body)["error"]) == (408, "body_timeout") and producer.delivered == []


async def test_not_ready_until_the_catalog_is_loaded():
    app, producer = make_app()
    app.catalog.snapshot = None
    status, headers, _ = await call(app, query=b"id=d&status=reg_42")
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert (await call(app, path="/readyz"))[0] == 503
    assert (await call(app, path="/healthz"))[0] == 200


async def test_rejected_records_are_dropped_and_counted_when_too_many_are_pending():
    app, producer = make_app()
    producer.background_room = 1
    for _ in range(3):
        assert (await call(app, query=b"id=d&status=nope_42"))[0] == 404
    metrics = (await call(app, path="/metrics"))[2].decode()
    assert 'pbseg_ingress_rejected_records_total{result="dropped"} 2.0' in metrics


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.binary(max_size=600), method=st.sampled_from(["GET", "POST", "HEAD", "DELETE", "OPTIONS"]),
       path=st.sampled_from(["/api/postback/", "/api/postback", "/api/postback//", "/x"]))
async def test_garbage_never_escapes_and_gets_4xx_json(query, method, path):
    app, producer = make_app()
    status, headers, body = await call(app, path=path, query=query, method=method)
    if method == "HEAD":  # a HEAD reply has no body
        assert 400 <= status < 500 and body == b"" and producer.delivered == []
        return
    reply = orjson.loads(body)
    if status == 200:
        assert reply["status"] == "accepted" and len(producer.delivered) == 1
    else:
        assert 400 <= status < 500 and set(reply) == {"error", "message"}
        assert producer.delivered == []


async def test_metrics_count_accepted_postbacks_latency_and_in_flight():
    app, producer = make_app()
    for _ in range(3):
        assert (await call(app, query=b"id=d&status=reg_42"))[0] == 200
    assert (await call(app, query=b"id=d&status=nope_42"))[0] == 404
    metrics = (await call(app, path="/metrics"))[2].decode()
    assert 'pbseg_ingress_requests_total{outcome="accepted",reason="accepted"} 3.0' in metrics
    assert 'pbseg_ingress_requests_total{outcome="rejected",reason="unknown_event"} 1.0' in metrics
    assert 'pbseg_ingress_produce_seconds_bucket{le="0.001"} 3.0' in metrics  # the fake acknowledges at once
    assert 'pbseg_ingress_produce_seconds_bucket{le="+Inf"} 3.0' in metrics
    assert "pbseg_ingress_produce_seconds_count 3.0" in metrics
    assert "pbseg_ingress_in_flight 0.0" in metrics


class GrowingStore:
    """A catalog store whose next snapshot has an account the cache has not loaded yet."""

    def __init__(self):
        self.reads = 0

    async def version(self):
        return 4

    async def snapshot(self):
        self.reads += 1
        accounts = {**CATALOG.accounts, 99: AccountEntry(99, "new", None, frozenset(SYSTEM_EVENTS), frozenset())}
        return CatalogSnapshot(version=4, accounts=accounts)


async def test_a_catalog_rejection_is_checked_against_a_fresh_snapshot_first():
    app, producer = make_app()
    app.catalog.store = GrowingStore()
    # Account 99 was created after the cache loaded version 3: accepted without waiting for the poll.
    status, _, _ = await call(app, query=b"id=d&status=reg_99")
    assert status == 200 and app.catalog.version == 4 and app.catalog.store.reads == 1
    assert producer.background == []
    # Still unknown in the fresh snapshot: rejected; the version did not move, nothing reloaded.
    status, _, body = await call(app, query=b"id=d&status=reg_12345")
    assert (status, orjson.loads(body)["error"]) == (404, "unknown_account") and app.catalog.store.reads == 1
