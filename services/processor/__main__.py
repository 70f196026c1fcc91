"""`python -m services.processor [-l LEVEL]`: run one processor worker (settings from the
environment, services/processor/settings.py)."""

from __future__ import annotations

import argparse
import sys

from faust.cli.base import prepare_app
from mode.utils.loops import get_event_loop

from services.common.logs import configure_logging
from services.processor.bootstrap import build_app
from services.processor.settings import ProcessorSettings
from services.processor.worker import ProcessorWorker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.processor", description=__doc__)
    parser.add_argument("-l", "--loglevel", default="warn", help="Faust's and aiokafka's log level (default warn)")
    args = parser.parse_args(argv)
    settings = ProcessorSettings()
    configure_logging(settings.log_level, settings.log_format)
    app = prepare_app(build_app(settings), "services.processor")
    worker = ProcessorWorker(app, settings=settings, loglevel=args.loglevel, loop=get_event_loop())
    worker.execute_from_commandline()  # exits the process
    return 0


if __name__ == "__main__":
    sys.exit(main())
