"""The local stack's supervisor restarts a crashed service and logs it; a start-up failure is
not looped on; a stop signal ends it."""

import json
import signal
import subprocess
import sys
import time

CRASH_ONCE = """
import pathlib, sys, time
runs = pathlib.Path(sys.argv[1])
n = int(runs.read_text() or 0) + 1 if runs.exists() else 1
runs.write_text(str(n))
time.sleep(0.3)
if n == 1:
    sys.exit(3)       # crashes after its start-up
time.sleep(60)        # the second run keeps running
"""


def _supervise(tmp_path, *args):
    return subprocess.Popen([sys.executable, "-m", "services.devstack.supervise", *args], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_crash_after_start_up_is_restarted_and_logged(tmp_path):
    runs = tmp_path / "runs"
    script = tmp_path / "svc.py"
    script.write_text(CRASH_ONCE)
    sup = _supervise(tmp_path, "--grace", "0.1", "--", sys.executable, str(script), str(runs))
    try:
        _wait(lambda: runs.exists() and runs.read_text() == "2", timeout=20)
        assert sup.poll() is None
    finally:
        sup.send_signal(signal.SIGTERM)
        out, _ = sup.communicate(timeout=20)
    [restart] = [json.loads(line) for line in out.splitlines() if '"restarted"' in line]
    assert restart["exit_code"] == 3 and restart["restarts"] == 1


def test_a_failure_during_start_up_is_not_restarted(tmp_path):
    sup = _supervise(tmp_path, "--grace", "30", "--", sys.executable, "-c", "import sys; sys.exit(5)")
    out, _ = sup.communicate(timeout=20)
    assert sup.returncode == 5 and '"not_restarted"' in out
