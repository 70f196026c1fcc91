"""A device's events as the API shows them, from the device's decoded state. Pure."""

from __future__ import annotations

from services.domain.codes import DEP, display_order
from services.domain.device_state import EventStat


def event_view(code: str, stat: EventStat) -> dict:
    return {"code": code, "first_at": stat.first, "last_at": stat.last, "occurrences": stat.count}


def device_view(install_id: str, events: dict[str, EventStat]) -> dict:
    """The device document: system events, deposit ordinals in order, then custom codes A-Z."""
    codes = sorted(events, key=display_order)
    deposits = events[DEP].count if DEP in events else 0
    return {"install_id": install_id, "deposit_count": deposits, "events": [event_view(c, events[c]) for c in codes]}
