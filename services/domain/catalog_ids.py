"""Catalog ids come from a log, not from a counter that can roll back.

An account id or custom-event id handed to a caller must never be handed out again, even when
Redis loses its last second of writes (AOF fsync once a second, a promoted replica that lags).
So ids are not Redis counters: each one is the offset of an allocation record in the catalog-ids
topic, one partition per kind. Kafka answers an offset only once the record is replicated
(acks=all), and a partition never gives the same offset twice. The Redis sequence keys only
remember the highest id stored, so that an id at or below it (a recreated topic, a catalog
created before the log) is refused and allocation moves past it.

Pure: the mapping between a kind's offsets and its ids.
"""

from __future__ import annotations

from services.domain.codes import FIRST_CUSTOM_ID

ACCOUNT = "account"
EVENT = "event"
SEGMENT = "segment"  # saved segments (services/query/saved_segments.py)
TRIGGER = "trigger"  # event-triggered tasks (services/common/trigger_registry.py)
# The partition of the catalog-ids topic that allocates each kind (a kind added later gets the
# next partition; the id log adds it to an existing topic).
KIND_PARTITION = {ACCOUNT: 0, EVENT: 1, SEGMENT: 2, TRIGGER: 3}
ID_PARTITIONS = len(KIND_PARTITION)
# The first id of each kind (offset 0): accounts from 1, custom events after the system events.
_FIRST_ID = {ACCOUNT: 1, EVENT: FIRST_CUSTOM_ID, SEGMENT: 1, TRIGGER: 1}


def id_at(kind: str, offset: int) -> int:
    """The id the allocation record at `offset` of `kind`'s partition stands for."""
    return _FIRST_ID[kind] + offset


def offset_of(kind: str, id_: int) -> int:
    """The offset of the allocation record of `id_` (negative: not an allocated id)."""
    return id_ - _FIRST_ID[kind]


def padding_needed(kind: str, next_offset: int, above: int) -> int:
    """How many filler records move `kind`'s next id past `above` (the highest id the catalog
    holds), so that allocation never returns an id at or below it."""
    return max(0, offset_of(kind, above) + 1 - next_offset)
