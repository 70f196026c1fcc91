"""Connection settings shared by every service. The only module family that reads the
environment: each service's settings class subclasses `CommonSettings`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# PBSEG_TOPOLOGY=cluster: the local cluster `make up` starts (services/devstack/cluster.py) is
# the default for KAFKA_BOOTSTRAP_SERVERS / REDIS_URL, unless they are set.
LOCAL_CLUSTER_KAFKA = "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
LOCAL_CLUSTER_REDIS = "redis+cluster://127.0.0.1:17000,127.0.0.1:17001,127.0.0.1:17002"
_KEY_PREFIX_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    # single: one broker, one Redis; cluster: 3 brokers, a Redis Cluster (docs/architecture.md)
    topology: Literal["single", "cluster"] = Field("single", alias="PBSEG_TOPOLOGY")
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", alias="KAFKA_BOOTSTRAP_SERVERS")
    redis_url: str = Field("redis://127.0.0.1:6390/0", alias="REDIS_URL")
    # Every Redis key starts with this prefix (tests give each test its own).
    key_prefix: str = Field("pbseg", alias="PBSEG_KEY_PREFIX")
    topic_postbacks: str = Field("postbacks.v1", alias="PBSEG_TOPIC_POSTBACKS")
    topic_rejected: str = Field("postbacks-rejected.v1", alias="PBSEG_TOPIC_REJECTED")
    topic_device_events: str = Field("device-events.v1", alias="PBSEG_TOPIC_DEVICE_EVENTS")
    # Fire decisions of event-triggered tasks (schemas/task-trigger.v1.json), for the push sender.
    topic_task_triggers: str = Field("task-triggers.v1", alias="PBSEG_TOPIC_TASK_TRIGGERS")
    # Account and custom-event ids are offsets on this topic (services/domain/catalog_ids.py).
    topic_catalog_ids: str = Field("catalog-ids.v1", alias="PBSEG_TOPIC_CATALOG_IDS")
    # How long a catalog write waits for the id log to confirm an allocation (then 503 / exit 1).
    catalog_id_timeout_s: float = Field(5.0, alias="PBSEG_CATALOG_ID_TIMEOUT_S", gt=0, le=60)
    # Partitions of the postbacks topic; the Redis layout is sharded by it (docs/architecture.md).
    postbacks_partitions: int = Field(8, alias="PBSEG_POSTBACKS_PARTITIONS", ge=1, le=1024)
    # The postbacks log is the system of record (`pbseg rebuild` and recovery replay it from
    # offset 0), so it is kept forever (-1). A finite value is for a history kept elsewhere
    # (tiered storage): an existing topic with exactly that retention is then accepted.
    postbacks_retention_ms: int = Field(-1, alias="PBSEG_POSTBACKS_RETENTION_MS", ge=-1)
    # The feeds derived from it keep their own retention (default 7 days).
    device_events_retention_ms: int = Field(7 * 86_400_000, alias="PBSEG_DEVICE_EVENTS_RETENTION_MS", ge=-1)
    rejected_retention_ms: int = Field(7 * 86_400_000, alias="PBSEG_REJECTED_RETENTION_MS", ge=-1)
    task_triggers_retention_ms: int = Field(7 * 86_400_000, alias="PBSEG_TASK_TRIGGERS_RETENTION_MS", ge=-1)
    # How far back `within` windows reach: windowed buckets expire this long after their end, and
    # the query API refuses older windows (422). At least 400 days; the processor and the query
    # service must agree (both read it here).
    window_retention_days: int = Field(400, alias="PBSEG_WINDOW_RETENTION_DAYS", ge=400, le=3660)
    # Of topics created by services/common/topics.py. Unset: fitted to the cluster at creation,
    # min(3, brokers) and replication - 1 (at least 1).
    replication_factor: int | None = Field(None, alias="PBSEG_REPLICATION_FACTOR", ge=1)
    min_insync_replicas: int | None = Field(None, alias="PBSEG_MIN_INSYNC_REPLICAS", ge=1)
    log_level: str = Field("info", alias="PBSEG_LOG_LEVEL")
    log_format: str = Field("json", alias="PBSEG_LOG_FORMAT")  # json | console

    @field_validator("key_prefix")
    @classmethod
    def _prefix_is_plain(cls, value: str) -> str:
        if not value or not set(value) <= _KEY_PREFIX_CHARS:
            raise ValueError("PBSEG_KEY_PREFIX must be non-empty and use only letters, digits, '_', '-', '.'")
        return value

    @field_validator("postbacks_retention_ms", "device_events_retention_ms", "rejected_retention_ms")
    @classmethod
    def _retention_is_forever_or_positive(cls, value: int) -> int:
        if value == 0:
            raise ValueError("a retention is -1 (forever) or a positive number of milliseconds")
        return value

    @model_validator(mode="after")
    def _topology_defaults(self) -> "CommonSettings":
        if self.topology == "cluster":
            if "kafka_bootstrap_servers" not in self.model_fields_set:
                self.kafka_bootstrap_servers = LOCAL_CLUSTER_KAFKA
            if "redis_url" not in self.model_fields_set:
                self.redis_url = LOCAL_CLUSTER_REDIS
        return self

    @model_validator(mode="after")
    def _min_insync_fits_replication(self) -> "CommonSettings":
        rf, isr = self.replication_factor, self.min_insync_replicas
        if rf is not None and isr is not None and isr > rf:
            raise ValueError(f"PBSEG_MIN_INSYNC_REPLICAS={isr} exceeds PBSEG_REPLICATION_FACTOR={rf}: "
                             "every acks=all write would fail")
        return self


class StackSettings(CommonSettings):
    """Addresses `pbseg stack` binds the services to (defaults from the README)."""

    ingress_bind: str = Field("127.0.0.1:8080", alias="INGRESS_BIND")
    query_bind: str = Field("127.0.0.1:8081", alias="QUERY_BIND")
