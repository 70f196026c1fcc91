"""The filter as the API takes it (pydantic request bodies); the device-page cursor is services/query/cursors.py.

The filter's meaning - which devices it selects - is the domain's (services/domain/filters.py);
this module only validates the request's shape and converts it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.domain.codes import EVENT_CODE_PATTERN, INSTALL_ID_PATTERN, MAX_CODE_CHARS
from services.domain.conditions import DEFAULT_WINDOW_RETENTION_DAYS, MAX_CONDITIONS
from services.domain.filters import MAX_CODES, SegmentFilter, filter_of

MAX_PAGE = 5_000
DEFAULT_PAGE = 1_000

Code = Annotated[str, Field(pattern=EVENT_CODE_PATTERN, max_length=MAX_CODE_CHARS)]


class FilterBody(BaseModel):
    """Which devices: those with the included events (all or any of them) and none of the
    excluded ones."""

    model_config = ConfigDict(extra="forbid", title="SegmentFilter")

    event_include: list[Code] = Field(default_factory=list, max_length=MAX_CODES,
                                     description="Event codes that occurred; empty = every device (`install`)")
    event_exclude: list[Code] = Field(default_factory=list, max_length=MAX_CODES,
                                     description="Event codes that did NOT occur")
    include_match: Literal["all", "any"] = Field("all", description="all: every included event; any: at least one")
    conditions: list[dict[str, Any]] = Field(
        default_factory=list, max_length=MAX_CONDITIONS,
        description="ANDed with the lists above: {\"event\", \"occurred\": true|false, \"within\"?: {\"last\": "
                    "\"24h\"} | {\"from\", \"to\"}}, {\"event\", \"count\": {\"gte\"?, \"lte\"?}} (lifetime; not with "
                    "`within`) or {\"deposit_sum\": {\"currency\", \"gte\"?, \"lte\"?}} (decimal strings); windows "
                    "have hour precision (docs/architecture.md, \"Conditions\")")

    def segment_filter(self, now_ms: int, retention_days: int = DEFAULT_WINDOW_RETENTION_DAYS) -> SegmentFilter:
        """The domain's filter; raises ConditionError (bad condition) / UnsupportedCondition."""
        return filter_of(self.model_dump(), now_ms, retention_days)


class DevicePageRequest(FilterBody):
    model_config = ConfigDict(title="DevicePageRequest")

    cursor: str | None = Field(None, max_length=200, description="`next_cursor` of the previous page (opaque, signed: "
                                  "any other value is 422 `invalid_cursor`); omit for the first")
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description=f"devices per page, at most {MAX_PAGE}")


class VerdictRequest(FilterBody):
    model_config = ConfigDict(title="VerdictRequest")

    install_id: str = Field(pattern=INSTALL_ID_PATTERN, description="the device's installation id")
