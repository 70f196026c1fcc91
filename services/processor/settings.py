from __future__ import annotations

from pydantic import Field

from services.common.settings import CommonSettings


class ProcessorSettings(CommonSettings):
    consumer_group: str = Field("pbseg-processor", alias="PROCESSOR_GROUP")
    # Recorded tids are kept at least this long (the floor is 30 days).
    tid_retention_days: float = Field(30.0, alias="PROCESSOR_TID_RETENTION_DAYS", ge=30.0)
    # /metrics (Prometheus), /healthz and /readyz are served here.
    web_port: int = Field(6066, alias="PROCESSOR_WEB_PORT", ge=0, le=65535)
    web_host: str = Field("127.0.0.1", alias="PROCESSOR_WEB_HOST")
    # Records fetched per poll (all partitions) and so the largest batch one poll applies.
    max_batch: int = Field(5000, alias="PROCESSOR_MAX_BATCH", ge=1, le=100_000)
    # Outbox entries (one per applied partition batch) published per partition per drain round.
    outbox_batch: int = Field(4, alias="PROCESSOR_OUTBOX_BATCH", ge=1, le=1000)
    # The broker answers a fetch once this many bytes are ready or after fetch_max_wait_ms: under
    # a steady load this makes fewer, larger batches (the per-batch costs - a Lua call, a Redis
    # round trip, an outbox entry - shrink per event) for at most fetch_max_wait_ms of latency.
    fetch_min_bytes: int = Field(256 * 1024, alias="PROCESSOR_FETCH_MIN_BYTES", ge=1, le=64 * 1024 * 1024)
    fetch_max_wait_ms: int = Field(25, alias="PROCESSOR_FETCH_MAX_WAIT_MS", ge=0, le=1000)
    # Pause between outbox drain rounds unless the last round found a full backlog (then none).
    outbox_interval_ms: int = Field(20, alias="PROCESSOR_OUTBOX_INTERVAL_MS", ge=0, le=1000)
    # How often the worker checks that it applied everything the log held (freshness, `as_of`).
    freshness_interval_s: float = Field(1.0, alias="PROCESSOR_FRESHNESS_INTERVAL_S", gt=0, le=60)
    # Faust's working directory (it keeps nothing we need: the state lives in Redis).
    datadir: str = Field("/tmp/pbseg-processor", alias="PROCESSOR_DATADIR")
    # After SIGTERM/SIGINT the worker ends within this long, even if Faust's graceful stop hangs
    # (services/processor/worker.py; safe because Redis holds every applied batch atomically).
    shutdown_timeout_s: float = Field(10.0, alias="PROCESSOR_SHUTDOWN_TIMEOUT_S", gt=0, le=300)
    # Net allocations between young-generation garbage collections (CPython: 700); see
    # worker.tune_gc: at the default the collector took ~20% of the worker's CPU.
    gc_threshold: int = Field(50_000, alias="PROCESSOR_GC_THRESHOLD", ge=700, le=10_000_000)
    # A SIGKILLed worker's partitions move after this long (Kafka's floor is 6 s by default).
    session_timeout_ms: int = Field(6000, alias="PROCESSOR_SESSION_TIMEOUT_MS", ge=1000)
    # A Redis reply slower than this is a failure the worker waits out (pause, retry, resume):
    # bounds how long a frozen Redis can hold it. Above the longest apply call (~0.1 s per batch).
    redis_timeout_s: float = Field(10.0, alias="PROCESSOR_REDIS_TIMEOUT_S", gt=0, le=300)
    # Backpressure: when one partition's outbox holds more entries (applied batches, up to
    # PROCESSOR_MAX_BATCH records each) than this, consumption pauses until it is down to half.
    # Bounds Redis memory when device-events.v1 cannot be written. 0 = no bound.
    outbox_max_entries: int = Field(2000, alias="PROCESSOR_OUTBOX_MAX_ENTRIES", ge=0)
    # Event-triggered tasks (services/domain/triggers.py, docs/decisions/0022): a fire more than this
    # past its due time (a backdated cause, an outage) is skipped and counted, not sent.
    trigger_max_lateness_s: int = Field(6 * 3600, alias="PROCESSOR_TRIGGER_MAX_LATENESS_S", ge=0, le=90 * 86400)
    # How often the ticker looks for due timers, how many timer hashes and fires one tick decides.
    tick_interval_ms: int = Field(100, alias="PROCESSOR_TICK_INTERVAL_MS", ge=10, le=10_000)
    tick_lists: int = Field(64, alias="PROCESSOR_TICK_LISTS", ge=1, le=1000)
    tick_budget: int = Field(5000, alias="PROCESSOR_TICK_BUDGET", ge=1, le=100_000)
