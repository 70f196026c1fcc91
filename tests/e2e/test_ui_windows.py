"""The Segments page's conditions in headless Chromium against the running services: rows for
"when, how often, how much", their live count equal to the API's and to an oracle over the
postbacks the test sent, the server's words for a bad condition next to the builder, a saved
segment reopened into the same rows, and the devices-per-day chart.

`test_condition_rows` needs only conditions the bitmaps answer (counts of dep, occurred /
not occurred); `test_windowed_segment` needs the windowed index (`within`) and
GET /segments/daily.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time

import httpx
import pytest
from playwright.async_api import Page, expect

from test_ui_segments_page import WAIT_MS, expect_filter_count, wait_until_ingress_accepts

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# (code, event time in unix ms or None for "now": the time the ingress receives it)
Plan = dict[str, list[tuple[str, int | None]]]


async def send(client: httpx.AsyncClient, ingress: str, account: int, plan: Plan) -> None:
    """Each device's postbacks in order, devices concurrently; `ts` when the plan gives one."""
    limit = asyncio.Semaphore(16)

    async def one_device(install_id: str, postbacks: list[tuple[str, int | None]]) -> None:
        async with limit:
            for code, at in postbacks:
                params = {"id": install_id, "status": f"{code}_{account}", **({"ts": str(at)} if at is not None else {})}
                resp = await client.get(f"{ingress}/api/postback/", params=params)
                assert resp.status_code == 200, resp.text

    await asyncio.gather(*(one_device(d, p) for d, p in plan.items()))


def occurrences(plan: Plan, now_ms: int) -> dict[str, list[tuple[str, int]]]:
    """The oracle's view: per device, (code, event time) of every postback; "now" is now_ms."""
    return {d: [(code, now_ms if at is None else at) for code, at in p] for d, p in plan.items()}


def count_of(occ: list[tuple[str, int]], code: str, start: int | None = None, end: int | None = None) -> int:
    return sum(1 for c, at in occ if c == code and (start is None or start <= at < end))


async def sign_in(page: Page, origin: str, api_key: str) -> None:
    await page.goto(f"{origin}/ui/")
    await page.fill("#api-key", api_key)
    await page.click("#signin-button")
    await expect(page.locator("#app")).to_be_visible()


async def api_count(client: httpx.AsyncClient, origin: str, api_key: str, body: dict) -> httpx.Response:
    return await client.post(f"{origin}/api/b/v2/segments/count", json=body,
                             headers={"Authorization": f"Bearer {api_key}"})


async def shown_filter(page: Page) -> dict:
    return json.loads(await page.locator("#filter-json").text_content())


def cond_row(page: Page, i: int):
    return page.locator(f'#condition-rows .cond-row[data-index="{i}"]')


async def rows_on_page(page: Page) -> list[dict]:
    """What each condition row shows: its kind and the value of every visible control."""
    return await page.evaluate("""() => [...document.querySelectorAll('#condition-rows .cond-row')].map((row) => ({
        kind: row.dataset.kind,
        controls: [...row.querySelectorAll('select, input')].filter((c) => !c.hidden)
            .map((c) => [c.className, c.value]),
    }))""")


async def add_event_row(page: Page, event: str, how: str, *, n: str = "", m: str = "", window: str = "any",
                        last: tuple[str, str] | None = None, between: tuple[str, str] | None = None) -> None:
    """A row as a person builds it: + event condition, then its pickers left to right."""
    i = await page.locator("#condition-rows .cond-row").count()
    await page.click("#add-condition")
    row = cond_row(page, i)
    await row.locator("select.cond-event").select_option(event)
    await row.locator("select.cond-op").select_option(how)
    if n:
        await row.locator("input.cond-n").fill(n)
    if m:
        await row.locator("input.cond-m").fill(m)
    await row.locator("select.cond-window").select_option(window)
    if last:
        await row.locator("input.cond-last-n").fill(last[0])
        await row.locator("select.cond-last-unit").select_option(last[1])
    if between:
        await row.locator("input.cond-from").fill(between[0])
        await row.locator("input.cond-to").fill(between[1])


@pytest.mark.seed(13)
async def test_condition_rows(running_stack, browser_page: Page, seed):
    """Deposit counts and "did not occur" rows give the oracle's count (and the API's for the same
    body); an incomplete row waits; the server's message for a bad row is shown next to the builder
    and marks the row; a saved segment reopens into the same rows; every row kind survives a reload
    and the filter -> rows -> filter round trip."""
    page = browser_page
    account = json.loads(running_stack.pbseg("accounts", "create", "--name", "ui-conditions"))
    api_key, account_id = account["api_key"], account["account_id"]
    origin = running_stack.query_url
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    await sign_in(page, origin, api_key)
    await page.fill("#new-name", "Lead form sent")
    await page.fill("#new-code", "lead")
    await page.click("#create-button")
    await expect(page.locator('#events-body tr[data-code="lead"]')).to_have_count(1)

    rng = random.Random(seed)
    plan: Plan = {}
    for i in range(40):
        codes = ["reg"] + ["dep"] * rng.choice([0, 0, 1, 2, 3]) + (["lead"] if rng.random() < 0.4 else [])
        plan[f"c-{i:02d}"] = [(c, None) for c in codes]
    async with httpx.AsyncClient(timeout=10) as client:
        await wait_until_ingress_accepts(client, running_stack.ingress_url, account_id, "lead", "c-probe")
        plan["c-probe"] = [("lead", None)]
        await send(client, running_stack.ingress_url, account_id, {d: p for d, p in plan.items() if d != "c-probe"})
    occ = occurrences(plan, 0)
    await expect_filter_count(page, len(plan))  # no condition: every device

    # dep at least 2 times, and lead did not occur.
    await add_event_row(page, "dep", "count_gte", n="2")
    await add_event_row(page, "lead", "not_occurred")
    expected = {d for d, o in occ.items() if count_of(o, "dep") >= 2 and count_of(o, "lead") == 0}
    assert 0 < len(expected) < len(plan)
    body = {"event_include": [], "event_exclude": [], "include_match": "all",
            "conditions": [{"event": "dep", "count": {"gte": 2}}, {"event": "lead", "occurred": False}]}
    await expect(page.locator("#filter-json")).to_have_text(json.dumps(body, indent=2))
    await expect_filter_count(page, len(expected))
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await api_count(client, origin, api_key, await shown_filter(page))
    assert resp.status_code == 200 and resp.json()["count"] == len(expected), resp.text
    await expect(page.locator("#filter-sentence")).to_contain_text("dep occurred at least 2 times, and lead did not occur")

    # A row without an event waits (and says so); it is not sent.
    await page.click("#add-condition")
    await expect(cond_row(page, 2).locator(".cond-note")).to_have_text("not applied yet: pick an event")
    assert await shown_filter(page) == body
    await cond_row(page, 2).locator("button.cond-remove").click()
    await expect(page.locator("#condition-rows .cond-row")).to_have_count(2)

    # Bounds that cannot match: the server's message, naming the condition by position, next to the builder.
    await add_event_row(page, "dep", "count_between", n="3", m="1")
    await expect(page.locator("#conditions-error")).to_contain_text("conditions[2]")
    await expect(page.locator("#conditions-error")).to_contain_text("nothing could match")
    await expect(cond_row(page, 2)).to_have_class(re.compile(r"\binvalid\b"))
    await expect(page.locator("#filter-count")).to_have_text("–")
    await cond_row(page, 2).locator("input.cond-m").fill("5")  # fixed: 3..5 deposits
    await expect(page.locator("#conditions-error")).to_be_hidden()
    expected_35 = {d for d in expected if 3 <= count_of(occ[d], "dep") <= 5}
    await expect_filter_count(page, len(expected_35))
    await cond_row(page, 2).locator("button.cond-remove").click()
    await expect_filter_count(page, len(expected))

    # A count over a window: 422 unsupported_condition (with or without the windowed index).
    await add_event_row(page, "lead", "count_gte", n="2", window="last", last=("7", "d"))
    await expect(page.locator("#conditions-error")).to_contain_text("conditions[2]")
    await expect(cond_row(page, 2)).to_have_class(re.compile(r"\binvalid\b"))
    await cond_row(page, 2).locator("button.cond-remove").click()
    await expect(page.locator("#conditions-error")).to_be_hidden()
    await expect_filter_count(page, len(expected))

    # Save, clear, reopen: the same rows, the same filter, the same count.
    before = await rows_on_page(page)
    await page.fill("#save-name", "2+ deposits, no lead")
    await page.click("#save-segment")
    saved_row = page.locator("#saved-rows tr").first
    await expect(saved_row.locator("td.num")).to_have_attribute("data-count", str(len(expected)), timeout=WAIT_MS)
    await page.click("#clear-filter")
    await expect(page.locator("#condition-rows .cond-row")).to_have_count(0)
    await expect_filter_count(page, len(plan))
    await saved_row.locator("button.link").click()
    await expect(page.locator("#condition-rows .cond-row")).to_have_count(2)
    assert await rows_on_page(page) == before
    assert await shown_filter(page) == body
    await expect_filter_count(page, len(expected))

    # Every row kind survives a reload of the tab (the filter in sessionStorage -> rows again).
    await page.click("#clear-filter")
    await add_event_row(page, "reg", "occurred", window="last", last=("24", "h"))
    await add_event_row(page, "dep", "not_occurred", window="last", last=("30", "m"))
    await add_event_row(page, "lead", "count_lte", n="4")
    await add_event_row(page, "reg", "occurred", window="between", between=("2026-11-01T00:00", "2026-11-08T12:30"))
    await page.click("#add-deposit-sum")
    deposit = cond_row(page, 4)
    await deposit.locator("input.cond-currency").fill("eur")
    await deposit.locator("select.cond-sum-op").select_option("between")
    await deposit.locator("input.cond-amount").fill("10.50")
    await deposit.locator("input.cond-amount2").fill("99.99")
    conditions = [
        {"event": "reg", "occurred": True, "within": {"last": "24h"}},
        {"event": "dep", "occurred": False, "within": {"last": "30m"}},
        {"event": "lead", "count": {"lte": 4}},
        {"event": "reg", "occurred": True, "within": {"from": 1793491200000, "to": 1794141000000}},  # UTC
        {"deposit_sum": {"currency": "EUR", "gte": "10.50", "lte": "99.99"}},
    ]
    await expect(page.locator("#filter-json")).to_have_text(json.dumps(
        {"event_include": [], "event_exclude": [], "include_match": "all", "conditions": conditions}, indent=2))
    await expect(page.locator("#filter-sentence")).to_contain_text("between 2026-11-01 00:00 and 2026-11-08 12:30 UTC")
    shown = await rows_on_page(page)
    await page.reload()
    await expect(page.locator("#condition-rows .cond-row")).to_have_count(5)
    assert await rows_on_page(page) == shown
    assert (await shown_filter(page))["conditions"] == conditions

    # filter -> rows -> filter is the identity for every shape the builder shows; other shapes stay as they are.
    same = await page.evaluate("""async (conditions) => {
        const api = await import('/ui/api.js');
        const back = api.rowsToConditions(api.filterToRows({conditions}));
        return [back.conditions, api.filterToRows({conditions}).map((r) => r.kind)];
    }""", conditions + [
        {"event": "dep", "count": {"gte": 2, "lte": 5}},
        {"event": "trial", "occurred": True, "within": {"from": 1764547200000, "to": 1767225600000}},
        {"deposit_sum": {"currency": "USD", "gte": "100.00"}},
        {"event": "dep", "count": {"gte": 1}, "within": {"last": "7d"}},
        {"event": "x", "within": {"next": "1d"}},
    ])
    assert same[0][:5] == conditions and same[0][5:] == [
        {"event": "dep", "count": {"gte": 2, "lte": 5}},
        {"event": "trial", "occurred": True, "within": {"from": 1764547200000, "to": 1767225600000}},
        {"deposit_sum": {"currency": "USD", "gte": "100.00"}},
        {"event": "dep", "count": {"gte": 1}, "within": {"last": "7d"}},
        {"event": "x", "within": {"next": "1d"}}]
    assert same[1][-1] == "raw" and "raw" not in same[1][:-1]
    assert page_errors == []


async def within_works(client: httpx.AsyncClient, origin: str, api_key: str) -> httpx.Response:
    return await api_count(client, origin, api_key, {"conditions": [{"event": "reg", "within": {"last": "24h"}}]})


@pytest.mark.seed(14)
async def test_windowed_segment(running_stack, browser_page: Page, seed):
    """reg in the last 24 hours and dep not in the last 7 days: the page's count is the oracle's and
    the API's for the same body; saved, cleared and reopened it rebuilds the same rows and count.
    Devices per day shows the API's days, and the oracle's for the days the test wrote."""
    page = browser_page
    account = json.loads(running_stack.pbseg("accounts", "create", "--name", "ui-windows"))
    api_key, account_id = account["api_key"], account["account_id"]
    origin = running_stack.query_url
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    async with httpx.AsyncClient(timeout=10) as client:
        probe = await within_works(client, origin, api_key)
    assert probe.status_code == 200, f"`within` is not answered yet: {probe.status_code} {probe.text}"

    # Event times far from every window edge (hour precision): now, 2, 3 and 10 days ago.
    rng = random.Random(seed)
    now = int(time.time() * 1000)

    def ago(days: int) -> int:
        return now - days * DAY_MS + rng.randrange(-3 * HOUR_MS, 3 * HOUR_MS)

    plan: Plan = {
        "w-a": [("reg", None)],                               # selected
        "w-b": [("reg", None), ("dep", None)],                # a deposit now
        "w-c": [("reg", ago(3))],                             # registered 3 days ago
        "w-d": [("reg", None), ("dep", ago(10))],             # selected: the deposit is older than 7 days
        "w-e": [("reg", None), ("dep", ago(2))],              # a deposit 2 days ago
        "w-f": [("dep", None)],                               # never registered
    }
    for i in range(30):
        postbacks = [("reg", rng.choice([None, None, ago(rng.choice([2, 3, 5, 12]))]))]
        postbacks += [("dep", rng.choice([None, ago(rng.choice([2, 4, 10, 20]))])) for _ in range(rng.choice([0, 0, 1, 2]))]
        plan[f"w-{i:02d}"] = postbacks
    async with httpx.AsyncClient(timeout=10) as client:
        sent_from = int(time.time() * 1000)
        await send(client, running_stack.ingress_url, account_id, plan)
        sent_to = int(time.time() * 1000)
    occ = occurrences(plan, sent_from)
    expected = {d for d, o in occ.items()
                if count_of(o, "reg", now - DAY_MS, sent_to + 1) > 0 and count_of(o, "dep", now - 7 * DAY_MS, sent_to + 1) == 0}
    assert {"w-a", "w-d"} <= expected and not expected & {"w-b", "w-c", "w-e", "w-f"}

    await sign_in(page, origin, api_key)
    await expect_filter_count(page, len(plan))
    await add_event_row(page, "reg", "occurred", window="last", last=("24", "h"))
    await add_event_row(page, "dep", "not_occurred", window="last", last=("7", "d"))
    body = {"event_include": [], "event_exclude": [], "include_match": "all", "conditions": [
        {"event": "reg", "occurred": True, "within": {"last": "24h"}},
        {"event": "dep", "occurred": False, "within": {"last": "7d"}}]}
    await expect(page.locator("#filter-json")).to_have_text(json.dumps(body, indent=2))
    await expect(page.locator("#filter-sentence")).to_have_text(
        "Devices where reg occurred in the last 24 hours, and dep did not occur in the last 7 days.")
    await expect_filter_count(page, len(expected))
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await api_count(client, origin, api_key, body)
    assert resp.status_code == 200 and resp.json()["count"] == len(expected), resp.text
    await expect(page.locator("#conditions-error")).to_be_hidden()

    # Save it, clear the builder, reopen it from the list: the same rows and the same count.
    before = await rows_on_page(page)
    await page.fill("#save-name", "new, no recent deposit")
    await page.click("#save-segment")
    saved_row = page.locator("#saved-rows tr").first
    await expect(saved_row.locator("td.num")).to_have_attribute("data-count", str(len(expected)), timeout=WAIT_MS)
    await page.click("#clear-filter")
    await expect(page.locator("#condition-rows .cond-row")).to_have_count(0)
    await expect_filter_count(page, len(plan))
    await saved_row.locator("button.link").click()
    await expect(page.locator("#condition-rows .cond-row")).to_have_count(2)
    assert await rows_on_page(page) == before
    for i, (event, how, n, unit) in enumerate([("reg", "occurred", "24", "h"), ("dep", "not_occurred", "7", "d")]):
        row = cond_row(page, i)
        await expect(row.locator("select.cond-event")).to_have_value(event)
        await expect(row.locator("select.cond-op")).to_have_value(how)
        await expect(row.locator("select.cond-window")).to_have_value("last")
        await expect(row.locator("input.cond-last-n")).to_have_value(n)
        await expect(row.locator("select.cond-last-unit")).to_have_value(unit)
    assert await shown_filter(page) == body
    await expect_filter_count(page, len(expected))

    # The device lookup judges the windows too.
    await page.fill("#device-id", "w-d")
    await page.click("#device-button")
    await expect(page.locator("#device-verdict")).to_have_text("✓ The filter above selects this device.")
    await page.fill("#device-id", "w-e")
    await page.click("#device-button")
    await expect(page.locator("#device-verdict")).to_contain_text("does not select this device: dep occurred")

    # Devices per day, last 30 days: the API's days, and for reg and dep the oracle's (by UTC day).
    for event in ("reg", "dep"):
        if event != "reg":
            await page.select_option("#daily-event", event)
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.get(f"{origin}/api/b/v2/segments/daily", params={"event": event, "days": 30},
                                    headers={"Authorization": f"Bearer {api_key}"})
        assert resp.status_code == 200, resp.text
        days = resp.json()["days"]
        assert len(days) == 30 and days[-1]["start"] // DAY_MS == int(time.time() * 1000) // DAY_MS
        bars = page.locator("#chart-daily g.day")
        await expect(bars).to_have_count(30)
        if sent_from // DAY_MS == sent_to // DAY_MS:  # "now" is one UTC day
            oracle = {day["day"]: len({d for d, o in occ.items()
                                       if count_of(o, event, day["start"], day["start"] + DAY_MS)}) for day in days}
            assert {day["day"]: day["devices"] for day in days} == oracle
        for day in days:
            await expect(page.locator(f'#chart-daily g.day[data-day="{day["day"]}"]')).to_have_attribute(
                "data-devices", str(day["devices"]), timeout=WAIT_MS)
        await expect(page.locator("#chart-daily g.day.today")).to_have_attribute("data-day", days[-1]["day"])
    await expect(page.locator("#daily-error")).to_be_hidden()
    assert page_errors == []
