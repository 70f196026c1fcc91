"""The Segments page's Triggers card in headless Chromium against the running services.

A trigger made in the form ("on reg, first time, wait 3s, unless dep") fires for the device that
registered and is cancelled for the one that deposited meanwhile; the row's counts and the recent
fires follow on their own (the page's live refresh, no reload). The trigger is edited,
deactivated and deleted from its row; a bad delay is explained in the server's words next to the
form; conditions the form does not show survive an edit. Expected counts come from what the test
sent, never from the service under test; nothing is randomized.
"""

from __future__ import annotations

import json
import re

import httpx
from playwright.async_api import Page, expect

from test_ui_segments_page import WAIT_MS, send_postbacks
from test_ui_windows import sign_in

UTC_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC$")


def api_client(origin: str, api_key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{origin}/api/b/v2", headers={"Authorization": f"Bearer {api_key}"}, timeout=10)


def trigger_row(page: Page, name: str):
    return page.locator("#triggers-body tr").filter(has=page.locator("td.name .name-text", has_text=re.compile(f"^{re.escape(name)}$")))


async def expect_counts(row, **counts: int) -> None:
    for key, n in counts.items():
        await expect(row.locator(f"td.{key.replace('_', '-')}")).to_have_attribute("data-count", str(n), timeout=WAIT_MS)


async def only_trigger(client: httpx.AsyncClient) -> dict:
    resp = await client.get("/triggers")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["pagination"]["total_count"] == 1 and len(body["triggers"]) == 1, body
    return body["triggers"][0]


def watch(page: Page) -> tuple[list[str], list[str]]:
    """Script errors of the page, and dialogs it opened (the card confirms in the page, never with window.confirm)."""
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    async def dismiss(dialog):
        dialogs.append(dialog.message)
        await dialog.dismiss()
    page.on("dialog", dismiss)
    return errors, dialogs


async def test_trigger_journey(running_stack, browser_page: Page):
    """Create in the form (a bad delay first: the server's words), fired 1 / cancelled 1 and the fire
    of the device that registered; edit the delay (new version), deactivate, delete."""
    page = browser_page
    account = json.loads(running_stack.pbseg("accounts", "create", "--name", "ui-triggers"))
    api_key, account_id = account["api_key"], account["account_id"]
    origin = running_stack.query_url
    page_errors, dialogs = watch(page)
    await sign_in(page, origin, api_key)
    card = page.get_by_role("region", name="Triggers")
    await expect(card.locator("#triggers-body")).to_contain_text("No triggers yet")

    # A delay the server does not read: its own message next to the form, the input marked, nothing made.
    await card.get_by_label("Trigger name").fill("deposit reminder")
    await card.get_by_label("On event").select_option("reg")
    await card.get_by_label("Occurrence").select_option("first")
    await card.get_by_label("Delay", exact=True).fill("2x")
    await card.get_by_role("checkbox", name="unless dep", exact=True).check()
    await card.get_by_role("button", name="Create trigger").click()
    async with api_client(origin, api_key) as client:
        bad = await client.post("/triggers", json={"name": "deposit reminder", "on": {"event": "reg", "occurrence": "first"},
                                                   "delay": "2x", "filter": {"event_exclude": ["dep"]}})
        assert bad.status_code == 422, bad.text
        await expect(card.locator("#trigger-error")).to_have_text(bad.json()["message"])
        await expect(card.get_by_label("Delay", exact=True)).to_have_attribute("aria-invalid", "true")
        assert (await client.get("/triggers")).json()["pagination"]["total_count"] == 0

    # Fixed: created, listed with nothing pending yet; the form is empty again.
    await card.get_by_label("Delay", exact=True).fill("3s")
    await card.get_by_role("button", name="Create trigger").click()
    await expect(card.locator("#trigger-ok")).to_contain_text("Created “deposit reminder”")
    await expect(card.locator("#trigger-error")).to_be_hidden()
    await expect(card.get_by_label("Trigger name")).to_have_value("")
    row = trigger_row(page, "deposit reminder")
    await expect(row).to_have_count(1)
    async with api_client(origin, api_key) as client:
        made = await only_trigger(client)
    assert made["on"] == {"event": "reg", "occurrence": "first"} and made["delay"] == "3s" and made["delay_ms"] == 3000
    assert made["filter"]["event_exclude"] == ["dep"] and made["filter"]["event_include"] == [] and made["active"] is True
    version = made["version"]
    await expect(row.locator("td.on")).to_have_text("reg (first)")
    await expect(row.locator("td.delay")).to_have_text("3s")
    await expect(row.locator("td.filter")).to_have_text("unless dep")
    await expect(row.locator("td.status")).to_have_text("Active")
    await expect(row.locator(".version")).to_have_text(f"v{version}")
    await expect_counts(row, pending=0, fired=0, cancelled=0, skipped_late=0)

    # A registers; B registers and deposits right away: A's push fires after 3 s, B's is cancelled.
    async with httpx.AsyncClient(timeout=10) as client:
        await send_postbacks(client, running_stack.ingress_url, account_id, {"trg-a": ["reg"], "trg-b": ["reg", "dep"]})
    await expect_counts(row, fired=1, cancelled=1)
    await expect_counts(row, pending=0, skipped_late=0)

    # Its recent fires: A's, as the API lists it, times in UTC words.
    await row.get_by_role("button", name="Fires of deposit reminder").click()
    fires = card.locator("#trigger-fires")
    await expect(fires).to_be_visible()
    await expect(fires.locator("#trigger-fires-title")).to_have_text("Recent fires of “deposit reminder”")
    await expect(fires.locator("#trigger-fires-body tr")).to_have_count(1)
    async with api_client(origin, api_key) as client:
        resp = await client.get(f"/triggers/{made['id']}/fires", params={"limit": 20})
    assert resp.status_code == 200, resp.text
    [fire] = resp.json()["fires"]
    assert fire["install_id"] == "trg-a" and fire["trigger_id"] == made["id"] and fire["fired_at"] >= fire["due_at"]
    shown = fires.locator(f'#trigger-fires-body tr[data-fire-id="{fire["fire_id"]}"]')
    await expect(shown.locator("td.install")).to_have_text("trg-a")
    await expect(shown.locator("td.due")).to_have_text(UTC_TIME)
    await expect(shown.locator("td.fired")).to_have_text(UTC_TIME)
    await expect(shown.locator("td.fire-id")).to_have_text(str(fire["fire_id"]))
    await expect(shown.locator("td.version")).to_have_text(f"v{fire['trigger_version']}")

    # Edit: the form holds the trigger; a shorter delay is a new version.
    await row.get_by_role("button", name="Edit deposit reminder").click()
    form = card.locator("#trigger-form")
    await expect(form.get_by_label("Trigger name")).to_have_value("deposit reminder")
    await expect(form.get_by_label("On event")).to_have_value("reg")
    await expect(form.get_by_label("Occurrence")).to_have_value("first")
    await expect(form.get_by_label("Delay", exact=True)).to_have_value("3s")
    await expect(form.get_by_role("checkbox", name="unless dep", exact=True)).to_be_checked()
    await expect(form.get_by_role("checkbox", name="with reg", exact=True)).not_to_be_checked()
    await form.get_by_label("Delay", exact=True).fill("1s")
    await form.get_by_role("button", name="Save changes").click()
    await expect(row.locator("td.delay")).to_have_text("1s")
    await expect(row.locator(".version")).to_have_text(f"v{version + 1}")
    await expect(form.get_by_role("button", name="Create trigger")).to_be_visible()
    async with api_client(origin, api_key) as client:
        edited = await only_trigger(client)
    assert edited["delay"] == "1s" and edited["delay_ms"] == 1000 and edited["version"] == version + 1
    assert edited["filter"] == made["filter"] and edited["on"] == made["on"] and edited["name"] == made["name"]

    # Deactivate: shown inactive, offered Activate.
    await row.get_by_role("button", name="Deactivate deposit reminder").click()
    await expect(row.locator("td.status")).to_have_text("Inactive")
    await expect(row).to_have_class(re.compile(r"\binactive\b"))
    await expect(row.get_by_role("button", name="Activate deposit reminder", exact=True)).to_be_visible()
    async with api_client(origin, api_key) as client:
        off = await only_trigger(client)
    assert off["active"] is False and off["version"] == version + 2

    # Delete asks in the page; Cancel keeps it, Confirm removes it.
    await row.get_by_role("button", name="Delete deposit reminder").click()
    await row.get_by_role("button", name="Keep deposit reminder").click()
    await expect(row.get_by_role("button", name="Delete deposit reminder")).to_be_visible()
    await row.get_by_role("button", name="Delete deposit reminder").click()
    await row.get_by_role("button", name="Confirm delete of deposit reminder").click()
    await expect(row).to_have_count(0)
    await expect(fires).to_be_hidden()
    await expect(card.locator("#triggers-body")).to_contain_text("No triggers yet")
    async with api_client(origin, api_key) as client:
        gone = await client.get(f"/triggers/{made['id']}")
    assert gone.status_code == 404, gone.text
    assert dialogs == [] and page_errors == []


async def test_edit_keeps_what_the_form_does_not_show(running_stack, browser_page: Page):
    """A trigger made through the API with a condition, "every" and a long delay: its row says so,
    Activate works from the row, and renaming it in the form sends only the name, so its filter
    (conditions included) stays exactly as it was."""
    page = browser_page
    account = json.loads(running_stack.pbseg("accounts", "create", "--name", "ui-triggers-edit"))
    api_key, origin = account["api_key"], running_stack.query_url
    page_errors, dialogs = watch(page)
    body = {"name": "second reg, no deposit", "on": {"event": "reg", "occurrence": "every"}, "delay": "5d10h30m",
            "filter": {"event_include": ["reg"], "event_exclude": ["dep"], "include_match": "all",
                       "conditions": [{"event": "reg", "count": {"gte": 2}}]},
            "active": False}
    async with api_client(origin, api_key) as client:
        resp = await client.post("/triggers", json=body)
    assert resp.status_code == 201, resp.text
    made = resp.json()
    assert made["filter"]["conditions"] == body["filter"]["conditions"] and made["active"] is False
    assert made["delay_ms"] == ((5 * 24 + 10) * 60 + 30) * 60_000

    await sign_in(page, origin, api_key)
    card = page.get_by_role("region", name="Triggers")
    row = trigger_row(page, "second reg, no deposit")
    await expect(row.locator("td.on")).to_have_text("reg (every)")
    await expect(row.locator("td.delay")).to_have_text("5d10h30m")
    await expect(row.locator("td.filter")).to_have_text("with reg, unless dep, + 1 condition")
    await expect(row.locator("td.status")).to_have_text("Inactive")
    await expect_counts(row, pending=0, fired=0, cancelled=0, skipped_late=0)
    await row.get_by_role("button", name="Activate second reg, no deposit", exact=True).click()
    await expect(row.locator("td.status")).to_have_text("Active")
    await expect(row.locator(".version")).to_have_text(f"v{made['version'] + 1}")

    await row.get_by_role("button", name="Edit second reg, no deposit").click()
    form = card.locator("#trigger-form")
    await expect(form.get_by_label("Occurrence")).to_have_value("every")
    await expect(form.get_by_role("checkbox", name="with reg", exact=True)).to_be_checked()
    await expect(form.get_by_role("checkbox", name="unless dep", exact=True)).to_be_checked()
    await expect(form.locator("#trigger-conditions")).to_contain_text("reg occurred at least 2 times")
    await form.get_by_label("Trigger name").fill("second reg")
    async with page.expect_request(lambda r: r.method == "PATCH" and f"/triggers/{made['id']}" in r.url) as sent:
        await form.get_by_role("button", name="Save changes").click()
    assert (await sent.value).post_data_json == {"name": "second reg"}
    renamed_row = trigger_row(page, "second reg")
    await expect(renamed_row.locator(".version")).to_have_text(f"v{made['version'] + 2}")
    await expect(renamed_row.locator("td.filter")).to_have_text("with reg, unless dep, + 1 condition")
    async with api_client(origin, api_key) as client:
        after = await only_trigger(client)
    assert after["name"] == "second reg" and after["filter"] == made["filter"] and after["on"] == made["on"]
    assert after["delay"] == "5d10h30m" and after["active"] is True
    assert dialogs == [] and page_errors == []
