"""bench/triggers: the pieces the parts share - a private Redis, a processor subprocess on its own
topics, key prefix and group, record values, percentiles. No measurement here."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.common.catalog_ids import MemoryIdLog  # noqa: E402
from services.common.keys import REDIS_ENCODING_ARGS, PartitionKeys  # noqa: E402
from services.common.redis_conn import async_redis  # noqa: E402
from services.common.topics import ensure_topics, topic_plan  # noqa: E402
from services.common.trigger_registry import TriggerRegistry  # noqa: E402
from services.domain.triggers import TICK_PREFIX, parse_delay  # noqa: E402
from services.processor.settings import ProcessorSettings  # noqa: E402

BIN = Path(sys.executable).parent
PARTITIONS = 8
ACCOUNT = 1


def log(msg: str) -> None:
    print(f"[bench/triggers {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def now_ms() -> int:
    return int(time.time() * 1000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process in its own session, stopped (SIGTERM, then SIGKILL) with its children."""

    def __init__(self, argv, env, logfile: Path, cwd=ROOT):
        self.p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=open(logfile, "ab"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        self.logfile = logfile

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(5)

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])


def start_redis(work: Path) -> tuple[Proc, str]:
    """A redis-server of the bench's own, as `make up` runs it (AOF everysec, REDIS_ENCODING_ARGS)."""
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    data = work / "redis"
    data.mkdir()
    proc = Proc([binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), "--appendonly", "yes",
                 "--appendfsync", "everysec", "--save", "", "--protected-mode", "no", *REDIS_ENCODING_ARGS],
                dict(os.environ), work / "redis.log")
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.1)
    raise SystemExit("bench redis-server did not start; see " + str(work / "redis.log"))


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def redis_cpu_s(redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def script_time(redis) -> tuple[int, int]:
    """(EVALSHA calls, microseconds Redis spent in them) so far: the apply script's share of Redis."""
    stat = (await redis.info("commandstats")).get("cmdstat_evalsha", {})
    return int(stat.get("calls", 0)), int(stat.get("usec", 0))


class EventIds:
    """The ingress's event id shape (services/common/ids.py): 12 hex digits of ms, 20 random."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def new(self, ms: int) -> str:
        return f"{ms:012x}{self.rng.getrandbits(80):020x}"


def postback_value(event_id: str, install: str, event: str, occurred_at: int, received_at: int) -> bytes:
    """postback.v1 bytes as PostbackRecord.model_dump_json(by_alias=True) renders them (checked in
    bench.py), without pydantic's cost per record."""
    return orjson.dumps({"schema": "postback.v1", "event_id": event_id, "account_id": ACCOUNT, "install_id": install,
                         "event": event, "occurred_at": occurred_at, "received_at": received_at, "tid": None,
                         "amount": None, "currency": None})


def percentile(sorted_values: list, q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(int(q * len(sorted_values)), len(sorted_values) - 1)]


async def http_status(port: int, path: str) -> int:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0
    writer.write(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
    line = await reader.readline()
    await reader.read()
    writer.close()
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 else 0


class ProcessorRun:
    """One `python -m services.processor` on its own topics (created as topic_plan creates the real
    ones), key prefix and consumer group, against `redis_url`."""

    def __init__(self, name: str, run: str, bootstrap: str, redis_url: str, work: Path):
        self.name, self.bootstrap, self.redis_url, self.work = name, bootstrap, redis_url, work
        base = f"bench-trg-{run}-{name}"
        self.prefix = f"bt{name}{run}"
        self.topics = {"postbacks": f"{base}-postbacks", "rejected": f"{base}-rejected",
                       "device_events": f"{base}-device-events", "task_triggers": f"{base}-task-triggers"}
        self.web_port = free_port()
        self.env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, REDIS_URL=redis_url, PBSEG_KEY_PREFIX=self.prefix,
                        PBSEG_TOPIC_POSTBACKS=self.topics["postbacks"], PBSEG_TOPIC_REJECTED=self.topics["rejected"],
                        PBSEG_TOPIC_DEVICE_EVENTS=self.topics["device_events"],
                        PBSEG_TOPIC_TASK_TRIGGERS=self.topics["task_triggers"],
                        PBSEG_POSTBACKS_PARTITIONS=str(PARTITIONS), PROCESSOR_GROUP=f"{base}-group",
                        PROCESSOR_WEB_PORT=str(self.web_port), PROCESSOR_DATADIR=str(work / f"faust-{name}"),
                        PBSEG_LOG_LEVEL="warning")
        self.settings = ProcessorSettings(**{k: v for k, v in self.env.items()
                                             if k.startswith(("PBSEG_", "PROCESSOR_", "KAFKA_", "REDIS_"))})
        self.redis = async_redis(redis_url)
        self.proc: Proc | None = None
        self.created_topics = False

    async def start(self) -> None:
        plan = topic_plan(self.settings)
        await ensure_topics(self.bootstrap, {t: plan[t] for t in self.topics.values()})
        self.created_topics = True
        self.proc = Proc([str(BIN / "python"), "-m", "services.processor", "-l", "warn"], self.env,
                         self.work / f"processor-{self.name}.log")
        deadline = time.monotonic() + 90
        while await http_status(self.web_port, "/readyz") != 200:
            if self.proc.p.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the processor did not become ready; its log ends:\n{self.proc.tail()}")
            await asyncio.sleep(0.2)

    async def create_trigger(self, name: str, on: str, delay: str, filter_: dict) -> int:
        registry = TriggerRegistry(self.redis, self.prefix, MemoryIdLog())
        return (await registry.create(ACCOUNT, name, on, "first", delay, parse_delay(delay), filter_, True)).id

    async def _per_partition(self, command) -> list:
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(PARTITIONS):
                command(pipe, PartitionKeys(self.prefix, p))
            return await pipe.execute()

    async def applied(self) -> int:
        """Records of the postbacks topic applied (postbacks and ticks)."""
        values = await self._per_partition(lambda pipe, k: pipe.get(k.applied_offset(self.topics["postbacks"])))
        return sum(int(v) + 1 for v in values if v is not None)

    async def outbox(self) -> int:
        return sum(await self._per_partition(lambda pipe, k: pipe.xlen(k.outbox)))

    async def stats(self, trigger_id: int) -> dict[str, int]:
        """The trigger's counters summed over the partitions (f fired, c cancelled, l late, p<epoch> pending)."""
        out: dict[str, int] = {}
        for h in await self._per_partition(lambda pipe, k: pipe.hgetall(k.trigger_stats(trigger_id))):
            for key, value in h.items():
                out[key.decode()] = out.get(key.decode(), 0) + int(value)
        return out

    async def cpu(self) -> tuple[float, float, int, int]:
        """Worker CPU s, Redis CPU s, EVALSHA calls, EVALSHA microseconds."""
        return (proc_cpu_s(self.proc.p.pid), await redis_cpu_s(self.redis), *await script_time(self.redis))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.p.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    async def read_topic(self, kind: str) -> list:
        """Every record of one of the run's topics (after the processor stopped), in partition order."""
        topic = self.topics[kind]
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            out = []
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                for msgs in (await consumer.getmany(timeout_ms=500, max_records=50_000)).values():
                    out.extend(msgs)
            return out
        finally:
            await consumer.stop()

    async def cleanup(self) -> None:
        """Delete the run's topics and keys (its consumer group expires with the broker's offsets retention)."""
        self.stop()
        try:
            keys = [k async for k in self.redis.scan_iter(match=f"{{{self.prefix}:*", count=5000)]
            for i in range(0, len(keys), 5000):
                await self.redis.unlink(*keys[i:i + 5000])
        finally:
            await self.redis.aclose()
        if self.created_topics:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                mine = [t for t in self.topics.values() if t in existing]
                if mine:
                    await admin.delete_topics(mine)
            finally:
                await admin.close()


def tick_stats(messages: list) -> dict:
    """The ticks among the postbacks topic's records: how many, their bytes (kept in the log for
    good), lists named per tick."""
    ticks = [m for m in messages if m.value is not None and m.value.startswith(TICK_PREFIX)]
    return {"ticks": len(ticks), "tick_bytes": sum(len(m.value) for m in ticks),
            "lists_per_tick": sum(len(orjson.loads(m.value)["due"]) for m in ticks) / max(len(ticks), 1),
            "postbacks": len(messages) - len(ticks)}


def fire_lateness(messages: list, due_of=None) -> dict:
    """Of the task-trigger records read back: unique fires, duplicates, and per fire (the first
    copy) Kafka timestamp - due_at (lateness), fired_at - due_at (decided), timestamp - fired_at
    (published)."""
    seen, dups, deciding = {}, 0, set()
    for m in messages:
        rec = orjson.loads(m.value)
        deciding.add((m.partition, rec["fired_at"]))
        if rec["fire_id"] in seen:
            dups += 1
            continue
        seen[rec["fire_id"]] = (m.timestamp, rec["due_at"], rec["fired_at"])
    late = sorted(ts - due for ts, due, _ in seen.values())
    decided = sorted(fired - due for _, due, fired in seen.values())
    published = sorted(ts - fired for ts, _, fired in seen.values())
    return {"fires": len(seen), "duplicates": dups, "late": late, "decided": decided, "published": published,
            "firing_ticks": len(deciding), "last_ts": max((ts for ts, _, _ in seen.values()), default=0),
            "sample": (messages[0].key, messages[0].value) if messages else (b"", b"")}
