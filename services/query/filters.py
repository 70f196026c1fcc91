"""Segment filters as tasks use them: pure validation and the device-page cursor.

No Redis or HTTP here. A filter names included and excluded event codes; `include_match`
says whether a device needs all or any of the included ones; an empty include list means
every device of the account (the `install` event).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from services.common.catalog import SYSTEM_EVENTS
from services.common.models import EVENT_CODE_PATTERN

MAX_CODES = 64
MAX_PAGE = 5_000
DEFAULT_PAGE = 1_000
_ORDINAL = re.compile(r"^dep_([2-9]|[1-9][0-9]{1,8})$")

Code = Annotated[str, Field(pattern=EVENT_CODE_PATTERN, max_length=64)]


class SegmentFilter(BaseModel):
    """Which devices: those with the included events (all or any of them) and none of the
    excluded ones."""

    model_config = ConfigDict(extra="forbid")

    event_include: list[Code] = Field(default_factory=list, max_length=MAX_CODES,
                                     description="Event codes that occurred; empty = every device (`install`)")
    event_exclude: list[Code] = Field(default_factory=list, max_length=MAX_CODES,
                                     description="Event codes that did NOT occur")
    include_match: Literal["all", "any"] = Field("all", description="all: every included event; any: at least one")

    def codes(self) -> list[str]:
        return [*self.event_include, *self.event_exclude]

    def normalized(self) -> "SegmentFilter":
        """Duplicates removed and order fixed: the same set of devices, a canonical spelling."""
        return SegmentFilter(event_include=sorted(set(self.event_include)), event_exclude=sorted(set(self.event_exclude)),
                             include_match=self.include_match)

    def fingerprint(self) -> str:
        n = self.normalized()
        return hashlib.sha256(orjson.dumps([n.event_include, n.event_exclude, n.include_match])).hexdigest()[:12]


class DevicePageRequest(SegmentFilter):
    cursor: str | None = Field(None, max_length=200, description="`next_cursor` of the previous page; omit for the first")
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description=f"devices per page, at most {MAX_PAGE}")

    def segment_filter(self) -> SegmentFilter:
        return SegmentFilter(event_include=self.event_include, event_exclude=self.event_exclude,
                             include_match=self.include_match)


def deposit_ordinal(code: str) -> int | None:
    """n for `dep_<n>` with n >= 2 (the n-th deposit), else None."""
    m = _ORDINAL.match(code)
    return int(m.group(1)) if m else None


def invalid_codes(codes: list[str]) -> list[str]:
    """Codes that cannot be event codes at all (pattern), in the order given, once each."""
    pat = re.compile(EVENT_CODE_PATTERN)
    return list(dict.fromkeys(c for c in codes if not pat.match(c)))


def unknown_codes(codes: list[str], custom_codes: set[str]) -> list[str]:
    """Codes that are neither system events, deposit ordinals (dep_2, dep_3, ...) nor custom
    events of the account (active or inactive), in the order given, once each."""
    out = []
    for code in codes:
        if code in SYSTEM_EVENTS or deposit_ordinal(code) is not None or code in custom_codes:
            continue
        out.append(code)
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: partition, device number, and the filter it belongs to."""

    partition: int
    position: int
    fingerprint: str

    def encode(self) -> str:
        raw = f"v1:{self.partition}:{self.position}:{self.fingerprint}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class CursorError(ValueError):
    pass


def decode_cursor(text: str, fingerprint: str, partitions: int) -> Cursor:
    """Raises CursorError when the cursor is malformed, from another filter or another layout."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        version, p, pos, fp = raw.split(":")
        cursor = Cursor(int(p), int(pos), fp)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CursorError("the cursor is not one this API returned") from exc
    if version != "v1" or not 0 <= cursor.partition < partitions or cursor.position < 0:
        raise CursorError("the cursor is not one this API returned")
    if cursor.fingerprint != fingerprint:
        raise CursorError("the cursor belongs to a different filter; send the same filter with its cursor")
    return cursor
