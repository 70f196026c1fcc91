"""Saved segments: a named filter per account, versioned (Redis adapter, catalog hash tag).

Ids come from the catalog-ids log like account ids (services/domain/catalog_ids.py), so an id a
caller saw is never reused. Every change writes a new version; the history is kept until the
segment is deleted. Writes are optimistic transactions (WATCH on the account's hash): two
concurrent updates both land, as consecutive versions.

Limits: MAX_SAVED_SEGMENTS per account; names 1-MAX_NAME characters."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson
from redis.exceptions import WatchError

from services.common.catalog_ids import IdLog
from services.common.keys import CatalogKeys
from services.domain.catalog_ids import SEGMENT

MAX_SAVED_SEGMENTS = 1_000
MAX_NAME = 100


@dataclass(frozen=True)
class SavedSegment:
    id: int
    name: str
    filter: dict
    version: int
    created_at: int
    updated_at: int

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: bytes) -> "SavedSegment":
        return cls(**orjson.loads(raw))


class SegmentLimit(Exception):
    """The account already has MAX_SAVED_SEGMENTS saved segments."""


class SavedSegments:
    def __init__(self, redis, prefix: str, ids: IdLog):
        self.redis, self.keys, self.ids = redis, CatalogKeys(prefix), ids

    async def create(self, account_id: int, name: str, filter_: dict, now_ms: int) -> SavedSegment:
        """Raises SegmentLimit, IdLogUnavailable."""
        if await self.redis.hlen(self.keys.saved_segments(account_id)) >= MAX_SAVED_SEGMENTS:
            raise SegmentLimit(f"an account can have at most {MAX_SAVED_SEGMENTS} saved segments")
        segment_id = await self.ids.allocate(SEGMENT, {"catalog": self.keys.prefix, "account_id": account_id,
                                                       "created_at": now_ms})
        segment = SavedSegment(segment_id, name, filter_, 1, now_ms, now_ms)
        raw = orjson.dumps(segment.as_dict())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.saved_segments(account_id), str(segment_id), raw)
            pipe.rpush(self.keys.saved_segment_versions(account_id, segment_id), raw)
            await pipe.execute()
        return segment

    async def list(self, account_id: int) -> list[SavedSegment]:
        raw = await self.redis.hgetall(self.keys.saved_segments(account_id))
        return sorted((SavedSegment.from_json(v) for v in raw.values()), key=lambda s: s.id)

    async def get(self, account_id: int, segment_id: int) -> SavedSegment | None:
        raw = await self.redis.hget(self.keys.saved_segments(account_id), str(segment_id))
        return None if raw is None else SavedSegment.from_json(raw)

    async def update(self, account_id: int, segment_id: int, name: str | None, filter_: dict | None,
                     now_ms: int) -> SavedSegment | None:
        """A new version with the given name and/or filter; None when there is no such segment."""
        key = self.keys.saved_segments(account_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, str(segment_id))
                    if raw is None:
                        await pipe.reset()
                        return None
                    old = SavedSegment.from_json(raw)
                    new = SavedSegment(old.id, name if name is not None else old.name,
                                       filter_ if filter_ is not None else old.filter, old.version + 1,
                                       old.created_at, now_ms)
                    encoded = orjson.dumps(new.as_dict())
                    pipe.multi()
                    pipe.hset(key, str(segment_id), encoded)
                    pipe.rpush(self.keys.saved_segment_versions(account_id, segment_id), encoded)
                    await pipe.execute()
                    return new
                except WatchError:
                    continue

    async def delete(self, account_id: int, segment_id: int) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.saved_segments(account_id), str(segment_id))
            pipe.delete(self.keys.saved_segment_versions(account_id, segment_id))
            removed, _ = await pipe.execute()
        return bool(removed)

    async def versions(self, account_id: int, segment_id: int) -> list[SavedSegment] | None:
        """Every version, oldest first; None when there is no such segment."""
        if await self.get(account_id, segment_id) is None:
            return None
        raw = await self.redis.lrange(self.keys.saved_segment_versions(account_id, segment_id), 0, -1)
        return [SavedSegment.from_json(v) for v in raw]
