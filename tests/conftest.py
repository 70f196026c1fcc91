"""Fixtures shared by every tier.

Infrastructure comes from, in order: KAFKA_BOOTSTRAP_SERVERS / REDIS_URL when set; else
testcontainers when a Docker engine answers; else the local stack the project starts itself
(real Kafka from its Maven jars, Debian's redis-server). Every test gets its own key prefix,
topics and consumer group, so tests cannot leak into each other.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Infra:
    kafka: str
    redis_url: str
    origin: str


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        elif f"{os.sep}e2e{os.sep}" in path:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def infra():
    kafka, redis_url = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("REDIS_URL")
    if kafka and redis_url:
        yield Infra(kafka, redis_url, "environment")
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as k, RedisContainer("redis:7") as r:
            yield Infra(k.get_bootstrap_server(), f"redis://{r.get_container_host_ip()}:{r.get_exposed_port(6379)}/0", "testcontainers")
        return
    from services.devstack.infra import infra_running, start_kafka, start_redis
    from services.devstack.procs import stop_process

    kafka = kafka or "127.0.0.1:9092"
    redis_url = redis_url or "redis://127.0.0.1:6390/0"
    before = infra_running(kafka, redis_url)
    start_redis(redis_url)
    start_kafka(kafka)
    yield Infra(kafka, redis_url, "local stack")
    # Stop only what this session started; a developer's `make up` stays up.
    if not before["kafka"]:
        stop_process("kafka")
    if not before["redis"]:
        stop_process("redis")


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def key_prefix(unique) -> str:
    return f"t{unique}"


@pytest.fixture
async def redis_client(infra):
    from services.common.redis_conn import async_redis

    client = async_redis(infra.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def topic_factory(infra, unique):
    """Creates fresh topics for a test: topic_factory(name, partitions) -> real topic name."""
    from services.common.topics import ensure_topics

    async def make(name: str, partitions: int = 4) -> str:
        topic = f"{name}-{unique}"
        await ensure_topics(infra.kafka, {topic: partitions})
        return topic

    return make


@pytest.fixture
def service_env(infra, unique, key_prefix) -> dict[str, str]:
    """Environment for services under test: own topics, key prefix and consumer group."""
    env = dict(os.environ)
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka,
        "REDIS_URL": infra.redis_url,
        "PBSEG_KEY_PREFIX": key_prefix,
        "PBSEG_TOPIC_POSTBACKS": f"postbacks-{unique}",
        "PBSEG_TOPIC_REJECTED": f"rejected-{unique}",
        "PBSEG_TOPIC_DEVICE_EVENTS": f"device-events-{unique}",
        "PBSEG_POSTBACKS_PARTITIONS": "4",
        "PROCESSOR_GROUP": f"processor-{unique}",
        "PBSEG_LOG_LEVEL": "info",
    })
    return env
