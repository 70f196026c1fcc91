"""The catalog: accounts, API keys (stored hashed), postback secrets and custom events.

Written by `pbseg accounts` and the query service, read by the ingress through a cached
`CatalogSnapshot`. Every write bumps `CatalogKeys.version` in the same MULTI so readers
can poll one small key and reload when it moves.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field

import orjson
import redis.asyncio as aioredis

from services.common.keys import CatalogKeys

SYSTEM_EVENTS: tuple[str, ...] = ("install", "reg", "dep")
_DEPOSIT_ORDINAL = re.compile(r"^dep_[0-9]+$")


def is_reserved_code(code: str) -> bool:
    """install, reg, dep and dep_<digits> belong to the system."""
    return code in SYSTEM_EVENTS or bool(_DEPOSIT_ORDINAL.match(code))


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class AccountEntry:
    account_id: int
    name: str
    secret: str | None
    active_codes: frozenset[str]
    inactive_codes: frozenset[str]


@dataclass(frozen=True)
class CatalogSnapshot:
    """What the ingress needs to judge a postback, as plain data."""

    version: int
    accounts: dict[int, AccountEntry] = field(default_factory=dict)


class CatalogStore:
    """Async Redis adapter for the catalog. Writes are atomic (MULTI) and bump the version."""

    def __init__(self, redis: aioredis.Redis, prefix: str):
        self.redis = redis
        self.keys = CatalogKeys(prefix)

    async def create_account(self, name: str, now_ms: int) -> tuple[int, str]:
        """Create an account and its first API key; returns (account_id, api_key)."""
        account_id = int(await self.redis.incr(self.keys.account_seq))
        api_key = "pbs_" + secrets.token_urlsafe(32)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.accounts, str(account_id),
                      orjson.dumps({"name": name, "created_at": now_ms, "secret": None}))
            pipe.hset(self.keys.api_keys, hash_api_key(api_key),
                      orjson.dumps({"account_id": account_id, "key_id": api_key[4:12], "created_at": now_ms}))
            pipe.incr(self.keys.version)
            await pipe.execute()
        return account_id, api_key

    async def account_for_api_key(self, api_key: str) -> int | None:
        raw = await self.redis.hget(self.keys.api_keys, hash_api_key(api_key))
        if raw is None:
            return None
        return int(orjson.loads(raw)["account_id"])

    async def get_account(self, account_id: int) -> dict | None:
        raw = await self.redis.hget(self.keys.accounts, str(account_id))
        return None if raw is None else {"account_id": account_id, **orjson.loads(raw)}

    async def version(self) -> int:
        return int(await self.redis.get(self.keys.version) or 0)

    async def snapshot(self) -> CatalogSnapshot:
        """Read the whole catalog consistently (one MULTI of reads)."""
        # First read the account list and version together, then each account's events.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.version)
            pipe.hgetall(self.keys.accounts)
            version_raw, accounts_raw = await pipe.execute()
        metas = {int(k): orjson.loads(v) for k, v in accounts_raw.items()}
        ids = sorted(metas)
        events_by_account: list[dict] = []
        if ids:
            async with self.redis.pipeline(transaction=True) as pipe:
                for account_id in ids:
                    pipe.hgetall(self.keys.events(account_id))
                events_by_account = await pipe.execute()
        accounts: dict[int, AccountEntry] = {}
        for account_id, events in zip(ids, events_by_account or [{}] * len(ids)):
            meta = metas[account_id]
            active, inactive = set(SYSTEM_EVENTS), set()
            for raw in events.values():
                event = orjson.loads(raw)
                (active if event.get("status", 1) == 1 else inactive).add(event["code"])
            accounts[account_id] = AccountEntry(
                account_id=account_id, name=meta.get("name", ""), secret=meta.get("secret"),
                active_codes=frozenset(active), inactive_codes=frozenset(inactive),
            )
        return CatalogSnapshot(version=int(version_raw or 0), accounts=accounts)
