"""Segments API: overview, count, device pages and NDJSON export (/api/b/v2/segments)."""

from __future__ import annotations

import asyncio

import orjson
from datetime import datetime, timezone

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from services.query import event_views as views
from services.query.auth import Account
from services.query.errors import ApiError
from services.domain.codes import DEP, EVENT_CODE_PATTERN, MAX_CODE_CHARS, deposit_ordinal
from services.domain.windows import DAY_MS
from services.domain.conditions import ConditionError, UnsupportedCondition
from services.domain.filters import SegmentFilter, unknown_codes, verdict
from services.query.cursors import CursorError, decode_cursor, encode_cursor
from services.query.filters import DevicePageRequest, FilterBody, VerdictRequest
from services.query.schemas_api import (CountOut, DailyOut, DayCount, DevicePageOut, ErrorOut, SegmentEvents,
                                        VerdictOut)
from services.query.segments import SegmentIndex

MAX_DAILY_DAYS = 400  # the chart's reach: at most the window retention (400 days at least)
router = APIRouter(prefix="/api/b/v2/segments", tags=["segments"],
                   responses={401: {"model": ErrorOut}, 422: {"model": ErrorOut}})


def _index(request: Request) -> SegmentIndex:
    return request.app.state.segments


async def _checked(request: Request, account: int, body: FilterBody) -> SegmentFilter:
    """The body as the domain's filter, normalized; 422 naming every code that is not an event
    of the account."""
    try:
        f = body.segment_filter(request.app.state.clock.now_ms(), request.app.state.settings.window_retention_days)
    except UnsupportedCondition as exc:
        raise ApiError(422, "unsupported_condition", str(exc)) from exc
    except ConditionError as exc:
        raise ApiError(422, "invalid_condition", str(exc)) from exc
    unknown = unknown_codes(f.codes(), set())
    if unknown:  # only then is the account's event list needed
        unknown = unknown_codes(unknown, {e.code for e in await request.app.state.catalog.custom_events(account)})
    if unknown:
        raise ApiError(422, "unknown_events", "unknown event codes: " + ", ".join(unknown), unknown_codes=unknown)
    return f.normalized()


@router.get("/events", response_model=SegmentEvents)
async def segment_events(account: Account, request: Request) -> SegmentEvents:
    """Every event of the account with its device count and ready postback URL (none for the
    derived deposit ordinals, which nobody posts): system events,
    then the deposit ordinals dep_2 .. the highest seen, then custom events. Device counts
    are the processor's per-code counters, exact as of the last applied batch (or up to
    QUERY_OVERVIEW_FRESH_MS old when that cache is turned on)."""
    catalog = request.app.state.catalog
    custom, counts, meta = await asyncio.gather(
        catalog.custom_events(account), request.app.state.overview.get(account), catalog.get_account(account))
    max_ordinal = max((n for c in counts if (n := deposit_ordinal(c)) is not None), default=1)
    rows = views.overview_rows(custom, max_ordinal)
    base, secret = request.app.state.settings.postback_base_url, (meta or {}).get("secret")
    return SegmentEvents(events=[{**r.as_dict(), "devices": counts.get(r.code, 0),
                                  "deposit_ordinal": 1 if r.code == DEP else deposit_ordinal(r.code),
                                  "postback_url": views.postback_url(base, r.code, account, secret)} for r in rows])


@router.get("/daily", response_model=DailyOut)
async def daily(account: Account, request: Request,
                event: str = Query(pattern=EVENT_CODE_PATTERN, max_length=MAX_CODE_CHARS,
                                   description="the event code"),
                days: int = Query(30, ge=1, le=MAX_DAILY_DAYS, description=f"days ending today, at most {MAX_DAILY_DAYS}")
                ) -> DailyOut:
    """Devices per UTC day on which the event occurred (by event time), for the last `days` days
    (the Segments page's chart): read from the windowed index's day buckets, exact as of `as_of`."""
    if deposit_ordinal(event) is not None:
        raise ApiError(422, "unsupported_condition", f"`{event}` is a deposit ordinal: days are kept for `dep` itself")
    if unknown_codes([event], set()) and unknown_codes([event], {e.code for e in await request.app.state.catalog.custom_events(account)}):
        raise ApiError(422, "unknown_events", f"unknown event codes: {event}", unknown_codes=[event])
    today = request.app.state.clock.now_ms() // DAY_MS
    numbers = list(range(today - days + 1, today + 1))
    as_of = await _index(request).as_of()
    counts = await _index(request).daily(account, event, numbers)
    return DailyOut(event=event, as_of=as_of, days=[
        DayCount(day=datetime.fromtimestamp(d * 86_400, timezone.utc).date().isoformat(), start=d * DAY_MS, devices=n)
        for d, n in zip(numbers, counts)])


@router.post("/count", response_model=CountOut)
async def count(body: FilterBody, account: Account, request: Request) -> CountOut:
    return await count_answer(request, account, body)


async def count_answer(request: Request, account: int, body: FilterBody) -> CountOut:
    f = await _checked(request, account, body)
    as_of = await _index(request).as_of()  # before the count: the count then reflects at least that much
    return CountOut(count=await _index(request).count(account, f), as_of=as_of)


@router.post("/devices", response_model=DevicePageOut)
async def devices(body: DevicePageRequest, account: Account, request: Request) -> DevicePageOut:
    """One page of matching install ids. Pages are stable: walking them with `next_cursor`
    returns every device that matched for the whole walk exactly once. Cursors are signed: one
    this API did not issue to this account for this filter is 422 `invalid_cursor`."""
    return await devices_answer(request, account, body)


async def devices_answer(request: Request, account: int, body: DevicePageRequest) -> DevicePageOut:
    f = await _checked(request, account, body)
    index = _index(request)
    key = await request.app.state.cursor_secret.get()
    try:
        start = decode_cursor(body.cursor, key, account, f.fingerprint(), index.partitions) if body.cursor else None
    except CursorError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc
    as_of = await index.as_of()
    page = await index.page(account, f, start, body.limit)
    nxt = encode_cursor(page.next_cursor, key, account) if page.next_cursor else None
    return DevicePageOut(devices=page.install_ids, next_cursor=nxt, as_of=as_of)


@router.post("/export", response_class=StreamingResponse,
             responses={200: {"content": {"application/x-ndjson": {}}, "description": "one {\"install_id\"} per line"}})
async def export(body: FilterBody, account: Account, request: Request) -> StreamingResponse:
    """Every matching device as NDJSON, streamed page by page. The first page is read before
    the reply starts, so Redis failing then is a 503; failing later aborts the stream (the
    chunked body never ends, so a client sees an error rather than a shorter list)."""
    return await export_answer(request, account, body)


async def export_answer(request: Request, account: int, body: FilterBody, headers: dict | None = None) -> StreamingResponse:
    f = await _checked(request, account, body)
    as_of = await _index(request).as_of()
    pages = _index(request).walk(account, f)
    first = await anext(pages, None)

    async def lines():
        ids = first
        try:
            while ids is not None:
                yield b"".join(orjson.dumps({"install_id": i}) + b"\n" for i in ids)
                ids = await anext(pages, None)
        finally:
            await pages.aclose()

    headers = {**(headers or {}), **({"X-As-Of": str(as_of)} if as_of is not None else {})}
    return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)


@router.post("/verdict", response_model=VerdictOut)
async def device_verdict(body: VerdictRequest, account: Account, request: Request) -> VerdictOut:
    """Whether the filter selects one device, and if not, why (the Segments page's device lookup)."""
    f = await _checked(request, account, body)
    devices = request.app.state.devices
    events = await devices.events(account, body.install_id)
    found = await devices.locate(account, body.install_id) if events is not None and f.steps else None
    if events is None or (f.steps and found is None):
        return VerdictOut(install_id=body.install_id, found=False, selected=False,
                          reasons=[f"no device `{body.install_id}` in this account"])
    hits = await _index(request).step_hits(account, *found, f.steps) if f.steps else []
    v = verdict(f, events, hits)
    return VerdictOut(install_id=body.install_id, found=True, selected=v.selected, reasons=list(v.reasons))
