"""Where one worker's CPU per event goes, without Kafka: the same records as bench.py (300,000
postbacks over 60,000 devices by default, 8 partitions), cut into polls of PROCESSOR_MAX_BATCH
records, planned (decode + validate + plan) and applied through DeviceStateStore to a private
redis-server. Reports, per event: the worker's Python CPU for planning and for the store call
(argument encoding, pipeline, reply), Redis' CPU (INFO used_cpu_user+sys deltas) and
INFO commandstats of the run (EVALSHA usec per event in the table; per call, XADD, ... below).

`--script A.lua,B.lua` applies the same records once per apply-script variant (e.g. an older
apply_batch.lua from `git show <commit>:services/processor/apply_batch.lua`) (fresh key
prefixes, alternating `--rounds` times) for an A/B in one run; default: the live script.
`--interleave` alternates the variants poll by poll instead, each on its own redis-server (Redis
CPU and EVALSHA time per variant only): on this noisy 2-vCPU VM whole runs drift by +-15% (see
the plan column, the same work in every row) and the second variant of a round meets a fuller
Redis and AOF, which hides differences of that size; poll by poll the drift cancels out.
Run: .venv/bin/python bench/processor/profile_apply.py [--records N] [--batch 5000] [--rounds 2] [--interleave]
Prints markdown; writes nothing."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from aiokafka.partitioner import DefaultPartitioner

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from bench import PARTITIONS, Proc, records, start_redis  # noqa: E402
from services.common.redis_conn import async_redis  # noqa: E402
from services.common.keys import lua_header  # noqa: E402
from services.processor import store as store_mod  # noqa: E402
from services.processor.planning import plan_partition_batch  # noqa: E402
from services.processor.store import DeviceStateStore  # noqa: E402


def polls(n: int, devices: int, batch: int):
    """The records cut into polls like getmany(max_records=batch): {partition: [(offset, value)]}."""
    partitioner = DefaultPartitioner()
    parts = list(range(PARTITIONS))
    offsets = [0] * PARTITIONS
    out, cur = [], {}
    count = 0
    for key, value in records(n, devices):
        p = partitioner(key, parts, parts)
        cur.setdefault(p, []).append((offsets[p], value))
        offsets[p] += 1
        count += 1
        if count == batch:
            out.append(cur)
            cur, count = {}, 0
    if cur:
        out.append(cur)
    return out


# Scripts before 2026-11-26 13:10 hashed the install id in Lua (device_bucket.lua, prepended).
BUCKET_LUA = """local function device_bucket(install)
  return tonumber(string.sub(redis.sha1hex(install), 1, 8), 16) % 4096
end
"""


def with_bucket(text: str) -> str:
    """A variant file as the store loads the live one: the key-layout header first."""
    if "local function key_" not in text:
        text = "#!lua\n" + lua_header() + text
    return BUCKET_LUA + text if "device_bucket(" in text and "function device_bucket" not in text else text


async def redis_cpu(redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def one_run(redis, script_text: str, prefix: str, data: list, emit: bool) -> dict:
    store = DeviceStateStore(redis, prefix, "prof", 30 * 86_400_000)
    store._script = redis.register_script(script_text)
    await redis.config_resetstat()
    cpu0 = await redis_cpu(redis)
    plan_cpu = apply_cpu = 0.0
    events = 0
    wall0 = time.perf_counter()
    for poll in data:
        t = time.process_time()
        batches = [plan_partition_batch(p, msgs, 1_764_000_000_000, emit) for p, msgs in poll.items()]
        t2 = time.process_time()
        results = await store.apply_batches(batches)
        apply_cpu += time.process_time() - t2
        plan_cpu += t2 - t
        events += sum(r.applied for r in results)
    wall = time.perf_counter() - wall0
    cpu1 = await redis_cpu(redis)
    stats = await redis.info("commandstats")
    n = sum(len(m) for poll in data for m in poll.values())
    evalsha = stats.get("cmdstat_evalsha", {}).get("usec", 0)
    return {"records": n, "applied": events, "wall": wall, "plan_us": plan_cpu / n * 1e6, "evalsha_us": evalsha / n,
            "store_py_us": apply_cpu / n * 1e6, "redis_us": (cpu1 - cpu0) / n * 1e6,
            "rate": n / wall, "stats": stats}


async def interleaved_run(servers: list, variants: list, rnd: int, data: list, emit: bool) -> list[dict]:
    """All variants over the same polls, poll by poll (each poll planned once, applied by every
    variant in turn, the order reversed every other poll), each variant on its OWN redis-server
    (`servers`: one client each; one shared Lua VM would let a variant leave its garbage to be
    collected during another's calls): Redis CPU (INFO cpu) and EVALSHA usec (commandstats) are
    taken around each call, so a drift of the machine's speed during the run (the VM is noisy)
    hits every variant alike."""
    stores = []
    for i, (_, text) in enumerate(variants):
        store = DeviceStateStore(servers[i], f"pr{rnd}v{i}", "prof", 30 * 86_400_000)
        store._script = servers[i].register_script(text)
        stores.append(store)
    cpu = [0.0] * len(variants)
    evalsha = [0] * len(variants)
    for k, poll in enumerate(data):
        batches = [plan_partition_batch(p, msgs, 1_764_000_000_000, emit) for p, msgs in poll.items()]
        order = list(range(len(variants)))
        for i in (order[::-1] if k % 2 else order):
            redis = servers[i]
            s0 = (await redis.info("commandstats")).get("cmdstat_evalsha", {}).get("usec", 0)
            c0 = await redis_cpu(redis)
            await stores[i].apply_batches(batches)
            c1 = await redis_cpu(redis)
            s1 = (await redis.info("commandstats")).get("cmdstat_evalsha", {}).get("usec", 0)
            cpu[i] += c1 - c0
            evalsha[i] += s1 - s0
    n = sum(len(m) for poll in data for m in poll.values())
    return [{"redis_us": cpu[i] / n * 1e6, "evalsha_us": evalsha[i] / n} for i in range(len(variants))]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--script", default="", help="comma-separated apply-script files")
    ap.add_argument("--no-emit", action="store_true")
    ap.add_argument("--no-aof", action="store_true", help="CONFIG SET appendonly no (to see the AOF's share)")
    ap.add_argument("--interleave", action="store_true",
                    help="variants poll by poll instead of one whole run each: Redis CPU and EVALSHA time only")
    args = ap.parse_args()
    variants = [(s, with_bucket(Path(s).read_text())) for s in args.script.split(",") if s] or [("live", store_mod._SCRIPT)]
    data = polls(args.records, max(args.records // 5, 1), args.batch)
    work = Path(tempfile.mkdtemp(prefix="profile-apply."))
    proc, url = start_redis(work)
    redis = async_redis(url)
    servers, extra = [redis], []  # --interleave: one redis-server per variant
    if args.interleave:
        for i in range(1, len(variants)):
            (work / f"v{i}").mkdir()
            p, u = start_redis(work / f"v{i}")
            extra.append(p)
            servers.append(async_redis(u))
    if args.no_aof:
        for server in servers:
            await server.config_set("appendonly", "no")
    try:
        if args.interleave:
            print("| variant | round | records | redis us/ev | of it EVALSHA us/ev |")
            print("|---|---|---|---|---|")
            n = sum(len(m) for poll in data for m in poll.values())
            for rnd in range(args.rounds):
                for (name, _), r in zip(variants, await interleaved_run(servers, variants, rnd, data, not args.no_emit)):
                    print(f"| {name} | {rnd} | {n:,} | {r['redis_us']:.2f} | {r['evalsha_us']:.2f} |", flush=True)
            return
        print("| variant | round | records | wall s | rate/s | plan us/ev | store py us/ev | redis us/ev | of it EVALSHA us/ev | total us/ev |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        detail = {}
        for rnd in range(args.rounds):
            for i, (name, text) in enumerate(variants):
                r = await one_run(redis, text, f"pr{rnd}v{i}", data, not args.no_emit)
                total = r["plan_us"] + r["store_py_us"] + r["redis_us"]
                print(f"| {name} | {rnd} | {r['records']:,} | {r['wall']:.2f} | {r['rate']:,.0f} | {r['plan_us']:.1f} | "
                      f"{r['store_py_us']:.1f} | {r['redis_us']:.1f} | {r['evalsha_us']:.1f} | {total:.1f} |", flush=True)
                detail[name] = r["stats"]
        for name, stats in detail.items():
            print(f"\ncommandstats ({name}, last round):")
            for cmd, s in sorted(stats.items(), key=lambda kv: -kv[1]["usec"]):
                if s["usec"] > 1000:
                    print(f"  {cmd}: calls {s['calls']:,} usec {s['usec']:,} per call {s['usec_per_call']:.1f}")
    finally:
        for server in servers:
            await server.aclose()
        for p in [proc, *extra]:
            p.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
