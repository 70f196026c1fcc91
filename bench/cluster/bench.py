"""bench/cluster: the processor on one Redis against a Redis Cluster of 3 masters, on the same
pre-filled topic in the same run. Per run: applied events/s, worker CPU per event and Redis CPU per
event (on the cluster: per master, measured with INFO cpu on each), and how the partitions' hash
tags spread over the masters. Writes bench/results/cluster.md. Run by run.sh.

On 2 cores the cluster cannot show more throughput (three masters, one worker and Kafka share the
same two cores); what it shows is the unit cost per shard, from which docs/capacity.md derives the
plan for 100k and 1M postbacks/s."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import redis as redis_sync
from redis.crc import key_slot

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "processor"))

import bench as pb  # noqa: E402 - bench/processor/bench.py: prefill, processor_run, start_redis
import importlib.util  # noqa: E402
from services.common.keys import PartitionKeys  # noqa: E402
from services.common.topics import ensure_topics  # noqa: E402
from services.devstack.cluster import redis_cluster_url  # noqa: E402
from services.devstack.cluster_redis import redis_cluster_masters  # noqa: E402


def query_bench():
    """bench/query/bench.py as a module of its own name (it reads its ports from the environment)."""
    for name, value in (("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"), ("BENCH_PG_DSN", ""), ("BENCH_HTTP_PORT", "0")):
        os.environ.setdefault(name, value)
    spec = importlib.util.spec_from_file_location("query_bench", ROOT / "bench" / "query" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_segments(qb, url: str, n: int) -> float:
    """The query bench's synthetic account (50 events, N devices over 8 partitions: bitmaps, code
    sets, counters, sequences; no reverse map, which a count never reads) into `url`. Seconds taken."""
    from redis.cluster import ClusterNode as SyncNode, RedisCluster as SyncCluster

    from services.common.redis_conn import cluster_startup_nodes, is_cluster_url
    r = (SyncCluster(startup_nodes=[SyncNode(h, p) for h, p in cluster_startup_nodes(url)]) if is_cluster_url(url)
         else redis_sync.Redis.from_url(url))
    rng = __import__("random").Random(42)
    per = [n // qb.PARTITIONS + (1 if p < n % qb.PARTITIONS else 0) for p in range(qb.PARTITIONS)]
    started = time.perf_counter()
    for p in range(qb.PARTITIONS):
        keys, maps = PartitionKeys(qb.PREFIX, p), qb.partition_bitmaps(rng, per[p])
        pipe = r.pipeline(transaction=False)
        pipe.set(keys.device_seq(qb.ACCOUNT), per[p])
        for code, bits in maps.items():
            pipe.set(keys.segment(qb.ACCOUNT, code), qb.bitmap_bytes(bits, per[p] + 1))
        pipe.sadd(keys.segment_codes(qb.ACCOUNT), *maps)
        pipe.hset(keys.device_counts(qb.ACCOUNT), mapping={c: bits.bit_count() for c, bits in maps.items()})
        pipe.execute()
    r.close()
    return time.perf_counter() - started


async def segments_run(qb, url: str, n: int, requests: int, http_port: int) -> dict:
    """Segment count p50/p99 over HTTP (one query process) at N devices held in `url`."""
    import httpx

    qb.REDIS_URL = url
    load_s = load_segments(qb, url, n)
    key = await qb.setup_catalog()
    proc = qb.start_query(http_port)
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            samples, answer = qb.time_http(client, "POST", f"http://127.0.0.1:{http_port}/api/b/v2/segments/count",
                                           {"event_include": qb.INCLUDE, "event_exclude": qb.EXCLUDE}, requests)
    finally:
        proc.terminate()
        proc.wait(10)
    from services.common.redis_conn import async_redis
    sys.path.insert(0, str(ROOT / "tests"))
    from cleanup import delete_prefix
    client = async_redis(url)
    await delete_prefix(client, qb.PREFIX)
    await client.aclose()
    return {"load_s": load_s, "p50": qb.percentile(samples, 50), "p99": qb.percentile(samples, 99),
            "count": answer["count"]}


def master_cpu() -> dict[int, float]:
    """CPU seconds used so far by each master of the local cluster, by port."""
    out = {}
    for port, _ in redis_cluster_masters():
        info = redis_sync.Redis(port=port).info("cpu")
        out[port] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return out


def spread(prefix: str, partitions: int) -> dict[int, list[int]]:
    """Which partitions' hash tags each master owns (by port)."""
    masters = redis_cluster_masters()
    owned: dict[int, list[int]] = {port: [] for port, _ in masters}
    for p in range(partitions):
        slot = key_slot(PartitionKeys(prefix, p).tag.encode())
        owned[next(port for port, ranges in masters if any(a <= slot <= b for a, b in ranges))].append(p)
    return owned


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=2, help="single/cluster pairs, alternating")
    ap.add_argument("--segments-devices", type=int, default=10_000_000, help="0: skip the segment-count part")
    ap.add_argument("--segments-requests", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "bench/results/cluster.md"))
    args = ap.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    run = f"{int(time.time()) % 100000}"
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    single_proc, single_url = pb.start_redis(work)
    cluster_url = redis_cluster_url()
    topic = f"bench-cluster-{run}"
    await ensure_topics(bootstrap, {topic: pb.PARTITIONS})
    devices = max(args.records // 5, 1)
    pb.log(f"pre-filling {topic} with {args.records} postbacks for {devices} devices ...")
    await pb.prefill(bootstrap, topic, args.records, devices)
    rows = []
    try:
        for rnd in range(args.rounds):
            for name in (("single", "cluster") if rnd % 2 == 0 else ("cluster", "single")):
                url = single_url if name == "single" else cluster_url
                label = f"{run}r{rnd}{name[0]}"
                before = master_cpu() if name == "cluster" else {}
                r = await pb.processor_run(bootstrap, url, topic, args.records, work, label)
                after = master_cpu() if name == "cluster" else {}
                per_master = {port: (after[port] - before.get(port, after[port])) / r["records"] * 1e6 for port in after}
                owned = spread(f"bp{label}", pb.PARTITIONS) if name == "cluster" else {}
                rows.append((name, rnd, r, per_master, owned, os.getloadavg()[0]))
                pb.log(f"{name} round {rnd}: {r['rate']:,.0f} events/s, worker {r['worker_us']:.1f} us/event, "
                       f"Redis {r['redis_us']:.1f} us/event {per_master or ''} {owned or ''}")
        segments = []
        if args.segments_devices:
            qb = query_bench()
            for name, url in (("single", single_url), ("cluster", cluster_url)):
                pb.log(f"segments: {args.segments_devices:,} devices on {name} ...")
                seg = await segments_run(qb, url, args.segments_devices, args.segments_requests, pb.free_port())
                segments.append((name, seg, os.getloadavg()[0]))
                pb.log(f"segments {name}: p50 {seg['p50']:.2f} ms p99 {seg['p99']:.2f} ms (count {seg['count']:,})")
    finally:
        single_proc.stop()
    write(Path(args.out), args, rows, segments)


def write(out: Path, args, rows, segments) -> None:
    lines = ["## Processor on one Redis and on a Redis Cluster (bench/cluster)", "",
             f"{args.records:,} postbacks pre-filled on one topic of {pb.PARTITIONS} partitions (single-node broker); "
             "one processor worker applies them into a Redis of its own (AOF everysec) and into the local Redis "
             "Cluster (3 masters, 3 replicas, AOF everysec), alternating, in the same run. Redis CPU per event: "
             "INFO cpu, summed over the masters and per master. On this 2-core box the masters, their replicas, the "
             "worker and Kafka share the cores, so the cluster cannot be faster here: read the per-master cost.", "",
             "| Redis | round | events/s | worker CPU us/event | Redis CPU us/event (sum) | per master us/event (port: value) | partitions per master | load |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rnd, r, per_master, owned, load in rows:
        masters = ", ".join(f"{port}: {v:.1f}" for port, v in sorted(per_master.items())) or "-"
        parts = ", ".join(f"{port}: {len(ps)}" for port, ps in sorted(owned.items())) or "1 server: all"
        lines.append(f"| {name} | {rnd} | {r['rate']:,.0f} | {r['worker_us']:.1f} | {r['redis_us']:.1f} | {masters} | "
                     f"{parts} | {load:.1f} |")
    single = [r for n, _, r, *_ in rows if n == "single"]
    cluster = [r for n, _, r, *_ in rows if n == "cluster"]
    if single and cluster:
        s_rate = sum(r["rate"] for r in single) / len(single)
        c_rate = sum(r["rate"] for r in cluster) / len(cluster)
        s_cpu = sum(r["redis_us"] for r in single) / len(single)
        c_cpu = sum(r["redis_us"] for r in cluster) / len(cluster)
        lines += ["", f"Mean over rounds: cluster/single events/s = {c_rate / s_rate:.2f} ({c_rate:,.0f} / {s_rate:,.0f}); "
                  f"Redis CPU per event cluster/single = {c_cpu / s_cpu:.2f} ({c_cpu:.1f} / {s_cpu:.1f} us, summed over "
                  "masters). A master's cost per event it owns is the sum divided by the share of partitions it owns."]
    if segments:
        lines += ["", f"Segment count over HTTP (one query process, {args.segments_requests} sequential requests after a "
                  f"warm-up) at {args.segments_devices:,} devices, 8 partitions, 50 events (the query bench's synthetic "
                  "account), on one Redis and across the cluster, same run:", "",
                  "| Redis | load s | count p50 ms | count p99 ms | answer | load avg |", "|---|---|---|---|---|---|"]
        for name, seg, load in segments:
            lines.append(f"| {name} | {seg['load_s']:.0f} | {seg['p50']:.2f} | {seg['p99']:.2f} | {seg['count']:,} | {load:.1f} |")
        if len(segments) == 2 and segments[0][1]["count"] == segments[1][1]["count"]:
            lines.append("")
            lines.append("Both give the same answer. Cluster/single p50 = "
                         f"{segments[1][1]['p50'] / segments[0][1]['p50']:.2f}: the cluster runs the 8 partition "
                         "scripts concurrently on 3 masters instead of one pipeline to one server.")
    lines.append("")
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
