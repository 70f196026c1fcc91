"""Background processes started by the project: pid files in .run/pids, logs in .run/logs.

Each process runs in its own session (process group) so that `stop` ends it with all of
its children and nothing of ours is left running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = Path(os.environ.get("PBSEG_RUN_DIR", ROOT / ".run"))
PID_DIR = RUN_DIR / "pids"
LOG_DIR = RUN_DIR / "logs"


class StartupError(RuntimeError):
    """A component could not start; `component` names it, the message says how to fix it."""

    def __init__(self, component: str, message: str):
        super().__init__(f"[{component}] {message}")
        self.component = component


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_path(name: str) -> Path:
    return LOG_DIR / f"{name}.log"


def pid_of(name: str) -> int | None:
    path = PID_DIR / f"{name}.pid"
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return None
    except PermissionError:
        pass
    return pid


def is_running(name: str) -> bool:
    return pid_of(name) is not None


def start_process(name: str, argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
    """Start `argv` in the background unless `name` already runs; returns its pid."""
    existing = pid_of(name)
    if existing:
        return existing
    PID_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(log_path(name), "ab")
    proc = subprocess.Popen(
        list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=env, cwd=str(cwd or ROOT), start_new_session=True,
    )
    (PID_DIR / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def stop_process(name: str, timeout: float = 15.0) -> bool:
    """SIGTERM the process group, then SIGKILL after `timeout`. Returns True if it ran."""
    pid = pid_of(name)
    if pid is None:
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            # reap if it is our child
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    (PID_DIR / f"{name}.pid").unlink(missing_ok=True)
    return True


def tail(name: str, lines: int = 30) -> str:
    try:
        return "\n".join(log_path(name).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(name: str, ready: Callable[[], bool], timeout: float) -> None:
    """Poll `ready` until true; raise StartupError with the log tail if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if PID_DIR.joinpath(f"{name}.pid").exists() and not is_running(name):
            raise StartupError(name, f"exited during start-up. Last lines of {log_path(name)}:\n{tail(name)}")
        time.sleep(0.2)
    raise StartupError(name, f"not ready after {timeout:.0f}s. Last lines of {log_path(name)}:\n{tail(name)}")
