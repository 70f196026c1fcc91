"""bench/triggers: event-triggered tasks (issue 14). Writes bench/results/triggers.md; run by
run.sh, which sets the scale.

1. Redis bytes per pending fire (DeviceStateStore.apply_batches in the bench's own Redis, no Kafka),
   against the raw bytes of the timer-list entries.
2. A burst of fires falling due in the same second, end to end through a processor subprocess and
   the shared Kafka, against a bare aiokafka producer sending as many records of the same size.
3. Steady lateness of fires next to other postback load.

Everything runs against the shared Kafka broker (own topics, deleted at the end) and a Redis
server this script starts on its own port (AOF everysec, REDIS_ENCODING_ARGS, as `make up`), so
INFO memory sees only the bench's keys; it is killed at the end."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from harness import PARTITIONS, ROOT, EventIds, log, postback_value
from services.common.models import PostbackRecord
from services.common.redis_conn import async_redis
from services.processor.settings import ProcessorSettings

import drain  # noqa: E402
import memory  # noqa: E402
from harness import start_redis  # noqa: E402

TICK_SETTINGS = ["PROCESSOR_TICK_INTERVAL_MS", "PROCESSOR_TICK_LISTS", "PROCESSOR_TICK_BUDGET",
                 "PROCESSOR_FETCH_MAX_WAIT_MS", "PROCESSOR_FETCH_MIN_BYTES", "PROCESSOR_OUTBOX_INTERVAL_MS",
                 "PROCESSOR_OUTBOX_BATCH", "PROCESSOR_MAX_BATCH"]


def check_values() -> None:
    """harness.postback_value renders exactly what PostbackRecord does (the ingress's bytes)."""
    eid = EventIds(1).new(1_764_000_000_000)
    want = PostbackRecord(event_id=eid, account_id=1, install_id="00ab", event="reg", occurred_at=5,
                          received_at=6).model_dump_json(by_alias=True).encode()
    assert postback_value(eid, "00ab", "reg", 5, 6) == want, (postback_value(eid, "00ab", "reg", 5, 6), want)


def tick_settings() -> dict[str, object]:
    s = ProcessorSettings()
    fields = ProcessorSettings.model_fields
    return {f.alias: getattr(s, name) for name, f in fields.items() if f.alias in TICK_SETTINGS}


def ms(v: float) -> str:
    return f"{v:,.0f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def dist(values: list) -> str:
    from harness import percentile
    return f"{ms(percentile(values, 0.5))} / {ms(percentile(values, 0.99))} / {ms(values[-1]) if values else 'nan'}"


def report(args, mem: list, burst: dict | None, steady: dict | None, settings: dict) -> list[str]:
    stamp = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    knobs = (f"BENCH_TRIGGERS_PENDING={args.pending} BENCH_TRIGGERS_SPREADS={args.spreads} "
             f"BENCH_TRIGGERS_BURST={args.burst} BENCH_TRIGGERS_STEADY_S={args.steady_s:g} "
             f"BENCH_TRIGGERS_STEADY_RATE={args.steady_rate} BENCH_TRIGGERS_STEADY_LOAD={args.steady_load}")
    lines = [
        "## Triggers", "",
        f"`bash bench/triggers/run.sh` ({knobs}), {stamp}. {platform.node()}: {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, shared with other work (other "
        f"engineers' processes ran during the run), load average at the start {args.load_at_start}. Kafka {args.bootstrap} (the shared broker; the bench's "
        "own topics, created as `topic_plan` creates the real ones, deleted afterwards); a Redis started by the bench "
        "(AOF everysec, `REDIS_ENCODING_ARGS`, as `make up`), killed afterwards. Processor settings in the end-to-end "
        "runs (defaults unless set in the environment): " + ", ".join(f"`{k}`={v}" for k, v in settings.items()) + ".",
        "",
    ]
    if mem:
        lines += [
            f"**Redis bytes per pending fire.** {args.pending:,} new devices, one `reg` each (16-hex install ids, "
            "32-hex event ids as the ingress mints them), applied through `DeviceStateStore.apply_batches` "
            "(`plan_partition_batches` with a `TriggerPlan`, 8 partitions, outbox off), once with no trigger (the "
            "baseline, same devices, same event times) and once with one trigger \"on reg first, delay 1d\". "
            "Triggers' own bytes = used_memory growth with the trigger - growth without; the floor is the raw bytes "
            "of the timer entries (`<device number>|<cause event id>|<ms>`, joined by `,`). A pending fire's hash is named by "
            "its due minute (a field per second), so the cost depends on how many fires share a minute: event times evenly spread over "
            f"1 day is the steady state of {args.pending:,} pending with this trigger ({args.pending / 86400:,.1f} regs/s, "
            f"{args.pending / 86400 / PARTITIONS:,.1f} fires per partition and second); narrower spreads are sign-up "
            "bursts.", "",
            "| event times spread over | pending fires | timer hashes (trigger, epoch, minute) | fires per hash | used_memory growth, no trigger | "
            "with the trigger | **triggers' bytes / pending fire** | floor: raw entry bytes / fire | ratio to floor | "
            "MEMORY USAGE: timer hashes / due zsets, B per fire | target <= 120 B |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in mem:
            lines.append(
                f"| {r['spread_s']:,} s | {r['pending']:,} | {r['lists']:,} | {r['pending'] / max(r['lists'], 1):.1f} | "
                f"{r['base']['delta']:,} B | {r['delta']:,} B | **{r['per_fire']:.1f}** | {r['floor']:.1f} | "
                f"{r['per_fire'] / r['floor']:.2f}x | {r['list_bytes'] / r['pending']:.1f} / {r['zset_bytes'] / r['pending']:.1f} | "
                f"{verdict(r['per_fire'] <= 120)} |")
        lines += ["", "MEMORY USAGE counts each key's value; the rest of the difference is the key table (a dict "
                  "entry and key string per timer hash) and allocator rounding. An earlier layout, a list per due second, "
                  "measured 228.3 B per pending fire over 1 day (1.8 fires per list) and 57.4 B over 1 hour in this bench "
                  "(decision 0022).", ""]
    if burst:
        b, bare = burst, burst["bare"]
        lines += [
            f"**Burst drain.** A processor subprocess; trigger \"on reg first, delay {b['delay_s']}s\", filter "
            f"`{{\"event_exclude\": [\"dep\"]}}`; {b['n']:,} reg postbacks on new devices, all with the same occurred_at, "
            f"produced at {b['produce_rate']:,.0f}/s (applied {b['applied_ms']:,} ms and their device-events published "
            f"{b['drained_ms']:,} ms after the event time, before the due time at +{b['due_ms']:,} ms). Then the "
            f"{b['n']:,} fires fall due in the same millisecond. fires/s = fires / (last fire record's Kafka timestamp - due "
            "time); lateness = each record's Kafka timestamp - its due_at, split into decided (fired_at, the tick's "
            "time, - due_at) and published (timestamp - fired_at: tick through the log, apply, outbox, producer). "
            "Read back from the topic after the run.", "",
            "| | records | records/s | ratio |", "|---|---|---|---|",
            f"| bare aiokafka producer, explicit batches per partition (`send_batch`, as the outbox sends), "
            f"{bare['record_bytes']} B records, same topic | {b['n']:,} | {bare['batch_rate']:,.0f} | 1.00 |",
            f"| bare aiokafka producer, `send()` per record | {b['n']:,} | {bare['send_rate']:,.0f} | "
            f"{bare['send_rate'] / bare['batch_rate']:.2f} |",
            f"| **processor: fires due -> in Kafka** | {b['fires']:,} | **{b['rate']:,.0f}** | "
            f"{b['rate'] / bare['batch_rate']:.2f} |", "",
            f"Last fire in Kafka {b['span_ms']:,} ms after the due time; lateness p50 / p99 / max: **{dist(b['late'])} ms** "
            f"(decided {dist(b['decided'])} ms, published {dist(b['published'])} ms). {b['ticks']} ticks in the "
            f"postbacks log ({b['firing_ticks']} of them sent fires, {b['tick_bytes']:,} B); "
            f"{b['duplicates']} duplicate records; counters at the end {b['stats']}. CPU from 1 s before the due time "
            f"until all were published: worker {b['worker_cpu_s']:.2f} s, Redis {b['redis_cpu_s']:.2f} s, of which "
            f"{b['script_s']:.2f} s in {b['script_calls']} apply-script calls (the ticks' batches: "
            f"{b['script_s'] / max(b['fires'], 1) * 1e6:.1f} us of Redis per fire decided; one Redis runs them one at a time). Target >= 20,000 fires/s: "
            f"**{verdict(b['rate'] >= 20_000 and b['fires'] == b['n'])}**.", "",
        ]
    if steady:
        s = steady
        lines += [
            f"**Steady lateness.** A processor subprocess; trigger \"on reg first, delay {s['delay_s']}s\" (exclude dep); "
            f"for {s['seconds']:.0f} s: reg postbacks on new devices at {s['reg_rate']:,.0f}/s (each due {s['delay_s']} s "
            f"after its event time) and {s['other_rate']:,.0f}/s other postbacks (dep, first_open, purchase_view, "
            "install on 200,000 other devices), produced by the bench straight to the postbacks topic.", "",
            "| fires | duplicates | lateness p50 / p99 / max ms | decided (fired_at - due) | published (timestamp - fired_at) | "
            "ticks (sent fires) | ticks/s per partition | tick bytes in the log per fire | worker CPU | Redis CPU | "
            "target p99 <= 1 s |", "|---|---|---|---|---|---|---|---|---|---|---|",
            f"| {s['fires']:,} of {s['regs']:,} | {s['duplicates']} | **{dist(s['late'])}** | {dist(s['decided'])} | "
            f"{dist(s['published'])} | {s['ticks']:,} ({s['firing_ticks']:,}) | "
            f"{s['ticks'] / s['tick_window_s'] / PARTITIONS:.1f} | {s['tick_bytes'] / max(s['fires'], 1):.0f} B | "
            f"{s['worker_cpu']:.0%} of a core | {s['redis_cpu']:.0%} of a core (apply script: {s['script_share']:.0%} of the wall clock, commandstats) | "
            f"{verdict(s['fires'] == s['regs'] and bool(s['late']) and s['late'][int(0.99 * len(s['late']))] <= 1000)} |", "",
            f"Ticks are records in the postbacks log (kept for good); {s['lists_per_tick']:.1f} timer hashes named per tick. "
            "A partition with a fire due ticks again as soon as its last tick was applied "
            "(services/processor/ticker.py `notify`), not every PROCESSOR_TICK_INTERVAL_MS: the ticks/s column shows "
            "the resulting rate.", "",
        ]
    return lines


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pending", type=int, default=1_000_000)
    ap.add_argument("--spreads", default="86400,3600", help="seconds the event times are spread over, one memory run each")
    ap.add_argument("--burst", type=int, default=100_000)
    ap.add_argument("--steady-s", type=float, default=60.0)
    ap.add_argument("--steady-rate", type=int, default=1000)
    ap.add_argument("--steady-load", type=int, default=5000)
    ap.add_argument("--only", default="memory,burst,steady", help="comma-separated parts; writes --out only with all three")
    ap.add_argument("--out", default=str(ROOT / "bench/results/triggers.md"))
    args = ap.parse_args()
    args.load_at_start = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    args.bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    parts = set(args.only.split(","))
    check_values()
    settings = tick_settings()
    run = f"{int(time.time())}{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="bench-triggers."))
    redis_proc, redis_url = start_redis(work)
    mem, burst, steady = [], None, None
    try:
        if "memory" in parts:
            redis = async_redis(redis_url)
            try:
                mem = await memory.memory_part(redis, args.pending, [int(x) for x in args.spreads.split(",")])
            finally:
                await redis.aclose()
        if "burst" in parts:
            burst = await drain.burst_part(args.bootstrap, redis_url, run, work, args.burst)
        if "steady" in parts:
            steady = await drain.steady_part(args.bootstrap, redis_url, run, work, args.steady_s, args.steady_rate,
                                             args.steady_load)
    finally:
        redis_proc.stop()
    lines = report(args, mem, burst, steady, settings)
    print("\n".join(lines), flush=True)
    if parts >= {"memory", "burst", "steady"}:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines) + "\n")
        log(f"wrote {out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
