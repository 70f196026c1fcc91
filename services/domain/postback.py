"""The processor's semantics: what one accepted postback does to the devices of its account.

`process_postback(book, postback, meta)` is the reference: plain Python, written apart from
apply_batch.lua in the plainest form, so the two can disagree when one of them is wrong
(tests/contract/ feeds both the same generated records; the crash test compares Redis and the
device-events topic with it). Rules, in order:
1. A record at or below its partition's watermark was applied before: nothing changes. A record
   beyond watermark + 1 is refused too (`gap`): the records in between are missing - Redis lost
   writes, or the log lost records - and applying it would skip them.
2. A record carrying a reserved code other than install/reg/dep (`dep_<n>` is derived) is
   rejected; its offset still counts as processed.
3. A tid already seen for the same account, device and code within the tid retention (by the
   ingress receive times) is a duplicate: nothing changes.
4. A device's first postback makes the device (dense number per account and partition, from 1)
   with `install` at the event time; unless the postback is `install` itself, its install
   record is published first, with event id `<event_id>:install`.
5. The code's stat takes the occurrence (first = min, last = max, count + 1). The n-th `dep`
   carries deposit ordinal n and, from n = 2, sets `dep_<n>` (a first occurrence).
6. One device-event is published per applied postback (plus the install record of rule 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.domain.codes import DEP, INSTALL, deposit_code, is_postable
from services.domain.device_event import DeviceEvent, install_event_id
from services.domain.device_state import EventStat


@dataclass(frozen=True)
class Postback:
    """One accepted postback (postback.v1), as plain data."""

    event_id: str
    account_id: int
    install_id: str
    event: str
    occurred_at: int  # event time, unix ms
    received_at: int  # when the ingress received it, unix ms
    tid: str | None = None
    amount: str | None = None
    currency: str | None = None


@dataclass(frozen=True)
class RecordMeta:
    """The only Kafka facts the semantics see."""

    partition: int
    offset: int
    timestamp: int = 0


@dataclass(frozen=True)
class Rejection:
    reason: str  # machine code, e.g. reserved_event
    message: str


@dataclass(frozen=True)
class Applied:
    """What one record changed: the device-events to publish (empty when nothing changed)."""

    events: tuple[DeviceEvent, ...] = ()
    redelivered: bool = False
    gap: bool = False
    duplicate_tid: bool = False
    new_device: bool = False


@dataclass
class Device:
    partition: int
    number: int  # dense per account and partition, from 1, in order of creation
    events: dict[str, EventStat] = field(default_factory=dict)  # first-seen order


@dataclass
class DeviceBook:
    """Every device's state, the recorded tids and each partition's watermark (in memory)."""

    tid_retention_ms: int
    devices: dict[tuple[int, str], Device] = field(default_factory=dict)
    tids: dict[tuple[int, str, str, str], int] = field(default_factory=dict)
    watermarks: dict[int, int] = field(default_factory=dict)
    sequences: dict[tuple[int, int], int] = field(default_factory=dict)  # (partition, account) -> last number

    def device(self, account_id: int, install_id: str) -> Device | None:
        return self.devices.get((account_id, install_id))

    def device_counts(self, account_id: int) -> dict[str, int]:
        """On how many devices of the account each code occurred."""
        counts: dict[str, int] = {}
        for (acct, _), device in self.devices.items():
            if acct == account_id:
                for code in device.events:
                    counts[code] = counts.get(code, 0) + 1
        return counts

    def devices_of(self, account_id: int) -> dict[str, Device]:
        return {install: d for (acct, install), d in self.devices.items() if acct == account_id}


def process_postback(book: DeviceBook, postback: Postback, meta: RecordMeta, processed_at: int = 0) -> Applied | Rejection:
    """Apply one record of the postbacks topic to `book` (see the module's rules)."""
    watermark = book.watermarks.get(meta.partition, -1)
    if meta.offset <= watermark:
        return Applied(redelivered=True)
    if meta.offset > watermark + 1:
        return Applied(gap=True)
    book.watermarks[meta.partition] = meta.offset
    p = postback
    if not is_postable(p.event):
        return Rejection("reserved_event", f"`{p.event}` is derived by the processor and cannot be posted")
    if p.tid:
        key = (p.account_id, p.install_id, p.event, p.tid)
        first_seen = book.tids.get(key)
        if first_seen is not None and p.received_at - first_seen < book.tid_retention_ms:
            return Applied(duplicate_tid=True)
        book.tids[key] = p.received_at
    published: list[DeviceEvent] = []
    device = book.devices.get((p.account_id, p.install_id))
    new_device = device is None
    if device is None:
        seq_key = (meta.partition, p.account_id)
        number = book.sequences[seq_key] = book.sequences.get(seq_key, 0) + 1
        device = book.devices[(p.account_id, p.install_id)] = Device(meta.partition, number)
        device.events[INSTALL] = EventStat(p.occurred_at, p.occurred_at, 1)
        if p.event == INSTALL:
            return Applied((_event(p, INSTALL, p.event_id, None, True, processed_at),), new_device=True)
        published.append(_event(p, INSTALL, install_event_id(p.event_id), None, True, processed_at))
    first = _occur(device, p.event, p.occurred_at)
    ordinal = None
    if p.event == DEP:
        ordinal = device.events[DEP].count
        if ordinal >= 2:
            _occur(device, deposit_code(ordinal), p.occurred_at)
    published.append(_event(p, p.event, p.event_id, ordinal, first, processed_at))
    return Applied(tuple(published), new_device=new_device)


def _occur(device: Device, code: str, ts: int) -> bool:
    """One occurrence of `code` at `ts`; True when it is the first on the device."""
    stat = device.events.get(code)
    device.events[code] = EventStat(ts, ts, 1) if stat is None else stat.occurred(ts)
    return stat is None


def _event(p: Postback, code: str, event_id: str, ordinal: int | None, first: bool, processed_at: int) -> DeviceEvent:
    if code == INSTALL and event_id != p.event_id:  # the derived install record carries no payment fields
        return DeviceEvent(event_id, p.account_id, p.install_id, code, None, True, p.occurred_at, processed_at)
    return DeviceEvent(event_id, p.account_id, p.install_id, code, ordinal, first, p.occurred_at, processed_at,
                       p.tid, p.amount, p.currency)
