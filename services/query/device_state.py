"""A device's events as the API shows them, parsed from the device's packed state. Pure.

The processor owns the event value format (keys.py parses the packed state into code -> value); `parse_event_stats` is the ONE place the
query service reads it, so a format change touches only this function.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.catalog import SYSTEM_EVENTS
from services.query.filters import deposit_ordinal


@dataclass(frozen=True)
class EventStats:
    code: str
    first_at: int  # unix ms
    last_at: int
    occurrences: int

    def as_dict(self) -> dict:
        return {"code": self.code, "first_at": self.first_at, "last_at": self.last_at, "occurrences": self.occurrences}


def parse_event_stats(code: str, value: str) -> EventStats | None:
    """`first_ms:last_ms:count`, or `first_ms` alone for a single occurrence (the processor's
    compact form, docs/architecture.md) -> EventStats; None for a value this reader does not understand."""
    parts = value.split(":")
    if len(parts) == 1:
        parts = [parts[0], parts[0], "1"]
    if len(parts) < 3:
        return None
    try:
        first, last, count = int(parts[0]), int(parts[1]), int(parts[2])
    except ValueError:
        return None
    return EventStats(code, first, last, count)


def _order(stats: EventStats) -> tuple:
    if stats.code in SYSTEM_EVENTS:
        return (0, SYSTEM_EVENTS.index(stats.code), "")
    n = deposit_ordinal(stats.code)
    if n is not None:
        return (1, n, "")
    return (2, 0, stats.code)


def device_view(install_id: str, fields: dict[str, str]) -> dict:
    """The device document: system events, deposit ordinals in order, then custom codes A-Z.
    Fields starting with '#' are the processor's bookkeeping and are not events."""
    events = [s for code, value in fields.items() if not code.startswith("#")
              if (s := parse_event_stats(code, value)) is not None]
    events.sort(key=_order)
    deposits = next((e.occurrences for e in events if e.code == "dep"), 0)
    return {"install_id": install_id, "deposit_count": deposits, "events": [e.as_dict() for e in events]}
