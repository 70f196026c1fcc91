"""`python -m services.ingress`: serve the ingress on its own HTTP server with the
workers, bind and limits of IngressSettings (INGRESS_WORKERS, INGRESS_BIND, ...).

The only place the ingress reads its settings (from the environment); everything below
gets them passed in.
"""

from __future__ import annotations

import argparse
import sys

from services.ingress.http_server import serve
from services.ingress.settings import IngressSettings


def parse_bind(bind: str, default_port: int) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    return (host, int(port)) if sep else (bind, default_port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.ingress", description=__doc__)
    parser.add_argument("--bind", help="host:port (overrides INGRESS_BIND)")
    args = parser.parse_args(argv)
    settings = IngressSettings()
    if args.bind:
        settings = settings.model_copy(update={"bind": args.bind})
    host, port = parse_bind(settings.bind, 8080)
    return serve(settings, host, port)


if __name__ == "__main__":
    sys.exit(main())
