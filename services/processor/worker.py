"""The Faust worker class of the processor: Faust's own, with a bounded shutdown.

Faust's graceful stop (agents, its consumer's rebalance, gathering every future) can hang:
once in CI a SIGTERMed worker had not exited after 30 s. A supervisor would then SIGKILL it,
so an unbounded wait buys nothing: every applied batch is atomic with its watermark and the
outbox survives in Redis, so ending the process at any moment loses and doubles nothing. After
a stop signal the watchdog thread (not the event loop, which may be the thing that hangs)
ends the process once `PROCESSOR_SHUTDOWN_TIMEOUT_S` has passed, with a log line saying so."""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from typing import Callable

import faust
import orjson

from services.processor.settings import ProcessorSettings


class ShutdownWatchdog:
    """Calls `on_expiry` `timeout_s` after `arm()` unless the process ended first.
    Runs in a daemon thread, so it fires even while the event loop is blocked."""

    def __init__(self, timeout_s: float, on_expiry: Callable[[], None]):
        self.timeout_s = timeout_s
        self._on_expiry = on_expiry
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is None:  # a second signal does not extend the deadline
            self._timer = threading.Timer(self.timeout_s, self._on_expiry)
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    @property
    def armed(self) -> bool:
        return self._timer is not None


def force_exit(timeout_s: float) -> None:
    # The logging machinery may be what is stuck: one JSON line straight to stderr.
    line = {"event": "shutdown_forced", "level": "warning", "logger": "processor",
            "message": f"graceful shutdown took longer than {timeout_s} s (PROCESSOR_SHUTDOWN_TIMEOUT_S); "
                       "exiting now - safe: Redis holds every applied batch with its watermark"}
    try:
        sys.stderr.buffer.write(orjson.dumps(line) + b"\n")
        sys.stderr.flush()
    finally:
        os._exit(0)  # a requested stop, not a failure: supervisors should not restart it


def tune_gc(gen0_threshold: int) -> tuple[int, int, int]:
    """Run the cyclic garbage collector after `gen0_threshold` net allocations instead of
    CPython's 700; the older generations keep their ratios. Returns the new thresholds.

    The pipeline allocates millions of short-lived container objects a second (records, event
    lists, models) and almost never a reference cycle: reference counting frees them, so the
    collector finds nothing, but at 700 it ran ~110 young and ~1 full collection a second, each
    full one traversing every object (Faust's included, ~85 ms): timed by gc.callbacks, 1.4 s of
    a 9 s bench/processor run; worker CPU per event fell ~20% (docs/decisions/0010-processor-gc-threshold.md).
    Cycles that do form (exceptions with tracebacks, in aiokafka/asyncio) are
    still collected, just later."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
    return gc.get_threshold()


class ProcessorWorker(faust.Worker):
    """Faust's worker with a bounded shutdown, a garbage collector tuned to the pipeline
    (`tune_gc`), and without the terminal spinner: with a spinner, Faust sets the root logger to
    DEBUG (whatever `-l` says) so that every debug line of Faust and aiokafka builds a log record
    to spin it - 4.4% of the worker's CPU at 8,000 events/s."""

    def __init__(self, *args, settings: ProcessorSettings, **kwargs):
        super().__init__(*args, **kwargs)
        self.spinner = None  # structured logs go to files; the root logger keeps the `-l` level
        tune_gc(settings.gc_threshold)
        timeout_s = settings.shutdown_timeout_s
        self.shutdown_watchdog = ShutdownWatchdog(timeout_s, lambda: force_exit(timeout_s))

    def _schedule_shutdown(self, sig: signal.Signals) -> None:
        self.shutdown_watchdog.arm()
        super()._schedule_shutdown(sig)
