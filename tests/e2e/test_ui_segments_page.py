"""The Segments page in headless Chromium against the running services.

A person signs in with the API key, creates an event, watches device counts change while
postbacks arrive through the ingress, builds a filter, downloads the device list and sees
the rejected postbacks. Expected counts come from a brute-force oracle over the postbacks
the test sent, never from the service under test.
"""

from __future__ import annotations

import re

import asyncio
import csv
import io
import json
import os
import random
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Page, expect
from waiting import wait_for

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "segments-page.png"
# PBSEG_UPDATE_SCREENSHOT=1 rewrites docs/segments-page.png, with more devices so the charts say something.
UPDATE_SCREENSHOT = os.environ.get("PBSEG_UPDATE_SCREENSHOT") == "1"
WAVE = 150 if UPDATE_SCREENSHOT else 20
WAIT_MS = 30_000  # upper bound for the processor/ingress to catch up; tests never assert timings


def segment(devices: dict[str, set[str]], include: list[str], exclude: list[str], match: str = "all") -> set[str]:
    """The oracle: which devices match, by brute force over what the test sent."""
    include = include or ["install"]
    combine = all if match == "all" else any
    return {d for d, codes in devices.items()
            if combine(c in codes for c in include) and not any(c in codes for c in exclude)}


def codes_of(postbacks: list[str]) -> set[str]:
    """The codes a device has after its postbacks, deposits numbered: dep, dep_2, dep_3..."""
    codes, deposits = {"install"}, 0
    for code in postbacks:
        if code == "dep":
            deposits += 1
            codes.add("dep" if deposits == 1 else f"dep_{deposits}")
        else:
            codes.add(code)
    return codes


async def send_postbacks(client: httpx.AsyncClient, ingress: str, account: int, plan: dict[str, list[str]]) -> None:
    """Each device's postbacks in order (same key, same partition), devices concurrently."""
    limit = asyncio.Semaphore(16)

    async def one_device(install_id: str, codes: list[str]) -> None:
        async with limit:
            for code in codes:
                resp = await client.get(f"{ingress}/api/postback/", params={"id": install_id, "status": f"{code}_{account}"})
                assert resp.status_code == 200, resp.text

    await asyncio.gather(*(one_device(d, codes) for d, codes in plan.items()))


async def wait_until_ingress_accepts(client: httpx.AsyncClient, ingress: str, account: int, code: str, install_id: str) -> None:
    """A new event reaches the ingress within about a second; until then it is refused (and rejected)."""
    last: list[httpx.Response] = []

    async def accepted():
        last[:] = [await client.get(f"{ingress}/api/postback/", params={"id": install_id, "status": f"{code}_{account}"})]
        return last[0].status_code == 200
    try:
        await wait_for(accepted, timeout=15, interval=0.1, message=f"the ingress to accept `{code}`")
    except AssertionError:
        raise AssertionError(f"the ingress never accepted `{code}`: {last[0].status_code} {last[0].text}") from None


def random_plan(rng: random.Random, n: int, prefix: str) -> dict[str, list[str]]:
    plan = {}
    for i in range(n):
        codes = []
        if rng.random() < 0.8:
            codes.append("reg")
        if rng.random() < 0.4:
            codes.append("lead")
        if codes and rng.random() < 0.5:
            codes += ["dep"] * rng.choice([1, 1, 2, 2, 3])
        plan[f"{prefix}-{i:03d}"] = codes or ["reg"]
    return plan


def devices_cell(page: Page, code: str):
    return page.locator(f'#events-body tr[data-code="{code}"] td.devices')


async def expect_counts(page: Page, devices: dict[str, set[str]], codes: list[str]) -> None:
    for code in codes:
        expected = len(segment(devices, [code], []))
        await expect(devices_cell(page, code)).to_have_text(f"{expected:,}", timeout=WAIT_MS)


async def pick(page: Page, kind: str, code: str) -> None:
    await page.select_option(f"#{kind}-add", code)
    await expect(page.locator(f'#{kind}-chips .chip[data-code="{code}"]')).to_be_visible()


async def expect_filter_count(page: Page, expected: int) -> None:
    await expect(page.locator("#filter-count")).to_have_attribute("data-count", str(expected), timeout=WAIT_MS)
    await expect(page.locator("#filter-count")).to_have_text(f"{expected:,}")
    # the freshness line: "exact as of HH:MM:SS" once the processor has caught up
    await expect(page.locator("#filter-as-of")).to_have_text(re.compile(r"^exact as of \d{2}:\d{2}:\d{2}$"), timeout=WAIT_MS)


@pytest.mark.seed(6)
async def test_segments_page_journey(running_stack, browser_page: Page, tmp_path, seed):
    """Sign in, create an event, counts follow the postbacks, filter and download match the oracle."""
    page = browser_page
    account = json.loads(running_stack.pbseg("accounts", "create", "--name", "ui-e2e"))
    api_key, account_id = account["api_key"], account["account_id"]
    origin = running_stack.query_url
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))

    # Sign in: a wrong key is refused in words, the right one opens the page.
    await page.goto(f"{origin}/ui")
    assert urlsplit(page.url).path == "/ui/"
    await page.fill("#api-key", "pbs_not-a-key")
    await page.click("#signin-button")
    await expect(page.locator("#signin-error")).to_contain_text("not accepted")
    await page.fill("#api-key", "pbs_ключ с пробелом")
    await page.click("#signin-button")
    await expect(page.locator("#signin-error")).to_contain_text("does not look like an API key")
    await expect(page.locator("#app")).to_be_hidden()
    await page.fill("#api-key", api_key)
    await page.click("#signin-button")
    await expect(page.locator("#app")).to_be_visible()
    for code in ("install", "reg", "dep"):
        await expect(devices_cell(page, code)).to_have_text("0")
        await expect(page.locator(f'#events-body tr[data-code="{code}"] .tag')).to_have_text("System")
    assert await page.evaluate("sessionStorage.getItem('pbseg.apiKey')") == api_key
    assert await page.evaluate("localStorage.length") == 0

    # Create events: mistakes are explained before and by the server; markup in names stays text.
    await page.fill("#new-name", "Lead form sent")
    await page.fill("#new-code", "lead form")
    await page.click("#create-button")
    await expect(page.locator("#create-error")).to_contain_text("only letters, digits and _")
    await page.fill("#new-code", "dep_3")
    await page.click("#create-button")
    await expect(page.locator("#create-error")).to_contain_text("reserved")
    await page.fill("#new-code", "lead")
    await page.click("#create-button")
    await expect(page.locator("#create-ok")).to_contain_text("Created")
    lead_row = page.locator('#events-body tr[data-code="lead"]')
    await expect(lead_row.locator(".tag")).to_have_text("Custom")
    await expect(lead_row.locator(".status")).to_have_text("Active")
    await expect(lead_row.locator("td.devices")).to_have_text("0")
    await page.fill("#new-name", "Another lead")
    await page.fill("#new-code", "lead")
    await page.click("#create-button")
    await expect(page.locator("#create-error")).to_contain_text("lead")  # the server's duplicate-code message
    await expect(page.locator('#events-body tr[data-code="lead"]')).to_have_count(1)
    evil = '<img src=x onerror="window.__pwned=1">'
    await page.fill("#new-name", evil)
    await page.fill("#new-code", "trial")
    await page.click("#create-button")
    trial_row = page.locator('#events-body tr[data-code="trial"]')
    await expect(trial_row.locator(".name-text")).to_have_text(evil)
    assert await trial_row.locator("img").count() == 0
    assert await page.evaluate("window.__pwned === undefined")

    # The postback URL is copied exactly as the API gives it.
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
    await lead_row.locator("button.copy").click()
    await expect(lead_row.locator("button.copy")).to_have_text("Copied")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("http") and f"?id={{your installation id}}&status=lead_{account_id}" in copied
    assert await lead_row.locator("code.url").get_attribute("title") == copied

    # Postbacks arrive in two waves; the page (live refresh, no reload) follows both.
    rng = random.Random(seed)
    devices: dict[str, set[str]] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        await wait_until_ingress_accepts(client, running_stack.ingress_url, account_id, "lead", "ui-probe")
        devices["ui-probe"] = codes_of(["lead"])
        first = random_plan(rng, WAVE, "ui-a")
        first['ui-"quoted",id'] = ["reg"]  # printable ASCII is allowed: the CSV must quote it
        await send_postbacks(client, running_stack.ingress_url, account_id, first)
        devices.update({d: codes_of(c) for d, c in first.items()})
        await expect_counts(page, devices, ["install", "reg", "dep", "lead"])
        before = len(segment(devices, ["reg"], []))
        second = random_plan(rng, WAVE, "ui-b")
        second["ui-a-000"] = ["reg", "dep", "dep", "dep", "dep"]  # a returning device: up to dep_4
        await send_postbacks(client, running_stack.ingress_url, account_id, second)
        devices.update({d: codes_of(c) for d, c in second.items() if d != "ui-a-000"})
        devices["ui-a-000"] = codes_of(first["ui-a-000"] + second["ui-a-000"])
        assert len(segment(devices, ["reg"], [])) > before
        ordinals = sorted({c for codes in devices.values() for c in codes if c.startswith("dep_")})
        await expect_counts(page, devices, ["install", "reg", "dep", "lead", *ordinals])
        await expect(page.locator("#stat-devices")).to_have_text(f"{len(devices):,}")
        # Derived ordinals (dep_2, ...) have no postback URL, so no Copy button; dep has one.
        for code in ordinals:
            row = page.locator(f'#events-body tr[data-code="{code}"]')
            await expect(row.locator("td.url-cell")).to_contain_text("no URL")
            assert await row.locator("button.copy").count() == 0
        assert await page.locator('#events-body tr[data-code="dep"] button.copy').count() == 1

        # An unknown event is refused by the ingress and shows up with its reason.
        resp = await client.get(f"{running_stack.ingress_url}/api/postback/",
                                params={"id": "ui-x", "status": f"nosuchevent_{account_id}"})
        assert resp.status_code == 404, resp.text

    # The deposit funnel draws every ordinal with its devices.
    for code in ["dep", *ordinals]:
        step = page.locator(f'#chart-funnel g[data-code="{code}"]')
        await expect(step).to_have_attribute("data-devices", str(len(segment(devices, [code], []))))
    await expect(page.locator('#chart-events g[data-code="lead"]')).to_be_visible()

    # Filter builder: every change gives the oracle's count.
    await expect_filter_count(page, len(devices))  # no condition: all devices
    await pick(page, "include", "reg")
    await expect_filter_count(page, len(segment(devices, ["reg"], [])))
    await pick(page, "exclude", "lead")
    await expect_filter_count(page, len(segment(devices, ["reg"], ["lead"])))
    await pick(page, "include", "dep_2")
    await expect_filter_count(page, len(segment(devices, ["reg", "dep_2"], ["lead"])))
    await page.check('input[name="include-match"][value="any"]')
    await expect_filter_count(page, len(segment(devices, ["reg", "dep_2"], ["lead"], "any")))
    await page.check('input[name="include-match"][value="all"]')
    await page.click('#include-chips .chip[data-code="dep_2"] .chip-x')
    expected_ids = segment(devices, ["reg"], ["lead"])
    await expect_filter_count(page, len(expected_ids))
    assert json.loads(await page.locator("#filter-json").text_content()) == {
        "event_include": ["reg"], "event_exclude": ["lead"], "include_match": "all"}
    await page.reload()  # the tab keeps its key and its filter
    await expect(page.locator("#include-chips .chip")).to_have_count(1)
    await expect(page.locator('#exclude-chips .chip[data-code="lead"]')).to_be_visible()
    await expect_filter_count(page, len(expected_ids))

    # Download: a CSV with exactly the matching install ids.
    async with page.expect_download() as info:
        await page.click("#download")
    download = await info.value
    assert download.suggested_filename.endswith(".csv")
    rows = list(csv.reader(io.StringIO((await download.path()).read_text())))
    assert rows[0] == ["install_id"]
    got = [r[0] for r in rows[1:]]
    assert len(got) == len(set(got)) and set(got) == expected_ids
    await expect(page.locator("#download-status")).to_contain_text(f"{len(expected_ids):,} install ids")

    # Save the filter as a segment: listed with its live count; reopen, rename and delete it.
    await page.fill("#save-name", "reg, no lead")
    await page.click("#save-segment")
    saved_row = page.locator("#saved-rows tr").first
    await expect(saved_row.locator("td.num")).to_have_attribute("data-count", str(len(expected_ids)), timeout=WAIT_MS)
    await page.click("#clear-filter")
    await expect_filter_count(page, len(devices))
    await saved_row.locator("button.link").click()
    await expect(page.locator('#exclude-chips .chip[data-code="lead"]')).to_be_visible()
    await expect_filter_count(page, len(expected_ids))
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept("reg without lead")))
    await saved_row.locator("button", has_text="Rename").click()
    await expect(saved_row.locator("button.link")).to_have_text("reg without lead")
    await expect(saved_row.locator("td", has_text="v2")).to_be_visible()
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await saved_row.locator("button", has_text="Delete").click()
    await expect(page.locator("#saved-rows tr")).to_have_count(0)
    await expect(page.locator("#saved-empty")).to_be_visible()

    # Device lookup: the device's events, and why the filter does or does not select it.
    returning = "ui-a-000"
    await page.fill("#device-id", returning)
    await page.click("#device-button")
    deposits = (first[returning] + second[returning]).count("dep")
    await expect(page.locator("#device-summary")).to_contain_text(f"{deposits} deposits")
    for code in devices[returning]:
        await expect(page.locator(f'#device-body tr[data-code="{code}"]')).to_be_visible()
    await expect(page.locator('#device-body tr[data-code="dep"] td.occurrences')).to_have_text(str(deposits))
    await page.click("#clear-filter")
    await pick(page, "include", "dep_4")  # it made four deposits or more
    await expect(page.locator("#device-verdict")).to_have_text("✓ The filter above selects this device.")
    await pick(page, "exclude", "reg")
    await expect(page.locator("#device-verdict")).to_contain_text("does not select this device: reg occurred")
    await page.fill("#device-id", "ui-nobody")
    await page.click("#device-button")
    await expect(page.locator("#device-error")).to_contain_text("No device")

    # Deactivate: the ingress refuses the event (and the page lists why); activate again.
    await lead_row.locator("button.toggle").click()
    await expect(lead_row.locator(".status")).to_have_text("Inactive")
    await expect(lead_row.locator("button.toggle")).to_have_text("Activate")
    async with httpx.AsyncClient(timeout=10) as client:
        async def refused():  # the change reaches the ingress within about a second
            resp = await client.get(f"{running_stack.ingress_url}/api/postback/",
                                    params={"id": "ui-late", "status": f"lead_{account_id}"})
            if resp.status_code == 200:  # still accepted: the device now has `lead`
                devices.setdefault("ui-late", set()).update(codes_of(["lead"]))
                return None
            return resp
        resp = await wait_for(refused, timeout=15, interval=0.1, message="the ingress to refuse the deactivated `lead`")
        assert resp.status_code == 422 and resp.json()["error"] == "event_inactive", resp.text
    await lead_row.locator("button.toggle").click()
    await expect(lead_row.locator(".status")).to_have_text("Active")
    await trial_row.locator("button.delete").click()
    await trial_row.locator("button.confirm-delete").click()
    await expect(trial_row).to_have_count(0)

    # Rejected postbacks: the refused one with its reason in words.
    rejected = page.locator('#rejected-body tr[data-reason="unknown_event"]').filter(has_text="nosuchevent")
    await expect(rejected.first).to_be_visible(timeout=WAIT_MS)
    await expect(rejected.first.locator(".reason-words")).to_have_text("Unknown event")
    inactive = page.locator('#rejected-body tr[data-reason="event_inactive"]').filter(has_text="ui-late")
    await expect(inactive.first.locator(".reason-words")).to_have_text("Event is inactive", timeout=WAIT_MS)

    # The page never asked the internet for anything, and the key never went into a URL.
    assert requests and all(r.startswith(origin + "/") or r.startswith(("blob:", "data:")) for r in requests), requests
    assert not any(api_key in r for r in requests)
    assert page_errors == []

    shot = tmp_path / "segments-page.png"
    await page.click('#clear-filter')
    await pick(page, "include", "reg")
    await pick(page, "exclude", "lead")
    # A windowed condition: no deposit in the last 7 days (every postback here is from now).
    await page.click("#add-condition")
    window_row = page.locator('#condition-rows .cond-row[data-index="0"]')
    await window_row.locator("select.cond-event").select_option("dep")
    await window_row.locator("select.cond-op").select_option("not_occurred")
    await window_row.locator("select.cond-window").select_option("last")
    await window_row.locator("input.cond-last-n").fill("7")
    await window_row.locator("select.cond-last-unit").select_option("d")
    shown = segment(devices, ["reg"], ["lead", "dep"])
    await expect_filter_count(page, len(shown))
    await expect(page.locator("#chart-daily g.day.today")).to_have_attribute(
        "data-devices", str(len(segment(devices, ["reg"], []))), timeout=WAIT_MS)
    await page.fill("#device-id", returning)
    await page.click("#device-button")
    await expect(page.locator("#device-verdict")).to_contain_text(
        "selects this device" if returning in shown else "does not select")
    if UPDATE_SCREENSHOT:
        await expect(page.locator("#create-ok")).to_be_hidden(timeout=WAIT_MS)  # confirmations fade
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if UPDATE_SCREENSHOT:
        shutil.copyfile(shot, SCREENSHOT)

    # Signing out forgets the key.
    await page.click("#signout")
    await expect(page.locator("#signin-card")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('pbseg.apiKey')") is None
