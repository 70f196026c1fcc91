"""Query benchmark driver (run by bench/query/run.sh, which starts Redis and PostgreSQL).

Per scale N: bulk-loads N synthetic devices of account 1 into Redis in the processor's layout
(segment bitmaps, codes sets, per-code device counters, device sequences and the reverse map of install ids, 8 partitions;
no device hashes: count and overview never read them) and the same facts into PostgreSQL
(`device_events(account_id, install_id, event)`, one row per device and event that occurred),
starts the query service, and measures over HTTP:
  - POST /segments/count, include [reg, c_01] (all), exclude [dep_2]: p50/p99
  - GET /segments/events (50 events): p50/p99
and the equivalent SQL in PostgreSQL (p50/p99 of repeated runs).
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import redis
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.common.catalog import CatalogStore  # noqa: E402
from services.common.catalog_ids import MemoryIdLog
from services.common.keys import NAMES_BUCKET, PartitionKeys  # noqa: E402
from services.common.redis_conn import async_redis  # noqa: E402
from tests.synthetic import bitmap_bytes  # noqa: E402 - the test data writer (ROOT is on sys.path)

PARTITIONS = 8
PREFIX = "bench"
ACCOUNT = 1
CUSTOM = [f"c_{i:02d}" for i in range(1, 44)]  # 43 custom + install, reg, dep, dep_2..dep_5 = 50 events
INCLUDE, EXCLUDE = ["reg", "c_01"], ["dep_2"]
REDIS_URL = os.environ["BENCH_REDIS_URL"]
PG_DSN = os.environ["BENCH_PG_DSN"]
HTTP_PORT = int(os.environ["BENCH_HTTP_PORT"])
SCALES = [int(s) for s in os.environ.get("BENCH_SCALES", "1000000 10000000").split()]
COUNT_REQUESTS = int(os.environ.get("BENCH_COUNT_REQUESTS", "2000"))
EVENTS_REQUESTS = int(os.environ.get("BENCH_EVENTS_REQUESTS", "500"))


def random_bits(rng: random.Random, nbits: int, p_binary: str) -> int:
    """An nbits-wide int whose bits are 1 independently with probability 0.<p_binary> (base 2)."""
    x = 0
    for digit in reversed(p_binary):
        r = rng.getrandbits(nbits)
        x = (r | x) if digit == "1" else (r & x)
    return x


def partition_bitmaps(rng: random.Random, n: int) -> dict[str, int]:
    """Bitmaps (bit k = device number k, numbers 1..n as the processor hands them out)."""
    install = (1 << (n + 1)) - 2
    maps = {"install": install, "reg": random_bits(rng, n + 1, "11") & install,
            "dep": random_bits(rng, n + 1, "01") & install}
    prev = maps["dep"]
    for k in range(2, 6):
        prev = maps[f"dep_{k}"] = prev & rng.getrandbits(n + 1)
    for i, code in enumerate(CUSTOM):
        maps[code] = random_bits(rng, n + 1, "0" * (2 + i % 6) + "1") & install  # 1/8 .. 1/256
    return maps


def rows_of(bits: int, p: int, code: str, chunk: int = 200_000):
    """COPY text rows (account, install id, event) for every set bit, in chunks of bytes."""
    s = bin(bits)[2:]
    top = len(s) - 1
    suffix = f"\t{code}\n"
    ids = [(top - m.start() - 1) * PARTITIONS + p for m in re.finditer("1", s)]
    for i in range(0, len(ids), chunk):
        yield "".join(f"{ACCOUNT}\td{d}{suffix}" for d in ids[i:i + chunk]).encode()


def percentile(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def load(n_devices: int, r: redis.Redis, pg: psycopg.Connection) -> dict:
    r.flushdb()  # the bench's own Redis server (run.sh started it), never the shared one
    pg.execute("DROP TABLE IF EXISTS device_events")
    pg.execute("CREATE TABLE device_events (account_id int NOT NULL, install_id text NOT NULL, event text NOT NULL)")
    pg_s = 0.0
    rng = random.Random(42)
    per = [n_devices // PARTITIONS + (1 if p < n_devices % PARTITIONS else 0) for p in range(PARTITIONS)]
    t0 = time.perf_counter()
    for p in tqdm(range(PARTITIONS), desc=f"redis {n_devices:,}", unit="partition"):
        n, keys = per[p], PartitionKeys(PREFIX, p)
        maps = partition_bitmaps(rng, n)
        pipe = r.pipeline(transaction=False)
        pipe.set(keys.device_seq(ACCOUNT), n)
        for code, bits in maps.items():
            pipe.set(keys.segment(ACCOUNT, code), bitmap_bytes(bits, n + 1))
        pipe.sadd(keys.segment_codes(ACCOUNT), *maps)
        pipe.hset(keys.device_counts(ACCOUNT), mapping={c: bits.bit_count() for c, bits in maps.items()})
        pipe.execute()
        # Reverse map: device number k of partition p is install id d<(k-1)*8+p>.
        for b in range(0, n // NAMES_BUCKET + 1):
            lo, hi = max(1, b * NAMES_BUCKET), min(n, (b + 1) * NAMES_BUCKET - 1)
            if lo <= hi:
                pipe.hset(keys.device_names(ACCOUNT, b), mapping={k % NAMES_BUCKET: f"d{(k - 1) * PARTITIONS + p}"
                                                                 for k in range(lo, hi + 1)})
            if b % 200 == 199:
                pipe.execute()
        pipe.execute()
        t1 = time.perf_counter()
        with pg.cursor().copy("COPY device_events (account_id, install_id, event) FROM STDIN") as copy:
            for code, bits in maps.items():
                for chunk in rows_of(bits, p, code):
                    copy.write(chunk)
        pg_s += time.perf_counter() - t1
    redis_s = time.perf_counter() - t0 - pg_s
    t0 = time.perf_counter()
    pg.execute("ALTER TABLE device_events ADD PRIMARY KEY (account_id, install_id, event)")
    # Filters look up devices by event: (account, event) -> install ids, index-only scans.
    pg.execute("CREATE INDEX device_events_by_event ON device_events (account_id, event, install_id)")
    pg.commit()
    with psycopg.connect(PG_DSN, autocommit=True) as c:
        c.execute("VACUUM ANALYZE device_events")
    pg_s += time.perf_counter() - t0
    rows = pg.execute("SELECT count(*) FROM device_events").fetchone()[0]
    pg_size = pg.execute("SELECT pg_size_pretty(pg_total_relation_size('device_events'))").fetchone()[0]
    return {"redis_load_s": redis_s, "pg_load_s": pg_s, "rows": rows, "pg_size": pg_size,
            "redis_mem": r.info("memory")["used_memory_human"]}


SQL_COUNT = """SELECT count(*) FROM device_events a
 WHERE a.account_id = %(acct)s AND a.event = %(i1)s
   AND EXISTS (SELECT 1 FROM device_events b WHERE b.account_id = a.account_id AND b.install_id = a.install_id AND b.event = %(i2)s)
   AND NOT EXISTS (SELECT 1 FROM device_events c WHERE c.account_id = a.account_id AND c.install_id = a.install_id AND c.event = %(x)s)"""
SQL_EVENTS = "SELECT event, count(*) FROM device_events WHERE account_id = %(acct)s GROUP BY event"


def time_sql(pg: psycopg.Connection, sql: str, runs: int) -> tuple[list[float], object]:
    params = {"acct": ACCOUNT, "i1": INCLUDE[0], "i2": INCLUDE[1], "x": EXCLUDE[0]}
    result = pg.execute(sql, params).fetchall()  # warm-up (caches)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        pg.execute(sql, params).fetchall()
        samples.append((time.perf_counter() - t) * 1000)
    return samples, result


def time_http(client: httpx.Client, method: str, url: str, body, runs: int) -> tuple[list[float], object]:
    for _ in range(min(100, runs)):
        client.request(method, url, json=body)
    samples, last = [], None
    for _ in range(runs):
        t = time.perf_counter()
        resp = client.request(method, url, json=body)
        samples.append((time.perf_counter() - t) * 1000)
        assert resp.status_code == 200, resp.text
        last = resp.json()
    return samples, last


async def setup_catalog() -> str:
    client = async_redis(REDIS_URL)
    store = CatalogStore(client, PREFIX, MemoryIdLog())
    account_id, key = await store.create_account("bench", 0)
    assert account_id == ACCOUNT
    for code in CUSTOM:
        await store.create_event(ACCOUNT, code, code, 0)
    await client.aclose()
    return key


def start_query(port: int, **extra_env: str) -> subprocess.Popen:
    env = dict(os.environ, REDIS_URL=REDIS_URL, PBSEG_KEY_PREFIX=PREFIX, PBSEG_POSTBACKS_PARTITIONS=str(PARTITIONS),
               QUERY_REJECTED_FEED="false", PBSEG_LOG_LEVEL="warning", **extra_env)
    proc = subprocess.Popen([str(ROOT / ".venv/bin/uvicorn"), "services.query.bootstrap:create_app", "--factory",
                             "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
                            env=env, cwd=ROOT)
    for _ in range(100):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the query service did not start")


def run_scale(n: int, r: redis.Redis, pg: psycopg.Connection) -> dict:
    info = load(n, r, pg)
    key = asyncio.run(setup_catalog())
    proc = start_query(HTTP_PORT, QUERY_OVERVIEW_FRESH_MS="1000")  # the optional cache on
    try:
        base = f"http://127.0.0.1:{HTTP_PORT}/api/b/v2/segments"
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            count_ms, count = time_http(client, "POST", f"{base}/count",
                                        {"event_include": INCLUDE, "event_exclude": EXCLUDE}, COUNT_REQUESTS)
            events_ms, events = time_http(client, "GET", f"{base}/events", None, EVENTS_REQUESTS)
            page = client.post(f"{base}/devices", json={"event_include": INCLUDE, "event_exclude": EXCLUDE, "limit": 200}).json()
    finally:
        proc.terminate()
        proc.wait(10)
    # The overview as deployed (no cache): every request reads the per-code counters of all partitions.
    proc = start_query(HTTP_PORT, QUERY_OVERVIEW_FRESH_MS="0")  # the default: counters read per request
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            uncached_ms, uncached = time_http(client, "GET", f"http://127.0.0.1:{HTTP_PORT}/api/b/v2/segments/events", None,
                                              max(20, EVENTS_REQUESTS // 5))
        assert uncached == events
    finally:
        proc.terminate()
        proc.wait(10)
    sql_runs = 20 if n <= 2_000_000 else 10
    pg_ms, pg_result = time_sql(pg, SQL_COUNT, sql_runs)
    pg_events_ms, _ = time_sql(pg, SQL_EVENTS, max(3, sql_runs // 4))
    assert pg_result[0][0] == count["count"], (pg_result, count)  # the same answer from both
    assert len(events["events"]) == 50, len(events["events"])
    # The reverse map names the same devices PostgreSQL finds for the filter.
    matching = pg.execute(SQL_COUNT.replace("SELECT count(*)", "SELECT a.install_id") + " AND a.install_id = ANY(%(ids)s)",
                          {"acct": ACCOUNT, "i1": INCLUDE[0], "i2": INCLUDE[1], "x": EXCLUDE[0], "ids": page["devices"]}).fetchall()
    assert len(page["devices"]) == 200 and len(matching) == 200, (len(page["devices"]), len(matching))
    return {**info, "n": n, "count": count["count"], "count_ms": count_ms, "events_ms": events_ms,
            "pg_ms": pg_ms, "pg_events_ms": pg_events_ms, "sql_runs": sql_runs, "uncached_ms": uncached_ms}


def fmt(ms: float) -> str:
    return f"{ms:.2f} ms" if ms < 100 else f"{ms:,.0f} ms"


def report(results: list[dict]) -> str:
    lines = [
        "## Query service: segment counts and the Segments overview",
        "",
        f"`bench/query/run.sh`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. One query-service process (uvicorn, 1 worker), "
        "its own Redis and PostgreSQL on the same machine; the HTTP client is sequential (one request at a time, "
        "keep-alive), so latency includes the client, HTTP, auth (one HGET) and the 8 partition scripts. "
        f"Load average when the run started / ended: {LOAD_AT_START} / {os.getloadavg()[0]:.1f} "
        "(other work on the machine shares its cores).",
        "",
        "Data: N synthetic devices of one account, 8 partitions, 50 events (install, reg 75%, dep 25%, dep_2..dep_5 "
        "halving, 43 custom events at 1/8..1/256). Redis holds what the processor writes for them: segment bitmaps, "
        "codes sets, sequences and the reverse map (install ids); no device hashes (neither query reads them). "
        "PostgreSQL holds the same facts as `device_events(account_id, install_id, event)` rows with primary key "
        "(account_id, install_id, event) and index (account_id, event, install_id), VACUUM ANALYZEd, "
        "shared_buffers 4 GB, work_mem 256 MB; timed after a warm-up run, so from cache.",
        "",
        f"Count filter: include {INCLUDE} (all), exclude {EXCLUDE}; SQL: EXISTS / NOT EXISTS over the index. "
        "/segments/count is never cached. /segments/events is measured with the optional per-process cache on "
        "(QUERY_OVERVIEW_FRESH_MS=1000) and as deployed, cache off (QUERY_OVERVIEW_FRESH_MS=0, the default: "
        "HGETALL of the per-code device counters in 8 partitions per request).",
        "",
        "| devices | PG rows | Redis memory | count p50 (HTTP) | count p99 (HTTP) | PG count p50 | PG count p99 | "
        "PG p50 / HTTP p50 | /segments/events p50 | /segments/events p99 | same, cache off p50 | cache off p99 | "
        "PG GROUP BY p50 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in results:
        c50, c99 = percentile(x["count_ms"], 50), percentile(x["count_ms"], 99)
        p50, p99 = percentile(x["pg_ms"], 50), percentile(x["pg_ms"], 99)
        e50, e99 = percentile(x["events_ms"], 50), percentile(x["events_ms"], 99)
        lines.append(f"| {x['n']:,} | {x['rows']:,} | {x['redis_mem']} | {fmt(c50)} | {fmt(c99)} | {fmt(p50)} | {fmt(p99)} | "
                     f"{p50 / c50:,.0f}x | {fmt(e50)} | {fmt(e99)} | {fmt(percentile(x['uncached_ms'], 50))} | "
                     f"{fmt(percentile(x['uncached_ms'], 99))} | {fmt(percentile(x['pg_events_ms'], 50))} |")
    lines += ["", "Requests: " + "; ".join(
        f"{x['n']:,}: {len(x['count_ms'])} counts (answer {x['count']:,}), {len(x['events_ms'])} overviews, "
        f"{len(x['uncached_ms'])} uncached overviews, {x['sql_runs']} SQL runs; load {x['redis_load_s']:.0f} s Redis, {x['pg_load_s']:.0f} s PostgreSQL ({x['pg_size']})"
        for x in results), ""]
    big = [x for x in results if x["n"] >= 10_000_000]
    if big:
        x = big[-1]
        c99, ratio = percentile(x["count_ms"], 99), percentile(x["pg_ms"], 50) / percentile(x["count_ms"], 50)
        e99 = percentile(x["uncached_ms"], 99)  # as deployed: no cache
        lines += [f"Targets at 10M devices: count p99 <= 10 ms over HTTP: {'met' if c99 <= 10 else 'NOT met'} "
                  f"({fmt(c99)}); >= 100x faster than PostgreSQL (p50): {'met' if ratio >= 100 else 'NOT met'} ({ratio:,.0f}x); "
                  f"/segments/events p99 <= 20 ms: {'met' if e99 <= 20 else 'NOT met'} ({fmt(e99)} as deployed, no cache; "
                  f"{fmt(percentile(x['events_ms'], 99))} with the optional 1 s cache).", ""]
    else:
        lines += ["Targets are stated at 10M devices; this run did not load 10M (BENCH_QUERY_SCALES).", ""]
    return "\n".join(lines)


LOAD_AT_START = f"{os.getloadavg()[0]:.1f}"


def main() -> None:
    r = redis.Redis.from_url(REDIS_URL)
    results = []
    with psycopg.connect(PG_DSN) as pg:
        for n in SCALES:
            print(f"--- {n:,} devices", flush=True)
            results.append(run_scale(n, r, pg))
            x = results[-1]
            print(f"count p50 {percentile(x['count_ms'], 50):.2f} ms p99 {percentile(x['count_ms'], 99):.2f} ms; "
                  f"PG p50 {percentile(x['pg_ms'], 50):.1f} ms; events p99 {percentile(x['events_ms'], 99):.2f} ms", flush=True)
    out = ROOT / "bench/results/query.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(results))


if __name__ == "__main__":
    main()
