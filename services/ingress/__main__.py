"""`python -m services.ingress`: serve the ingress with the HTTP server and limits from
IngressSettings (INGRESS_SERVER, INGRESS_GRANIAN_INTERFACE, INGRESS_WORKERS, INGRESS_BIND,
header limits)."""

from __future__ import annotations

import argparse
import sys

from services.ingress.settings import IngressSettings


def parse_bind(bind: str, default_port: int) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    return (host, int(port)) if sep else (bind, default_port)


def serve(settings: IngressSettings) -> int:
    host, port = parse_bind(settings.bind, 8080)
    if settings.server == "native":
        from services.ingress.http_server import serve_native

        return serve_native(settings, host, port)
    if settings.server == "granian":
        from granian import Granian
        from granian.constants import Interfaces, Loops
        from granian.http import HTTP1Settings

        # RSGI by default, not ASGI: granian hands the app plain objects and takes the reply
        # in one call (docs/architecture.md, "Ingress", has the figures that chose it).
        Granian(
            "services.ingress.main:create_app", factory=True, address=host, port=port,
            interface=Interfaces(settings.granian_interface), workers=settings.workers, loop=Loops.uvloop, http="1",
            websockets=False, log_access=False, log_level="warning",
            http1_settings=HTTP1Settings(
                header_read_timeout=int(settings.header_read_timeout_s * 1000),
                max_buffer_size=settings.max_header_bytes,
            ),
        ).serve()
    else:
        import uvicorn

        # uvicorn+httptools bounds headers by llhttp's built-in limit (80 KB) and has no
        # header read timeout: one reason it is not the default (docs/architecture.md).
        uvicorn.run("services.ingress.main:create_app", factory=True, host=host, port=port, workers=settings.workers,
                    http="httptools", loop="uvloop", lifespan="on", access_log=False, log_level="warning",
                    timeout_keep_alive=5)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.ingress", description=__doc__)
    parser.add_argument("--bind", help="host:port (overrides INGRESS_BIND)")
    args = parser.parse_args(argv)
    settings = IngressSettings()
    if args.bind:
        settings = settings.model_copy(update={"bind": args.bind})
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
