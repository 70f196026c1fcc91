"""Segments API: overview, count, device pages and NDJSON export (/api/b/v2/segments)."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from services.query import event_views as views
from services.query.auth import Account
from services.query.errors import ApiError
from services.domain.codes import DEP, deposit_ordinal
from services.domain.conditions import ConditionError, UnsupportedCondition
from services.domain.filters import SegmentFilter, unknown_codes, verdict
from services.query.cursors import CursorError, decode_cursor, encode_cursor
from services.query.filters import DevicePageRequest, FilterBody, VerdictRequest
from services.query.schemas_api import CountOut, DevicePageOut, ErrorOut, SegmentEvents, VerdictOut
from services.query.segments import SegmentIndex

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
    events = await request.app.state.devices.events(account, body.install_id)
    if events is None:
        return VerdictOut(install_id=body.install_id, found=False, selected=False,
                          reasons=[f"no device `{body.install_id}` in this account"])
    v = verdict(f, events)
    return VerdictOut(install_id=body.install_id, found=True, selected=v.selected, reasons=list(v.reasons))
