"""The trigger registry (Redis adapter, catalog hash tag): every version of every trigger.

Written by the query service (/api/b/v2/triggers), read whole by the processor (`book`). Each
write is one Lua script that stamps the new version's `valid_from` with Redis' clock (TIME) and
bumps `CatalogKeys.triggers_version`, so a reader that took its snapshot at a Redis time R holds
every version in force at any instant before R (`Snapshot.read_at`). Versions are kept for good
(deleted triggers too): replaying the log decides fires with the version in force back then.

Ids come from the catalog-ids log (kind TRIGGER), so an id a caller saw is never reused."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from services.common.catalog_ids import IdLog
from services.common.keys import CatalogKeys
from services.domain.catalog_ids import TRIGGER
from services.domain.triggers import MAX_TRIGGERS_PER_ACCOUNT, TriggerBook, TriggerVersion

# KEYS: triggers(account), trigger_versions(id), trigger_accounts, triggers_version
# ARGV: id, account, the new version's JSON (valid_from = _STAMP), the raw current version ("" = none:
#       a create), the current version's valid_from, "1" to remove it from the current hash (delete),
#       the per-account limit (creates only)
_WRITE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[4] == '' then
  if current then return {'exists'} end
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[7]) then return {'limit'} end
elseif current ~= ARGV[4] then
  return {'conflict'}
end
local t = redis.call('TIME')
local stamp = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if stamp <= tonumber(ARGV[5]) then stamp = tonumber(ARGV[5]) + 1 end
local raw = string.gsub(ARGV[3], '"__STAMP__"', string.format('%d', stamp))
if ARGV[6] == '1' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], raw) end
redis.call('RPUSH', KEYS[2], raw)
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[4])
return {'ok', raw}
"""
# KEYS: triggers_version. Returns {Redis time in ms, the version counter}.
_CLOCK = """
local t = redis.call('TIME')
return {tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), tonumber(redis.call('GET', KEYS[1]) or '0')}
"""


class TriggerLimit(Exception):
    """The account already has MAX_TRIGGERS_PER_ACCOUNT triggers."""


@dataclass(frozen=True)
class Snapshot:
    book: TriggerBook
    version: int
    read_at: int  # every version in force before this Redis time (unix ms) is in `book`


class TriggerRegistry:
    def __init__(self, redis, prefix: str, ids: IdLog | None = None):
        self.redis, self.keys, self.ids = redis, CatalogKeys(prefix), ids
        self._write = redis.register_script(_WRITE)
        self._clock = redis.register_script(_CLOCK)

    async def _store(self, new: TriggerVersion, old_raw: bytes | None, old_from: int, delete: bool = False):
        d = new.as_dict()
        d["valid_from"] = "__STAMP__"  # the script writes Redis' clock there (and into created_at of a new one)
        if not new.created_at:
            d["created_at"] = "__STAMP__"
        raw = orjson.dumps(d)
        reply = await self._write(keys=[self.keys.triggers(new.account_id), self.keys.trigger_versions(new.id),
                                        self.keys.trigger_accounts, self.keys.triggers_version],
                                  args=[new.id, new.account_id, raw, old_raw or b"", old_from, "1" if delete else "0",
                                        MAX_TRIGGERS_PER_ACCOUNT])
        status = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if status == "limit":
            raise TriggerLimit(f"an account can have at most {MAX_TRIGGERS_PER_ACCOUNT} triggers")
        return status, (TriggerVersion.from_dict(orjson.loads(reply[1])) if status == "ok" else None)

    async def create(self, account_id: int, name: str, on_event: str, occurrence: str, delay: str, delay_ms: int,
                     filter_: dict, active: bool) -> TriggerVersion:
        """Raises TriggerLimit, IdLogUnavailable."""
        if await self.redis.hlen(self.keys.triggers(account_id)) >= MAX_TRIGGERS_PER_ACCOUNT:
            raise TriggerLimit(f"an account can have at most {MAX_TRIGGERS_PER_ACCOUNT} triggers")
        trigger_id = await self.ids.allocate(TRIGGER, {"catalog": self.keys.prefix, "account_id": account_id})
        first = TriggerVersion(trigger_id, account_id, 1, 0, name, on_event, occurrence, delay, delay_ms, filter_,
                               active, 1 if active else 0, 0)
        status, stored = await self._store(first, None, 0)
        if status != "ok":
            raise RuntimeError(f"trigger id {trigger_id} is taken ({status}): the id log handed it out twice")
        return stored

    async def get(self, account_id: int, trigger_id: int) -> TriggerVersion | None:
        raw = await self.redis.hget(self.keys.triggers(account_id), str(trigger_id))
        return None if raw is None else TriggerVersion.from_dict(orjson.loads(raw))

    async def list(self, account_id: int) -> list[TriggerVersion]:
        raw = await self.redis.hgetall(self.keys.triggers(account_id))
        return sorted((TriggerVersion.from_dict(orjson.loads(v)) for v in raw.values()), key=lambda t: t.id)

    async def change(self, account_id: int, trigger_id: int, delete: bool = False, **changes) -> TriggerVersion | None:
        """The next version with `changes` (name, on_event, occurrence, delay, delay_ms, filter,
        active); `delete` makes the last one. None when there is no such trigger. Concurrent
        changes both land, as consecutive versions (the script refuses a stale base: retried)."""
        key = self.keys.triggers(account_id)
        while True:
            raw = await self.redis.hget(key, str(trigger_id))
            if raw is None:
                return None
            old = TriggerVersion.from_dict(orjson.loads(raw))
            if delete:
                changes = {"active": False, "deleted": True}
            new = old.changed(0, **changes)
            status, stored = await self._store(new, raw, old.valid_from, delete)
            if status == "ok":
                return stored

    async def snapshot(self, since: Snapshot | None = None) -> Snapshot:
        """Every version of every trigger, as of now (Redis' clock). With `since`, reloads only
        when a trigger changed after it (one round trip when nothing did)."""
        now, version = (int(x) for x in await self._clock(keys=[self.keys.triggers_version]))
        read_at = now - 1  # a write stamped in this very millisecond may land after the clock read
        if since is not None and since.version == version:
            return Snapshot(since.book, version, read_at)
        ids = await self.redis.hkeys(self.keys.trigger_accounts)
        async with self.redis.pipeline(transaction=False) as pipe:
            for tid in ids:
                pipe.lrange(self.keys.trigger_versions(int(tid)), 0, -1)
            histories = await pipe.execute() if ids else []
        versions = [TriggerVersion.from_dict(orjson.loads(raw)) for h in histories for raw in h]
        return Snapshot(TriggerBook.of(versions), version, read_at)
