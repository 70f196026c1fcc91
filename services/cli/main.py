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


def _rebuild(args) -> int:
    from services.processor.rebuild import main as rebuild_main

    return rebuild_main(args)


def _stack(args) -> int:
    from services.devstack import stack

    return {"up": stack.up, "down": stack.down, "status": stack.status}[args.stack_cmd]()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pbseg", description="postback segments operator CLI")
    sub = parser.add_subparsers(dest="cmd", required=True)

    from services.cli import accounts, catalog

    accounts.register(sub)
    catalog.register(sub)

    sch = sub.add_parser("schemas", help="generate schemas/*.json from the models")
    sch.add_argument("schemas_cmd", choices=["write"])
    sch.set_defaults(func=_schemas)

    rb = sub.add_parser("rebuild", help="rebuild all Redis partition state from the postbacks log (stop the processors first)")
    rb.add_argument("--yes", action="store_true", help="confirm: partition keys of PBSEG_KEY_PREFIX are deleted and replayed")
    rb.add_argument("--force", action="store_true", help="skip the check that no processor is running")
    rb.add_argument("--accept-truncated-log", action="store_true",
                    help="when a partition's log no longer starts at offset 0, rebuild from what is left "
                         "(the missing offsets are reported) instead of refusing")
    rb.add_argument("--no-progress", action="store_true", help="no progress bar")
    rb.set_defaults(func=_rebuild)

    stk = sub.add_parser("stack", help="run the local system (make up/down/status)")
    stk.add_argument("stack_cmd", choices=["up", "down", "status"])
    stk.set_defaults(func=_stack)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
