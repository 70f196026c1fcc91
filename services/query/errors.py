"""Every error is JSON {"error": <machine code>, "message": <for people>}; bad input is a 4xx.
Any Redis failure in a request (unreachable, timed out, loading, OOM, a failed script) is
503 `unavailable` with `Retry-After`, never a 500: the request did nothing the caller must undo."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.catalog import CatalogError
from services.common.catalog_ids import IdLogUnavailable

_STATUS = {
    "event_not_found": 404, "device_not_found": 404, "duplicate_code": 409, "event_limit": 409,
    "reserved_code": 422, "system_event": 403, "code_immutable": 409, "unknown_account": 404,
}


log = structlog.get_logger("query")
RETRY_AFTER_S = 1


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, **extra):
        self.status, self.error, self.message, self.extra = status, error, message, extra


def error_response(status: int, error: str, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, **extra}, status_code=status)


def _describe(errors: list[dict]) -> str:
    parts = []
    for e in errors[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return error_response(exc.status, exc.error, exc.message, **exc.extra)

    @api.exception_handler(CatalogError)
    async def _catalog_error(_: Request, exc: CatalogError):
        return error_response(_STATUS.get(exc.error, 409), exc.error, exc.message)

    @api.exception_handler(RedisError)
    async def _unavailable(request: Request, exc: RedisError):
        log.warning("redis_unavailable", path=request.url.path, error=type(exc).__name__, detail=str(exc)[:200])
        return JSONResponse({"error": "unavailable", "message": f"the data store did not answer ({type(exc).__name__}); "
                             f"retry in {RETRY_AFTER_S} s"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    @api.exception_handler(IdLogUnavailable)
    async def _ids_unavailable(request: Request, exc: IdLogUnavailable):
        log.warning("id_log_unavailable", path=request.url.path, detail=str(exc)[:300])
        return JSONResponse({"error": "unavailable", "message": "the catalog id log (Kafka) did not confirm a new id; "
                             f"nothing was created, retry in {RETRY_AFTER_S} s"}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_S)})

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        return error_response(422, "validation_error", _describe(exc.errors()))

    @api.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "message": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))
