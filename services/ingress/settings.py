"""IngressSettings: every knob of the ingress, read from the environment once at start-up."""

from __future__ import annotations

from pydantic import Field

from services.common.settings import CommonSettings


class IngressSettings(CommonSettings):
    bind: str = Field("127.0.0.1:8080", alias="INGRESS_BIND")
    # One HTTP server (uvloop + httptools, services/ingress/http_server.py) and one Kafka
    # client (confluent-kafka, producer_confluent.py, acks=all + idempotent): the fastest
    # measured (bench/results/ingress.md).
    workers: int = Field(1, alias="INGRESS_WORKERS", ge=1, le=64)
    # gc.freeze() after start-up (shorter full collections under load; measured).
    gc_freeze: bool = Field(True, alias="INGRESS_GC_FREEZE")

    # Longest time a request waits for Kafka's acknowledgement before answering 503.
    produce_timeout_s: float = Field(2.0, alias="INGRESS_PRODUCE_TIMEOUT_S", gt=0, le=2.0)
    # How long start-up keeps trying to reach Kafka before exiting with an error.
    startup_timeout_s: float = Field(30.0, alias="INGRESS_STARTUP_TIMEOUT_S", gt=0)
    # How often /readyz's Kafka probe (a metadata request) runs.
    kafka_probe_s: float = Field(1.0, alias="INGRESS_KAFKA_PROBE_S", gt=0, le=30)
    # librdkafka's linger (fractions allowed); 1 ms measured a little ahead of 2 (docs).
    kafka_linger_ms: float = Field(1, alias="INGRESS_KAFKA_LINGER_MS", ge=0, le=100)
    kafka_max_batch_bytes: int = Field(65536, alias="INGRESS_KAFKA_MAX_BATCH_BYTES", ge=1024)
    # Rejected-postback records waiting for Kafka at most; beyond it they are counted, not sent.
    max_pending_rejected: int = Field(10_000, alias="INGRESS_MAX_PENDING_REJECTED", ge=1)
    # A catalog read slower than this fails (the last snapshot keeps serving; the poll retries):
    # bounds how long a frozen Redis can hold a request that re-checks the catalog.
    redis_timeout_s: float = Field(1.0, alias="INGRESS_REDIS_TIMEOUT_S", gt=0, le=30)
    # How often the catalog cache polls the catalog version key.
    catalog_poll_s: float = Field(0.25, alias="INGRESS_CATALOG_POLL_S", gt=0, le=1.0)

    # Input rules and request limits (docs/architecture.md "Ingress").
    max_future_skew_s: int = Field(300, alias="INGRESS_MAX_FUTURE_SKEW_S", ge=0, le=86_400)
    max_query_bytes: int = Field(4096, alias="INGRESS_MAX_QUERY_BYTES", ge=256, le=4096)
    max_body_bytes: int = Field(65_536, alias="INGRESS_MAX_BODY_BYTES", ge=0, le=1_048_576)
    body_read_timeout_s: float = Field(5.0, alias="INGRESS_BODY_READ_TIMEOUT_S", gt=0, le=60)
    # Request line plus headers at most this many bytes (414/431), complete within this time.
    max_header_bytes: int = Field(16_384, alias="INGRESS_MAX_HEADER_BYTES", ge=8192, le=1_048_576)
    header_read_timeout_s: float = Field(5.0, alias="INGRESS_HEADER_READ_TIMEOUT_S", gt=0, le=60)
    # Idle keep-alive connections are closed after this; at most this many requests of one
    # connection are handled at once (more pipelined ones wait, reading pauses); connections
    # beyond the limit get one 503.
    keepalive_timeout_s: float = Field(15.0, alias="INGRESS_KEEPALIVE_TIMEOUT_S", gt=0, le=3600)
    max_pipelined: int = Field(16, alias="INGRESS_MAX_PIPELINED", ge=1, le=1024)
    max_connections: int = Field(10_000, alias="INGRESS_MAX_CONNECTIONS", ge=1)

    # Per-account limit in postbacks/s per ingress process; 0 = off (the default).
    rate_limit_per_s: float = Field(0.0, alias="INGRESS_RATE_LIMIT_PER_S", ge=0)
    rate_limit_burst: int | None = Field(None, alias="INGRESS_RATE_LIMIT_BURST", ge=1)
