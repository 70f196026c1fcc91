"""The triggers API (services/query/trigger_routes.py): CRUD with versions, activate/deactivate,
pagination, per-account isolation, stats from the partitions' counters, and 422s a person can
act on. (What fires is tests/integration/test_triggers.py.)"""

from __future__ import annotations

from query_fixtures import query  # noqa: F401 - the fixture
from services.common.keys import PartitionKeys

T = "/api/b/v2/triggers"
BODY = {"name": "deposit reminder", "on": {"event": "reg", "occurrence": "first"}, "delay": "2h",
        "filter": {"event_exclude": ["dep"]}}


async def test_a_trigger_is_created_versioned_listed_and_deleted(query):
    t = await query.tenant()
    created = await query.call(t, "POST", T, json=BODY)
    assert created.status_code == 201, created.text
    trg = created.json()
    assert (trg["name"], trg["on"], trg["delay"], trg["delay_ms"], trg["active"], trg["version"]) == \
        ("deposit reminder", {"event": "reg", "occurrence": "first"}, "2h", 7_200_000, True, 1)
    assert trg["filter"]["event_exclude"] == ["dep"] and trg["created_at"] == trg["updated_at"]
    tid = trg["id"]
    assert (await query.call(t, "GET", f"{T}/{tid}")).json() == trg

    changed = (await query.call(t, "PATCH", f"{T}/{tid}", json={"delay": "5d10h30m", "on": {"event": "dep",
                                                                                        "occurrence": "every"}})).json()
    assert changed["version"] == 2 and changed["delay_ms"] == (5 * 24 * 60 + 10 * 60 + 30) * 60_000
    assert changed["on"] == {"event": "dep", "occurrence": "every"} and changed["created_at"] == trg["created_at"]
    assert changed["updated_at"] > trg["updated_at"] and changed["filter"] == trg["filter"]

    off = (await query.call(t, "POST", f"{T}/{tid}/deactivate")).json()
    assert (off["active"], off["version"]) == (False, 3)
    assert (await query.call(t, "POST", f"{T}/{tid}/deactivate")).json()["version"] == 3  # already off: no version
    on = (await query.call(t, "POST", f"{T}/{tid}/activate")).json()
    assert (on["active"], on["version"]) == (True, 4)

    for i in range(4):
        assert (await query.call(t, "POST", T, json=BODY | {"name": f"n{i}"})).status_code == 201
    page = (await query.call(t, "GET", f"{T}?page=2&per_page=2")).json()
    assert page["pagination"] == {"page": 2, "per_page": 2, "total_pages": 3, "total_count": 5}
    assert [x["name"] for x in page["triggers"]] == ["n1", "n2"]

    assert (await query.call(t, "DELETE", f"{T}/{tid}")).status_code == 204
    gone = await query.call(t, "GET", f"{T}/{tid}")
    assert gone.status_code == 404 and gone.json()["error"] == "trigger_not_found"
    assert (await query.call(t, "GET", f"{T}/{tid}/stats")).status_code == 404
    assert (await query.call(t, "DELETE", f"{T}/{tid}")).status_code == 404
    assert (await query.call(t, "GET", T)).json()["pagination"]["total_count"] == 4


async def test_another_accounts_key_gets_404_and_changes_nothing(query):
    a, b = await query.tenant("a"), await query.tenant("b")
    tid = (await query.call(a, "POST", T, json=BODY)).json()["id"]
    for method, path, body in (("GET", "", None), ("PATCH", "", {"name": "x"}), ("POST", "/deactivate", None),
                               ("GET", "/stats", None), ("GET", "/fires", None), ("DELETE", "", None)):
        resp = await query.call(b, method, f"{T}/{tid}{path}", **({"json": body} if body else {}))
        assert resp.status_code == 404 and resp.json()["error"] == "trigger_not_found", (method, path)
    assert (await query.call(b, "GET", T)).json()["triggers"] == []
    mine = (await query.call(a, "GET", f"{T}/{tid}")).json()
    assert (mine["name"], mine["active"], mine["version"]) == ("deposit reminder", True, 1)


async def test_bad_triggers_get_422_saying_what_to_change(query):
    t = await query.tenant()
    cases = [
        ({"delay": "2x"}, "invalid_trigger", "5d10h30m"),
        ({"delay": "91d"}, "invalid_trigger", "maximum of 90d"),
        ({"on": {"event": "dep_2"}}, "invalid_trigger", "deposit ordinal"),
        ({"on": {"event": "nosuch"}}, "unknown_events", "nosuch"),
        ({"filter": {"event_include": ["nosuch"]}}, "unknown_events", "nosuch"),
        ({"filter": {"conditions": [{"event": "open", "count": {"gte": 2}, "within": {"last": "1d"}}]}},
         "unsupported_condition", "`count` together with `within`"),
        ({"filter": {"conditions": [{"event": "reg", "within": {"last": "2y"}}]}}, "invalid_condition", "duration"),
        ({"on": {"event": "reg", "occurrence": "sometimes"}}, None, "occurrence"),
        ({"name": ""}, None, "name"),
    ]
    for change, error, words in cases:
        resp = await query.call(t, "POST", T, json=BODY | change)
        assert resp.status_code == 422, (change, resp.text)
        assert (error is None or resp.json()["error"] == error) and words in str(resp.json()), (change, resp.text)
    tid = (await query.call(t, "POST", T, json=BODY)).json()["id"]
    empty = await query.call(t, "PATCH", f"{T}/{tid}", json={})
    assert empty.status_code == 422 and empty.json()["error"] == "nothing_to_change"
    bad = await query.call(t, "PATCH", f"{T}/{tid}", json={"delay": "soon"})
    assert bad.status_code == 422 and bad.json()["field"] == "delay"
    assert (await query.call(t, "GET", f"{T}/{tid}")).json()["version"] == 1  # nothing changed
    assert (await query.call(t, "GET", T)).json()["pagination"]["total_count"] == 1


async def test_stats_sum_the_partitions_and_an_inactive_trigger_has_nothing_pending(query):
    """pending = the current epoch's; a deactivated trigger's pending ones count as cancelled."""
    t = await query.tenant()
    trg = (await query.call(t, "POST", T, json=BODY)).json()
    tid = trg["id"]
    assert (await query.call(t, "GET", f"{T}/{tid}/stats")).json() == \
        {"pending": 0, "fired": 0, "cancelled": 0, "skipped_late": 0}
    prefix = query.settings.key_prefix
    await query.redis.hset(PartitionKeys(prefix, 0).trigger_stats(tid), mapping={"p1": 3, "f": 2, "c": 1, "l": 4})
    await query.redis.hset(PartitionKeys(prefix, 3).trigger_stats(tid), mapping={"p1": 1, "f": 5})
    assert (await query.call(t, "GET", f"{T}/{tid}/stats")).json() == \
        {"pending": 4, "fired": 7, "cancelled": 1, "skipped_late": 4}
    await query.call(t, "POST", f"{T}/{tid}/deactivate")
    assert (await query.call(t, "GET", f"{T}/{tid}/stats")).json() == \
        {"pending": 0, "fired": 7, "cancelled": 5, "skipped_late": 4}
    await query.call(t, "POST", f"{T}/{tid}/activate")  # epoch 2: the epoch-1 fires stay cancelled
    assert (await query.call(t, "GET", f"{T}/{tid}/stats")).json() == \
        {"pending": 0, "fired": 7, "cancelled": 5, "skipped_late": 4}
    line = "\t".join([str(t.account_id), "dev-1", str(tid), "1", "ev1", "10", "20"])
    await query.redis.lpush(PartitionKeys(prefix, 2).trigger_recent(tid), line)
    fires = (await query.call(t, "GET", f"{T}/{tid}/fires")).json()["fires"]
    assert [(f["fire_id"], f["install_id"], f["due_at"], f["fired_at"]) for f in fires] == [(f"t{tid}-ev1", "dev-1", 10, 20)]
