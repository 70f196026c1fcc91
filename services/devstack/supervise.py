"""`python -m services.devstack.supervise [--grace S] -- CMD...`: run CMD, and restart it when it
crashes, logging each restart (the local stack's supervisor, as systemd or Kubernetes would be in
production). A CMD that fails within `--grace` seconds of its first start is not restarted - a
start-up error (missing Redis, state of another log) is for a person to read, not to loop on -
and the supervisor exits with its code. SIGTERM/SIGINT are passed on and end the supervision."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time


def _log(event: str, **fields) -> None:
    sys.stdout.write(json.dumps({"event": event, "logger": "supervisor", "timestamp": time.time(), **fields}) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.devstack.supervise")
    parser.add_argument("--grace", type=float, default=5.0, help="a first run shorter than this is not restarted")
    parser.add_argument("--max-delay", type=float, default=30.0, help="longest pause between restarts")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    stopping = False
    child: subprocess.Popen | None = None

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delay, first, restarts = 1.0, True, 0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(cmd)
        code = child.wait()
        if stopping or code == 0:
            return code
        ran = time.monotonic() - started
        if first and ran < args.grace:
            _log("not_restarted", cmd=cmd, exit_code=code, ran_s=round(ran, 1),
                 message="it failed during start-up; read the lines above, fix it, start again")
            return code
        first = False
        delay = 1.0 if ran > 60 else min(delay * 2, args.max_delay)
        restarts += 1
        _log("restarted", cmd=cmd, exit_code=code, ran_s=round(ran, 1), restarts=restarts, after_s=delay)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not stopping:
            time.sleep(0.1)
        if stopping:
            return code


if __name__ == "__main__":
    sys.exit(main())
