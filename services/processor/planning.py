"""Pure planning of one partition's batch: decoded records -> the apply script's arguments.

A `PartitionBatch` is what the store applies in ONE atomic script call: the records that are
applicable, the rejections to publish first, and the last offset, to which the partition's
watermark moves (also when the last records were rejected). The device-event JSON is rendered
here (orjson) up to the two fields only the script knows - `deposit_ordinal` and
`first_occurrence` - so the script only appends them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import orjson

from services.common.keys import device_index_bucket
from services.domain.conditions import amount_units
from services.domain.device_event import head, head_line, install_event_id, record_key
from services.domain.triggers import TICK_PREFIX, parse_tick
from services.processor.decoding import RecordRejection, decode_postback

FIELDS_PER_EVENT = 14


@dataclass(frozen=True)
class RejectedOffset:
    offset: int
    rejection: RecordRejection


@dataclass
class PartitionBatch:
    partition: int
    processed_at: int
    emit: bool = True
    first_offset: int = -1  # the batch's first offset, rejected records included (the gap check)
    epoch: int = 0  # the pipeline's seek epoch of the partition when this batch was planned
    last_offset: int = -1
    events: list = field(default_factory=list)  # one `event_args` list per applicable record
    lines: list = field(default_factory=list)  # one `record_line` per applicable record (when emitting)
    rejected: list[RejectedOffset] = field(default_factory=list)
    tick: bytes = b""  # the apply script's ARGV[11]: the tick that ends this batch (TriggerPlan.tick_arg)

    @property
    def applicable(self) -> int:
        return len(self.events)

    def script_events(self) -> bytes:
        """The apply script's ARGV[6]: every applicable record, as one JSON array."""
        return orjson.dumps(self.events)

    def script_lines(self) -> bytes:
        """The apply script's ARGV[7]: the records' device-event heads, one line each."""
        return "\n".join(self.lines).encode()

    @property
    def size(self) -> int:
        return self.applicable + len(self.rejected)


def deposit_amount(event: str, amount: str | None, currency: str | None) -> tuple[str, str]:
    """The apply script's deposit fields: (amount in 10^-10 units, currency), both "" unless a
    `dep` carries an amount and a currency (an amount without a currency is in no sum)."""
    if event != "dep" or not amount or not currency:
        return "", ""
    return str(amount_units(amount)), currency.upper()


def plan_partition_batch(partition: int, messages: Iterable[tuple], processed_at: int, emit: bool = True,
                         triggers=None) -> PartitionBatch:
    """`plan_partition_batches` of records that hold no tick: their one batch."""
    batches = plan_partition_batches(partition, messages, processed_at, emit, triggers)
    if len(batches) != 1:
        raise ValueError(f"{len(batches)} batches: the records hold ticks (use plan_partition_batches)")
    return batches[0]


def plan_partition_batches(partition: int, messages: Iterable[tuple], processed_at: int, emit: bool = True,
                           triggers=None) -> list[PartitionBatch]:
    """Decode `(offset, value[, timestamp])` records of one partition, in offset order, into
    batches: one, or one more after each tick (services/domain/triggers.py: a tick is the last
    record of its batch, so the fires it decides see exactly the records before it). `emit=False`
    (rebuild) plans no device-event records. `triggers` (services/processor/triggers.py
    TriggerPlan) says which fires each occurrence schedules and what each tick decides; None: no
    trigger exists.

    A record's `processed_at` is its Kafka timestamp when given (the pipeline gives it), else
    `processed_at`: so a record applied again after Redis lost its last writes publishes the
    same bytes as the first time (at-least-once with identical duplicates).

    Per applicable record: `events` gets the apply script's fields (apply_batch.lua, ARGV[6]),
    all text but the offset and the install id's forward-map bucket, then the deposit's amount
    and currency (`deposit_amount`) (hashed here: SHA-1 in
    Python costs a fraction of redis.sha1hex in Lua); `lines` gets its ARGV[7] line: the Kafka
    key, a tab, the device-event.v1 JSON without deposit_ordinal, first_occurrence and the
    closing brace (services/domain/device_event.py: `head`, `head_line`)."""
    batches = [PartitionBatch(partition, processed_at, emit)]
    batch = batches[0]
    events, lines, rejected = batch.events, batch.lines, batch.rejected
    dumps, bucket = orjson.dumps, device_index_bucket
    first, last = -1, -1
    for offset, value, *stamp in messages:
        if first < 0:
            first = offset
        if value is not None and value.startswith(TICK_PREFIX):
            tick = parse_tick(value)
            batch.tick = triggers.tick_arg(tick, offset) if triggers is not None else b""
            batch.first_offset, batch.last_offset = first, offset
            batch = PartitionBatch(partition, processed_at, emit)
            batches.append(batch)
            events, lines, rejected = batch.events, batch.lines, batch.rejected
            first, last = -1, -1
            continue
        r = decode_postback(value)
        if isinstance(r, RecordRejection):
            rejected.append(RejectedOffset(offset, r))
        else:
            account = str(r.account_id)
            units, currency = deposit_amount(r.event, r.amount, r.currency)
            on_code, on_install = (triggers.schedules(r.account_id, r.event, r.received_at, r.event_id)
                                   if triggers is not None else ("", ""))
            events.append([offset, account, r.install_id, r.event, str(r.occurred_at), str(r.received_at), r.tid or "",
                           bucket(r.install_id), units, currency, on_code, on_install, r.event_id,
                           install_event_id(r.event_id) if on_install else ""])
            if emit:
                lines.append(head_line(record_key(account, r.install_id), dumps(head(
                    r.event_id, r.account_id, r.install_id, r.event, r.occurred_at, stamp[0] if stamp else processed_at, r.tid, r.amount,
                    r.currency))))
        if offset > last:
            last = offset
    batch.first_offset, batch.last_offset = first, last
    if batch.first_offset < 0 and len(batches) > 1:
        batches.pop()  # nothing after the last tick
    return batches
