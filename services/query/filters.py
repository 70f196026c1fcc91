"""The filter as the API takes it (pydantic request bodies); the device-page cursor is services/query/cursors.py.

The filter's meaning - which devices it selects - is the domain's (services/domain/filters.py);
this module only validates the request's shape and converts it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.domain.codes import EVENT_CODE_PATTERN, INSTALL_ID_PATTERN, MAX_CODE_CHARS
from services.domain.conditions import MAX_CONDITIONS, as_codes, parse_conditions
from services.domain.filters import MAX_CODES, SegmentFilter

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
        description="ANDed with the lists above: {\"event\", \"occurred\": true|false} or {\"event\", \"count\": "
                    "{\"gte\", \"lte\"}} (any bounds for dep, the deposit count; at least 1 / at most 0 for other "
                    "events). `within` windows and `deposit_sum` are validated but answered 422 `unsupported_condition` "
                    "until their index exists (docs/architecture.md)")

    def segment_filter(self, now_ms: int) -> SegmentFilter:
        """The domain's filter; raises ConditionError (bad condition) / UnsupportedCondition."""
        require, exclude = as_codes(parse_conditions(self.conditions, now_ms))
        return SegmentFilter(tuple(self.event_include), tuple(self.event_exclude) + exclude, self.include_match, require)


class DevicePageRequest(FilterBody):
    model_config = ConfigDict(title="DevicePageRequest")

    cursor: str | None = Field(None, max_length=200, description="`next_cursor` of the previous page (opaque, signed: "
                                  "any other value is 422 `invalid_cursor`); omit for the first")
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description=f"devices per page, at most {MAX_PAGE}")


class VerdictRequest(FilterBody):
    model_config = ConfigDict(title="VerdictRequest")

    install_id: str = Field(pattern=INSTALL_ID_PATTERN, description="the device's installation id")
