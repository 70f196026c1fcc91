"""Bearer API keys: each key belongs to one account; the account is the request's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.query.errors import ApiError

_bearer = HTTPBearer(auto_error=False, description="An API key from `pbseg accounts create` / `add-key`")


async def account_id(request: Request,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> int:
    """The account of the bearer API key; 401 when missing or wrong."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise ApiError(401, "unauthorized", "send `Authorization: Bearer <api key>`")
    found = await request.app.state.catalog.account_for_api_key(credentials.credentials.strip())
    if found is None:
        raise ApiError(401, "unauthorized", "the API key is not valid (unknown or revoked)")
    return found


Account = Annotated[int, Depends(account_id)]
