"""Saved segments (services/query/saved_segment_routes.py): CRUD with versions, count / devices /
export of the current version naming it, per-account isolation, and 422s a person can act on."""

from __future__ import annotations

from query_fixtures import ndjson, query  # noqa: F401 - the fixture

S = "/api/b/v2/segments"


async def test_a_saved_segment_is_versioned_and_answers_like_its_filter(query):
    """Create (v1), rename (v2), change the filter (v3): each answer names the version it used
    and equals the ad-hoc answer of that filter; the history keeps all three; delete is 204, then 404."""
    t = await query.tenant()
    await query.devices(t, {f"d{i}": {"reg": 1, **({"dep": 1} if i % 3 == 0 else {})} for i in range(30)})
    created = await query.call(t, "POST", S, json={"name": "registered", "filter": {"event_include": ["reg"]}})
    assert created.status_code == 201, created.text
    seg = created.json()
    assert (seg["name"], seg["version"], seg["filter"]["event_include"]) == ("registered", 1, ["reg"])
    sid = seg["id"]
    counted = (await query.call(t, "POST", f"{S}/{sid}/count")).json()
    assert (counted["count"], counted["segment_id"], counted["segment_version"]) == (30, sid, 1)

    renamed = (await query.call(t, "PUT", f"{S}/{sid}", json={"name": "reg, no deposit"})).json()
    assert (renamed["name"], renamed["version"], renamed["filter"]["event_include"]) == ("reg, no deposit", 2, ["reg"])
    changed = (await query.call(t, "PUT", f"{S}/{sid}", json={"filter": {"event_include": ["reg"],
                                                                        "event_exclude": ["dep"]}})).json()
    assert changed["version"] == 3 and changed["created_at"] == seg["created_at"]
    counted = (await query.call(t, "POST", f"{S}/{sid}/count")).json()
    adhoc = (await query.call(t, "POST", f"{S}/count", json={"event_include": ["reg"], "event_exclude": ["dep"]})).json()
    assert (counted["count"], counted["segment_version"]) == (adhoc["count"], 3) and adhoc["count"] == 20

    page = (await query.call(t, "POST", f"{S}/{sid}/devices", json={"limit": 7})).json()
    assert len(page["devices"]) == 7 and page["segment_version"] == 3 and page["next_cursor"]
    rest = (await query.call(t, "POST", f"{S}/{sid}/devices", json={"limit": 100, "cursor": page["next_cursor"]})).json()
    exported = await query.call(t, "POST", f"{S}/{sid}/export")
    assert exported.headers["X-Segment-Version"] == "3"
    assert {r["install_id"] for r in ndjson(exported.content)} == set(page["devices"] + rest["devices"])
    assert len(page["devices"] + rest["devices"]) == 20

    versions = (await query.call(t, "GET", f"{S}/{sid}/versions")).json()["versions"]
    assert [(v["version"], v["name"]) for v in versions] == [(1, "registered"), (2, "reg, no deposit"),
                                                             (3, "reg, no deposit")]
    listed = (await query.call(t, "GET", S)).json()
    assert [s["id"] for s in listed["segments"]] == [sid] and listed["pagination"]["total_count"] == 1
    assert (await query.call(t, "GET", f"{S}/events")).status_code == 200  # the overview keeps its route
    assert (await query.call(t, "DELETE", f"{S}/{sid}")).status_code == 204
    for method, url in (("GET", f"{S}/{sid}"), ("POST", f"{S}/{sid}/count"), ("GET", f"{S}/{sid}/versions"),
                        ("DELETE", f"{S}/{sid}")):
        gone = await query.call(t, method, url)
        assert gone.status_code == 404 and gone.json()["error"] == "segment_not_found", (method, url)


async def test_another_accounts_segment_is_404(query):
    """Segments are per account: the other account's key cannot read, change, count or delete it."""
    owner, other = await query.tenant("a"), await query.tenant("b")
    sid = (await query.call(owner, "POST", S, json={"name": "mine", "filter": {}})).json()["id"]
    for method, url, body in (("GET", f"{S}/{sid}", None), ("PUT", f"{S}/{sid}", {"name": "x"}),
                              ("POST", f"{S}/{sid}/count", None), ("POST", f"{S}/{sid}/devices", None),
                              ("POST", f"{S}/{sid}/export", None), ("DELETE", f"{S}/{sid}", None)):
        r = await query.call(other, method, url, json=body)
        assert r.status_code == 404, (method, url, r.text)
    assert (await query.call(other, "GET", S)).json()["segments"] == []
    assert (await query.call(owner, "GET", f"{S}/{sid}")).json()["name"] == "mine"


async def test_bad_segment_requests_are_422_saying_what_to_fix(query):
    """Unknown codes, a blank name, an empty update, unknown fields and a non-numeric id: 422, nothing stored."""
    t = await query.tenant()
    cases = [("POST", S, {"name": "x", "filter": {"event_include": ["nope"]}}, "unknown_events"),
             ("POST", S, {"name": "  ", "filter": {}}, "validation_error"),
             ("POST", S, {"name": "x", "filter": {}, "colour": "red"}, "validation_error"),
             ("POST", S, {"filter": {}}, "validation_error")]
    for method, url, body, error in cases:
        r = await query.call(t, method, url, json=body)
        assert r.status_code == 422 and r.json()["error"] == error, (body, r.text)
        assert r.json()["message"]
    assert (await query.call(t, "GET", S)).json()["segments"] == []
    sid = (await query.call(t, "POST", S, json={"name": "ok", "filter": {}})).json()["id"]
    r = await query.call(t, "PUT", f"{S}/{sid}", json={})
    assert r.status_code == 422 and r.json()["error"] == "nothing_to_change"
    r = await query.call(t, "PUT", f"{S}/{sid}", json={"filter": {"event_exclude": ["nope"]}})
    assert r.status_code == 422 and (await query.call(t, "GET", f"{S}/{sid}")).json()["version"] == 1
    assert (await query.call(t, "GET", f"{S}/abc")).status_code in (404, 422)
