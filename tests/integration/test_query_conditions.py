"""Filter conditions on the API that the bitmaps answer (services/domain/conditions.py,
`compile_conditions`): occurred / not occurred and deposit counts, ANDed with the include/exclude
lists whatever include_match says; count, devices, export and saved segments agree with the
reference evaluator; what no index answers exactly is 422 `unsupported_condition`, bad conditions
422 `invalid_condition`. Windows, other counts and sums: test_query_windows.py (real processor)."""

from __future__ import annotations

import random

import pytest
from query_fixtures import ndjson, query  # noqa: F401 - the fixture

from services.domain.conditions import Occurrence, all_hold, parse_conditions

S = "/api/b/v2/segments"


def reference(devices: dict[str, dict[str, int]], body: dict) -> set[str]:
    """The devices the domain's evaluator selects (include/exclude as the filter, conditions as
    the conditions module over one occurrence per count)."""
    conditions = parse_conditions(body.get("conditions", []), 0)
    include, exclude = body.get("event_include", []), body.get("event_exclude", [])
    out = set()
    for install, events in devices.items():
        have = {"install"} | {c for c, n in events.items() if n}
        have |= {f"dep_{k}" for k in range(2, events.get("dep", 0) + 1)}
        inc = include or ["install"]
        ok = all(c in have for c in inc) if body.get("include_match", "all") == "all" else any(c in have for c in inc)
        occ = [Occurrence(c, 0) for c, n in events.items() for _ in range(n)]
        if ok and not any(c in have for c in exclude) and all_hold(conditions, occ):
            out.add(install)
    return out


@pytest.mark.seed(13)
async def test_conditions_select_what_the_evaluator_selects(query, seed):
    rng = random.Random(seed)
    t = await query.tenant()
    assert (await query.call(t, "POST", "/api/b/v2/events", json={"name": "Open", "code": "open"})).status_code == 201
    devices = {f"d{i}": {"reg": rng.choice((0, 1, 1)), "dep": rng.choice((0, 0, 1, 2, 3, 5)),
                         "open": rng.choice((0, 1))} for i in range(120)}
    await query.devices(t, devices)
    bodies = [
        {"conditions": [{"event": "dep", "count": {"gte": 2, "lte": 3}}]},
        {"event_include": ["reg"], "conditions": [{"event": "dep", "count": {"lte": 1}}]},
        {"event_include": ["reg", "open"], "include_match": "any",
         "conditions": [{"event": "dep", "count": {"gte": 1}}, {"event": "open", "occurred": False}]},
        {"event_exclude": ["open"], "conditions": [{"event": "reg"}, {"event": "dep", "count": {"gte": 5}}]},
        {"conditions": [{"event": "reg", "count": {"lte": 0}}, {"event": "dep", "count": {"gte": 0}}]},
    ]
    for body in bodies:
        expected = reference(devices, body)
        count = (await query.call(t, "POST", f"{S}/count", json=body)).json()
        assert count["count"] == len(expected), body
        page = (await query.call(t, "POST", f"{S}/devices", json={**body, "limit": 1000})).json()
        assert set(page["devices"]) == expected, body
        exported = await query.call(t, "POST", f"{S}/export", json=body)
        assert {r["install_id"] for r in ndjson(exported.content)} == expected, body
        saved = (await query.call(t, "POST", S, json={"name": "c", "filter": body})).json()
        assert (await query.call(t, "POST", f"{S}/{saved['id']}/count")).json()["count"] == len(expected)
    print(f"seed={seed}: {[len(reference(devices, b)) for b in bodies]} devices selected")


@pytest.mark.parametrize("condition, error, says", [
    ({"event": "reg", "count": {"gte": 2}, "within": {"last": "7d"}}, "unsupported_condition", "together with `within`"),
    ({"event": "dep_2", "within": {"last": "7d"}}, "unsupported_condition", "is a deposit ordinal"),
    ({"event": "reg", "within": {"last": "401d"}}, "invalid_condition", "kept 400 days"),
    ({"deposit_sum": {"currency": "US", "gte": "1"}}, "invalid_condition", "not a currency code"),
    ({"deposit_sum": {"currency": "USD", "gte": "1.12345678901"}}, "invalid_condition", "not an amount"),
    ({"event": "reg", "within": {"last": "7 days"}}, "invalid_condition", "not a duration"),
    ({"event": "dep", "count": {"gte": 3, "lte": 1}}, "invalid_condition", "below `count.gte`"),
    ({"event": "nosuch"}, "unknown_events", "nosuch"),
])
async def test_conditions_the_index_cannot_answer_or_that_are_wrong_are_422(query, condition, error, says):
    t = await query.tenant()
    await query.call(t, "POST", "/api/b/v2/events", json={"name": "Open", "code": "open"})
    r = await query.call(t, "POST", f"{S}/count", json={"conditions": [condition]})
    assert r.status_code == 422 and r.json()["error"] == error, r.text
    assert says in r.json()["message"]
