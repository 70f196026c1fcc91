"""Fixtures of the integration tier beyond tests/conftest.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest
import redis.asyncio as aioredis

from local_servers import free_port
from waiting import wait_for


@pytest.fixture
async def private_redis(tmp_path):
    """A redis-server of the test's own on a free port (no persistence, Redis's default
    noeviction), for faults the shared one must never see (SIGSTOP, maxmemory). Yields
    (process, url); killed (after SIGCONT) at teardown."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is missing (Debian: apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    probe = aioredis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)

    async def answers():
        try:
            return await probe.ping()
        except Exception:  # noqa: BLE001 - not up yet
            return False
    try:
        await wait_for(answers, timeout=10, message="the private redis-server to answer")
        yield proc, url
    finally:
        await probe.aclose()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait(timeout=10)
