"""End-to-end: the three services run as real processes against the real broker and Redis."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from dataclasses import dataclass

import pytest

from services.common.settings import StackSettings
from services.common.topics import ensure_topics, topic_plan
from services.devstack.procs import stop_process
from services.devstack.stack import start_service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class RunningStack:
    ingress_url: str
    query_url: str
    env: dict[str, str]

    def pbseg(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "services.cli.main", *args], env=self.env,
                             capture_output=True, text=True, check=True)
        return out.stdout


@pytest.fixture
async def running_stack(service_env, unique):
    env = dict(service_env)
    env["INGRESS_BIND"] = f"127.0.0.1:{free_port()}"
    env["QUERY_BIND"] = f"127.0.0.1:{free_port()}"
    env["PROCESSOR_WEB_PORT"] = str(free_port())
    settings = StackSettings.model_validate(env)
    await ensure_topics(settings.kafka_bootstrap_servers, topic_plan(settings))
    names = []
    try:
        for name in ("ingress", "processor", "query"):
            log_name = f"test-{unique}-{name}"
            names.append(log_name)
            await asyncio.to_thread(start_service, name, settings, env, log_name)
        yield RunningStack(f"http://{env['INGRESS_BIND']}", f"http://{env['QUERY_BIND']}", env)
    finally:
        for log_name in names:
            await asyncio.to_thread(stop_process, log_name, 10)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture
async def browser_page(tmp_path):
    """A page in headless Debian chromium (driven by Playwright's own driver; never
    `playwright install`), with a fresh profile per test. Downloads land in tmp_path."""
    import os
    import shutil
    import tempfile

    from playwright.async_api import async_playwright, expect

    # Generous upper bounds for a loaded 2-core machine; nothing waits longer than it must.
    expect.set_options(timeout=15_000)

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="pbseg-ui-")
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 900}, accept_downloads=True, downloads_path=str(tmp_path),
            locale="en-GB",
        )
        context.set_default_timeout(30_000)
        page = context.pages[0] if context.pages else await context.new_page()
        try:
            yield page
        finally:
            await context.close()
            shutil.rmtree(profile, ignore_errors=True)
