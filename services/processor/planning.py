"""Pure planning of one partition's batch: decoded records -> the apply script's arguments.

A `PartitionBatch` is what the store applies in ONE atomic script call: the records that are
applicable, the rejections to publish first, and the last offset, to which the partition's
watermark moves (also when the last records were rejected).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from services.common.models import PostbackRecord
from services.processor.decoding import RecordRejection, decode_postback

FIELDS_PER_EVENT = 10


@dataclass(frozen=True)
class RejectedOffset:
    offset: int
    rejection: RecordRejection


@dataclass
class PartitionBatch:
    partition: int
    last_offset: int = -1
    args: list = field(default_factory=list)  # FIELDS_PER_EVENT values per applicable record
    rejected: list[RejectedOffset] = field(default_factory=list)

    @property
    def applicable(self) -> int:
        return len(self.args) // FIELDS_PER_EVENT

    @property
    def size(self) -> int:
        return self.applicable + len(self.rejected)


def event_args(offset: int, r: PostbackRecord) -> list:
    """The apply script's 10 fields for one record (apply_batch.lua, ARGV layout)."""
    return [offset, r.event_id, r.account_id, r.install_id, r.event, r.occurred_at, r.received_at,
            r.tid or "", r.amount or "", r.currency or ""]


def plan_partition_batch(partition: int, messages: Iterable[tuple[int, bytes | None]]) -> PartitionBatch:
    """Decode `(offset, value)` pairs of one partition, in offset order, into one batch."""
    batch = PartitionBatch(partition)
    args = batch.args
    for offset, value in messages:
        decoded = decode_postback(value)
        if isinstance(decoded, RecordRejection):
            batch.rejected.append(RejectedOffset(offset, decoded))
        else:
            args += event_args(offset, decoded)
        if offset > batch.last_offset:
            batch.last_offset = offset
    return batch
