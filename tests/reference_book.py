"""The domain's reference semantics (services/domain/postback.py) fed with postback.v1 records in
the order a test produced them: what Redis and the device-events topic must equal afterwards."""

from __future__ import annotations

from services.common.models import PostbackRecord
from services.domain.device_event import DeviceEvent
from services.domain.device_state import EventStat
from services.domain.postback import Applied, DeviceBook, Postback, RecordMeta, Rejection, process_postback


def postback_of(r: PostbackRecord) -> Postback:
    return Postback(r.event_id, r.account_id, r.install_id, r.event, r.occurred_at, r.received_at, r.tid, r.amount,
                    r.currency)


class Reference:
    """A DeviceBook with records applied in the given order. Records of one device always share a
    partition, so the global order is a valid order for every partition; `partition` defaults to 0
    and offsets count up per partition unless given."""

    def __init__(self, tid_retention_ms: int):
        self.book = DeviceBook(tid_retention_ms)
        self.published: list[DeviceEvent] = []
        self.duplicate_tids = 0
        self._next_offset: dict[int, int] = {}

    def apply(self, record: PostbackRecord, partition: int = 0, offset: int | None = None,
              processed_at: int = 0) -> Applied | Rejection:
        if offset is None:
            offset = self._next_offset.get(partition, 0)
        self._next_offset[partition] = max(self._next_offset.get(partition, 0), offset + 1)
        result = process_postback(self.book, postback_of(record), RecordMeta(partition, offset), processed_at)
        if isinstance(result, Applied):
            self.published.extend(result.events)
            self.duplicate_tids += result.duplicate_tid
        return result

    @property
    def devices(self) -> dict[tuple[int, str], dict[str, EventStat]]:
        return {key: device.events for key, device in self.book.devices.items()}

    def device_counts(self, account_id: int) -> dict[str, int]:
        return self.book.device_counts(account_id)


def check_device_events(values: list[bytes], ref: Reference) -> dict[str, bytes]:
    """The device-events topic against the reference: every occurrence once after deduplicating by
    event_id, duplicates byte-identical, each with the reference's event, ordinal and first flag.
    Returns the records by event_id."""
    import orjson

    by_id: dict[str, bytes] = {}
    for value in values:
        event_id = orjson.loads(value)["event_id"]
        assert by_id.setdefault(event_id, value) == value, event_id  # duplicates byte-identical
    want = {e.event_id: e for e in ref.published}
    assert set(by_id) == set(want)
    for event_id, value in by_id.items():
        got = orjson.loads(value)
        assert (got["event"], got["deposit_ordinal"], got["first_occurrence"]) == \
            (want[event_id].event, want[event_id].deposit_ordinal, want[event_id].first_occurrence), event_id
    return by_id
