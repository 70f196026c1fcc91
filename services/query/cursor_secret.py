"""The HMAC key of device-page cursors (Redis adapter).

QUERY_CURSOR_SECRET when set. Otherwise one random secret per deployment, kept in the catalog
(`CatalogKeys.cursor_secret`): the first query process that needs it creates it with
SET NX GET, every other process reads what that one wrote, so replicas agree and cursors
survive restarts. Should that key ever be lost (Redis lost its data), a new secret is created
and cursors issued before answer 422 `invalid_cursor` ("start again without a cursor"); a
process keeps the secret it loaded until it restarts.
"""

from __future__ import annotations

import secrets

import redis.asyncio as aioredis

from services.common.keys import CatalogKeys


class CursorSecret:
    def __init__(self, redis: aioredis.Redis, prefix: str, configured: bytes | None = None):
        self._redis = redis
        self._key = CatalogKeys(prefix).cursor_secret
        self._secret = configured

    async def get(self) -> bytes:
        """The key. At most one round trip, on the first call without a configured secret;
        raises redis errors (the API answers 503 then, and the next call tries again).
        Concurrent first calls are harmless: SET NX lets exactly one value in."""
        if self._secret is None:
            fresh = secrets.token_hex(32)
            stored = await self._redis.set(self._key, fresh, nx=True, get=True)
            value = fresh if stored is None else (stored.decode() if isinstance(stored, bytes) else stored)
            self._secret = value.encode()
        return self._secret
