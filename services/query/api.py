"""HTTP API of the query service (FastAPI)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.common.catalog import CatalogStore
from services.query.segments import SegmentIndex
from services.query.ui_routes import ui_router


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str):
        self.status, self.error, self.message = status, error, message


class SegmentFilter(BaseModel):
    event_include: list[str] = Field(default_factory=list, max_length=64)
    event_exclude: list[str] = Field(default_factory=list, max_length=64)
    include_match: Literal["all", "any"] = "all"


class CountResponse(BaseModel):
    count: int


async def account_id(request: Request, authorization: Annotated[str | None, Header()] = None) -> int:
    """The account of the bearer API key; 401 when missing or wrong."""
    if not authorization or not authorization.startswith("Bearer "):
        raise ApiError(401, "unauthorized", "send `Authorization: Bearer <api key>`")
    found = await request.app.state.catalog.account_for_api_key(authorization[7:].strip())
    if found is None:
        raise ApiError(401, "unauthorized", "the API key is not valid")
    return found


Account = Annotated[int, Depends(account_id)]


def build_api(catalog: CatalogStore, segments: SegmentIndex, lifespan=None) -> FastAPI:
    api = FastAPI(title="postback segments query API", version="0.1.0", lifespan=lifespan)
    api.state.catalog = catalog
    api.state.segments = segments
    api.include_router(ui_router)  # the Segments page at /ui (static files, services/query/ui/)

    @api.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return JSONResponse({"error": exc.error, "message": exc.message}, status_code=exc.status)

    @api.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz():
        await catalog.redis.ping()
        return {"ready": True}

    @api.post("/api/b/v2/segments/count", response_model=CountResponse)
    async def count(body: SegmentFilter, account: Account) -> CountResponse:
        return CountResponse(count=await segments.count(account, body.event_include, body.event_exclude, body.include_match))

    return api
