"""A stop signal ends the worker within PROCESSOR_SHUTDOWN_TIMEOUT_S even when Faust's graceful
stop would take longer (services/processor/worker.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from test_processor_crash import free_port  # same directory (rootdir-relative import)
from waiting import wait_for  # tests/waiting.py (tests/ is on sys.path via the rootdir conftest)


async def test_sigterm_ends_the_worker_within_the_shutdown_timeout(service_env, topic_factory, tmp_path):
    port = free_port()
    env = dict(service_env, PBSEG_TOPIC_POSTBACKS=await topic_factory("postbacks", 2),
               PBSEG_TOPIC_REJECTED=await topic_factory("rejected", 1),
               PBSEG_TOPIC_DEVICE_EVENTS=await topic_factory("device-events", 2),
               PROCESSOR_WEB_PORT=str(port), PROCESSOR_DATADIR=str(tmp_path / "faust"),
               # Far shorter than Faust's own graceful stop (about 1.5 s here), so the watchdog ends it.
               PROCESSOR_SHUTDOWN_TIMEOUT_S="0.2")
    log = tmp_path / "worker.log"
    proc = subprocess.Popen([sys.executable, "-m", "services.processor", "-l", "warn"],
                            env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        async with httpx.AsyncClient(timeout=1) as web:
            async def ready():
                try:
                    return (await web.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False
            try:
                await wait_for(ready, timeout=60, interval=0.1, message="the worker's /readyz")
            except AssertionError:
                raise AssertionError(f"worker never became ready:\n{log.read_text()[-3000:]}") from None
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text()
    assert '"event":"shutdown_forced"' in output, output[-3000:]
    assert "PROCESSOR_SHUTDOWN_TIMEOUT_S" in output
