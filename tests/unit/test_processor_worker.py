"""The shutdown watchdog: fires once after its timeout, never when disarmed."""

import threading
import time

from services.processor.worker import ShutdownWatchdog


def test_fires_after_the_timeout():
    fired = threading.Event()
    dog = ShutdownWatchdog(0.05, fired.set)
    assert not dog.armed
    dog.arm()
    assert dog.armed
    assert fired.wait(5)


def test_disarmed_watchdog_does_not_fire():
    fired = threading.Event()
    dog = ShutdownWatchdog(0.05, fired.set)
    dog.arm()
    dog.disarm()
    assert not fired.wait(0.3)


def test_a_second_signal_arms_no_second_timer():
    calls = []
    done = threading.Event()
    dog = ShutdownWatchdog(0.1, lambda: (calls.append(1), done.set()))
    dog.arm()
    dog.arm()  # SIGINT after SIGTERM: the first deadline stands
    assert done.wait(5)
    time.sleep(0.3)  # a second timer, had one been started, would have fired by now
    assert calls == [1]


def test_the_worker_keeps_the_root_logger_at_the_level_asked_for():
    import logging

    from services.processor.bootstrap import build_app
    from services.processor.settings import ProcessorSettings
    from services.processor.worker import ProcessorWorker

    settings = ProcessorSettings()
    worker = ProcessorWorker(build_app(settings), settings=settings, loglevel="warn")
    root = logging.getLogger("pbseg-test-root")
    root.addHandler(logging.NullHandler())
    root.setLevel(logging.WARNING)
    worker.on_setup_root_logger(root, logging.WARNING)
    assert root.level == logging.WARNING  # Faust's spinner set it to DEBUG


def test_tune_gc_raises_the_young_threshold_and_keeps_the_older_ratios():
    import gc

    from services.processor.worker import tune_gc

    before = gc.get_threshold()
    try:
        assert tune_gc(50_000) == (50_000, before[1], before[2])
        assert gc.get_threshold() == (50_000, before[1], before[2])
    finally:
        gc.set_threshold(*before)


def test_the_gc_threshold_setting_refuses_values_below_cpythons_default(monkeypatch):
    import pydantic
    import pytest

    from services.processor.settings import ProcessorSettings

    monkeypatch.setenv("PROCESSOR_GC_THRESHOLD", "100")
    with pytest.raises(pydantic.ValidationError, match="PROCESSOR_GC_THRESHOLD"):
        ProcessorSettings()
    monkeypatch.setenv("PROCESSOR_GC_THRESHOLD", "200000")
    assert ProcessorSettings().gc_threshold == 200_000
