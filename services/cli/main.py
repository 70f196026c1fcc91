"""`pbseg`: the operator CLI."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson


def _accounts(args) -> int:
    from services.common.catalog import CatalogStore
    from services.common.clock import SystemClock
    from services.common.redis_conn import async_redis, check_redis
    from services.common.settings import CommonSettings

    settings = CommonSettings()

    async def run() -> int:
        redis = async_redis(settings.redis_url)
        await check_redis(redis, settings.redis_url)
        store = CatalogStore(redis, settings.key_prefix)
        if args.accounts_cmd == "create":
            account_id, api_key = await store.create_account(args.name, SystemClock().now_ms())
            print(orjson.dumps({"account_id": account_id, "api_key": api_key}).decode())
        await redis.aclose()
        return 0

    return asyncio.run(run())


def _schemas(args) -> int:
    from services.common.schemas import write_all

    for path in write_all():
        print(path)
    return 0


def _stack(args) -> int:
    from services.devstack import stack

    return {"up": stack.up, "down": stack.down, "status": stack.status}[args.stack_cmd]()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pbseg", description="postback segments operator CLI")
    sub = parser.add_subparsers(dest="cmd", required=True)

    acc = sub.add_parser("accounts", help="manage accounts and API keys")
    acc_sub = acc.add_subparsers(dest="accounts_cmd", required=True)
    create = acc_sub.add_parser("create", help="create an account; prints {account_id, api_key}")
    create.add_argument("--name", required=True)
    acc.set_defaults(func=_accounts)

    sch = sub.add_parser("schemas", help="generate schemas/*.json from the models")
    sch.add_argument("schemas_cmd", choices=["write"])
    sch.set_defaults(func=_schemas)

    stk = sub.add_parser("stack", help="run the local system (make up/down/status)")
    stk.add_argument("stack_cmd", choices=["up", "down", "status"])
    stk.set_defaults(func=_stack)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
