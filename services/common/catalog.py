"""The catalog: accounts, API keys (stored hashed), postback secrets and custom events.

Written by `pbseg accounts` and the query service, read by the ingress through a cached
`CatalogSnapshot`. Every write bumps `CatalogKeys.version` in the same MULTI / Lua script,
so readers can poll one small key and reload when it moves.

Ids: an account or custom-event id is the offset of an allocation record on the catalog-ids
topic (`IdLog`, services/common/catalog_ids.py), so an id handed to a caller is never handed out
again, even after Redis loses its last writes; the record also carries what recreates the entity
(`pbseg catalog check --restore`).

Limits: at most `MAX_CUSTOM_EVENTS` custom events per account; event codes are unique per
account case-insensitively (`Promo` and `promo` cannot both exist) and the reserved codes
(services/domain/codes.py, `is_reserved_code`) are refused.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError, WatchError

from services.common.catalog_ids import IdLog
from services.common.keys import CatalogKeys
from services.domain.catalog_ids import ACCOUNT, EVENT
from services.domain.codes import FIRST_CUSTOM_ID, SYSTEM_EVENTS

MAX_CUSTOM_EVENTS = 10_000
_HERE = Path(__file__).parent
_CREATE_EVENT = (_HERE / "catalog_event_create.lua").read_text()
_CHANGE_EVENT = (_HERE / "catalog_event_change.lua").read_text()
_CREATE_ACCOUNT = (_HERE / "catalog_account_create.lua").read_text()
# An allocation refused as taken moves past the catalog's highest id; racing another writer
# through a recreated log can take a few rounds, never more than this.
_ALLOCATION_ROUNDS = 8


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


_KEY_ALPHABET = string.ascii_letters + string.digits


def new_api_key() -> str:
    """`pbs_` + 43 characters of [A-Za-z0-9] (256 bits). No `-`: a key id starting with one
    would read as an option on the command line (`pbseg accounts revoke-key --key-id ...`)."""
    return "pbs_" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(43))


def key_id_of(api_key: str) -> str:
    """The public handle of a key (shown in listings, used to revoke it): 8 characters after `pbs_`."""
    return api_key[4:12]


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


@dataclass(frozen=True)
class CustomEvent:
    id: int
    name: str
    code: str
    status: int  # 1 active, 0 inactive
    created_at: int
    updated_at: int

    @classmethod
    def from_json(cls, raw: bytes | str) -> "CustomEvent":
        d = orjson.loads(raw)
        return cls(int(d["id"]), str(d["name"]), str(d["code"]), int(d.get("status", 1)),
                   int(d.get("created_at", 0)), int(d.get("updated_at", d.get("created_at", 0))))


@dataclass(frozen=True)
class ApiKeyInfo:
    key_id: str
    account_id: int
    created_at: int


class CatalogError(Exception):
    """A refused catalog change; `error` is the machine code the API returns."""

    def __init__(self, error: str, message: str):
        super().__init__(message)
        self.error, self.message = error, message


class CatalogStore:
    """Async Redis adapter for the catalog. Every write is atomic (MULTI or one Lua script)
    and bumps the version; reads never block writers. Raises CatalogError for refused changes."""

    def __init__(self, redis: aioredis.Redis, prefix: str, ids: IdLog):
        self.redis = redis
        self.keys = CatalogKeys(prefix)
        self.ids = ids
        self._create_event = redis.register_script(_CREATE_EVENT)
        self._change_event = redis.register_script(_CHANGE_EVENT)
        self._create_account = redis.register_script(_CREATE_ACCOUNT)

    # -- accounts and API keys -------------------------------------------------------------
    async def create_account(self, name: str, now_ms: int) -> tuple[int, str]:
        """Create an account and its first API key; returns (account_id, api_key). The id is
        durable in the id log before anything is stored (raises IdLogUnavailable otherwise)."""
        api_key = new_api_key()
        entity = {"catalog": self.keys.prefix, "name": name, "created_at": now_ms, "key_hash": hash_api_key(api_key),
                  "key_id": key_id_of(api_key)}
        above = int(await self.redis.get(self.keys.account_seq) or 0)
        return await self._allocated(ACCOUNT, entity, above, self.store_account), api_key

    async def _allocated(self, kind: str, entity: dict, above: int, store) -> int:
        """Allocate an id of `kind` above `above` and `store(id, entity)` it; an id the catalog
        refuses as taken (`id_taken <highest stored>`) moves the next allocation past it."""
        for _ in range(_ALLOCATION_ROUNDS):
            id_ = await self.ids.allocate(kind, entity, above)
            try:
                await store(id_, entity)
                return id_
            except CatalogError as exc:
                if exc.error != "id_taken":
                    raise
                above = int(exc.message.split()[-1])
        raise CatalogError("id_taken", f"no free {kind} id after {_ALLOCATION_ROUNDS} allocations")

    async def store_account(self, account_id: int, entity: dict, restore: bool = False) -> None:
        """Store an allocated account (`entity` as its allocation record has it). Raises
        CatalogError('id_taken', '... <highest id stored>') when the id is not above every stored
        id (unless `restore`) or is stored already."""
        meta = orjson.dumps({"name": entity["name"], "created_at": entity["created_at"], "secret": None})
        key = orjson.dumps({"account_id": account_id, "key_id": entity["key_id"], "created_at": entity["created_at"]})
        keys = [self.keys.accounts, self.keys.api_keys, self.keys.account_seq, self.keys.version]
        try:
            await self._create_account(keys=keys, args=[account_id, meta, entity["key_hash"], key, "1" if restore else "0"])
        except ResponseError as exc:
            if str(exc).startswith("id_taken"):
                raise CatalogError("id_taken", str(exc)) from exc
            raise

    async def account_for_api_key(self, api_key: str) -> int | None:
        raw = await self.redis.hget(self.keys.api_keys, hash_api_key(api_key))
        if raw is None:
            return None
        return int(orjson.loads(raw)["account_id"])

    async def get_account(self, account_id: int) -> dict | None:
        raw = await self.redis.hget(self.keys.accounts, str(account_id))
        return None if raw is None else {"account_id": account_id, **orjson.loads(raw)}

    async def list_accounts(self) -> list[dict]:
        """Every account with its key ids (never the keys) and whether a secret is set."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.accounts)
            pipe.hgetall(self.keys.api_keys)
            accounts_raw, keys_raw = await pipe.execute()
        keys_by_account: dict[int, list[str]] = {}
        for raw in keys_raw.values():
            info = orjson.loads(raw)
            keys_by_account.setdefault(int(info["account_id"]), []).append(info["key_id"])
        out = []
        for account_id in sorted(int(k) for k in accounts_raw):
            meta = orjson.loads(accounts_raw[str(account_id).encode()])
            out.append({"account_id": account_id, "name": meta.get("name", ""), "created_at": meta.get("created_at"),
                        "has_secret": bool(meta.get("secret")),
                        "key_ids": sorted(keys_by_account.get(account_id, []))})
        return out

    async def require_account(self, account_id: int) -> dict:
        account = await self.get_account(account_id)
        if account is None:
            raise CatalogError("unknown_account", f"account {account_id} does not exist")
        return account

    async def add_api_key(self, account_id: int, now_ms: int) -> str:
        """A new key for an existing account; returns the key (shown once, stored hashed)."""
        await self.require_account(account_id)
        api_key = new_api_key()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.api_keys, hash_api_key(api_key),
                      orjson.dumps({"account_id": account_id, "key_id": key_id_of(api_key), "created_at": now_ms}))
            pipe.incr(self.keys.version)
            await pipe.execute()
        return api_key

    async def api_keys(self, account_id: int) -> list[ApiKeyInfo]:
        raw = await self.redis.hgetall(self.keys.api_keys)
        infos = [orjson.loads(v) for v in raw.values()]
        return sorted((ApiKeyInfo(i["key_id"], int(i["account_id"]), int(i.get("created_at", 0)))
                       for i in infos if int(i["account_id"]) == account_id), key=lambda k: (k.created_at, k.key_id))

    async def revoke_api_key(self, account_id: int, key_id: str) -> None:
        """Revoke the key with this key id; takes effect on the next request. Raises
        CatalogError('unknown_key') when the account has no such key."""
        raw = await self.redis.hgetall(self.keys.api_keys)
        hashes = [h for h, v in raw.items()
                  if (info := orjson.loads(v))["key_id"] == key_id and int(info["account_id"]) == account_id]
        if not hashes:
            raise CatalogError("unknown_key", f"account {account_id} has no API key with id {key_id}")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.api_keys, *hashes)
            pipe.incr(self.keys.version)
            await pipe.execute()

    async def set_secret(self, account_id: int, secret: str | None) -> None:
        """Set (or with None clear) the postback secret; the ingress then requires `&key=`."""
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self.keys.accounts)
                    raw = await pipe.hget(self.keys.accounts, str(account_id))
                    if raw is None:
                        await pipe.reset()
                        raise CatalogError("unknown_account", f"account {account_id} does not exist")
                    meta = orjson.loads(raw)
                    meta["secret"] = secret
                    pipe.multi()
                    pipe.hset(self.keys.accounts, str(account_id), orjson.dumps(meta))
                    pipe.incr(self.keys.version)
                    await pipe.execute()
                    return
                except WatchError:
                    continue

    # -- custom events ---------------------------------------------------------------------
    async def create_event(self, account_id: int, name: str, code: str, now_ms: int) -> int:
        """Create an active custom event; returns its id, durable in the id log before anything is
        stored. The caller checks reserved codes. Raises CatalogError('duplicate_code' |
        'event_limit'), IdLogUnavailable."""
        await self._refuse_duplicate(account_id, code)  # before allocating: no id spent on a refusal
        entity = {"catalog": self.keys.prefix, "account_id": account_id, "name": name, "code": code, "created_at": now_ms}
        above = int(await self.redis.get(self.keys.event_seq) or 0) + FIRST_CUSTOM_ID - 1
        return await self._allocated(EVENT, entity, above, self.store_event)

    async def _refuse_duplicate(self, account_id: int, code: str) -> None:
        existing = await self.redis.hget(self.keys.event_codes(account_id), code.lower())
        if existing is not None:
            raise CatalogError("duplicate_code", f"an event with code `{code}` already exists (id {int(existing)}); "
                               "codes are unique per account, case-insensitively")

    async def store_event(self, event_id: int, entity: dict, restore: bool = False) -> int:
        """Store an allocated custom event (`entity` as its allocation record has it)."""
        account_id, code = int(entity["account_id"]), str(entity["code"])
        keys = [self.keys.events(account_id), self.keys.event_codes(account_id), self.keys.event_seq, self.keys.version]
        args = [entity["name"], code, entity["created_at"], MAX_CUSTOM_EVENTS, FIRST_CUSTOM_ID - 1, event_id,
                "1" if restore else "0"]
        try:
            return int(await self._create_event(keys=keys, args=args))
        except ResponseError as exc:
            msg = str(exc)
            if msg.startswith("id_taken"):
                raise CatalogError("id_taken", msg) from exc
            if msg.startswith("duplicate_code"):
                raise CatalogError("duplicate_code", f"an event with code `{code}` already exists (id {msg.split()[-1]}); codes are unique per account, case-insensitively") from exc
            if msg.startswith("event_limit"):
                raise CatalogError("event_limit", f"an account can have at most {MAX_CUSTOM_EVENTS} custom events") from exc
            raise

    async def custom_events(self, account_id: int) -> list[CustomEvent]:
        """The account's custom events ordered by id."""
        raw = await self.redis.hgetall(self.keys.events(account_id))
        return sorted((CustomEvent.from_json(v) for v in raw.values()), key=lambda e: e.id)

    async def custom_event(self, account_id: int, event_id: int) -> CustomEvent | None:
        raw = await self.redis.hget(self.keys.events(account_id), str(event_id))
        return None if raw is None else CustomEvent.from_json(raw)

    async def _change(self, account_id: int, event_id: int, op: str, value: str, now_ms: int) -> CustomEvent | None:
        keys = [self.keys.events(account_id), self.keys.event_codes(account_id), self.keys.version, self.keys.deleted_events]
        try:
            raw = await self._change_event(keys=keys, args=[str(event_id), op, value, now_ms])
        except ResponseError as exc:
            if str(exc).startswith("not_found"):
                raise CatalogError("event_not_found", f"no event with id {event_id}") from exc
            raise
        return CustomEvent.from_json(raw) if raw else None

    async def set_event_status(self, account_id: int, event_id: int, status: int, now_ms: int) -> CustomEvent:
        return await self._change(account_id, event_id, "status", str(status), now_ms)

    async def rename_event(self, account_id: int, event_id: int, name: str, now_ms: int) -> CustomEvent:
        return await self._change(account_id, event_id, "name", name, now_ms)

    async def delete_event(self, account_id: int, event_id: int, now_ms: int) -> None:
        await self._change(account_id, event_id, "delete", "", now_ms)

    # -- snapshot for the ingress ----------------------------------------------------------
    async def version(self) -> int:
        return int(await self.redis.get(self.keys.version) or 0)

    async def snapshot(self) -> CatalogSnapshot:
        """Read the whole catalog consistently (one MULTI of reads)."""
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
