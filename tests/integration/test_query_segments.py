"""Segments API against the real Redis: filter semantics vs a brute-force oracle (hypothesis),
cursor pages, export, overview and device lookup."""

from __future__ import annotations

import asyncio
import base64
import string

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from prometheus_client import CollectorRegistry
from cleanup import delete_prefix
from pydantic import SecretStr
from query_fixtures import PARTITIONS, SCRATCH_TTL_MS, make_settings, ndjson, query  # noqa: F401
from redis.exceptions import ResponseError
from waiting import wait_for

from services.common.catalog import CatalogStore
from services.common.catalog_ids import MemoryIdLog
from services.common.clock import FixedClock
from services.common.keys import NAMES_BUCKET, CatalogKeys, PartitionKeys
from services.common.redis_conn import async_redis
from services.domain.filters import SegmentFilter, selects
from services.query.api import build_api
from services.query.cursors import Cursor
from services.query.devices import DeviceLookup, partition_of
from services.query.rejected import RejectedLog
from services.query.segments import SegmentIndex
from synthetic import write_devices

S = "/api/b/v2/segments"
CUSTOM = ["promo", "buy", "churn"]
ALL_CODES = ["install", "reg", "dep", "dep_2", "dep_3", *CUSTOM]


def codes_of(events: dict[str, int]) -> set[str]:
    codes = {"install", *(c for c, n in events.items() if n > 0)}
    codes |= {f"dep_{k}" for k in range(2, events.get("dep", 0) + 1)}
    return codes


def oracle(devices: dict[str, dict[str, int]], include: list[str], exclude: list[str], match: str) -> set[str]:
    """The domain's evaluator over each device's codes (the contract suite checks it against the
    Lua scripts on processor-written data; here it judges the HTTP API on synthetic data)."""
    f = SegmentFilter(tuple(include), tuple(exclude), match)
    return {install_id for install_id, events in devices.items() if selects(f, codes_of(events))}


async def walk(client, headers, body: dict, limit: int) -> list[str]:
    found, cursor = [], None
    for _ in range(10_000):
        resp = await client.post(f"{S}/devices", json={**body, "limit": limit, "cursor": cursor}, headers=headers)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert len(page["devices"]) <= limit
        found += page["devices"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found
    raise AssertionError("the walk did not end")


device_events = st.fixed_dictionaries({}, optional={
    "reg": st.integers(1, 2), "dep": st.integers(0, 4), "promo": st.integers(1, 3), "buy": st.just(1), "churn": st.just(1)})
datasets = st.dictionaries(st.text("abcdefghij0123456789-_.:", min_size=1, max_size=12), device_events, max_size=40)
code_lists = st.lists(st.sampled_from(ALL_CODES), max_size=3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(devices=datasets, include=code_lists, exclude=code_lists, match=st.sampled_from(["all", "any"]),
       limit=st.integers(1, 9))
def test_filters_match_a_brute_force_oracle(infra, key_prefix, devices, include, exclude, match, limit):
    """count, the cursor walk and the export all return exactly the oracle's devices."""

    async def run():
        redis = async_redis(infra.redis_url)
        try:
            catalog = CatalogStore(redis, key_prefix, MemoryIdLog())
            account_id, key = await catalog.create_account("h", 1)
            for code in CUSTOM:
                await catalog.create_event(account_id, code, code, 1)
            await write_devices(redis, key_prefix, PARTITIONS, account_id, devices)
            app = build_api(make_settings(key_prefix, infra.redis_url), catalog,
                            SegmentIndex(redis, key_prefix, PARTITIONS), DeviceLookup(redis, key_prefix, PARTITIONS),
                            RejectedLog(redis, key_prefix, "r", 10, 1000), registry=CollectorRegistry(), clock=FixedClock())
            headers = {"Authorization": f"Bearer {key}"}
            body = {"event_include": include, "event_exclude": exclude, "include_match": match}
            expected = oracle(devices, include, exclude, match)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://q") as client:
                resp = await client.post(f"{S}/count", json=body, headers=headers)
                assert resp.status_code == 200, resp.text
                assert resp.json() == {"count": len(expected), "as_of": None}  # no processor: no freshness claim
                walked = await walk(client, headers, body, limit)
                assert len(walked) == len(set(walked)) and set(walked) == expected
                exported = await client.post(f"{S}/export", json=body, headers=headers)
                assert exported.headers["content-type"].startswith("application/x-ndjson")
                assert sorted(r["install_id"] for r in ndjson(exported.content)) == sorted(expected)
                for install_id in devices:  # the Segments page's verdict: the same answer per device
                    v = (await client.post(f"{S}/verdict", json={**body, "install_id": install_id}, headers=headers)).json()
                    assert (v["found"], v["selected"], v["selected"] == (not v["reasons"])) == \
                        (True, install_id in expected, True), (install_id, v)
        finally:  # every example starts from an empty prefix (the fixture cleans up only once, at the end)
            await delete_prefix(redis, key_prefix)
            await redis.aclose()

    asyncio.run(run())


async def add_device(redis, prefix: str, account_id: int, install_id: str, codes: list[str]) -> None:
    """What the processor does for a brand-new device, one command at a time."""
    keys = PartitionKeys(prefix, partition_of(account_id, install_id, PARTITIONS))
    num = await redis.incr(keys.device_seq(account_id))
    await redis.hset(keys.device_index_of(account_id, install_id), install_id, num)
    await redis.hset(keys.device_names(account_id, num // NAMES_BUCKET), num % NAMES_BUCKET, install_id)
    for code in ["install", *codes]:
        if not await redis.setbit(keys.segment(account_id, code), num, 1):
            await redis.hincrby(keys.device_counts(account_id), code, 1)
        await redis.sadd(keys.segment_codes(account_id), code)


async def test_cursor_walk_is_stable_while_devices_arrive(query):
    """Devices added during a walk never make an earlier device appear twice or go missing."""
    t = await query.tenant()
    devices = {f"dev-{i}": ({"reg": 1} if i % 3 else {}) for i in range(1500)}
    await query.devices(t, devices)
    expected = {d for d, e in devices.items() if e}
    found, cursor, added = [], None, 0
    while True:
        resp = await query.call(t, "POST", f"{S}/devices", json={"event_include": ["reg"], "limit": 97, "cursor": cursor})
        page = resp.json()
        found += page["devices"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        await add_device(query.redis, query.settings.key_prefix, t.account_id, f"new-{added}", ["reg"])
        added += 1
    assert len(found) == len(set(found)), "a device came twice"
    assert expected <= set(found), "a device that matched all along was skipped"
    assert set(found) - expected <= {f"new-{i}" for i in range(added)}
    count = (await query.call(t, "POST", f"{S}/count", json={"event_include": ["reg"]})).json()["count"]
    assert count == len(expected) + added


async def test_big_pages_and_export_equal_count(query):
    """With 12,000 devices: limit 5,000 pages, export lines == count == distinct devices."""
    t = await query.tenant()
    devices = {f"d{i:05d}": {"dep": i % 4} for i in range(12_000)}
    await query.devices(t, devices)
    body = {"event_include": ["dep"], "event_exclude": ["dep_3"]}
    count = (await query.call(t, "POST", f"{S}/count", json=body)).json()["count"]
    assert count == sum(1 for e in devices.values() if e["dep"] in (1, 2))
    pages = []
    cursor = None
    while True:
        page = (await query.call(t, "POST", f"{S}/devices", json={**body, "limit": 5000, "cursor": cursor})).json()
        pages.append(len(page["devices"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sum(pages) == count and max(pages) == 5000
    lines = ndjson((await query.call(t, "POST", f"{S}/export", json=body)).content)
    assert len(lines) == count == len({r["install_id"] for r in lines})
    everyone = ndjson((await query.call(t, "POST", f"{S}/export", json={})).content)
    assert len(everyone) == 12_000


async def test_filter_errors_are_422_and_name_the_codes(query):
    """Unknown codes (include or exclude), bad cursors, limits and malformed filters are 422."""
    t = await query.tenant()
    await query.call(t, "POST", "/api/b/v2/events", json={"name": "p", "code": "promo"})
    await query.call(t, "POST", "/api/b/v2/events/101/deactivate")  # inactive events still filter
    for path in ("count", "devices", "export"):
        resp = await query.call(t, "POST", f"{S}/{path}", json={"event_include": ["promo", "nope"], "event_exclude": ["dep_1", "zzz"]})
        assert resp.status_code == 422, resp.text
        body = resp.json()
        assert body["error"] == "unknown_events" and body["unknown_codes"] == ["nope", "dep_1", "zzz"]
        assert "nope" in body["message"] and "zzz" in body["message"]
        for bad in ({"include_match": "some"}, {"event_include": "reg"}, {"event_include": ["bad code"]},
                    {"event_include": ["reg"] * 65}, {"extra": True}):
            r = await query.call(t, "POST", f"{S}/{path}", json=bad)
            assert r.status_code == 422 and r.json()["error"] == "validation_error", (path, bad, r.text)
    assert (await query.call(t, "POST", f"{S}/count", json={"event_include": ["promo", "dep_9"]})).json() == {"count": 0, "as_of": None}
    for limit in (0, 5001, -1):
        r = await query.call(t, "POST", f"{S}/devices", json={"limit": limit})
        assert r.status_code == 422 and r.json()["error"] == "validation_error"
    await query.devices(t, {f"x{i}": {"reg": 1} for i in range(5)})
    first = (await query.call(t, "POST", f"{S}/devices", json={"limit": 2})).json()
    other = await query.call(t, "POST", f"{S}/devices", json={"limit": 2, "event_include": ["reg"], "cursor": first["next_cursor"]})
    assert other.status_code == 422 and other.json()["error"] == "invalid_cursor"
    for cursor in ("garbage", "djE6OTk6MDphYmM", "", "=" * 10):
        r = await query.call(t, "POST", f"{S}/devices", json={"limit": 2, "cursor": cursor})
        assert r.status_code in (200, 422) and (r.status_code == 200) == (cursor == ""), (cursor, r.text)


async def scratch_keys(redis, prefix: str) -> list[tuple[bytes, int]]:
    """Every scratch key of the prefix with its remaining TTL in ms."""
    found = []
    for p in range(PARTITIONS):
        async for key in redis.scan_iter(match=PartitionKeys(prefix, p).scratch("*"), count=1000):
            found.append((key, await redis.pttl(key)))
    return found


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_forged_cursors_are_422_and_touch_nothing(query):
    """A 20-digit position (signed or as the old unsigned v1), an edited cursor and another
    account's cursor: 422 invalid_cursor saying to start again, and no scratch key appears."""
    t, other = await query.tenant("a"), await query.tenant("b")
    await query.devices(t, {f"x{i}": {"reg": 1} for i in range(9)})
    await query.devices(other, {f"y{i}": {"reg": 1} for i in range(9)})
    page = (await query.call(t, "POST", f"{S}/devices", json={"limit": 2})).json()
    good = page["next_cursor"]
    assert len(good) <= 200 and set(good) <= set(string.ascii_letters + string.digits + "-_")
    fp = SegmentFilter((), ()).fingerprint()
    theirs = (await query.call(other, "POST", f"{S}/devices", json={"limit": 2})).json()["next_cursor"]
    middle = len(good) // 2
    edited = good[:middle] + ("A" if good[middle] != "A" else "B") + good[middle + 1:]
    forged = {
        "unsigned v1, 20-digit position": b64(f"v1:0:{10**19 + 7}:{fp}".encode()),
        "v2 with a made-up MAC": b64(b"\x00" * 16 + f"v2:0:{10**19 + 7}:{fp}".encode()),
        "edited": edited,
        "another account's": theirs,
    }
    for what, cursor in forged.items():
        resp = await query.call(t, "POST", f"{S}/devices", json={"limit": 2, "cursor": cursor})
        assert resp.status_code == 422, (what, resp.text)
        assert resp.json()["error"] == "invalid_cursor" and "start again without a cursor" in resp.json()["message"], what
    assert await scratch_keys(query.redis, query.settings.key_prefix) == []
    rest = (await query.call(t, "POST", f"{S}/devices", json={"limit": 100, "cursor": good})).json()
    assert sorted(page["devices"] + rest["devices"]) == sorted(f"x{i}" for i in range(9))


async def test_cursors_survive_a_restart_and_agree_across_processes(query, key_prefix, redis_client):
    """Without QUERY_CURSOR_SECRET the secret is created once in Redis: a second app (another
    process, or this one restarted) follows the first one's cursors; a configured secret wins."""
    t = await query.tenant()
    await query.devices(t, {f"x{i}": {"reg": 1} for i in range(5)})
    cursor = (await query.call(t, "POST", f"{S}/devices", json={"limit": 2})).json()["next_cursor"]
    secret = await redis_client.get(CatalogKeys(key_prefix).cursor_secret)
    assert secret and len(secret) >= 32

    def second_app(**extra):
        settings = make_settings(key_prefix, query.settings.redis_url).model_copy(update=extra)
        return build_api(settings, query.catalog, SegmentIndex(redis_client, key_prefix, PARTITIONS),
                         DeviceLookup(redis_client, key_prefix, PARTITIONS),
                         RejectedLog(redis_client, key_prefix, "r", 10, 1000), registry=CollectorRegistry())

    for app, status in ((second_app(), 200), (second_app(cursor_secret=SecretStr("configured-secret-0123")), 422)):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://q") as client:
            resp = await client.post(f"{S}/devices", json={"limit": 10, "cursor": cursor}, headers=t.headers)
            assert resp.status_code == status, resp.text
    assert await redis_client.get(CatalogKeys(key_prefix).cursor_secret) == secret


async def test_a_failed_segment_script_leaves_only_expiring_scratch_keys(query):
    """A script that fails half-way (a position BITPOS refuses; a WRONGTYPE bitmap) keeps its
    writes, so its scratch keys carry a TTL from the start and are gone once it passes; over
    HTTP such a failure is 503 unavailable, not 500."""
    t = await query.tenant()
    await query.call(t, "POST", "/api/b/v2/events", json={"name": "p", "code": "promo"})
    await query.call(t, "POST", "/api/b/v2/events", json={"name": "c", "code": "churn"})
    await query.devices(t, {f"d{i}": {"reg": 1, "promo": i % 2} for i in range(40)})
    prefix, index = query.settings.key_prefix, query.app.state.segments
    for p in range(PARTITIONS):  # a key of the wrong type where a bitmap should be
        await query.redis.hset(PartitionKeys(prefix, p).segment(t.account_id, "churn"), "x", 1)
    reg = SegmentFilter(("reg",), ())
    with pytest.raises(ResponseError):
        await index.page(t.account_id, reg, Cursor(0, 10**20, reg.fingerprint()), 10)
    with pytest.raises(ResponseError):
        await index.count(t.account_id, SegmentFilter(("reg",), ("promo", "churn")))
    resp = await query.call(t, "POST", f"{S}/count", json={"event_include": ["reg"], "event_exclude": ["promo", "churn"]})
    assert resp.status_code == 503 and resp.json()["error"] == "unavailable" and resp.headers["retry-after"] == "1", resp.text
    left = await scratch_keys(query.redis, prefix)
    assert left and all(0 < ttl <= SCRATCH_TTL_MS for _, ttl in left), left

    async def all_expired():
        return await scratch_keys(query.redis, prefix) == []
    await wait_for(all_expired, timeout=10, interval=0.05, message="the scratch keys to expire")
    ok = await query.call(t, "POST", f"{S}/count", json={"event_include": ["reg"], "event_exclude": ["promo"]})
    assert ok.json() == {"count": 20, "as_of": None} and await scratch_keys(query.redis, prefix) == []


async def test_overview_orders_events_and_counts_devices(query):
    """System events, dep_2..dep_max, then custom events; counts per event; URLs with PushExpress's
    placeholder and &key= when a secret is set, none for the derived ordinals."""
    t = await query.tenant()
    await query.call(t, "POST", "/api/b/v2/events", json={"name": "Promo", "code": "promo"})
    await query.call(t, "POST", "/api/b/v2/events", json={"name": "Unused", "code": "unused"})
    await query.devices(t, {"a": {"reg": 1, "dep": 3}, "b": {"dep": 1, "promo": 2}, "c": {"dep": 2}})
    body = (await query.call(t, "GET", f"{S}/events")).json()
    rows = [(e["code"], e["type"], e["devices"]) for e in body["events"]]
    assert rows == [("install", "SYSTEM", 3), ("reg", "SYSTEM", 1), ("dep", "SYSTEM", 3), ("dep_2", "SYSTEM", 2),
                    ("dep_3", "SYSTEM", 1), ("promo", "CUSTOM", 1), ("unused", "CUSTOM", 0)]
    acct = t.account_id
    assert body["events"][5]["postback_url"] == \
        f"https://pb.example.com/api/postback/?id={{your installation id}}&status=promo_{acct}"
    assert body["events"][3]["id"] is None and body["events"][0]["id"] == 1
    assert [e["postback_url"] for e in body["events"][3:5]] == [None, None]  # dep_2, dep_3: nobody posts them
    await query.catalog.set_secret(acct, "s3cr3t-Key")
    urls = [e["postback_url"] for e in (await query.call(t, "GET", f"{S}/events")).json()["events"]]
    postable = urls[:3] + urls[5:]
    assert all(u.endswith("&key=s3cr3t-Key") for u in postable) and f"status=dep_{acct}&" in urls[2]
    assert urls[3:5] == [None, None]


async def test_device_lookup(query):
    """A device's events with deposit ordinals, first/last times and counts; 404 when unknown."""
    t = await query.tenant()
    await query.devices(t, {"dev:1": {"reg": 1, "dep": 2, "promo": 3}, "a/b?c#d": {}})
    await query.call(t, "POST", "/api/b/v2/events", json={"name": "Promo", "code": "promo"})
    resp = await query.call(t, "GET", "/api/b/v2/devices/dev:1")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["install_id"] == "dev:1" and body["deposit_count"] == 2
    assert [(e["code"], e["occurrences"]) for e in body["events"]] == [
        ("install", 1), ("reg", 1), ("dep", 2), ("dep_2", 1), ("promo", 3)]
    assert all(e["first_at"] == e["last_at"] == 1_700_000_000_000 for e in body["events"])
    odd = await query.call(t, "GET", "/api/b/v2/devices/a%2Fb%3Fc%23d")
    assert odd.status_code == 200 and odd.json()["install_id"] == "a/b?c#d"
    assert (await query.call(t, "GET", "/api/b/v2/devices/a/b%3Fc%23d")).json()["install_id"] == "a/b?c#d"
    missing = await query.call(t, "GET", "/api/b/v2/devices/nobody")
    assert missing.status_code == 404 and missing.json()["error"] == "device_not_found"
    bad = await query.call(t, "GET", "/api/b/v2/devices/" + "x" * 129)
    assert bad.status_code == 422


async def test_device_on_an_unexpected_partition_is_still_found(query):
    """Probing covers devices written to a partition other than the murmur2 one."""
    t = await query.tenant()
    home = partition_of(t.account_id, "moved", PARTITIONS)
    keys = PartitionKeys(query.settings.key_prefix, (home + 1) % PARTITIONS)
    await query.redis.hset(keys.device_index_of(t.account_id, "moved"), "moved", 1)
    await query.redis.hset(keys.device_states(t.account_id, 0), 1, "install=5;reg=5:9:2")
    body = (await query.call(t, "GET", "/api/b/v2/devices/moved")).json()
    assert body["events"] == [{"code": "install", "first_at": 5, "last_at": 5, "occurrences": 1},
                              {"code": "reg", "first_at": 5, "last_at": 9, "occurrences": 2}]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_operations_endpoints(query, path):
    resp = await query.call(None, "GET", path)
    assert resp.status_code == 200
    if path == "/metrics":
        await query.call(None, "GET", "/healthz")
        assert 'query_http_requests_total{method="GET",route="/healthz",status="200"}' in \
            (await query.call(None, "GET", path)).text


async def test_readyz_is_503_when_redis_is_away(key_prefix):
    """Not ready (503, JSON error) while Redis does not answer; /healthz still answers."""
    from query_fixtures import make_settings
    from services.query.bootstrap import create_app

    app = create_app(make_settings(key_prefix, "redis://127.0.0.1:1/0"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://q") as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["error"] == "not_ready"
        assert (await client.get("/healthz")).status_code == 200


async def test_the_partition_count_comes_from_the_state(infra, key_prefix, redis_client):
    """The processor records the partition count with the state; the query service reads that,
    not PBSEG_POSTBACKS_PARTITIONS (a stale setting would miss or invent partitions)."""
    from services.common.keys import PartitionKeys
    from services.query.bootstrap import create_app

    app = create_app(make_settings(key_prefix, infra.redis_url))
    async with app.router.lifespan_context(app):
        assert app.state.segments.partitions == PARTITIONS  # nothing recorded yet: the setting
    await redis_client.hset(PartitionKeys(key_prefix, 0).identity("postbacks.v1"),
                            mapping={"topic_id": "x", "partitions": PARTITIONS + 3, "layout": 2})
    app = create_app(make_settings(key_prefix, infra.redis_url))
    async with app.router.lifespan_context(app):
        assert app.state.segments.partitions == app.state.devices.partitions == PARTITIONS + 3
