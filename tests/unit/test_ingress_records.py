"""What the ingress writes to Kafka matches the versioned models exactly."""

import orjson
from hypothesis import given, settings, strategies as st

from services.common.models import PostbackRecord, RejectedPostbackRecord
from services.ingress.parsing import Postback, RejectedPostback
from services.ingress.records import postback_key, postback_value, redact_query, rejected_key, rejected_value


def test_postback_value_is_a_valid_postback_v1():
    p = Postback(42, "dev-1", "dep", 1_700_000_000_000, "tx", "19.99", "USD")
    record = PostbackRecord.model_validate_json(postback_value(p, "0123abc", 1_700_000_000_005))
    assert (record.account_id, record.install_id, record.event, record.tid, record.amount, record.currency) == \
        (42, "dev-1", "dep", "tx", "19.99", "USD")
    assert (record.event_id, record.occurred_at, record.received_at) == ("0123abc", 1_700_000_000_000, 1_700_000_000_005)


def test_optional_fields_are_omitted_when_absent():
    raw = orjson.loads(postback_value(Postback(1, "d", "reg", 5), "e", 6))
    assert set(raw) == {"schema", "event_id", "account_id", "install_id", "event", "occurred_at", "received_at"}
    PostbackRecord.model_validate(raw)


def test_key_keeps_one_device_on_one_partition():
    assert postback_key(42, "dev-1") == b"42:dev-1"


def test_rejected_value_is_valid_and_truncated():
    r = RejectedPostback(404, "unknown_event", "no such event", 42)
    record = RejectedPostbackRecord.model_validate_json(rejected_value(r, "id=d&" + "x" * 5000, 7))
    assert (record.stage, record.reason, record.account_id, record.at) == ("ingress", "unknown_event", 42, 7)
    assert len(record.raw) == 1024
    assert rejected_key(42) == b"42" and rejected_key(None) is None


def test_the_secret_never_reaches_the_rejected_topic():
    r = RejectedPostback(404, "unknown_event", "m", 7)
    raw = orjson.loads(rejected_value(r, "id=d&key=topsecret&status=x_7&k%65y=alsosecret", 1))["raw"]
    assert "secret" not in raw and raw == "id=d&key=***&status=x_7&k%65y=***"
    assert redact_query("keyboard=1&monkey=2") == "keyboard=1&monkey=2"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000), st.text(max_size=200), st.one_of(st.none(), st.integers(1, 10**12)))
def test_any_rejection_encodes_to_a_valid_record(raw, message, account):
    record = rejected_value(RejectedPostback(400, "x", message, account), raw, 1)
    RejectedPostbackRecord.model_validate_json(record)


def test_partitioning_matches_the_default_kafka_partitioner():
    """Our own batching must put a key where every other Kafka client would."""
    from aiokafka.partitioner import DefaultPartitioner

    from services.ingress.producer import partition_for

    partitions = list(range(8))
    for i in range(500):
        key = f"{i % 37}:dev-{i}".encode()
        assert partition_for(key, 8) == DefaultPartitioner()(key, partitions, partitions)


def test_latency_histogram_buckets_are_cumulative_with_le_bounds():
    from services.ingress.metrics import LatencyHistogram

    h = LatencyHistogram((0.001, 0.01))
    for v in (0.0005, 0.001, 0.002, 0.5):
        h.observe(v)
    assert h.cumulative() == [("0.001", 2), ("0.01", 3), ("+Inf", 4)]
    assert h.total == 0.5035
