"""Custom events API (PushExpress v2 shape) against the real Redis: every success and error case."""

from __future__ import annotations

import asyncio

from query_fixtures import query  # noqa: F401 - fixture

from services.common.catalog import MAX_CUSTOM_EVENTS

E = "/api/b/v2/events"


def assert_error(resp, status: int, error: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == error and isinstance(body["message"], str) and body["message"]
    return body


async def test_create_get_list_update_delete_round_trip(query):
    """A created event is listed after the system events, can be renamed, and is gone after DELETE."""
    t = await query.tenant()
    resp = await query.call(t, "POST", E, json={"name": "Promo click", "code": "promo_click"})
    assert resp.status_code == 201, resp.text
    event_id = resp.json()["id"]
    got = (await query.call(t, "GET", f"{E}/{event_id}")).json()
    assert got == {"id": event_id, "name": "Promo click", "code": "promo_click", "status": 1, "type": "CUSTOM"}
    listing = (await query.call(t, "GET", E)).json()
    assert [e["code"] for e in listing["events"]] == ["install", "reg", "dep", "promo_click"]
    assert [e["type"] for e in listing["events"]] == ["SYSTEM"] * 3 + ["CUSTOM"]
    assert listing["pagination"] == {"page": 1, "per_page": 20, "total_pages": 1, "total_count": 4}
    renamed = await query.call(t, "PUT", f"{E}/{event_id}", json={"name": "  Promo  ", "code": "promo_click"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Promo"
    assert (await query.call(t, "DELETE", f"{E}/{event_id}")).status_code == 204
    assert_error(await query.call(t, "GET", f"{E}/{event_id}"), 404, "event_not_found")
    assert_error(await query.call(t, "DELETE", f"{E}/{event_id}"), 404, "event_not_found")
    # The code is free again after deletion.
    assert (await query.call(t, "POST", E, json={"name": "again", "code": "promo_click"})).status_code == 201


async def test_activate_and_deactivate_reach_the_ingress_snapshot(query):
    """Status changes are visible in the snapshot the ingress reloads, with a bumped version."""
    t = await query.tenant()
    event_id = (await query.call(t, "POST", E, json={"name": "x", "code": "buy"})).json()["id"]
    v0 = await query.catalog.version()
    off = await query.call(t, "POST", f"{E}/{event_id}/deactivate")
    assert off.status_code == 200 and off.json()["status"] == 0
    snap = await query.catalog.snapshot()
    assert snap.version > v0
    assert "buy" in snap.accounts[t.account_id].inactive_codes and "buy" not in snap.accounts[t.account_id].active_codes
    on = await query.call(t, "POST", f"{E}/{event_id}/activate")
    assert on.json()["status"] == 1
    assert "buy" in (await query.catalog.snapshot()).accounts[t.account_id].active_codes
    # Deleted codes leave the snapshot entirely.
    await query.call(t, "DELETE", f"{E}/{event_id}")
    entry = (await query.catalog.snapshot()).accounts[t.account_id]
    assert "buy" not in entry.active_codes | entry.inactive_codes


async def test_system_events_are_listed_and_immutable(query):
    """install/reg/dep have ids 1-3, type SYSTEM, and refuse every change with 403."""
    t = await query.tenant()
    for event_id, code in ((1, "install"), (2, "reg"), (3, "dep")):
        got = (await query.call(t, "GET", f"{E}/{event_id}")).json()
        assert got["code"] == code and got["type"] == "SYSTEM" and got["status"] == 1
        assert_error(await query.call(t, "PUT", f"{E}/{event_id}", json={"name": "x"}), 403, "system_event")
        assert_error(await query.call(t, "DELETE", f"{E}/{event_id}"), 403, "system_event")
        assert_error(await query.call(t, "POST", f"{E}/{event_id}/deactivate"), 403, "system_event")
        assert_error(await query.call(t, "POST", f"{E}/{event_id}/activate"), 403, "system_event")


async def test_reserved_duplicate_and_invalid_codes_are_refused_without_change(query):
    """Reserved codes (any case), duplicates (case-insensitive) and malformed bodies change nothing."""
    t = await query.tenant()
    assert (await query.call(t, "POST", E, json={"name": "a", "code": "Promo"})).status_code == 201
    v = await query.catalog.version()
    for code in ("install", "reg", "dep", "dep_2", "dep_17", "DEP", "Install", "dep_0"):
        body = assert_error(await query.call(t, "POST", E, json={"name": "n", "code": code}), 422, "reserved_code")
        assert code in body["message"]
    body = assert_error(await query.call(t, "POST", E, json={"name": "b", "code": "promo"}), 409, "duplicate_code")
    assert "promo" in body["message"]
    bad_bodies = [
        {"name": "x"}, {"code": "abc"}, {"name": "", "code": "abc"}, {"name": "   ", "code": "abc"},
        {"name": "x", "code": ""}, {"name": "x", "code": "has space"}, {"name": "x", "code": "a" * 65},
        {"name": "x", "code": "ünï"}, {"name": "x" * 256, "code": "abc"}, {"name": "x", "code": "abc", "extra": 1},
        {"name": "bad\x00name", "code": "abc"}, {"name": 5, "code": "abc"}, [], "text",
    ]
    for bad in bad_bodies:
        assert_error(await query.call(t, "POST", E, json=bad), 422, "validation_error")
    assert_error(await query.call(t, "POST", E, content=b"{not json", headers={"content-type": "application/json"}),
                 422, "validation_error")
    assert await query.catalog.version() == v
    assert [e.code for e in await query.catalog.custom_events(t.account_id)] == ["Promo"]


async def test_update_errors(query):
    """PUT: unknown id 404, changed code 409, malformed id 422."""
    t = await query.tenant()
    event_id = (await query.call(t, "POST", E, json={"name": "a", "code": "abc"})).json()["id"]
    assert_error(await query.call(t, "PUT", f"{E}/{event_id}", json={"name": "a", "code": "other"}), 409, "code_immutable")
    assert_error(await query.call(t, "PUT", f"{E}/999999", json={"name": "a"}), 404, "event_not_found")
    assert_error(await query.call(t, "PUT", f"{E}/abc", json={"name": "a"}), 422, "validation_error")
    assert_error(await query.call(t, "GET", f"{E}/0"), 422, "validation_error")
    assert_error(await query.call(t, "POST", f"{E}/999999/activate"), 404, "event_not_found")
    assert (await query.call(t, "GET", f"{E}/{event_id}")).json()["code"] == "abc"


async def test_pagination_walks_every_event_once_and_caps_the_offset(query):
    """Pages partition the list; offset past 10,000 and per_page outside 1-100 are 422."""
    t = await query.tenant()
    codes = [f"ev_{i:02d}" for i in range(23)]
    await asyncio.gather(*(query.call(t, "POST", E, json={"name": c, "code": c}) for c in codes))
    seen = []
    for page in range(1, 5):
        body = (await query.call(t, "GET", E, params={"page": page, "per_page": 7})).json()
        assert body["pagination"] == {"page": page, "per_page": 7, "total_pages": 4, "total_count": 26}
        seen += [e["code"] for e in body["events"]]
    assert seen[:3] == ["install", "reg", "dep"] and sorted(seen[3:]) == codes and len(seen) == 26
    ids = [e["id"] for e in (await query.call(t, "GET", E, params={"per_page": 100})).json()["events"]]
    assert ids == sorted(ids)
    past = (await query.call(t, "GET", E, params={"page": 9, "per_page": 7})).json()
    assert past["events"] == [] and past["pagination"]["total_count"] == 26
    assert (await query.call(t, "GET", E, params={"page": 101, "per_page": 100})).status_code == 200  # offset 10,000
    assert_error(await query.call(t, "GET", E, params={"page": 102, "per_page": 100}), 422, "offset_too_large")
    assert_error(await query.call(t, "GET", E, params={"page": 10_001, "per_page": 2}), 422, "offset_too_large")
    for params in ({"page": 0}, {"per_page": 0}, {"per_page": 101}, {"page": "x"}, {"page": -1}):
        assert_error(await query.call(t, "GET", E, params=params), 422, "validation_error")


async def test_custom_event_limit_is_enforced(query, monkeypatch):
    """The per-account limit refuses the next event with 409 event_limit."""
    import services.common.catalog as catalog

    monkeypatch.setattr(catalog, "MAX_CUSTOM_EVENTS", 3)
    t = await query.tenant()
    for i in range(3):
        assert (await query.call(t, "POST", E, json={"name": "n", "code": f"c{i}"})).status_code == 201
    assert_error(await query.call(t, "POST", E, json={"name": "n", "code": "c3"}), 409, "event_limit")
    assert MAX_CUSTOM_EVENTS == 10_000


async def test_unknown_routes_and_methods_are_json_errors(query):
    t = await query.tenant()
    assert_error(await query.call(t, "GET", "/api/b/v2/nope"), 404, "not_found")
    assert_error(await query.call(t, "PATCH", E), 405, "method_not_allowed")
