"""Triggers API (/api/b/v2/triggers): event-triggered tasks, "on reg, wait 2h, push unless dep".

CRUD over the trigger registry (services/common/trigger_registry.py), each change a new version
that the processor applies from the instant Redis stamped it; `stats` and `fires` read the
processor's per-partition counters and recent fires (services/common/keys.py, timers). The
rules (delay spelling and limit, versions, epochs) are the domain's: services/domain/triggers.py."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.common.keys import RECENT_FIRES, PartitionKeys
from services.common.trigger_registry import TriggerLimit, TriggerRegistry
from services.domain.codes import deposit_ordinal, is_known_code
from services.domain.triggers import (MAX_DELAY_MS, MAX_NAME, TriggerError,
                                      TriggerVersion, fire_line_record, parse_delay)
from services.query import event_views as views
from services.query.auth import Account
from services.query.errors import ApiError
from services.query.filters import Code, FilterBody
from services.query.schemas_api import ErrorOut, Pagination
from services.query.segment_routes import _checked

router = APIRouter(prefix="/api/b/v2/triggers", tags=["triggers"],
                   responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}})
TriggerId = Annotated[int, Path(ge=1, le=2**53, description="trigger id")]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=r"\S")]
DELAY_HELP = (f"days, hours, minutes, seconds, each optional, in that order: \"2h\", \"5d10h30m\", \"30s\", \"0s\"; "
              f"at most {MAX_DELAY_MS // 86_400_000}d")


class On(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: Code = Field(description="the event code whose occurrence schedules a fire")
    occurrence: Literal["first", "every"] = Field(
        "first", description="first: the first occurrence on the device; every: each applied occurrence "
                             "(a repeated tid is not one)")


class TriggerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    on: On
    delay: str = Field(max_length=32, description=DELAY_HELP)
    filter: FilterBody = Field(default_factory=FilterBody, description="evaluated on the device at the due time")
    active: bool = True


class TriggerUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    on: On | None = None
    delay: str | None = Field(None, max_length=32, description=DELAY_HELP)
    filter: FilterBody | None = None


class TriggerOut(BaseModel):
    id: int
    name: str
    on: On
    delay: str
    delay_ms: int
    filter: FilterBody
    active: bool
    version: int = Field(description="bumps on every change; fires carry the version they were decided with")
    created_at: int = Field(description="unix ms")
    updated_at: int = Field(description="unix ms: when this version came into force")


class TriggerList(BaseModel):
    triggers: list[TriggerOut]
    pagination: Pagination


class TriggerStats(BaseModel):
    pending: int = Field(description="fires scheduled and not yet due (0 while the trigger is inactive)")
    fired: int
    cancelled: int = Field(description="the filter did not hold at the due time, or the trigger was deactivated")
    skipped_late: int = Field(description="decided later than the processor's maximum lateness")


class FireOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    fire_id: str
    trigger_id: int
    trigger_version: int
    install_id: str
    due_at: int
    fired_at: int


class FireList(BaseModel):
    fires: list[FireOut]


def _out(v: TriggerVersion) -> TriggerOut:
    return TriggerOut(id=v.id, name=v.name, on=On(event=v.on_event, occurrence=v.occurrence), delay=v.delay,
                      delay_ms=v.delay_ms, filter=FilterBody.model_validate(v.filter), active=v.active,
                      version=v.version, created_at=v.created_at, updated_at=v.valid_from)


def _registry(request: Request) -> TriggerRegistry:
    return request.app.state.triggers


def _not_found(trigger_id: int) -> ApiError:
    return ApiError(404, "trigger_not_found", f"no trigger with id {trigger_id} in this account")


async def _checked_parts(request: Request, account: int, on: On | None, delay: str | None,
                         filter_: FilterBody | None) -> int | None:
    """422 for a delay, an `on` event or a filter the trigger cannot have; the delay in ms."""
    delay_ms = None
    if delay is not None:
        try:
            delay_ms = parse_delay(delay)
        except TriggerError as exc:
            raise ApiError(422, "invalid_trigger", str(exc), field=exc.field) from exc
    if on is not None:
        if deposit_ordinal(on.event) is not None:
            raise ApiError(422, "invalid_trigger", f"`on.event` {on.event!r} is a deposit ordinal, which is derived, "
                           "not posted: trigger on `dep` (every occurrence is a deposit)", field="on.event")
        if not is_known_code(on.event, set()) and on.event not in {
                e.code for e in await request.app.state.catalog.custom_events(account)}:
            raise ApiError(422, "unknown_events", f"unknown event code: {on.event} (create it on the Segments page "
                           "or with POST /api/b/v2/events first)", unknown_codes=[on.event], field="on.event")
    if filter_ is not None:
        await _checked(request, account, filter_)
    return delay_ms


@router.post("", status_code=201, response_model=TriggerOut)
async def create_trigger(body: TriggerCreate, account: Account, request: Request) -> TriggerOut:
    """A trigger applies to occurrences received from now on (no backfill)."""
    delay_ms = await _checked_parts(request, account, body.on, body.delay, body.filter)
    try:
        v = await _registry(request).create(account, body.name.strip(), body.on.event, body.on.occurrence, body.delay,
                                            delay_ms, body.filter.model_dump(), body.active)
    except TriggerLimit as exc:
        raise ApiError(422, "trigger_limit", str(exc)) from exc
    return _out(v)


@router.get("", response_model=TriggerList)
async def list_triggers(account: Account, request: Request,
                        page: Annotated[int, Query(ge=1, le=10_001)] = 1,
                        per_page: Annotated[int, Query(ge=1, le=views.MAX_PER_PAGE)] = 20) -> TriggerList:
    """The account's triggers by id (at most 100, MAX_TRIGGERS_PER_ACCOUNT), paginated like the events list."""
    triggers = await _registry(request).list(account)
    try:
        p = views.page_of(page, per_page, len(triggers))
    except views.PaginationError as exc:
        raise ApiError(422, "offset_too_large", str(exc)) from exc
    return TriggerList(triggers=[_out(v) for v in triggers[p.offset:p.offset + per_page]], pagination=p.as_dict())


@router.get("/{trigger_id}", response_model=TriggerOut)
async def get_trigger(trigger_id: TriggerId, account: Account, request: Request) -> TriggerOut:
    v = await _registry(request).get(account, trigger_id)
    if v is None:
        raise _not_found(trigger_id)
    return _out(v)


@router.patch("/{trigger_id}", response_model=TriggerOut)
async def update_trigger(trigger_id: TriggerId, body: TriggerUpdate, account: Account, request: Request) -> TriggerOut:
    """A new version. A new filter applies to every fire not yet decided; a new `on` or delay to
    occurrences received from now on (fires already scheduled keep their due time)."""
    if body.model_dump(exclude_none=True) == {}:
        raise ApiError(422, "nothing_to_change", "give at least one of `name`, `on`, `delay`, `filter`")
    delay_ms = await _checked_parts(request, account, body.on, body.delay, body.filter)
    changes: dict = {}
    if body.name is not None:
        changes["name"] = body.name.strip()
    if body.on is not None:
        changes.update(on_event=body.on.event, occurrence=body.on.occurrence)
    if body.delay is not None:
        changes.update(delay=body.delay, delay_ms=delay_ms)
    if body.filter is not None:
        changes["filter"] = body.filter.model_dump()
    v = await _registry(request).change(account, trigger_id, **changes)
    if v is None:
        raise _not_found(trigger_id)
    return _out(v)


async def _set_active(request: Request, account: int, trigger_id: int, active: bool) -> TriggerOut:
    current = await _registry(request).get(account, trigger_id)
    if current is None:
        raise _not_found(trigger_id)
    if current.active == active:
        return _out(current)  # already so: no new version
    v = await _registry(request).change(account, trigger_id, active=active)
    if v is None:
        raise _not_found(trigger_id)
    return _out(v)


@router.post("/{trigger_id}/activate", response_model=TriggerOut)
async def activate_trigger(trigger_id: TriggerId, account: Account, request: Request) -> TriggerOut:
    """Applies to occurrences received from now on; fires cancelled by a deactivation stay cancelled."""
    return await _set_active(request, account, trigger_id, True)


@router.post("/{trigger_id}/deactivate", response_model=TriggerOut)
async def deactivate_trigger(trigger_id: TriggerId, account: Account, request: Request) -> TriggerOut:
    """Cancels every pending fire; nothing is scheduled until it is activated again."""
    return await _set_active(request, account, trigger_id, False)


@router.delete("/{trigger_id}", status_code=204)
async def delete_trigger(trigger_id: TriggerId, account: Account, request: Request) -> Response:
    """Cancels every pending fire; the id is never reused."""
    if await _registry(request).change(account, trigger_id, delete=True) is None:
        raise _not_found(trigger_id)
    return Response(status_code=204)


async def _per_partition(request: Request, command: str, key_of, *args) -> list:
    redis = request.app.state.catalog.redis
    prefix, partitions = request.app.state.settings.key_prefix, request.app.state.segments.partitions
    async with redis.pipeline(transaction=False) as pipe:
        for p in range(partitions):
            getattr(pipe, command)(key_of(PartitionKeys(prefix, p)), *args)
        return await pipe.execute()


@router.get("/{trigger_id}/stats", response_model=TriggerStats)
async def trigger_stats(trigger_id: TriggerId, account: Account, request: Request) -> TriggerStats:
    """Summed over partitions, exact as of the processor's last applied batch."""
    v = await _registry(request).get(account, trigger_id)
    if v is None:
        raise _not_found(trigger_id)
    totals: dict[str, int] = {}
    for reply in await _per_partition(request, "hgetall", lambda k: k.trigger_stats(trigger_id)):
        for name, n in reply.items():
            name = name.decode() if isinstance(name, bytes) else name
            totals[name] = totals.get(name, 0) + int(n)
    current = f"p{v.epoch}"
    pending = totals.get(current, 0) if v.live else 0
    stale = sum(n for name, n in totals.items() if name.startswith("p")) - pending
    return TriggerStats(pending=pending, fired=totals.get("f", 0), cancelled=totals.get("c", 0) + stale,
                        skipped_late=totals.get("l", 0))


@router.get("/{trigger_id}/fires", response_model=FireList)
async def trigger_fires(trigger_id: TriggerId, account: Account, request: Request,
                        limit: Annotated[int, Query(ge=1, le=RECENT_FIRES)] = RECENT_FIRES) -> FireList:
    """The most recent fires (task-trigger.v1 records), newest first; at most 20 (RECENT_FIRES)."""
    if await _registry(request).get(account, trigger_id) is None:
        raise _not_found(trigger_id)
    fires = []
    for lines in await _per_partition(request, "lrange", lambda k: k.trigger_recent(trigger_id), 0, limit - 1):
        fires += [fire_line_record(line.decode()) for line in lines]
    fires.sort(key=lambda f: (f["fired_at"], f["fire_id"]), reverse=True)
    return FireList(fires=[FireOut(**f) for f in fires[:limit]])
