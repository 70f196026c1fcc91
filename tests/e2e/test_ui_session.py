"""The Segments page's session: key per tab, accounts apart, revoked keys, served locally."""

from __future__ import annotations

import json
import re

import httpx
from playwright.async_api import expect



async def sign_in(page, origin: str, api_key: str) -> None:
    await page.goto(f"{origin}/ui/")
    await page.fill("#api-key", api_key)
    await page.click("#signin-button")
    await expect(page.locator("#app")).to_be_visible()


async def check_page_files(query_url: str) -> None:
    """/ui serves the page with a CSP allowing only its own origin; the API schema does not list it."""
    async with httpx.AsyncClient(base_url=query_url, timeout=10) as client:
        resp = await client.get("/ui")
        assert resp.status_code == 307 and resp.headers["location"] == "/ui/"
        page = await client.get("/ui/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "form-action 'none'" in csp
        assert "http://" not in page.text and "https://" not in page.text
        for name, kind in (("app.js", "text/javascript"), ("api.js", "text/javascript"),
                           ("chart.js", "text/javascript"), ("triggers.js", "text/javascript"), ("dom.js", "text/javascript"),
                           ("style.css", "text/css")):
            asset = await client.get(f"/ui/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), name
            assert "https://" not in asset.text, name
        missing = await client.get("/ui/..%2Fapi.py")
        assert missing.status_code == 404 and set(missing.json()) == {"error", "message"}
        schema = (await client.get("/openapi.json")).json()
        assert not [p for p in schema["paths"] if p.startswith("/ui")]


async def test_key_lives_in_one_tab_and_accounts_stay_apart(running_stack, browser_page):
    """The files are local under a strict CSP; a reload keeps the tab signed in, a new tab is not; each account sees only its events;
    renames stick; a secret shows in the postback URLs; a revoked key signs the tab out with a
    reason; an unreachable service is reported and recovered from."""
    origin = running_stack.query_url
    await check_page_files(origin)  # one stack for both: the stack's start-up is most of the cost
    account_a = json.loads(running_stack.pbseg("accounts", "create", "--name", "ui-a"))
    extra = json.loads(running_stack.pbseg("accounts", "add-key", "--account", str(account_a["account_id"])))
    account_b = json.loads(running_stack.pbseg("accounts", "create", "--name", "ui-b"))

    tab_a = browser_page
    await sign_in(tab_a, origin, extra["api_key"])
    await tab_a.fill("#new-name", "Only in A")
    await tab_a.fill("#new-code", "a_only")
    await tab_a.click("#create-button")
    await expect(tab_a.locator('#events-body tr[data-code="a_only"]')).to_have_count(1)

    # Rename in place: an empty name is refused in words, a new one is saved.
    row_a = tab_a.locator('#events-body tr[data-code="a_only"]')
    await row_a.locator("button.rename-btn").click()
    await row_a.locator("input.rename-input").fill("")
    await row_a.locator("button.save-rename").click()
    await expect(tab_a.locator("#events-error")).to_contain_text("needs a name")
    await row_a.locator("input.rename-input").fill("Renamed in A")
    await row_a.locator("button.save-rename").click()
    await expect(row_a.locator(".name-text")).to_have_text("Renamed in A")
    await expect(tab_a.locator("#events-error")).to_be_hidden()

    await tab_a.reload()
    await expect(tab_a.locator("#app")).to_be_visible()
    await expect(row_a.locator(".name-text")).to_have_text("Renamed in A")  # stored, not just drawn

    tab_b = await tab_a.context.new_page()
    await tab_b.goto(f"{origin}/ui/")
    await expect(tab_b.locator("#signin-card")).to_be_visible()  # sessionStorage is per tab
    await sign_in(tab_b, origin, account_b["api_key"])
    await expect(tab_b.locator('#events-body tr[data-code="install"]')).to_have_count(1)
    await expect(tab_b.locator('#events-body tr[data-code="a_only"]')).to_have_count(0)
    await expect(tab_b.locator("#stat-custom")).to_have_text("0")

    # A postback secret appears in A's URLs at the next refresh, and only there.
    secret = "ui-secret-0123456789"
    running_stack.pbseg("accounts", "set-secret", "--account", str(account_a["account_id"]), "--secret", secret)
    url_a = tab_a.locator('#events-body tr[data-code="a_only"] code.url')
    await expect(url_a).to_have_attribute("title", re.compile(re.escape(f"key={secret}")), timeout=15_000)
    assert secret not in (await tab_b.locator('#events-body tr[data-code="install"] code.url').get_attribute("title"))

    # Revoking the key signs tab A out at its next refresh; tab B (another account) carries on.
    running_stack.pbseg("accounts", "revoke-key", "--account", str(account_a["account_id"]), "--key-id", extra["key_id"])
    await expect(tab_a.locator("#signin-card")).to_be_visible(timeout=15_000)
    await expect(tab_a.locator("#signin-error")).to_contain_text("no longer accepted")
    assert await tab_a.evaluate("sessionStorage.getItem('pbseg.apiKey')") is None
    await tab_b.click("#refresh")
    await expect(tab_b.locator("#app")).to_be_visible()
    await expect(tab_b.locator("#events-error")).to_be_hidden()

    # The service out of reach: the page says so, keeps what it showed and recovers by itself.
    await tab_b.route("**/api/b/v2/segments/events", lambda route: route.abort())
    await tab_b.click("#refresh")
    await expect(tab_b.locator("#global-error")).to_contain_text("Cannot reach the query service")
    await expect(tab_b.locator('#events-body tr[data-code="install"]')).to_have_count(1)
    await tab_b.unroute("**/api/b/v2/segments/events")
    await expect(tab_b.locator("#global-error")).to_be_hidden(timeout=15_000)  # the next poll
    assert await tab_b.evaluate("sessionStorage.getItem('pbseg.apiKey')") == account_b["api_key"]
