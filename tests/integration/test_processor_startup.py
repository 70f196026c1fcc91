"""Start-up errors of the processor worker are clear and end the process."""

import subprocess
import sys
from pathlib import Path


def test_worker_without_redis_exits_naming_redis(service_env, tmp_path):
    """An unreachable Redis ends the worker with a non-zero code and a message that says what to do."""
    env = dict(service_env, REDIS_URL="redis://127.0.0.1:1/0", PROCESSOR_WEB_PORT="0",
               PROCESSOR_DATADIR=str(tmp_path / "faust"))
    done = subprocess.run([sys.executable, "-m", "services.processor", "-l", "warn"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in done.stdout + done.stderr
    assert "make up" in done.stdout + done.stderr
    assert "AttributeError" not in done.stdout + done.stderr
