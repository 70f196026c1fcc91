"""`pbseg catalog check [--restore]`: accounts and custom events Redis lost, from the id log
(services/common/catalog_check.py). Prints one JSON line per lost entity; exits 1 when any is
lost and not restored, 0 otherwise."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson


def register(sub) -> None:
    cat = sub.add_parser("catalog", help="check the catalog against its id log")
    cat_sub = cat.add_subparsers(dest="catalog_cmd", required=True)
    check = cat_sub.add_parser("check", help="list accounts and events whose ids were handed out but Redis lost")
    check.add_argument("--restore", action="store_true", help="store each lost entity again under its id")
    cat.set_defaults(func=run)


async def _run(args) -> int:
    from services.common.catalog import CatalogError, CatalogStore
    from services.common.catalog_check import lost_entities, restore
    from services.common.catalog_ids import id_log_for
    from services.common.redis_conn import async_redis, check_redis
    from services.common.settings import CommonSettings

    settings = CommonSettings()
    redis = async_redis(settings.redis_url)
    await check_redis(redis, settings.redis_url)
    ids = id_log_for(settings)
    store = CatalogStore(redis, settings.key_prefix, ids)
    unresolved = 0
    try:
        lost = await lost_entities(store)
        for entity in lost:
            line = {"kind": entity.kind, "id": entity.id, **entity.entity, "restored": False}
            if args.restore:
                try:
                    await restore(store, entity)
                    line["restored"] = True
                except CatalogError as exc:
                    line["error"] = exc.message
            unresolved += not line["restored"]
            print(orjson.dumps(line).decode())
        summary = f"{len(lost)} lost, {len(lost) - unresolved} restored"
        if args.restore and len(lost) > unresolved:
            summary += "; restored accounts have no postback secret: set it again (pbseg accounts set-secret)"
        print(summary, file=sys.stderr)
    finally:
        await ids.close()
        await redis.aclose()
    return 1 if unresolved else 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))
