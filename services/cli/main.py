"""`pbseg`: the operator CLI."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson


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

    from services.cli import accounts

    accounts.register(sub)

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
