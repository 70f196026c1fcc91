"""Which allocated catalog entities Redis no longer holds, and putting them back.

Every account and custom event was first an allocation record on the catalog-ids topic
(services/common/catalog_ids.py). After Redis loses its last writes (a restart from an AOF that
missed the last second, a failover to a lagging replica), an id the caller was given can be
missing from the catalog. Its id is never handed out again (the log's offsets move on), and
`pbseg catalog check` lists it; `--restore` stores it again from its record.

An allocation record is *present* when its id is stored, or when its natural key is stored under
another id (an allocation that was superseded and retried, services/common/catalog.py): for an
account its API key hash, for an event its code in the account. Deleted events are not lost.

What a restore cannot bring back (documented in docs/architecture.md): changes made after the
creation and lost with it: a postback secret (the restored account has none; set it again),
added or revoked API keys, renames and status changes of events.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from services.common.catalog import CatalogStore
from services.domain.catalog_ids import ACCOUNT, EVENT


@dataclass(frozen=True)
class LostEntity:
    kind: str
    id: int
    entity: dict

    def describe(self) -> str:
        if self.kind == ACCOUNT:
            return f"account {self.id} ({self.entity['name']!r}, created_at {self.entity['created_at']})"
        return (f"event {self.id} (code {self.entity['code']!r} of account {self.entity['account_id']}, "
                f"created_at {self.entity['created_at']})")


async def lost_entities(store: CatalogStore) -> list[LostEntity]:
    """Allocation records whose entity the catalog does not hold (oldest first per kind)."""
    redis, keys = store.redis, store.keys
    accounts = {int(k) for k in await redis.hkeys(keys.accounts)}
    key_hashes = {k.decode() for k in await redis.hkeys(keys.api_keys)}
    lost = [LostEntity(ACCOUNT, id_, e) for id_, e in await _allocations(store, ACCOUNT)
            if id_ not in accounts and e["key_hash"] not in key_hashes]
    deleted = {int(k) for k in await redis.smembers(keys.deleted_events)}
    events = await _allocations(store, EVENT)
    for account_id in sorted({int(e["account_id"]) for _, e in events}):
        stored = {int(k): orjson.loads(v)["code"].lower()
                  for k, v in (await redis.hgetall(keys.events(account_id))).items()}
        codes = set(stored.values())
        lost += [LostEntity(EVENT, id_, e) for id_, e in events
                 if int(e["account_id"]) == account_id and id_ not in stored and id_ not in deleted
                 and e["code"].lower() not in codes]
    return lost


async def _allocations(store: CatalogStore, kind: str) -> list[tuple[int, dict]]:
    """This catalog's allocation records (several catalogs, PBSEG_KEY_PREFIX, may share one log)."""
    return [(id_, e) for id_, e in await store.ids.allocations(kind) if e.get("catalog") == store.keys.prefix]


async def restore(store: CatalogStore, entity: LostEntity) -> None:
    """Store a lost entity again under its id (an event only if its account exists)."""
    if entity.kind == ACCOUNT:
        await store.store_account(entity.id, entity.entity, restore=True)
    else:
        await store.require_account(int(entity.entity["account_id"]))
        await store.store_event(entity.id, entity.entity, restore=True)
