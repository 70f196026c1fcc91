"""The topics the system needs: what each is created with (`topic_plan`, pure), creating them
(`ensure_topics`, idempotent) and the start-up check of the postbacks log (`check_postbacks_topic`).

`postbacks.v1` is the system of record: every byte of Redis partition state is derived from it,
and `pbseg rebuild` and recovery after a lost Redis replay it from offset 0. So it is created
with `retention.ms=-1` and `cleanup.policy=delete` (never compaction, which would keep only the
last postback per device), and a topic that would forget records is refused at start instead of
producing a rebuild that silently differs from live processing. The device-events and rejected
topics are feeds, not records: they keep their own (finite) retention.

Replication factor and `min.insync.replicas` come from the settings; unset, they are fitted to
the cluster when a topic is created (min(3, brokers) and replication - 1, at least 1), so the
same code serves a single node and a 3-broker cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (InvalidConfigurationError, InvalidReplicationFactorError, PolicyViolationError,
                             TopicAlreadyExistsError, UnknownTopicOrPartitionError)

from services.common.settings import CommonSettings
from services.domain.catalog_ids import ID_PARTITIONS

FOREVER = -1  # Kafka's "no limit" for retention.ms / retention.bytes
_DAY_MS = 86_400_000
# Creation errors that retrying cannot fix: reported at once, not after the timeout.
_FINAL_CREATE_ERRORS = {e.errno: e for e in (InvalidReplicationFactorError, InvalidConfigurationError,
                                             PolicyViolationError)}


class TopicMisconfigured(SystemExit):
    """A topic is missing or configured so that the system cannot keep its promises.

    A SystemExit, like the Redis start-up refusals (`services/common/redis_conn.check_redis`): at
    start-up it ends the process with its message (exit code 1), and retry loops that catch
    Exception do not swallow it. The message says what is wrong, why it matters and how to fix it."""


@dataclass(frozen=True)
class TopicSpec:
    """How one topic is created. `replication_factor` / `min_insync_replicas` None: fitted to the
    cluster at creation. `whole_log`: the topic is a system of record, checked (retention,
    cleanup policy) whenever it already exists; `configs["retention.ms"]` is then the retention
    the operator accepts."""

    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)
    replication_factor: int | None = None
    min_insync_replicas: int | None = None
    whole_log: bool = False
    why: str | None = None  # what a whole-log topic's records are needed for (in the refusal)


def fitted_replication(setting: int | None, brokers: int) -> int:
    """The replication factor: the setting, else min(3, the brokers the cluster reports)."""
    return setting if setting is not None else max(1, min(3, brokers))


def fitted_min_insync(setting: int | None, replication: int) -> int:
    """min.insync.replicas: the setting, else replication - 1 (one replica may be down), at least 1."""
    return setting if setting is not None else max(1, replication - 1)


def topic_plan(settings: CommonSettings) -> dict[str, TopicSpec]:
    """Every topic the system uses, with the configuration it is created with."""
    fitted = {"replication_factor": settings.replication_factor,
              "min_insync_replicas": settings.min_insync_replicas}

    def retained(ms: int) -> dict[str, str]:
        return {"retention.ms": str(ms), "cleanup.policy": "delete"}

    return {
        settings.topic_postbacks: TopicSpec(settings.postbacks_partitions, retained(settings.postbacks_retention_ms),
                                            whole_log=True, **fitted),
        settings.topic_rejected: TopicSpec(4, retained(settings.rejected_retention_ms), **fitted),
        settings.topic_device_events: TopicSpec(settings.postbacks_partitions,
                                                retained(settings.device_events_retention_ms), **fitted),
        settings.topic_task_triggers: TopicSpec(settings.postbacks_partitions,
                                                retained(settings.task_triggers_retention_ms), **fitted),
        # Catalog ids are its offsets; its records restore a catalog Redis lost: kept forever.
        settings.topic_catalog_ids: TopicSpec(
            ID_PARTITIONS, retained(FOREVER), whole_log=True, **fitted,
            why="its records recreate accounts and custom events a Redis rollback lost (`pbseg catalog "
                "check --restore`)"),
    }


def new_topic(name: str, spec: TopicSpec, brokers: int) -> NewTopic:
    """The creation request for `spec` on a cluster of `brokers` brokers. Raises
    TopicMisconfigured when the settings cannot be met there (checked here, so the message names
    the setting rather than Kafka's error code)."""
    replication = fitted_replication(spec.replication_factor, brokers)
    if replication > brokers:
        raise TopicMisconfigured(
            f"cannot create topic {name!r} with replication factor {replication} (PBSEG_REPLICATION_FACTOR): "
            f"the cluster reports {brokers} broker(s). Lower PBSEG_REPLICATION_FACTOR, or unset it to fit "
            "the replication to the cluster.")
    min_insync = fitted_min_insync(spec.min_insync_replicas, replication)
    if min_insync > replication:
        raise TopicMisconfigured(
            f"cannot create topic {name!r} with min.insync.replicas={min_insync} (PBSEG_MIN_INSYNC_REPLICAS) "
            f"above its replication factor {replication}: every acks=all write would fail. Lower "
            "PBSEG_MIN_INSYNC_REPLICAS, or unset it (replication factor - 1, at least 1).")
    configs = {**spec.configs, "min.insync.replicas": str(min_insync)}
    return NewTopic(name, spec.partitions, replication, topic_configs=configs)


def as_spec(value: int | TopicSpec) -> TopicSpec:
    # A bare partition count (tests, benchmarks): kept forever, since any such topic may be the
    # postbacks topic of a processor (which refuses one that forgets records); broker defaults
    # otherwise.
    return value if isinstance(value, TopicSpec) else TopicSpec(value, {"retention.ms": str(FOREVER)})


def _duration(ms: int) -> str:
    if ms % _DAY_MS == 0:
        return f"{ms // _DAY_MS} day(s)"
    if ms >= 3_600_000:
        return f"{ms / 3_600_000:.1f} hours"
    return f"{ms / 1000:g} s"


def whole_log_problem(topic: str, configs: Mapping[str, str], accepted_retention_ms: int, bootstrap: str,
                      needed_for: str | None = None) -> str | None:
    """Why a system-of-record topic with these (described) configs would forget records, with
    what to do; None when it keeps what the rebuild needs. Pure: the check's whole rule.

    Refused: a finite `retention.ms` other than `accepted_retention_ms` (PBSEG_POSTBACKS_RETENTION_MS;
    -1 on the topic is always fine); a finite `retention.bytes` unless a finite retention was
    accepted (the operator keeps the history elsewhere, e.g. tiered storage); compaction."""
    alter = (f"kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
             f"--entity-name {topic} --add-config")
    needed_for = needed_for or ("`pbseg rebuild` and recovery after a lost Redis replay it from offset 0, so "
                                "records it deletes are missing from the rebuilt state for good")
    why = f"topic {topic!r} is a system of record: {needed_for}"
    retention = int(configs.get("retention.ms", FOREVER))
    if retention != FOREVER and retention != accepted_retention_ms:
        return (f"{why}, but it keeps records for only retention.ms={retention} ({_duration(retention)}). "
                f"Fix it: `{alter} retention.ms=-1`; or, if the history is kept elsewhere (tiered "
                f"storage), accept it with PBSEG_POSTBACKS_RETENTION_MS={retention}.")
    retention_bytes = int(configs.get("retention.bytes", FOREVER))
    if retention_bytes != FOREVER and accepted_retention_ms == FOREVER:
        return (f"{why}, but it deletes the oldest records once a partition holds retention.bytes="
                f"{retention_bytes}. Fix it: `{alter} retention.bytes=-1`.")
    if "compact" in configs.get("cleanup.policy", "delete"):
        return (f"{why}, but its cleanup.policy={configs['cleanup.policy']} compacts it (only the last "
                f"postback per device would stay). Fix it: `{alter} cleanup.policy=delete`.")
    return None


async def _describe(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, dict[str, str] | None]:
    """Each topic's configuration (None: the topic does not exist)."""
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    described: dict[str, dict[str, str] | None] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            name, code = resource["resource_name"], resource["error_code"]
            if code == UnknownTopicOrPartitionError.errno:
                described[name] = None
            elif code:
                raise RuntimeError(f"Kafka refused to describe topic {name!r}: error {code} {resource['error_message']}")
            else:
                described[name] = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
    return described


async def describe_topic_configs(bootstrap: str, topic: str) -> dict[str, str] | None:
    """The topic's effective configuration as the broker reports it; None when it does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        return (await _describe(admin, [topic])).get(topic)
    finally:
        await admin.close()


async def partition_count(bootstrap: str, topic: str, timeout_s: float = 10.0) -> int:
    """The partitions the brokers report for `topic` (0: it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        return 0 if described["error_code"] else len(described["partitions"])
    finally:
        await admin.close()


async def check_postbacks_topic(bootstrap: str, settings: CommonSettings) -> None:
    """Start-up check of the postbacks topic (one metadata round trip; blocks until Kafka answers
    or its request timeout). Raises TopicMisconfigured when it is missing (a consumer or producer
    might let the broker auto-create it with its defaults, 7 days of retention) or would forget
    records (`whole_log_problem`)."""
    topic = settings.topic_postbacks
    configs = await describe_topic_configs(bootstrap, topic)
    if configs is None:
        raise TopicMisconfigured(
            f"topic {topic!r} does not exist on Kafka at {bootstrap}. Create the topics first, so that it gets "
            "retention.ms=-1 rather than the broker's defaults: `make up` does, with Docker the compose "
            "`topics` service (services/common/topics.py ensure_topics(bootstrap, topic_plan(settings))).")
    problem = whole_log_problem(topic, configs, settings.postbacks_retention_ms, bootstrap)
    if problem:
        raise TopicMisconfigured(problem)


async def ensure_topics(bootstrap: str, topics: Mapping[str, int | TopicSpec], timeout_s: float = 60.0) -> None:
    """Create each missing topic as its spec says (a bare int: that many partitions, retention.ms=-1,
    broker defaults otherwise); an existing topic is left as it is, except that a `whole_log` one is
    checked (`whole_log_problem`). Retries while the broker finishes starting; raises TimeoutError
    naming the broker when it never answers, TopicMisconfigured at once for what retrying cannot fix."""
    specs = {name: as_spec(value) for name, value in topics.items()}
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            brokers = len((await admin.describe_cluster())["brokers"])
            # Checked before anything is created: a refusal changes nothing.
            checked = [name for name, spec in specs.items() if spec.whole_log and name in existing]
            if checked:
                for name, configs in (await _describe(admin, checked)).items():
                    problem = configs is not None and whole_log_problem(
                        name, configs, int(specs[name].configs.get("retention.ms", FOREVER)), bootstrap,
                        specs[name].why)
                    if problem:
                        raise TopicMisconfigured(problem)
            missing = [new_topic(name, spec, brokers) for name, spec in specs.items() if name not in existing]
            if missing:
                _raise_final_errors(await admin.create_topics(missing), bootstrap)
            existing = set(await admin.list_topics())
            if all(name in existing for name in specs):
                return
        except TopicAlreadyExistsError:
            pass  # created meanwhile by another caller; the next round checks it
        except Exception as exc:  # noqa: BLE001 - broker still starting; retry until deadline
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise TimeoutError(f"could not create topics {sorted(specs)} on Kafka at {bootstrap}: {last}")


def _raise_final_errors(response, bootstrap: str) -> None:
    for error in response.topic_errors:  # (topic, code[, message]) by protocol version
        topic, code, message = error[0], error[1], error[2] if len(error) > 2 else ""
        if code in _FINAL_CREATE_ERRORS:
            raise TopicMisconfigured(f"Kafka at {bootstrap} refused to create topic {topic!r}: "
                                     f"{_FINAL_CREATE_ERRORS[code].__name__}: {message}")
