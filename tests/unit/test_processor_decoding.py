"""Decoding, planning and rejection messages of the processor: pure logic, no network."""

import orjson
import pytest

from services.domain.device_state import parse_event_value
from services.common.models import DeviceEventRecord, PostbackRecord, RejectedPostbackRecord
from services.processor.decoding import RecordRejection, decode_postback, rejection_labels
from services.common.keys import device_index_bucket
from services.processor.planning import FIELDS_PER_EVENT, deposit_amount, plan_partition_batch
from services.processor.rejections import rejected_message
from services.processor.store import OutboxEntry
from services.processor.settings import ProcessorSettings


def _record(**over) -> bytes:
    data = {"schema": "postback.v1", "event_id": "e1", "account_id": 7, "install_id": "dev-1", "event": "dep",
            "occurred_at": 1_700_000_000_000, "received_at": 1_700_000_000_001, "tid": "t-1", "amount": "9.99",
            "currency": "USD"}
    data.update(over)
    return orjson.dumps({k: v for k, v in data.items() if v is not ...})


def test_a_valid_record_decodes_to_the_model():
    """A postback.v1 record becomes a PostbackRecord with every field."""
    decoded = decode_postback(_record())
    assert isinstance(decoded, PostbackRecord)
    assert (decoded.account_id, decoded.install_id, decoded.event, decoded.tid) == (7, "dev-1", "dep", "t-1")


@pytest.mark.parametrize("value", [b"\xff\xfe not json", b"{", b"[1, 2", b"plain text"])
def test_bytes_that_are_not_json_are_undecodable(value):
    """Garbage becomes an `undecodable` rejection instead of an exception."""
    decoded = decode_postback(value)
    assert isinstance(decoded, RecordRejection) and decoded.reason == "undecodable"


@pytest.mark.parametrize("value", [None, b""])
def test_empty_values_are_undecodable(value):
    """Tombstones carry no postback."""
    assert decode_postback(value).reason == "undecodable"


@pytest.mark.parametrize("override, field", [
    ({"account_id": 0}, "account_id"),
    ({"install_id": "has space"}, "install_id"),
    ({"event": "bad-code!"}, "event"),
    ({"occurred_at": -1}, "occurred_at"),
    ({"schema": "postback.v2"}, "schema"),
    ({"unexpected": 1}, "unexpected"),
    ({"event_id": ...}, "event_id"),
])
def test_schema_breaking_records_name_the_field(override, field):
    """A record that breaks postback.v1 is a `schema_violation` naming the offending field."""
    decoded = decode_postback(_record(**override))
    assert isinstance(decoded, RecordRejection)
    assert decoded.reason == "schema_violation"
    assert field in decoded.message


def test_the_account_of_a_schema_breaking_record_is_kept_when_valid():
    """The rejected topic is keyed by account when the record still names a valid one."""
    assert decode_postback(_record(install_id="a b")).account_id == 7
    assert decode_postback(_record(account_id="x")).account_id is None


@pytest.mark.parametrize("code", ["dep_2", "dep_10"])
def test_derived_deposit_codes_are_reserved(code):
    """dep_<n> is minted by the processor; a posted one would fake ordinals."""
    decoded = decode_postback(_record(event=code))
    assert decoded.reason == "reserved_event" and decoded.account_id == 7


def test_dep_and_custom_codes_that_look_similar_are_accepted():
    """Only dep_<digits> is reserved: `dep`, `dep_x` and `deposit_2` are ordinary codes."""
    for code in ("dep", "dep_x", "deposit_2", "install", "reg"):
        assert isinstance(decode_postback(_record(event=code)), PostbackRecord)


def test_raw_text_is_truncated_to_the_schema_limit():
    """The rejected record's `raw` fits rejected-postback.v1 (1 KiB)."""
    decoded = decode_postback(b"x" * 10_000)
    assert len(decoded.raw) == 1024


def test_planning_keeps_offsets_of_rejected_records_in_the_watermark():
    """The last offset moves the watermark even when the last record is rejected."""
    batch = plan_partition_batch(3, [(10, _record()), (11, b"nope"), (12, _record(event_id="e2")), (13, b"{}")], 555)
    assert (batch.partition, batch.processed_at, batch.emit) == (3, 555, True)
    assert batch.last_offset == 13
    assert batch.applicable == 2 and batch.size == 4
    assert [r.offset for r in batch.rejected] == [11, 13]
    assert len(batch.events) == 2 and all(len(e) == FIELDS_PER_EVENT for e in batch.events)
    assert batch.events[0] == [10, "7", "dev-1", "dep", "1700000000000", "1700000000001", "t-1",
                               device_index_bucket("dev-1"), "99900000000", "USD",  # 9.99 in 10^-10 units
                               "", "", "e1", ""]  # no trigger schedules (no trigger book), the event id
    assert orjson.loads(batch.script_events())[1][0] == 12
    assert deposit_amount("dep", "0.0000000001", "eur") == ("1", "EUR")
    assert deposit_amount("dep", "5", None) == ("", "") and deposit_amount("reg", "5", "USD") == ("", "")
    assert len(batch.script_lines().split(b"\n")) == 2


def _entry(batch, tokens: str) -> OutboxEntry:
    return OutboxEntry("1-0", {b"h": batch.script_lines(), b"t": tokens.encode()})


def test_outbox_records_are_heads_completed_by_the_script_tokens():
    """Tokens add ordinal and first flag; '-' publishes nothing; '+' puts the install record first."""
    batch = plan_partition_batch(0, [(0, _record(event_id="a", install_id='we"ird\\id')), (1, _record(event_id="b")),
                                     (2, _record(event_id="c", tid=None, amount=None, currency=None))], 555)
    records = _entry(batch, "+1:1,-,2:0").records()
    assert [key for key, _ in records] == [b'7:we"ird\\id'] * 2 + [b"7:dev-1"]
    parsed = [DeviceEventRecord.model_validate_json(value) for _, value in records]
    assert [(r.event_id, r.event, r.deposit_ordinal, r.first_occurrence) for r in parsed] == \
        [("a:install", "install", None, True), ("a", "dep", 1, True), ("c", "dep", 2, False)]
    assert parsed[0].occurred_at == 1_700_000_000_000 and parsed[0].processed_at == 555 and parsed[0].tid is None
    assert (parsed[1].install_id, parsed[1].amount, parsed[1].tid) == ('we"ird\\id', "9.99", "t-1")
    assert parsed[2].tid is None and parsed[2].currency is None
    assert _entry(batch, "+1:1,-,2:0").records() == records  # the same entry re-sent is the same bytes


def test_planning_for_rebuild_renders_no_records():
    """emit=False (pbseg rebuild) renders no device-event heads."""
    batch = plan_partition_batch(0, [(0, _record())], 1, emit=False)
    assert batch.lines == [] and batch.script_lines() == b"" and batch.emit is False


def test_planning_writes_empty_strings_for_missing_tid():
    """The Lua script reads '' as 'no tid'; the record says null."""
    batch = plan_partition_batch(0, [(0, _record(tid=None, amount=None, currency=None))], 1)
    assert batch.events[0][6] == ""
    assert b'"tid":null' in batch.script_lines() and b'"currency":null' in batch.script_lines()


def test_rejected_message_follows_the_schema_and_names_the_position():
    """The rejected record is valid rejected-postback.v1, keyed by account, and says where the record was."""
    rejection = decode_postback(_record(event="dep_3"))
    key, value = rejected_message(rejection, "postbacks.v1", 2, 41, 1_700_000_000_500)
    record = RejectedPostbackRecord.model_validate_json(value)
    assert key == b"7"
    assert (record.stage, record.reason, record.account_id, record.at) == ("processor", "reserved_event", 7, 1_700_000_000_500)
    assert "postbacks.v1[2]@41" in record.message
    assert rejection_labels(value) == ("processor", "reserved_event")
    assert rejection_labels(b"garbage") == ("unknown", "unknown")


def test_device_hash_values_parse_in_both_forms():
    """A single occurrence is stored as 'first_ms'; more as 'first:last:count'."""
    assert parse_event_value("1700000000000") == (1_700_000_000_000, 1_700_000_000_000, 1)
    assert parse_event_value(b"1:5:3") == (1, 5, 3)
    with pytest.raises(ValueError):
        parse_event_value("1:2")


def test_tid_retention_below_30_days_is_refused():
    """The issue's floor: recorded tids are kept at least 30 days."""
    with pytest.raises(ValueError):
        ProcessorSettings.model_validate({"PROCESSOR_TID_RETENTION_DAYS": 29})
    assert ProcessorSettings.model_validate({"PROCESSOR_TID_RETENTION_DAYS": 45}).tid_retention_days == 45
