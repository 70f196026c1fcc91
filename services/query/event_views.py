"""Events as the API shows them (PushExpress v2 shape): pure views, pagination and the
Segments overview order. No Redis or HTTP here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import quote

from services.common.catalog import CustomEvent
from services.domain.codes import SYSTEM_EVENT_IDS, SYSTEM_EVENTS, deposit_code, is_postable

MAX_OFFSET = 10_000
MAX_PER_PAGE = 100
SYSTEM_NAMES = {"install": "Install", "reg": "Registration", "dep": "Deposit"}


@dataclass(frozen=True)
class EventView:
    id: int | None
    name: str
    code: str
    status: int
    type: str  # CUSTOM | SYSTEM

    def as_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "code": self.code, "status": self.status, "type": self.type}


def system_events() -> list[EventView]:
    return [EventView(SYSTEM_EVENT_IDS[c], SYSTEM_NAMES[c], c, 1, "SYSTEM") for c in SYSTEM_EVENTS]


def system_event_by_id(event_id: int) -> EventView | None:
    return next((e for e in system_events() if e.id == event_id), None)


def custom_view(event: CustomEvent) -> EventView:
    return EventView(event.id, event.name, event.code, event.status, "CUSTOM")


def ordinal_view(n: int) -> EventView:
    """dep_<n>: the n-th deposit of a device; a system code without an id of its own."""
    return EventView(None, f"Deposit #{n}", deposit_code(n), 1, "SYSTEM")


class PaginationError(ValueError):
    pass


@dataclass(frozen=True)
class Page:
    page: int
    per_page: int
    offset: int
    total_count: int

    @property
    def total_pages(self) -> int:
        return math.ceil(self.total_count / self.per_page)

    def as_dict(self) -> dict:
        return {"page": self.page, "per_page": self.per_page, "total_pages": self.total_pages,
                "total_count": self.total_count}


def page_of(page: int, per_page: int, total_count: int) -> Page:
    """Raises PaginationError when the offset (page - 1) * per_page passes MAX_OFFSET."""
    offset = (page - 1) * per_page
    if offset > MAX_OFFSET:
        raise PaginationError(f"page * per_page reaches past offset {MAX_OFFSET}; "
                              f"with per_page={per_page} the last page you can ask for is {MAX_OFFSET // per_page + 1}")
    return Page(page, per_page, offset, total_count)


def all_events(custom: list[CustomEvent]) -> list[EventView]:
    """The events list: system events first, then custom events by id."""
    return [*system_events(), *(custom_view(e) for e in custom)]


def overview_rows(custom: list[CustomEvent], max_ordinal: int) -> list[EventView]:
    """Segments overview order: system events, dep_2..dep_<max seen>, custom events by id."""
    return [*system_events(), *(ordinal_view(n) for n in range(2, max_ordinal + 1)), *(custom_view(e) for e in custom)]


# PushExpress's own placeholder, spelled exactly as its users already paste it into trackers.
INSTALL_ID_PLACEHOLDER = "{your installation id}"


def postback_url(base: str, code: str, account_id: int, secret: str | None) -> str | None:
    """The URL to paste into a tracker (the tracker fills in INSTALL_ID_PLACEHOLDER), or None for
    a code nobody may post: the derived deposit ordinals dep_2, dep_3, ... (the domain's rule)."""
    if not is_postable(code):
        return None
    url = f"{base.rstrip('/')}/api/postback/?id={INSTALL_ID_PLACEHOLDER}&status={code}_{account_id}"
    return url + (f"&key={quote(secret, safe='')}" if secret else "")
