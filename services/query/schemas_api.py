"""Request and response bodies of the query API (they generate the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.domain.codes import EVENT_CODE_PATTERN


def _clean_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("name must not be blank")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("name must not contain control characters")
    return value


EventName = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_clean_name)]
EventCode = Annotated[str, Field(pattern=EVENT_CODE_PATTERN, description="1-64 of A-Z, a-z, 0-9, _")]


class EventCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: EventName
    code: EventCode


class EventUpdate(BaseModel):
    """Rename an event. `code` may be sent but must be the event's current code: data already
    recorded under a code stays with it, so a new code is a new event."""

    model_config = ConfigDict(extra="forbid")
    name: EventName
    code: EventCode | None = None


class EventCreated(BaseModel):
    id: int


class EventOut(BaseModel):
    id: int
    name: str
    code: str
    status: Literal[0, 1] = Field(description="1 active, 0 inactive")
    type: Literal["CUSTOM", "SYSTEM"]


class Pagination(BaseModel):
    page: int
    per_page: int
    total_pages: int
    total_count: int


class EventList(BaseModel):
    events: list[EventOut]
    pagination: Pagination


class SegmentEvent(BaseModel):
    id: int | None = Field(description="null for deposit ordinals dep_2, dep_3, ...")
    name: str
    code: str
    type: Literal["CUSTOM", "SYSTEM"]
    status: Literal[0, 1]
    devices: int = Field(description="devices on which the event occurred")
    deposit_ordinal: int | None = Field(description="n for the n-th deposit: 1 for dep, n for dep_<n>; null otherwise")
    postback_url: str | None = Field(description="the URL to give a sender, `{your installation id}` being the placeholder it "
                                     "fills in; null for deposit ordinals dep_2, dep_3, ...: the system counts them from `dep`")


class SegmentEvents(BaseModel):
    events: list[SegmentEvent]


class CountOut(BaseModel):
    count: int
    as_of: int | None = Field(None, description="unix ms: every postback answered 2xx before this instant is "
                              "reflected in the answer (null until the processor has caught up once)")


class DayCount(BaseModel):
    day: str = Field(description="UTC date, YYYY-MM-DD")
    start: int = Field(description="unix ms of the day's 00:00 UTC")
    devices: int = Field(description="devices on which the event occurred that day (event time)")


class DailyOut(BaseModel):
    event: str
    days: list[DayCount] = Field(description="oldest first; the last is today (so far)")
    as_of: int | None = Field(None, description="as for counts: every postback answered 2xx before it is reflected")


class DevicePageOut(BaseModel):
    devices: list[str]
    next_cursor: str | None = Field(description="pass it back for the next page; null after the last page")
    as_of: int | None = Field(None, description="unix ms: every postback answered 2xx before this instant is "
                              "reflected in the answer (null until the processor has caught up once)")


class DeviceEvent(BaseModel):
    code: str
    first_at: int = Field(description="unix milliseconds of the first occurrence")
    last_at: int = Field(description="unix milliseconds of the latest occurrence")
    occurrences: int


class DeviceOut(BaseModel):
    install_id: str
    deposit_count: int
    events: list[DeviceEvent]


class VerdictOut(BaseModel):
    install_id: str
    found: bool = Field(description="false when the account has no such device (a filter selects nothing then)")
    selected: bool = Field(description="whether the filter selects the device")
    reasons: list[str] = Field(description="why not, in words; empty when selected")


class RejectedOut(BaseModel):
    rejected: list[dict] = Field(description="rejected-postback.v1 records, newest first")


class ErrorOut(BaseModel):
    error: str
    message: str
