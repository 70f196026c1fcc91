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

    from services.processor.app import app
    from services.processor.worker import ProcessorWorker

    worker = ProcessorWorker(app, loglevel="warn")
    root = logging.getLogger("pbseg-test-root")
    root.addHandler(logging.NullHandler())
    root.setLevel(logging.WARNING)
    worker.on_setup_root_logger(root, logging.WARNING)
    assert root.level == logging.WARNING  # Faust's spinner set it to DEBUG
