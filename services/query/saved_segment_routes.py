"""Saved segments API (/api/b/v2/segments, numeric ids): CRUD, version history, and count /
devices / export of a saved segment's current filter, each answer naming the version it used.
Registered after the segments router, so `/segments/events`, `/count`, ... keep their meaning."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from services.query import event_views as views
from services.query.auth import Account
from services.query.errors import ApiError
from services.query.filters import DEFAULT_PAGE, MAX_PAGE, DevicePageRequest, FilterBody
from services.query.saved_segments import MAX_NAME, SavedSegment, SavedSegments, SegmentLimit
from services.query.schemas_api import CountOut, DevicePageOut, ErrorOut, Pagination
from services.query.segment_routes import _checked, count_answer, devices_answer, export_answer

router = APIRouter(prefix="/api/b/v2/segments", tags=["saved segments"],
                   responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}})
SegmentId = Annotated[int, Path(ge=1, le=2**53, description="saved segment id")]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=r"\S")]


class SegmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    filter: FilterBody


class SegmentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    filter: FilterBody | None = None


class SegmentOut(BaseModel):
    id: int
    name: str
    filter: FilterBody
    version: int
    created_at: int = Field(description="unix ms")
    updated_at: int = Field(description="unix ms")


class SegmentList(BaseModel):
    segments: list[SegmentOut]
    pagination: Pagination


class SegmentVersions(BaseModel):
    versions: list[SegmentOut]


class SegmentPageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cursor: str | None = Field(None, max_length=200)
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE)


class SavedCountOut(CountOut):
    segment_id: int
    segment_version: int


class SavedDevicePageOut(DevicePageOut):
    segment_id: int
    segment_version: int


def _store(request: Request) -> SavedSegments:
    return request.app.state.saved_segments


def _now(request: Request) -> int:
    return request.app.state.clock.now_ms()


async def _found(request: Request, account: int, segment_id: int) -> SavedSegment:
    segment = await _store(request).get(account, segment_id)
    if segment is None:
        raise ApiError(404, "segment_not_found", f"no saved segment with id {segment_id} in this account")
    return segment


@router.post("", status_code=201, response_model=SegmentOut)
async def create_segment(body: SegmentCreate, account: Account, request: Request) -> SegmentOut:
    """Save a filter under a name (the filter is checked like an ad-hoc one: unknown codes are 422)."""
    await _checked(request, account, body.filter)
    try:
        segment = await _store(request).create(account, body.name.strip(), body.filter.model_dump(), _now(request))
    except SegmentLimit as exc:
        raise ApiError(422, "segment_limit", str(exc)) from exc
    return SegmentOut(**segment.as_dict())


@router.get("", response_model=SegmentList)
async def list_segments(account: Account, request: Request,
                        page: Annotated[int, Query(ge=1, le=10_001)] = 1,
                        per_page: Annotated[int, Query(ge=1, le=views.MAX_PER_PAGE)] = 20) -> SegmentList:
    """Saved segments by id, paginated like the events list."""
    segments = await _store(request).list(account)
    try:
        p = views.page_of(page, per_page, len(segments))
    except views.PaginationError as exc:
        raise ApiError(422, "offset_too_large", str(exc)) from exc
    return SegmentList(segments=[s.as_dict() for s in segments[p.offset:p.offset + per_page]], pagination=p.as_dict())


@router.get("/{segment_id}", response_model=SegmentOut)
async def get_segment(segment_id: SegmentId, account: Account, request: Request) -> SegmentOut:
    return SegmentOut(**(await _found(request, account, segment_id)).as_dict())


@router.put("/{segment_id}", response_model=SegmentOut)
async def update_segment(segment_id: SegmentId, body: SegmentUpdate, account: Account, request: Request) -> SegmentOut:
    """Change the name and/or the filter: a new version (an empty body is 422)."""
    if body.name is None and body.filter is None:
        raise ApiError(422, "nothing_to_change", "give a new `name`, a new `filter`, or both")
    if body.filter is not None:
        await _checked(request, account, body.filter)
    segment = await _store(request).update(account, segment_id, body.name.strip() if body.name else None,
                                           body.filter.model_dump() if body.filter else None, _now(request))
    if segment is None:
        raise ApiError(404, "segment_not_found", f"no saved segment with id {segment_id} in this account")
    return SegmentOut(**segment.as_dict())


@router.delete("/{segment_id}", status_code=204)
async def delete_segment(segment_id: SegmentId, account: Account, request: Request) -> Response:
    if not await _store(request).delete(account, segment_id):
        raise ApiError(404, "segment_not_found", f"no saved segment with id {segment_id} in this account")
    return Response(status_code=204)


@router.get("/{segment_id}/versions", response_model=SegmentVersions)
async def segment_versions(segment_id: SegmentId, account: Account, request: Request) -> SegmentVersions:
    """Every version, oldest first."""
    versions = await _store(request).versions(account, segment_id)
    if versions is None:
        raise ApiError(404, "segment_not_found", f"no saved segment with id {segment_id} in this account")
    return SegmentVersions(versions=[v.as_dict() for v in versions])


@router.post("/{segment_id}/count", response_model=SavedCountOut)
async def count_segment(segment_id: SegmentId, account: Account, request: Request) -> SavedCountOut:
    segment = await _found(request, account, segment_id)
    answer = await count_answer(request, account, FilterBody.model_validate(segment.filter))
    return SavedCountOut(**answer.model_dump(), segment_id=segment.id, segment_version=segment.version)


@router.post("/{segment_id}/devices", response_model=SavedDevicePageOut)
async def segment_devices(segment_id: SegmentId, account: Account, request: Request,
                          body: SegmentPageRequest | None = None) -> SavedDevicePageOut:
    """A page of the saved segment's devices; the cursor is bound to the filter, so a cursor of an
    older version is 422 `invalid_cursor` after the filter changed."""
    segment = await _found(request, account, segment_id)
    page = body or SegmentPageRequest()
    answer = await devices_answer(request, account, DevicePageRequest.model_validate(
        {**segment.filter, "cursor": page.cursor, "limit": page.limit}))
    return SavedDevicePageOut(**answer.model_dump(), segment_id=segment.id, segment_version=segment.version)


@router.post("/{segment_id}/export", response_class=StreamingResponse)
async def export_segment(segment_id: SegmentId, account: Account, request: Request) -> StreamingResponse:
    """NDJSON like /segments/export; the version used is in the `X-Segment-Version` header."""
    segment = await _found(request, account, segment_id)
    return await export_answer(request, account, FilterBody.model_validate(segment.filter),
                               headers={"X-Segment-Version": str(segment.version)})
