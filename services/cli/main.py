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


def _partition_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is not a partition count from 1 to 1024")
    return int(text)


def _repartition(args) -> int:
    from services.processor.repartition import main as repartition_main

    return repartition_main(args)


def _stack(args) -> int:
    from services.devstack import stack

    return {"up": stack.up, "down": stack.down, "status": stack.status}[args.stack_cmd]()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pbseg", description="postback segments operator CLI")
    sub = parser.add_subparsers(dest="cmd", required=True)

    from services.cli import accounts, catalog, tail

    accounts.register(sub)
    tail.register(sub)
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

    rp = sub.add_parser("repartition", help="migrate to another partition count: copy the postbacks log into a new "
                        "topic with N partitions, then rebuild the state from it (stop ingress and processors first)")
    rp.add_argument("--to", type=_partition_count, required=True, metavar="N", help="the new partition count (1-1024)")
    rp.add_argument("--target", required=True, metavar="TOPIC", help="the new postbacks topic (must not hold records)")
    rp.add_argument("--yes", action="store_true", help="confirm: the state under PBSEG_KEY_PREFIX is rebuilt")
    rp.add_argument("--force", action="store_true", help="skip the check that no processor is running")
    rp.add_argument("--no-progress", action="store_true", help="no progress bar")
    rp.set_defaults(func=_repartition)

    stk = sub.add_parser("stack", help="run the local system (make up/down/status)")
    stk.add_argument("stack_cmd", choices=["up", "down", "status"])
    stk.set_defaults(func=_stack)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
