"""Device lookup and rejected postbacks of the account."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from services.domain.codes import INSTALL_ID_PATTERN
from services.query.auth import Account
from services.query.device_state import device_view
from services.query.errors import ApiError
from services.query.schemas_api import DeviceOut, ErrorOut, RejectedOut

router = APIRouter(prefix="/api/b/v2", responses={401: {"model": ErrorOut}, 422: {"model": ErrorOut}})


@router.get("/devices/{install_id:path}", response_model=DeviceOut, tags=["devices"], responses={404: {"model": ErrorOut}})
async def device(install_id: Annotated[str, Path(pattern=INSTALL_ID_PATTERN)], account: Account,
                 request: Request) -> DeviceOut:
    """A device's events (system events and deposit ordinals included) with first/last time and count."""
    events = await request.app.state.devices.events(account, install_id)
    if events is None:
        raise ApiError(404, "device_not_found", f"no device `{install_id}` in this account")
    return DeviceOut(**device_view(install_id, events))


@router.get("/postbacks/rejected", response_model=RejectedOut, tags=["postbacks"])
async def rejected(account: Account, request: Request,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> RejectedOut:
    """The account's most recent rejected postbacks, newest first, with the reason. Kept: the
    newest QUERY_REJECTED_KEEP (1,000) per account, for QUERY_REJECTED_TTL_DAYS (7) after the last."""
    return RejectedOut(rejected=await request.app.state.rejected.recent(account, limit))
