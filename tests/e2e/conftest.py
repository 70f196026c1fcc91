"""End-to-end: the three services run as real processes against the real broker and Redis."""

from __future__ import annotations

import pytest

from stack_fixture import running_stack  # noqa: F401 - the fixture


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
