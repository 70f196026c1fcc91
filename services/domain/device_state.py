"""A device's state: per event code when it first and last occurred and how often.

Stored packed, one string per device (apply_batch.lua writes it, the query service reads it):
`code=value;code=value;...` in first-seen order, where value is `<first_ms>` while the code
occurred once, else `<first_ms>:<last_ms>:<count>`. Codes never contain `=`, `;` or `:`.
"""

from __future__ import annotations

from typing import NamedTuple


class EventStat(NamedTuple):
    """One event code on one device: first and last event time (unix ms) and occurrences."""

    first: int
    last: int
    count: int

    def occurred(self, ts: int) -> "EventStat":
        """The stat after one more occurrence at `ts` (times may arrive out of order)."""
        return EventStat(min(self.first, ts), max(self.last, ts), self.count + 1)


def format_event_value(stat: EventStat) -> str:
    """EventStat -> the stored value: `first_ms` alone while count is 1."""
    if stat.count == 1 and stat.first == stat.last:
        return str(stat.first)
    return f"{stat.first}:{stat.last}:{stat.count}"


def parse_event_value(value: str | bytes) -> EventStat:
    """A stored value -> EventStat. Raises ValueError when malformed."""
    text = value.decode() if isinstance(value, bytes) else value
    parts = text.split(":")
    if len(parts) == 1:
        first = int(parts[0])
        return EventStat(first, first, 1)
    if len(parts) == 3:
        return EventStat(int(parts[0]), int(parts[1]), int(parts[2]))
    raise ValueError(f"not a device event value: {text!r}")


def parse_device_state(value: str | bytes) -> dict[str, EventStat]:
    """A packed device state -> {code: EventStat} in stored (first-seen) order. Raises
    ValueError when malformed."""
    text = value.decode() if isinstance(value, bytes) else value
    out: dict[str, EventStat] = {}
    if not text:
        return out
    for part in text.split(";"):
        code, sep, event_value = part.partition("=")
        if not sep or not code or not event_value:
            raise ValueError(f"not a packed device state: {text!r}")
        out[code] = parse_event_value(event_value)
    return out


def format_device_state(events: dict[str, EventStat]) -> str:
    """{code: EventStat} -> the packed form, in the dict's order."""
    return ";".join(f"{code}={format_event_value(stat)}" for code, stat in events.items())
