"""Custom events API, PushExpress v2 shape: /api/b/v2/events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from services.common.catalog import CatalogStore
from services.domain.codes import is_reserved_code
from services.query import event_views as views
from services.query.auth import Account
from services.query.errors import ApiError
from services.query.schemas_api import EventCreate, EventCreated, EventList, EventOut, EventUpdate, ErrorOut

router = APIRouter(prefix="/api/b/v2/events", tags=["events"],
                   responses={401: {"model": ErrorOut}, 422: {"model": ErrorOut}})
EventId = Annotated[int, Path(ge=1, le=2**53, description="event id")]


def _catalog(request: Request) -> CatalogStore:
    return request.app.state.catalog


def _now(request: Request) -> int:
    return request.app.state.clock.now_ms()


def _refuse_system(event_id: int) -> None:
    """System events (ids 1-3) are immutable: 403."""
    if views.system_event_by_id(event_id) is not None:
        raise ApiError(403, "system_event", "system events (install, reg, dep) cannot be changed or deleted")


@router.post("", status_code=201, response_model=EventCreated, responses={409: {"model": ErrorOut}})
async def create_event(body: EventCreate, account: Account, request: Request) -> EventCreated:
    if is_reserved_code(body.code):
        raise ApiError(422, "reserved_code", f"`{body.code}` is reserved for system events "
                       "(install, reg, dep and the deposit ordinals dep_<n>); choose another code")
    event_id = await _catalog(request).create_event(account, body.name, body.code, _now(request))
    return EventCreated(id=event_id)


@router.get("", response_model=EventList)
async def list_events(account: Account, request: Request,
                      page: Annotated[int, Query(ge=1, le=10_001)] = 1,
                      per_page: Annotated[int, Query(ge=1, le=views.MAX_PER_PAGE)] = 20) -> EventList:
    """System events first, then custom events by id. `(page - 1) * per_page` may be at most 10,000."""
    events = views.all_events(await _catalog(request).custom_events(account))
    try:
        p = views.page_of(page, per_page, len(events))
    except views.PaginationError as exc:
        raise ApiError(422, "offset_too_large", str(exc)) from exc
    return EventList(events=[e.as_dict() for e in events[p.offset:p.offset + per_page]], pagination=p.as_dict())


@router.get("/{event_id}", response_model=EventOut, responses={404: {"model": ErrorOut}})
async def get_event(event_id: EventId, account: Account, request: Request) -> EventOut:
    system = views.system_event_by_id(event_id)
    if system is not None:
        return EventOut(**system.as_dict())
    event = await _catalog(request).custom_event(account, event_id)
    if event is None:
        raise ApiError(404, "event_not_found", f"no event with id {event_id}")
    return EventOut(**views.custom_view(event).as_dict())


@router.put("/{event_id}", response_model=EventOut, responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut},
                                                              409: {"model": ErrorOut}})
async def update_event(event_id: EventId, body: EventUpdate, account: Account, request: Request) -> EventOut:
    _refuse_system(event_id)
    catalog = _catalog(request)
    current = await catalog.custom_event(account, event_id)
    if current is None:
        raise ApiError(404, "event_not_found", f"no event with id {event_id}")
    if body.code is not None and body.code != current.code:
        raise ApiError(409, "code_immutable", f"the code of an event cannot change (it is `{current.code}`); "
                       "data already recorded stays with its code - create a new event instead")
    event = await catalog.rename_event(account, event_id, body.name, _now(request))
    return EventOut(**views.custom_view(event).as_dict())


@router.delete("/{event_id}", status_code=204, responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}})
async def delete_event(event_id: EventId, account: Account, request: Request) -> Response:
    """Deletes the event: the ingress refuses its code from then on. Devices already recorded
    keep their history; creating the code again brings those counts back."""
    _refuse_system(event_id)
    await _catalog(request).delete_event(account, event_id, _now(request))
    return Response(status_code=204)


async def _set_status(event_id: int, account: int, request: Request, status: int) -> EventOut:
    _refuse_system(event_id)
    event = await _catalog(request).set_event_status(account, event_id, status, _now(request))
    return EventOut(**views.custom_view(event).as_dict())


@router.post("/{event_id}/activate", response_model=EventOut, responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}})
async def activate_event(event_id: EventId, account: Account, request: Request) -> EventOut:
    return await _set_status(event_id, account, request, 1)


@router.post("/{event_id}/deactivate", response_model=EventOut, responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}})
async def deactivate_event(event_id: EventId, account: Account, request: Request) -> EventOut:
    """An inactive event keeps its data and stays usable in filters; the ingress refuses new postbacks for it."""
    return await _set_status(event_id, account, request, 0)
