"""Auth and tenant isolation, for every endpoint of the API: no key, a wrong key or a revoked key
is 401; an account never sees or changes another account's data."""

from __future__ import annotations

import orjson
import pytest
from query_fixtures import ndjson, query  # noqa: F401

from services.common.catalog import key_id_of

A_EVENT = "{a_event}"
A_SEGMENT = "{a_segment}"
A_TRIGGER = "{a_trigger}"
TRIGGER = {"name": "t", "on": {"event": "reg"}, "delay": "1h", "filter": {"event_exclude": ["dep"]}}
# Every (method, path) of the API with a body that would succeed for the owner.
ENDPOINTS = [
    ("GET", "/api/b/v2/events", None),
    ("POST", "/api/b/v2/events", {"name": "n", "code": "fresh"}),
    ("GET", f"/api/b/v2/events/{A_EVENT}", None),
    ("PUT", f"/api/b/v2/events/{A_EVENT}", {"name": "renamed"}),
    ("DELETE", f"/api/b/v2/events/{A_EVENT}", None),
    ("POST", f"/api/b/v2/events/{A_EVENT}/activate", None),
    ("POST", f"/api/b/v2/events/{A_EVENT}/deactivate", None),
    ("GET", "/api/b/v2/segments/events", None),
    ("GET", "/api/b/v2/segments/daily?event=reg&days=3", None),
    ("POST", "/api/b/v2/segments/count", {"event_include": ["install"]}),
    ("POST", "/api/b/v2/segments/devices", {"limit": 10}),
    ("POST", "/api/b/v2/segments/export", {}),
    ("POST", "/api/b/v2/segments/verdict", {"install_id": "a-device", "event_include": ["reg"]}),
    ("GET", "/api/b/v2/devices/a-device", None),
    ("GET", "/api/b/v2/postbacks/rejected", None),
    ("POST", "/api/b/v2/segments", {"name": "s", "filter": {}}),
    ("GET", "/api/b/v2/segments", None),
    ("GET", f"/api/b/v2/segments/{A_SEGMENT}", None),
    ("PUT", f"/api/b/v2/segments/{A_SEGMENT}", {"name": "renamed"}),
    ("DELETE", f"/api/b/v2/segments/{A_SEGMENT}", None),
    ("GET", f"/api/b/v2/segments/{A_SEGMENT}/versions", None),
    ("POST", f"/api/b/v2/segments/{A_SEGMENT}/count", None),
    ("POST", f"/api/b/v2/segments/{A_SEGMENT}/devices", {"limit": 10}),
    ("POST", f"/api/b/v2/segments/{A_SEGMENT}/export", None),
    ("POST", "/api/b/v2/triggers", TRIGGER),
    ("GET", "/api/b/v2/triggers", None),
    ("GET", f"/api/b/v2/triggers/{A_TRIGGER}", None),
    ("PATCH", f"/api/b/v2/triggers/{A_TRIGGER}", {"name": "renamed"}),
    ("DELETE", f"/api/b/v2/triggers/{A_TRIGGER}", None),
    ("POST", f"/api/b/v2/triggers/{A_TRIGGER}/activate", None),
    ("POST", f"/api/b/v2/triggers/{A_TRIGGER}/deactivate", None),
    ("GET", f"/api/b/v2/triggers/{A_TRIGGER}/stats", None),
    ("GET", f"/api/b/v2/triggers/{A_TRIGGER}/fires", None),
]
SEGMENT_ENDPOINTS = [e for e in ENDPOINTS if A_SEGMENT in e[1]]
TRIGGER_ENDPOINTS = [e for e in ENDPOINTS if A_TRIGGER in e[1]]


def _filled(path: str, a_event: int, a_segment: int, a_trigger: int = 0) -> str:
    return path.replace(A_EVENT, str(a_event)).replace(A_SEGMENT, str(a_segment)).replace(A_TRIGGER, str(a_trigger))


def test_the_matrix_covers_every_api_route():
    """A new endpoint must be added to ENDPOINTS (and so to the isolation tests)."""
    from query_fixtures import make_settings  # noqa: F401 - same import path as the fixtures

    from services.query.bootstrap import create_app

    spec = create_app(make_settings("tmatrix", "redis://127.0.0.1:1/0")).openapi()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops if p.startswith("/api/")}
    covered = {(m, p.split("?")[0].replace(A_EVENT, "{event_id}").replace(A_SEGMENT, "{segment_id}").replace(A_TRIGGER, "{trigger_id}")
                .replace("a-device", "{install_id}"))
               for m, p, _ in ENDPOINTS}
    assert routes == covered


async def _setup(query):
    a, b = await query.tenant("a"), await query.tenant("b")
    a_event = (await query.call(a, "POST", "/api/b/v2/events", json={"name": "A only", "code": "a_only"})).json()["id"]
    await query.devices(a, {"a-device": {"a_only": 1, "reg": 1}, "a-2": {"dep": 2}})
    await query.devices(b, {"b-device": {"reg": 1}})
    for account, reason in ((a.account_id, "unknown_event"), (b.account_id, "event_inactive")):
        await query.app.state.rejected.append(0, [(account, account, orjson.dumps(
            {"schema": "rejected-postback.v1", "stage": "ingress", "reason": reason, "message": "m",
             "account_id": account, "raw": f"status=x_{account}", "at": 1}))])
    a_segment = (await query.call(a, "POST", "/api/b/v2/segments", json={"name": "A's", "filter": {}})).json()["id"]
    return a, b, a_event, a_segment


@pytest.mark.parametrize("method,path,body", ENDPOINTS)
@pytest.mark.parametrize("auth", ["missing", "not bearer", "wrong key", "revoked key", "empty"])
async def test_without_a_valid_key_every_endpoint_is_401(query, method, path, body, auth):
    a, _, a_event, a_segment = await _setup(query)
    revoked = await query.catalog.add_api_key(a.account_id, 1)
    await query.catalog.revoke_api_key(a.account_id, key_id_of(revoked))
    headers = {"missing": {}, "not bearer": {"Authorization": f"Basic {a.api_key}"},
               "wrong key": {"Authorization": "Bearer pbs_nope"}, "revoked key": {"Authorization": f"Bearer {revoked}"},
               "empty": {"Authorization": "Bearer "}}[auth]
    before = await query.catalog.version()
    resp = await query.client.request(method, _filled(path, a_event, a_segment), json=body, headers=headers)
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "unauthorized"
    assert await query.catalog.version() == before


async def test_another_account_cannot_touch_an_event(query):
    """B gets 404 for A's event on GET/PUT/DELETE/activate/deactivate and A's event is unchanged."""
    a, b, a_event, _ = await _setup(query)
    before = await query.catalog.version()
    for method, path, body in ENDPOINTS[2:7]:
        resp = await query.call(b, method, path.replace(A_EVENT, str(a_event)), json=body)
        assert resp.status_code == 404 and resp.json()["error"] == "event_not_found", (method, path, resp.text)
    assert await query.catalog.version() == before
    got = (await query.call(a, "GET", f"/api/b/v2/events/{a_event}")).json()
    assert got["name"] == "A only" and got["status"] == 1
    # B can create the same code: codes are per account.
    assert (await query.call(b, "POST", "/api/b/v2/events", json={"name": "B", "code": "a_only"})).status_code == 201
    assert [e["code"] for e in (await query.call(a, "GET", "/api/b/v2/events")).json()["events"]][3:] == ["a_only"]


async def test_another_account_cannot_touch_a_saved_segment(query):
    """B gets 404 for A's saved segment on every route by id, and A's segment is unchanged."""
    a, b, a_event, a_segment = await _setup(query)
    for method, path, body in SEGMENT_ENDPOINTS:
        resp = await query.call(b, method, _filled(path, a_event, a_segment), json=body)
        assert resp.status_code == 404 and resp.json()["error"] == "segment_not_found", (method, path, resp.text)
    got = (await query.call(a, "GET", f"/api/b/v2/segments/{a_segment}")).json()
    assert (got["name"], got["version"]) == ("A's", 1)


async def test_another_account_cannot_touch_a_trigger(query):
    """B gets 404 for A's trigger on every route by id, and A's trigger is unchanged."""
    a, b, a_event, a_segment = await _setup(query)
    a_trigger = (await query.call(a, "POST", "/api/b/v2/triggers", json=TRIGGER)).json()["id"]
    for method, path, body in TRIGGER_ENDPOINTS:
        resp = await query.call(b, method, _filled(path, a_event, a_segment, a_trigger), json=body)
        assert resp.status_code == 404 and resp.json()["error"] == "trigger_not_found", (method, path, resp.text)
    got = (await query.call(a, "GET", f"/api/b/v2/triggers/{a_trigger}")).json()
    assert (got["name"], got["version"], got["active"]) == ("t", 1, True)
    assert (await query.call(b, "GET", "/api/b/v2/triggers")).json()["triggers"] == []


async def test_reads_return_only_the_callers_data(query):
    """Lists, overview, count, devices, export, device lookup and rejected postbacks stay in the account."""
    a, b, _, _ = await _setup(query)
    listing = (await query.call(b, "GET", "/api/b/v2/events")).json()
    assert [e["code"] for e in listing["events"]] == ["install", "reg", "dep"]
    overview = {e["code"]: e["devices"] for e in (await query.call(b, "GET", "/api/b/v2/segments/events")).json()["events"]}
    assert overview == {"install": 1, "reg": 1, "dep": 0}
    assert all(f"_{b.account_id}" in e["postback_url"] for e in (await query.call(b, "GET", "/api/b/v2/segments/events")).json()["events"])
    assert (await query.call(b, "POST", "/api/b/v2/segments/count", json={})).json() == {"count": 1, "as_of": None}
    assert (await query.call(a, "POST", "/api/b/v2/segments/count", json={})).json() == {"count": 2, "as_of": None}
    unknown = await query.call(b, "POST", "/api/b/v2/segments/count", json={"event_include": ["a_only"]})
    assert unknown.status_code == 422 and unknown.json()["unknown_codes"] == ["a_only"]
    assert (await query.call(b, "POST", "/api/b/v2/segments/devices", json={})).json()["devices"] == ["b-device"]
    assert ndjson((await query.call(b, "POST", "/api/b/v2/segments/export", json={})).content) == [{"install_id": "b-device"}]
    assert (await query.call(b, "GET", "/api/b/v2/devices/a-device")).status_code == 404
    verdict = (await query.call(b, "POST", "/api/b/v2/segments/verdict", json={"install_id": "a-device"})).json()
    assert (verdict["found"], verdict["selected"]) == (False, False)
    assert (await query.call(a, "GET", "/api/b/v2/devices/a-device")).status_code == 200
    rejected_b = (await query.call(b, "GET", "/api/b/v2/postbacks/rejected")).json()["rejected"]
    assert [r["reason"] for r in rejected_b] == ["event_inactive"]
    rejected_a = (await query.call(a, "GET", "/api/b/v2/postbacks/rejected")).json()["rejected"]
    assert [r["reason"] for r in rejected_a] == ["unknown_event"]
