"""`pbseg accounts ...`: accounts, API keys and postback secrets. Each command prints one JSON
line on success; errors go to stderr with exit status 1 (2 for usage errors)."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys

import orjson


def register(sub) -> None:
    acc = sub.add_parser("accounts", help="manage accounts, API keys and postback secrets")
    acc_sub = acc.add_subparsers(dest="accounts_cmd", required=True)
    create = acc_sub.add_parser("create", help="create an account; prints {account_id, api_key}")
    create.add_argument("--name", required=True)
    acc_sub.add_parser("list", help="list accounts: id, name, key ids, whether a secret is set")
    add = acc_sub.add_parser("add-key", help="add an API key; prints {account_id, key_id, api_key}")
    add.add_argument("--account", type=int, required=True)
    keys = acc_sub.add_parser("keys", help="list an account's key ids (keys are stored hashed and never shown again)")
    keys.add_argument("--account", type=int, required=True)
    revoke = acc_sub.add_parser("revoke-key", help="revoke an API key by its key id")
    revoke.add_argument("--account", type=int, required=True)
    revoke.add_argument("--key-id", required=True)
    setsec = acc_sub.add_parser("set-secret", help="set the postback secret (random when --secret is omitted)")
    setsec.add_argument("--account", type=int, required=True)
    setsec.add_argument("--secret", help="8-128 characters of A-Z a-z 0-9 - _ (default: 32 random)")
    clear = acc_sub.add_parser("clear-secret", help="clear the postback secret")
    clear.add_argument("--account", type=int, required=True)
    acc.set_defaults(func=run)


def _valid_secret(secret: str) -> bool:
    return 8 <= len(secret) <= 128 and all(c.isascii() and (c.isalnum() or c in "-_") for c in secret)


async def _run(args) -> int:
    from services.common.catalog import CatalogError, CatalogStore, key_id_of
    from services.common.catalog_ids import IdLogUnavailable, id_log_for
    from services.common.clock import SystemClock
    from services.common.redis_conn import async_redis, check_redis
    from services.common.settings import CommonSettings

    settings = CommonSettings()
    redis = async_redis(settings.redis_url)
    await check_redis(redis, settings.redis_url)
    ids = id_log_for(settings)
    store, now = CatalogStore(redis, settings.key_prefix, ids), SystemClock().now_ms()
    out: object
    try:
        cmd = args.accounts_cmd
        if cmd == "create":
            if not args.name.strip():
                print("error: --name must not be blank", file=sys.stderr)
                return 2
            account_id, api_key = await store.create_account(args.name.strip(), now)
            out = {"account_id": account_id, "api_key": api_key}
        elif cmd == "list":
            out = await store.list_accounts()
        elif cmd == "add-key":
            api_key = await store.add_api_key(args.account, now)
            out = {"account_id": args.account, "key_id": key_id_of(api_key), "api_key": api_key}
        elif cmd == "keys":
            await store.require_account(args.account)
            out = [{"key_id": k.key_id, "created_at": k.created_at} for k in await store.api_keys(args.account)]
        elif cmd == "revoke-key":
            await store.revoke_api_key(args.account, args.key_id)
            out = {"account_id": args.account, "revoked": args.key_id}
        elif cmd == "set-secret":
            secret = args.secret if args.secret is not None else secrets.token_urlsafe(24)
            if not _valid_secret(secret):
                print("error: a secret is 8-128 characters of A-Z a-z 0-9 - _", file=sys.stderr)
                return 2
            await store.set_secret(args.account, secret)
            out = {"account_id": args.account, "secret": secret}
        else:  # clear-secret
            await store.set_secret(args.account, None)
            out = {"account_id": args.account, "secret": None}
    except CatalogError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except IdLogUnavailable as exc:
        print(f"error: {exc} (nothing was created; check that Kafka runs: `make up`)", file=sys.stderr)
        return 1
    finally:
        await ids.close()
        await redis.aclose()
    print(orjson.dumps(out).decode())
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))
